//! Neighbour and forwarding-database entries the node agent keeps on its VXLAN device: for each
//! remote node, its VTEP address resolves to its VTEP MAC (no ARP across the overlay), and that
//! MAC is sent to the node's own address (no flooding), flannel's scheme.

use crate::netlink::{family, Netlink, NlResult};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// A permanent neighbour entry (`ip neigh`), or a forwarding entry (`bridge fdb`): `mac` is at
/// `ip` (for a neighbour, the address it resolves; for a forwarding entry, the remote VTEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn entry_of(m: &NeighbourMessage) -> Option<NeighbourEntry> {
    let ip = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        // Forwarding entries (family bridge) carry the remote VTEP as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })?;
    let mac = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => Some([l[0], l[1], l[2], l[3], l[4], l[5]]),
        _ => None,
    })?;
    Some(NeighbourEntry { ip, mac })
}

impl Netlink {
    fn neighbour_dump(&mut self, family: AddressFamily, ifindex: u32) -> NlResult<Vec<NeighbourMessage>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        let replies =
            self.request(|| "listing neighbours".into(), RouteNetlinkMessage::GetNeighbour(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => Some(n),
                _ => None,
            })
            .collect())
    }

    /// Permanent neighbour entries on link `ifindex` (both families).
    pub fn permanent_neighbours(&mut self, ifindex: u32) -> NlResult<Vec<NeighbourEntry>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            out.extend(
                self.neighbour_dump(fam, ifindex)?
                    .iter()
                    .filter(|n| n.header.state == NeighbourState::Permanent)
                    .filter_map(entry_of),
            );
        }
        Ok(out)
    }

    pub fn delete_neighbour(&mut self, ifindex: u32, ip: IpAddr) -> NlResult<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = ifindex;
        msg.attributes.push(NeighbourAttribute::Destination(neigh_addr(ip)));
        match self.ack(|| format!("deleting neighbour {ip}"), RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Answer ARP (NDP) for `ip` on link `ifindex`, as if the address were the node's own: a
    /// vnet pod's address, routed to its veth, on the VNet subnet of the uplink (a proxy
    /// neighbour entry: scoped to that link and that address, unlike the link-wide proxy_arp).
    pub fn add_proxy(&mut self, ifindex: u32, ip: IpAddr) -> NlResult<()> {
        let msg = proxy_message(ifindex, ip);
        self.ack(
            || format!("adding proxy neighbour {ip}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Stop answering for `ip` on `ifindex`; already gone is fine.
    pub fn delete_proxy(&mut self, ifindex: u32, ip: IpAddr) -> NlResult<()> {
        let msg = proxy_message(ifindex, ip);
        match self.ack(|| format!("deleting proxy neighbour {ip}"), RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Forwarding entries of the VXLAN device `ifindex` that send a MAC to a remote VTEP.
    pub fn fdb_entries(&mut self, ifindex: u32) -> NlResult<Vec<NeighbourEntry>> {
        Ok(self.neighbour_dump(AddressFamily::Bridge, ifindex)?.iter().filter_map(entry_of).collect())
    }

    /// Send frames for `entry.mac` on the VXLAN device to the VTEP at `entry.ip`.
    pub fn replace_fdb(&mut self, ifindex: u32, entry: &NeighbourEntry) -> NlResult<()> {
        let msg = fdb_message(ifindex, entry);
        let op = || format!("adding forwarding entry {entry:?}");
        self.ack(op, RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE | NLM_F_REPLACE)
    }

    pub fn delete_fdb(&mut self, ifindex: u32, entry: &NeighbourEntry) -> NlResult<()> {
        let msg = fdb_message(ifindex, entry);
        match self.ack(|| format!("deleting forwarding entry {entry:?}"), RouteNetlinkMessage::DelNeighbour(msg), 0) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}

fn proxy_message(ifindex: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(ip);
    msg.header.ifindex = ifindex;
    msg.header.flags = NeighbourFlags::Proxy;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes.push(NeighbourAttribute::Destination(neigh_addr(ip)));
    msg
}

fn fdb_message(ifindex: u32, entry: &NeighbourEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
    msg.attributes.push(NeighbourAttribute::Destination(neigh_addr(entry.ip)));
    msg
}
