//! Links between lab namespaces, through netlink (no `ip` commands).

use crate::Netns;
use ipnet::IpNet;
use podnet_dataplane::netlink::{NlError, VethSpec};
use podnet_dataplane::Netlink;
use std::net::IpAddr;

fn nl_err(e: NlError) -> std::io::Error {
    std::io::Error::new(std::io::Error::from_raw_os_error(e.errno).kind(), e.to_string())
}

/// Run netlink work inside `ns`.
pub fn with_netlink<T: Send>(
    ns: &Netns,
    f: impl FnOnce(&mut Netlink) -> Result<T, NlError> + Send,
) -> std::io::Result<T> {
    ns.run(|| -> std::io::Result<T> {
        let mut nl = Netlink::open()?;
        f(&mut nl).map_err(nl_err)
    })?
}

/// A veth pair: `name` in `a` (attached to bridge `master` there, if given), `peer` in `b`, both up.
pub fn veth(a: &Netns, name: &str, master: Option<&str>, b: &Netns, peer: &str, mtu: u32) -> std::io::Result<()> {
    let peer_fd = b.fd();
    with_netlink(a, |nl| {
        let master = match master {
            Some(m) => Some(
                nl.link_by_name(m)?.ok_or(NlError { op: format!("looking up bridge {m}"), errno: libc::ENODEV })?.index,
            ),
            None => None,
        };
        let spec = VethSpec {
            host_name: name.to_string(),
            host_mac: None,
            master,
            peer_name: peer.to_string(),
            peer_mac: None,
            peer_netns_fd: peer_fd,
            mtu,
        };
        nl.create_veth(&spec).map(|_| ())
    })?;
    set_up(b, peer)
}

pub fn set_up(ns: &Netns, dev: &str) -> std::io::Result<()> {
    with_netlink(ns, |nl| {
        let link = nl.link_by_name(dev)?.ok_or(NlError { op: format!("looking up {dev}"), errno: libc::ENODEV })?;
        nl.set_link_up(link.index)
    })
}

/// A bridge, up.
pub fn bridge(ns: &Netns, name: &str) -> std::io::Result<()> {
    with_netlink(ns, |nl| nl.create_bridge(name, podnet_dataplane::endpoint::bridge_mac(name), None))
}

pub fn add_address(ns: &Netns, dev: &str, addr: IpNet) -> std::io::Result<()> {
    with_netlink(ns, |nl| {
        let link = nl.link_by_name(dev)?.ok_or(NlError { op: format!("looking up {dev}"), errno: libc::ENODEV })?;
        nl.add_address(link.index, addr, false)
    })
}

/// A route to `dst` via `gateway` (or on-link) out of `dev`.
pub fn add_route(ns: &Netns, dst: IpNet, gateway: Option<IpAddr>, dev: &str) -> std::io::Result<()> {
    with_netlink(ns, |nl| {
        let link = nl.link_by_name(dev)?.ok_or(NlError { op: format!("looking up {dev}"), errno: libc::ENODEV })?;
        nl.add_route(dst, gateway, link.index)
    })
}

/// Switch IP forwarding on inside `ns` (a router, or a node that routes for its pods).
pub fn enable_forwarding(ns: &Netns) -> std::io::Result<()> {
    ns.run(|| {
        podnet_dataplane::sysctl::write("net/ipv4/ip_forward", "1")?;
        podnet_dataplane::sysctl::write("net/ipv6/conf/all/forwarding", "1")
    })?
}
