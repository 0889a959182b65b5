//! A small synchronous rtnetlink client. A CNI plugin runs one short-lived request sequence, so
//! a blocking socket beats starting an async runtime (the ADD path stays a few syscalls long).
//! Functions are named for what they do to the kernel; callers never see netlink messages.

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// A failed netlink request: what was asked and the kernel's errno.
#[derive(Debug)]
pub struct NlError {
    pub op: String,
    pub errno: i32,
}

impl NlError {
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }
    pub fn is_not_found(&self) -> bool {
        self.errno == libc::ENODEV || self.errno == libc::ENOENT || self.errno == libc::ESRCH
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, std::io::Error::from_raw_os_error(self.errno))
    }
}
impl std::error::Error for NlError {}

pub type NlResult<T> = Result<T, NlError>;

/// What podnet needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub master: Option<u32>,
    pub up: bool,
    pub kind: Option<String>,
    /// For a veth: the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
}

/// A route as podnet reads it back (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A netlink socket bound to the network namespace the calling thread was in when it was opened.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> std::io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Received into, never zeroed: a reply fills a page or two of it, and a page never
        // touched costs no page fault (16 of them per socket when the buffer was zeroed).
        Ok(Netlink { sock, seq: 0, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Send one request and collect its replies until the ACK (or DONE for dumps).
    pub(crate) fn request(
        &mut self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        let io_err = |e: std::io::Error| NlError { op: op(), errno: e.raw_os_error().unwrap_or(libc::EIO) };
        self.sock.send(&out, 0).map_err(io_err)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(io_err)?;
            let n = self.buf.len();
            let mut offset = 0;
            while offset < n {
                let chunk = &self.buf[offset..n];
                let len = NetlinkBuffer::new_checked(chunk).map(|b| b.length() as usize).unwrap_or(0);
                if len == 0 || len > chunk.len() {
                    return Err(NlError { op: op(), errno: libc::EBADMSG });
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..len]);
                offset += (len + 3) & !3;
                let Ok(parsed) = parsed else {
                    // A message this crate version cannot decode (a newer kernel attribute) is skipped.
                    continue;
                };
                if parsed.header.sequence_number != self.seq {
                    continue;
                }
                match parsed.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(NlError { op: op(), errno: -code.get() }),
                            None => Ok(replies),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    pub(crate) fn ack(&mut self, op: impl Fn() -> String, msg: RouteNetlinkMessage, flags: u16) -> NlResult<()> {
        self.request(op, msg, NLM_F_ACK | flags).map(|_| ())
    }

    // ---- links ----

    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(|| format!("looking up link {name}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(r) => Ok(r.into_iter().find_map(link_of)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One link by its index (a single reply, not a dump of every link).
    pub fn link_by_index(&mut self, index: u32) -> NlResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(|| format!("looking up link {index}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(r) => Ok(r.into_iter().find_map(link_of)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> NlResult<Vec<Link>> {
        let r =
            self.request(|| "listing links".into(), RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(r.into_iter().filter_map(link_of).collect())
    }

    /// Create a bridge with a fixed MAC: left to itself a bridge takes its lowest port's MAC and
    /// changes it when that port goes, leaving every pod with a stale ARP entry for its gateway.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6], mtu: Option<u32>) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.ack(|| format!("creating bridge {name}"), RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Create a veth pair whose peer is born inside the pod's namespace (one request; no move,
    /// which re-registers the device under the global lock: AWS VPC CNI #3764, Calico #7705).
    /// The host end comes up at creation; the peer cannot (this kernel answers ENOTCONN to a peer
    /// created up in another namespace), so the caller sets it up from inside the pod.
    /// Returns the host end as created (the kernel echoes it), which names the peer's ifindex,
    /// so no lookups follow. One queue pair per end: pods gain nothing from more, and each queue
    /// costs sysfs objects at creation.
    pub fn create_veth(&mut self, spec: &VethSpec) -> NlResult<Link> {
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::NumTxQueues(1));
        peer.attributes.push(LinkAttribute::NumRxQueues(1));
        peer.attributes.push(LinkAttribute::IfName(spec.peer_name.clone()));
        peer.attributes.push(LinkAttribute::NetNsFd(spec.peer_netns_fd));
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(spec.host_name.clone()));
        msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
        msg.attributes.push(LinkAttribute::NumTxQueues(1));
        msg.attributes.push(LinkAttribute::NumRxQueues(1));
        if let Some(mac) = spec.host_mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(master) = spec.master {
            msg.attributes.push(LinkAttribute::Controller(master));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let op = || format!("creating veth {} with peer {} in the pod", spec.host_name, spec.peer_name);
        let replies =
            self.request(op, RouteNetlinkMessage::NewLink(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO)?;
        match replies.into_iter().find_map(link_of).filter(|l| l.peer_index.is_some()) {
            Some(link) => Ok(link),
            // A kernel that does not echo new links: ask.
            None => self.link_by_name(&spec.host_name)?.ok_or_else(|| NlError { op: op(), errno: libc::ENODEV }),
        }
    }

    pub fn set_link_up(&mut self, index: u32) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(|| format!("setting link {index} up"), RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Let a bridge port send frames back out the port they came in on (pod reaching itself via a service).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(on)])),
        ]));
        self.ack(|| format!("setting hairpin mode on link {index}"), RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Delete a link by name; a link already gone is not an error (returns false).
    pub fn delete_link(&mut self, name: &str) -> NlResult<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.ack(|| format!("deleting link {name}"), RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- addresses ----

    /// Add `addr` to a link. `exist_ok` makes a shared address (a bridge gateway) idempotent.
    pub fn add_address(&mut self, index: u32, addr: IpNet, exist_ok: bool) -> NlResult<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr.addr());
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        if let IpNet::V4(n) = addr {
            if n.prefix_len() < 31 {
                msg.attributes.push(AddressAttribute::Broadcast(n.broadcast()));
            }
        } else {
            // Duplicate address detection would hold the address tentative for ~1 s; IPAM already
            // guarantees uniqueness.
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match self.ack(
            || format!("adding address {addr} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if exist_ok && e.is_exists() => Ok(()),
            other => other,
        }
    }

    pub fn addresses(&mut self, index: u32) -> NlResult<Vec<IpNet>> {
        Ok(self.all_addresses()?.into_iter().filter(|(i, _)| *i == index).map(|(_, a)| a).collect())
    }

    /// Every address of every link, with its link's index: one dump.
    pub fn all_addresses(&mut self) -> NlResult<Vec<(u32, IpNet)>> {
        let r = self.request(
            || "listing addresses".into(),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in r {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                let ip = a
                    .attributes
                    .iter()
                    .find_map(|at| match at {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    })
                    .or_else(|| {
                        a.attributes.iter().find_map(|at| match at {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    });
                if let Some(ip) = ip {
                    if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                        out.push((a.header.index, net));
                    }
                }
            }
        }
        Ok(out)
    }

    // ---- routes ----

    /// Add a route in the main table: via `gateway` if given, else directly on link `oif` (scope link).
    pub fn add_route(&mut self, dst: IpNet, gateway: Option<IpAddr>, oif: u32) -> NlResult<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst.addr());
        msg.header.destination_prefix_length = dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        if dst.prefix_len() > 0 {
            msg.attributes.push(RouteAttribute::Destination(route_addr(dst.network())));
        }
        if let Some(gw) = gateway {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(oif));
        self.ack(
            || format!("adding route {dst} via {gateway:?} dev {oif}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Unicast routes of the main table for one family.
    pub fn routes(&mut self, v4: bool) -> NlResult<Vec<RouteEntry>> {
        Ok(self
            .table_routes(v4)?
            .into_iter()
            .filter(|r| r.unicast)
            .map(|r| RouteEntry { dst: r.dst, gateway: r.gateway, oif: r.oif })
            .collect())
    }

    // ---- neighbours ----

    /// A permanent neighbour entry, so the pod never has to resolve its link-local gateway.
    pub fn add_permanent_neighbour(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> NlResult<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(ip);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.ack(
            || format!("adding neighbour {ip} on link {index}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | libc::NLM_F_REPLACE as u16,
        )
    }
}

/// What [`Netlink::create_veth`] creates.
pub struct VethSpec {
    pub host_name: String,
    pub host_mac: Option<[u8; 6]>,
    pub master: Option<u32>,
    pub peer_name: String,
    pub peer_mac: Option<[u8; 6]>,
    pub peer_netns_fd: RawFd,
    pub mtu: u32,
}

pub(crate) fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(crate) fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

pub(crate) fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

pub(crate) fn link_of(m: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(l) = m else { return None };
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        master: None,
        up: l.header.flags.contains(LinkFlags::Up),
        kind: None,
        peer_index: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(m) if m.len() == 6 => link.mac = Some([m[0], m[1], m[2], m[3], m[4], m[5]]),
            LinkAttribute::Mtu(m) => link.mtu = m,
            LinkAttribute::Controller(i) => link.master = Some(i),
            LinkAttribute::Link(i) => link.peer_index = Some(i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}
