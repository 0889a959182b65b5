//! Routes the node agent owns: one per remote block (via a next hop, or onlink through the VXLAN
//! device) and a blackhole per own block. They carry podnet's route protocol number, which is how
//! podnetd tells them from every other route: it changes only routes that carry it. And the
//! node's default route, which gives pods their MTU.

use crate::netlink::{family, ip_of, route_addr, Netlink, NlError, NlResult};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// podnet's route protocol number (`ip route show proto 201`).
pub const PODNET_ROUTE_PROTOCOL: u8 = 201;

/// Where a route sends traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteTarget {
    /// Through `gateway` out of link `oif`; `onlink` when the gateway is not on a subnet of the
    /// link (the VXLAN device's peers).
    Via { gateway: IpAddr, oif: u32, onlink: bool },
    /// Dropped: an own block's unused addresses never leave by the default route.
    Blackhole,
}

/// A route as the agent wants or finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnedRoute {
    pub dst: IpNet,
    pub target: RouteTarget,
}

/// A route of the main table, whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRoute {
    pub dst: IpNet,
    pub protocol: u8,
    pub route: Option<OwnedRoute>,
    /// The kernel's preferred source (set on connected routes).
    pub prefsrc: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// A unicast route (not a blackhole, local, broadcast, ... one).
    pub unicast: bool,
}

/// What a lookup of the default route found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRoute {
    /// The main table's default route leaves by this link.
    Via(u32),
    /// The family has no route off the node.
    Absent,
    /// The lookup matched another route (one covering the probe, another table's, a multipath
    /// or unreachable one): only a listing of the routes can tell.
    Unknown,
}

/// Addresses off every network (documentation ranges): a lookup of one matches the default
/// route, when the node has one and no route of its own covers them (then see [`DefaultRoute::Unknown`]).
const PROBE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const PROBE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// Whether the kernel says `rt` is the main table's (the header's table field only holds ids
/// below 256; the attribute, when present, is the whole id).
fn in_main_table(rt: &RouteMessage) -> bool {
    let table = rt
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(rt.header.table as u32);
    table == RouteHeader::RT_TABLE_MAIN as u32
}

/// One route message as a [`TableRoute`] (None if its destination does not parse).
fn table_route(rt: &RouteMessage, v4: bool) -> Option<TableRoute> {
    let mut dst_ip = if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) };
    let (mut gateway, mut oif, mut prefsrc) = (None, None, None);
    for a in &rt.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_ip = ip_of(d).unwrap_or(dst_ip),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(s) => prefsrc = ip_of(s),
            _ => {}
        }
    }
    let dst = IpNet::new(dst_ip, rt.header.destination_prefix_length).ok()?;
    let route = match (rt.header.kind, gateway, oif) {
        (RouteType::BlackHole, _, _) => Some(OwnedRoute { dst, target: RouteTarget::Blackhole }),
        (RouteType::Unicast, Some(gateway), Some(oif)) => Some(OwnedRoute {
            dst,
            target: RouteTarget::Via { gateway, oif, onlink: rt.header.flags.contains(RouteFlags::Onlink) },
        }),
        _ => None,
    };
    Some(TableRoute {
        dst,
        protocol: protocol_number(rt.header.protocol),
        route,
        prefsrc,
        gateway,
        oif,
        unicast: rt.header.kind == RouteType::Unicast,
    })
}

fn protocol_number(p: RouteProtocol) -> u8 {
    u8::from(p)
}

impl Netlink {
    /// Every route of the main table for one family (any protocol and type).
    pub fn table_routes(&mut self, v4: bool) -> NlResult<Vec<TableRoute>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let replies = self.request(|| "listing routes".into(), RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in replies {
            let RouteNetlinkMessage::NewRoute(rt) = m else { continue };
            if !in_main_table(&rt) {
                continue;
            }
            out.extend(table_route(&rt, v4));
        }
        Ok(out)
    }

    /// The default route of one family, by one route lookup (the route itself: RTM_F_FIB_MATCH)
    /// instead of a listing of every route, which grows with the node's pods.
    pub fn default_route(&mut self, v4: bool) -> NlResult<DefaultRoute> {
        let probe = if v4 { IpAddr::V4(PROBE_V4) } else { IpAddr::V6(PROBE_V6) };
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(probe);
        msg.header.destination_prefix_length = if v4 { 32 } else { 128 };
        msg.header.flags = RouteFlags::FibMatch;
        msg.attributes.push(RouteAttribute::Destination(route_addr(probe)));
        let op = || format!("looking up the route to {probe}");
        let reply = match self.request(op, RouteNetlinkMessage::GetRoute(msg), 0) {
            Ok(replies) => replies.into_iter().next(),
            // No route matches at all: there is no default route.
            Err(e) if e.errno == libc::ENETUNREACH => return Ok(DefaultRoute::Absent),
            // A matching route that sends nowhere (unreachable, prohibit, blackhole) may be a
            // specific one in front of a default route.
            Err(_) => return Ok(DefaultRoute::Unknown),
        };
        let Some(RouteNetlinkMessage::NewRoute(rt)) = reply else { return Ok(DefaultRoute::Unknown) };
        Ok(match table_route(&rt, v4) {
            Some(TableRoute { dst, oif: Some(oif), unicast: true, .. })
                if dst.prefix_len() == 0 && in_main_table(&rt) =>
            {
                DefaultRoute::Via(oif)
            }
            _ => DefaultRoute::Unknown,
        })
    }

    /// Add `route`, or replace the route to its destination in one request (no moment without
    /// one), tagged with `protocol`.
    pub fn replace_route(&mut self, route: &OwnedRoute, protocol: u8) -> NlResult<()> {
        let msg = route_message(route, protocol);
        let op = || format!("replacing route {route:?}");
        self.ack(op, RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Delete `route` (only as described: protocol, destination and target must match). A route
    /// already gone is not an error.
    pub fn delete_route(&mut self, route: &OwnedRoute, protocol: u8) -> NlResult<()> {
        let msg = route_message(route, protocol);
        match self.ack(|| format!("deleting route {route:?}"), RouteNetlinkMessage::DelRoute(msg), 0) {
            Err(e) if e.is_not_found() || e.errno == libc::ESRCH => Ok(()),
            other => other,
        }
    }
}

fn route_message(route: &OwnedRoute, protocol: u8) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(route.dst.addr());
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(protocol);
    if route.dst.prefix_len() > 0 {
        msg.attributes.push(RouteAttribute::Destination(route_addr(route.dst.network())));
    }
    match route.target {
        RouteTarget::Blackhole => {
            msg.header.kind = RouteType::BlackHole;
            msg.header.scope = RouteScope::Universe;
        }
        RouteTarget::Via { gateway, oif, onlink } => {
            msg.header.kind = RouteType::Unicast;
            msg.header.scope = RouteScope::Universe;
            if onlink {
                msg.header.flags = RouteFlags::Onlink;
            }
            if gateway.is_ipv4() == route.dst.addr().is_ipv4() {
                msg.attributes.push(RouteAttribute::Gateway(route_addr(gateway)));
            }
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
    }
    msg
}

impl From<NlError> for std::io::Error {
    fn from(e: NlError) -> std::io::Error {
        std::io::Error::new(std::io::Error::from_raw_os_error(e.errno).kind(), e.to_string())
    }
}
