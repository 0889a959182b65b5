//! Bringing the kernel to the desired state: the VXLAN device, then routes, forwarding and
//! neighbour entries, each diffed against what the kernel holds. Only what carries podnet's
//! route protocol number (routes) or lives on podnet's VXLAN device (entries) is ever changed;
//! a route to a block that someone else made is left alone and reported.

use crate::desired::Desired;
use podnet_dataplane::netlink::{Link, NlError};
use podnet_dataplane::routes::{OwnedRoute, PODNET_ROUTE_PROTOCOL};
use podnet_dataplane::vxlan::VxlanSpec;
use podnet_dataplane::Netlink;
use std::collections::BTreeSet;
use std::net::IpAddr;

pub use podnet_dataplane::vxlan::VXLAN_DEVICE;
/// VXLAN's outer headers: the device's MTU is the uplink's less this.
pub const VXLAN_OVERHEAD: u32 = 50;

/// What one apply changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub routes_added: usize,
    pub routes_removed: usize,
    pub entries_changed: usize,
    /// Blocks whose destination already has a route podnet did not make.
    pub conflicts: Vec<String>,
}

/// The node's uplink: the link of the default route (or of `--node-ip`) and the node's address.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub link: Link,
    pub ip: IpAddr,
    pub ipv6: Option<IpAddr>,
    pub subnets: Vec<ipnet::IpNet>,
}

/// Find the uplink: the link holding `node_ip` if given, else the default route's link and its
/// first address.
pub fn uplink(nl: &mut Netlink, node_ip: Option<IpAddr>) -> Result<Uplink, String> {
    let err = |e: NlError| e.to_string();
    let links = nl.links().map_err(err)?;
    let mut candidates = Vec::new();
    match node_ip {
        Some(ip) => {
            for l in &links {
                let addrs = nl.addresses(l.index).map_err(err)?;
                if addrs.iter().any(|a| a.addr() == ip) {
                    candidates.push((l.clone(), addrs));
                }
            }
        }
        None => {
            let routes = nl.table_routes(true).map_err(err)?;
            let default = routes.iter().find(|r| r.dst.prefix_len() == 0).and_then(|r| r.oif);
            let Some(oif) = default else {
                return Err("the node has no IPv4 default route to find its address by: pass --node-ip".into());
            };
            let link = links.iter().find(|l| l.index == oif).cloned().ok_or("the default route's link vanished")?;
            let addrs = nl.addresses(oif).map_err(err)?;
            candidates.push((link, addrs));
        }
    }
    let Some((link, addrs)) = candidates.into_iter().next() else {
        return Err(format!(
            "no link of this node holds --node-ip {}",
            node_ip.map(|i| i.to_string()).unwrap_or_default()
        ));
    };
    let global = |v4: bool| {
        addrs
            .iter()
            .map(|a| a.addr())
            .find(|a| a.is_ipv4() == v4 && !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
    };
    let ip =
        node_ip.or_else(|| global(true)).ok_or_else(|| format!("{} has no IPv4 address: pass --node-ip", link.name))?;
    let subnets = addrs.iter().map(|a| a.trunc()).collect();
    Ok(Uplink { link, ip, ipv6: global(false), subnets })
}

/// A MAC for this node's VTEP, fixed by its name (locally administered, unicast): a restarted
/// agent announces the same one, so peers' entries stay right.
pub fn vtep_mac(node: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("podnet-vtep:{node}").as_bytes());
    [(d[0] & 0xfe) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}

/// Make the VXLAN device match `spec`, or remove it when there is none (`--encap none`).
/// Returns its index.
pub fn ensure_vxlan(nl: &mut Netlink, spec: Option<&VxlanSpec>) -> Result<Option<u32>, NlError> {
    let found = nl.vxlan_by_name(VXLAN_DEVICE)?;
    match (spec, found) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            nl.delete_link(VXLAN_DEVICE)?;
            Ok(None)
        }
        (Some(spec), Some(have)) if have.matches(spec) => {
            if have.link.mtu != spec.mtu {
                nl.set_mtu(have.link.index, spec.mtu)?;
            }
            if !have.link.up {
                nl.set_link_up(have.link.index)?;
            }
            Ok(Some(have.link.index))
        }
        (Some(spec), found) => {
            // Another VNI, port, address or uplink: made again (its routes go with it and are
            // put back by this same reconcile).
            if found.is_some() {
                nl.delete_link(VXLAN_DEVICE)?;
            }
            nl.create_vxlan(spec)?;
            let made = nl.vxlan_by_name(VXLAN_DEVICE)?;
            made.map(|v| Some(v.link.index))
                .ok_or(NlError { op: format!("{VXLAN_DEVICE} vanished after creation"), errno: libc::ENODEV })
        }
    }
}

/// The routes podnet owns now (both families).
pub fn owned_routes(nl: &mut Netlink) -> Result<BTreeSet<OwnedRoute>, NlError> {
    let mut out = BTreeSet::new();
    for v4 in [true, false] {
        out.extend(
            nl.table_routes(v4)?.into_iter().filter(|r| r.protocol == PODNET_ROUTE_PROTOCOL).filter_map(|r| r.route),
        );
    }
    Ok(out)
}

/// Apply `desired`: add and replace before removing, so a route that moves (a node going from
/// direct to VXLAN) is never missing; what is already right is not touched.
pub fn apply(nl: &mut Netlink, desired: &Desired, vxlan: Option<u32>) -> Result<Applied, NlError> {
    let mut out = Applied::default();
    let mut table = Vec::new();
    for v4 in [true, false] {
        table.extend(nl.table_routes(v4)?);
    }
    let owned: BTreeSet<OwnedRoute> =
        table.iter().filter(|r| r.protocol == PODNET_ROUTE_PROTOCOL).filter_map(|r| r.route).collect();
    let foreign: BTreeSet<ipnet::IpNet> =
        table.iter().filter(|r| r.protocol != PODNET_ROUTE_PROTOCOL).map(|r| r.dst).collect();
    if let Some(dev) = vxlan {
        let have: BTreeSet<_> = nl.fdb_entries(dev)?.into_iter().collect();
        for e in desired.fdb.difference(&have) {
            tracing::debug!(?e, "adding a forwarding entry");
            nl.replace_fdb(dev, e)?;
            out.entries_changed += 1;
        }
        let have_n: BTreeSet<_> = nl.permanent_neighbours(dev)?.into_iter().collect();
        for e in desired.neighbours.difference(&have_n) {
            tracing::debug!(?e, "adding a neighbour entry");
            nl.add_permanent_neighbour(dev, e.ip, e.mac)?;
            out.entries_changed += 1;
        }
    }
    for (route, _) in desired.routes.iter().filter(|(r, _)| !owned.contains(r)) {
        if foreign.contains(&route.dst) {
            out.conflicts.push(route.dst.to_string());
            continue;
        }
        nl.replace_route(route, PODNET_ROUTE_PROTOCOL)?;
        out.routes_added += 1;
    }
    for route in owned.iter().filter(|r| !desired.routes.contains_key(r)) {
        // A route replaced above in place (same destination) is no longer the stale one.
        if desired.routes.keys().any(|d| d.dst == route.dst) {
            continue;
        }
        nl.delete_route(route, PODNET_ROUTE_PROTOCOL)?;
        out.routes_removed += 1;
    }
    if let Some(dev) = vxlan {
        for e in nl.fdb_entries(dev)?.into_iter().filter(|e| !desired.fdb.contains(e)) {
            tracing::debug!(?e, "removing a forwarding entry");
            nl.delete_fdb(dev, &e)?;
            out.entries_changed += 1;
        }
        for e in nl.permanent_neighbours(dev)?.into_iter().filter(|e| !desired.neighbours.contains(e)) {
            tracing::debug!(?e, "removing a neighbour entry");
            nl.delete_neighbour(dev, e.ip)?;
            out.entries_changed += 1;
        }
    }
    Ok(out)
}
