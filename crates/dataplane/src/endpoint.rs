//! A pod's endpoint: the veth pair, its addresses and routes, for the bridge and routed dataplanes.
//! `create_links` then `configure` build it (`create_links` undoes its own work when a step fails;
//! after a failed `configure` the caller tears the links down); `teardown` is idempotent; `check`
//! lists drift.

use crate::netlink::{format_mac, Link, Netlink, NlError, VethSpec};
use crate::netns::{NetNs, NetNsError};
use crate::routes::DefaultRoute;
use crate::sysctl;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Routed dataplane: the pod's IPv4 gateway, answered by the host veth (proxy ARP, as Calico does).
pub const ROUTED_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Every routed host veth gets this MAC, so the IPv6 gateway is the link-local address derived from it.
pub const ROUTED_HOST_MAC: [u8; 6] = [0xee; 6];
/// fe80::ecee:eeff:feee:eeee, the EUI-64 link-local address of [`ROUTED_HOST_MAC`].
pub const ROUTED_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Pods on a per-node bridge that holds one gateway address per block.
    Bridge { bridge: String, hairpin: bool },
    /// No bridge: /32 (/128) host routes to each pod's veth and a link-local gateway.
    Routed,
}

/// An address for the pod's interface. In bridge mode `gateway` lies inside `address`'s subnet
/// and is put on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub mode: Mode,
    pub host_veth: String,
    pub ifname: String,
    pub mtu: u32,
    /// The pod interface's MAC; the kernel picks one when `None`.
    pub pod_mac: Option<[u8; 6]>,
    pub addresses: Vec<PodAddress>,
}

/// What `configure` built, for the CNI result.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host_veth: String,
    pub host_mac: String,
    pub pod_mac: String,
    pub bridge: Option<(String, String)>,
    /// Routes in the pod: (destination, gateway).
    pub pod_routes: Vec<(IpNet, IpAddr)>,
    /// The pod's gateway per family.
    pub gateways: Vec<IpAddr>,
}

#[derive(Debug)]
pub enum DataplaneError {
    Netns(NetNsError),
    Netlink(NlError),
    Sysctl(String, std::io::Error),
    /// The pod already has an interface of that name.
    IfnameTaken(String),
    /// The host end already exists: this attachment was set up by an earlier ADD.
    HostVethExists(String),
    /// The configured bridge name belongs to a link that is not a bridge.
    NotABridge(String),
    /// A netlink socket could not be opened.
    Socket(std::io::Error),
    /// A netlink socket could not be opened inside the pod's namespace.
    EnterNetns {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    /// A link the kernel just made is not there when looked up.
    Vanished(String),
    /// The addresses to configure cannot be put on this dataplane (no address, a bridge address
    /// without a usable gateway).
    BadAddress(String),
}

impl DataplaneError {
    /// The links belong to an earlier, live ADD of the same attachment: undo nothing of it.
    pub fn is_existing_attachment(&self) -> bool {
        matches!(self, DataplaneError::IfnameTaken(_) | DataplaneError::HostVethExists(_))
    }
}

impl fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataplaneError::Netns(e) => e.fmt(f),
            DataplaneError::Netlink(e) => e.fmt(f),
            DataplaneError::Sysctl(k, e) => write!(f, "setting sysctl {k}: {e}"),
            DataplaneError::IfnameTaken(n) => write!(
                f,
                "the pod already has an interface named {n}; pick another CNI_IFNAME or DEL the old attachment"
            ),
            DataplaneError::HostVethExists(n) => {
                write!(f, "host veth {n} exists: this attachment is already set up; DEL it before adding it again")
            }
            DataplaneError::NotABridge(n) => {
                write!(f, "{n} exists and is not a bridge; set \"bridge\" to another name")
            }
            DataplaneError::Socket(e) => write!(f, "opening a netlink socket: {e}"),
            DataplaneError::EnterNetns { path, err } => write!(f, "opening netlink in {}: {err}", path.display()),
            DataplaneError::Vanished(m) | DataplaneError::BadAddress(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for DataplaneError {}

impl From<NlError> for DataplaneError {
    fn from(e: NlError) -> Self {
        DataplaneError::Netlink(e)
    }
}
impl From<NetNsError> for DataplaneError {
    fn from(e: NetNsError) -> Self {
        DataplaneError::Netns(e)
    }
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn set(key: String, value: &str) -> Result<()> {
    sysctl::ensure(&key, value).map_err(|e| DataplaneError::Sysctl(key, e))
}

/// The host end's name: `pn` + 12 hex digits of SHA-256(containerID:ifname), stable across calls
/// so DEL finds it without state, and at most 15 bytes.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}:{ifname}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("pn{hex}")
}

/// A stable, locally administered unicast MAC for a bridge, derived from its name.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let d = Sha256::digest(format!("podnet-bridge:{name}").as_bytes());
    [(d[0] & 0xfe) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}

/// The MTU pods get when the conflist sets none. On a node that encapsulates (podnetd made
/// `podnet.vxlan`), the device's MTU: the uplink's less VXLAN's headers, so a pod's full-size
/// packet fits once encapsulated. Else the uplink's: the link of the default route, else 1500.
/// Lookups by name and index and one route lookup per family: a dump of every link, or of
/// every route, would grow with the node's pods (a veth each; a route each when routed).
pub fn pod_mtu(nl: &mut Netlink) -> Result<u32> {
    if let Some(vxlan) = nl.link_by_name(crate::vxlan::VXLAN_DEVICE)? {
        return Ok(vxlan.mtu);
    }
    for v4 in [true, false] {
        let oif = match nl.default_route(v4)? {
            DefaultRoute::Via(oif) => Some(oif),
            DefaultRoute::Absent => None,
            DefaultRoute::Unknown => nl.routes(v4)?.into_iter().find(|r| r.dst.prefix_len() == 0).and_then(|r| r.oif),
        };
        if let Some(l) = oif.map(|oif| nl.link_by_index(oif)).transpose()?.flatten() {
            return Ok(l.mtu);
        }
    }
    Ok(1500)
}

fn open_in(netns: &NetNs) -> Result<Netlink> {
    netns
        .run(Netlink::open)
        .and_then(|r| r)
        .map_err(|err| DataplaneError::EnterNetns { path: netns.path().to_path_buf(), err })
}

fn ensure_bridge(nl: &mut Netlink, name: &str, mtu: u32) -> Result<Link> {
    if let Some(l) = nl.link_by_name(name)? {
        if l.kind.as_deref() != Some("bridge") {
            return Err(DataplaneError::NotABridge(name.to_string()));
        }
        if !l.up {
            nl.set_link_up(l.index)?;
        }
        return Ok(l);
    }
    match nl.create_bridge(name, bridge_mac(name), Some(mtu)) {
        Ok(()) => {}
        Err(e) if e.is_exists() => {} // a concurrent ADD made it first
        Err(e) => return Err(e.into()),
    }
    nl.link_by_name(name)?.ok_or_else(|| DataplaneError::Vanished(format!("bridge {name} vanished after creation")))
}

fn enable_forwarding(addresses: &[PodAddress]) -> Result<()> {
    if addresses.iter().any(|a| a.address.addr().is_ipv4()) {
        set("net/ipv4/ip_forward".into(), "1")?;
    }
    if addresses.iter().any(|a| a.address.addr().is_ipv6())
        && sysctl::read("net/ipv6/conf/all/forwarding")
            .map_err(|e| DataplaneError::Sysctl("net/ipv6/conf/all/forwarding".into(), e))?
            != "1"
    {
        keep_accepting_router_advertisements()?;
        set("net/ipv6/conf/all/forwarding".into(), "1")?;
    }
    Ok(())
}

/// With IPv6 forwarding on, an interface with accept_ra=1 stops accepting router advertisements,
/// and a node that learns its IPv6 default route from them loses it when it expires. accept_ra=2
/// keeps accepting them while forwarding, so interfaces (and the default for new ones) that
/// accept them now keep doing so.
fn keep_accepting_router_advertisements() -> Result<()> {
    let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv6/conf") else { return Ok(()) };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "all" || name == "lo" {
            continue;
        }
        let key = format!("net/ipv6/conf/{name}/accept_ra");
        if sysctl::read(&key).ok().as_deref() == Some("1") {
            sysctl::write(&key, "2").map_err(|e| DataplaneError::Sysctl(key, e))?;
        }
    }
    Ok(())
}

/// The veth pair (and bridge) before any address is known: what ADD can build while IPAM works.
pub struct Links {
    pub host: Link,
    pub pod: Link,
    pub bridge: Option<Link>,
    /// A netlink socket inside the pod, for `configure`.
    pub pod_nl: Netlink,
}

/// A MAC for the pod's interface, fixed by its handle so the endpoint record can be written before
/// the interface exists; locally administered, unicast.
pub fn pod_mac(container_id: &str, ifname: &str) -> [u8; 6] {
    let d = Sha256::digest(format!("podnet-pod:{container_id}:{ifname}").as_bytes());
    [(d[0] & 0xfe) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}

/// Create the veth pair with its peer born in the pod (and the bridge, in bridge mode). Addresses
/// are not needed yet, so this can run while IPAM allocates. On failure nothing is left behind.
pub fn create_links(nl: &mut Netlink, netns: &NetNs, spec: &EndpointSpec) -> Result<Links> {
    let mut pod_nl = open_in(netns)?;
    let bridge = match &spec.mode {
        Mode::Bridge { bridge, .. } => Some(ensure_bridge(nl, bridge, spec.mtu)?),
        Mode::Routed => None,
    };
    let host = nl
        .create_veth(&VethSpec {
            host_name: spec.host_veth.clone(),
            host_mac: matches!(spec.mode, Mode::Routed).then_some(ROUTED_HOST_MAC),
            master: bridge.as_ref().map(|b| b.index),
            peer_name: spec.ifname.clone(),
            peer_mac: spec.pod_mac,
            peer_netns_fd: netns.fd(),
            mtu: spec.mtu,
        })
        .map_err(|e| {
            if !e.is_exists() {
                return e.into();
            }
            // EEXIST names no side: look only now, so the common path pays no extra round trip.
            match pod_nl.link_by_name(&spec.ifname) {
                Ok(Some(_)) => DataplaneError::IfnameTaken(spec.ifname.clone()),
                _ => DataplaneError::HostVethExists(spec.host_veth.clone()),
            }
        })?;
    let found = (|| -> Result<Links> {
        // The host end names its peer's ifindex; the pod end's MAC is the one we gave it.
        let pod = match (host.peer_index, spec.pod_mac) {
            (Some(index), Some(mac)) => Link {
                index,
                name: spec.ifname.clone(),
                mac: Some(mac),
                mtu: spec.mtu,
                master: None,
                up: false,
                kind: Some("veth".into()),
                peer_index: Some(host.index),
            },
            _ => pod_nl
                .link_by_name(&spec.ifname)?
                .ok_or_else(|| DataplaneError::Vanished(format!("{} did not appear in the pod", spec.ifname)))?,
        };
        pod_nl.set_link_up(pod.index)?;
        if let Mode::Bridge { hairpin: true, .. } = spec.mode {
            nl.set_hairpin(host.index, true)?;
        }
        Ok(Links { host, pod, bridge, pod_nl })
    })();
    found.inspect_err(|_| {
        let _ = nl.delete_link(&spec.host_veth);
    })
}

/// Put `spec.addresses` on the links: gateways on the bridge, the pod's addresses, routes and
/// neighbours, host routes for the routed dataplane. The caller removes the links on failure.
pub fn configure(nl: &mut Netlink, spec: &EndpointSpec, links: Links) -> Result<Endpoint> {
    if spec.addresses.is_empty() {
        return Err(DataplaneError::BadAddress("no address to configure".into()));
    }
    enable_forwarding(&spec.addresses)?;
    let Links { host, pod, bridge, mut pod_nl } = links;
    match &spec.mode {
        Mode::Bridge { .. } => {
            let br = bridge.as_ref().expect("bridge mode has a bridge");
            for a in &spec.addresses {
                let gw = a.gateway.ok_or_else(|| {
                    DataplaneError::BadAddress(format!("address {} has no gateway for the bridge", a.address))
                })?;
                let gw_net =
                    IpNet::new(gw, a.address.prefix_len()).ok().filter(|n| n.trunc() == a.address.trunc()).ok_or_else(
                        || DataplaneError::BadAddress(format!("gateway {gw} is not inside {}", a.address.trunc())),
                    )?;
                nl.add_address(br.index, gw_net, true)?;
            }
            for a in &spec.addresses {
                pod_nl.add_address(pod.index, a.address, false)?;
            }
        }
        Mode::Routed => {
            let veth = &spec.host_veth;
            if spec.addresses.iter().any(|a| a.address.addr().is_ipv4()) {
                // Answer ARP for the link-local gateway (and anything else) at once: the
                // default proxy_delay holds the first reply back up to 0.8 s.
                set(format!("net/ipv4/conf/{veth}/proxy_arp"), "1")?;
                set(format!("net/ipv4/neigh/{veth}/proxy_delay"), "0")?;
            }
            for a in &spec.addresses {
                let host_route = IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix");
                nl.add_route(host_route, None, host.index)?;
                pod_nl.add_address(pod.index, host_route, false)?;
            }
            for (gw, v4) in [(IpAddr::from(ROUTED_GATEWAY_V4), true), (IpAddr::from(ROUTED_GATEWAY_V6), false)] {
                if !spec.addresses.iter().any(|a| a.address.addr().is_ipv4() == v4) {
                    continue;
                }
                if v4 {
                    pod_nl.add_route(IpNet::new(gw, 32).expect("host prefix"), None, pod.index)?;
                }
                // A permanent neighbour entry: the pod never waits on ARP/NDP for its gateway, and
                // the path works even where proxy ARP would find no route to answer for.
                pod_nl.add_permanent_neighbour(pod.index, gw, ROUTED_HOST_MAC)?;
            }
        }
    }
    podnet_fault::crash_point("add-after-address");
    let pod_routes = planned_routes(&spec.mode, &spec.addresses);
    for (dst, gw) in &pod_routes {
        pod_nl.add_route(*dst, Some(*gw), pod.index)?;
    }
    podnet_fault::crash_point("add-after-routes");
    Ok(Endpoint {
        host_veth: spec.host_veth.clone(),
        host_mac: host.mac.map(|m| format_mac(&m)).unwrap_or_default(),
        pod_mac: pod.mac.map(|m| format_mac(&m)).unwrap_or_default(),
        bridge: bridge.map(|b| (b.name.clone(), b.mac.map(|m| format_mac(&m)).unwrap_or_default())),
        gateways: pod_routes.iter().map(|(_, gw)| *gw).collect(),
        pod_routes,
    })
}

/// The pod's default routes (destination, gateway) for these addresses, one per family:
/// via the block's gateway on the bridge, or via the link-local gateway when routed.
pub fn planned_routes(mode: &Mode, addresses: &[PodAddress]) -> Vec<(IpNet, IpAddr)> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        let Some(a) = addresses.iter().find(|a| a.address.addr().is_ipv4() == v4) else { continue };
        let gw = match (mode, a.gateway) {
            (Mode::Bridge { .. }, Some(g)) => g,
            (Mode::Bridge { .. }, None) => continue,
            (Mode::Routed, _) => {
                if v4 {
                    ROUTED_GATEWAY_V4.into()
                } else {
                    ROUTED_GATEWAY_V6.into()
                }
            }
        };
        out.push((default_route(gw), gw));
    }
    out
}

fn default_route(gw: IpAddr) -> IpNet {
    if gw.is_ipv4() {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    }
}

/// Remove the endpoint: deleting the host end removes the pod end, and its host routes, with it.
/// Returns whether anything was there.
pub fn teardown(nl: &mut Netlink, host_veth: &str) -> Result<bool> {
    Ok(nl.delete_link(host_veth)?)
}

/// Compare the kernel with what `spec` set up; each difference is one line.
pub fn check(nl: &mut Netlink, netns: &NetNs, spec: &EndpointSpec) -> Result<Vec<String>> {
    let mut drift = Vec::new();
    let host = nl.link_by_name(&spec.host_veth)?;
    match (&host, &spec.mode) {
        (None, _) => drift.push(format!("host veth {} is missing", spec.host_veth)),
        (Some(h), Mode::Bridge { bridge, .. }) => {
            let br = nl.link_by_name(bridge)?;
            match br {
                None => drift.push(format!("bridge {bridge} is missing")),
                Some(b) if h.master != Some(b.index) => {
                    drift.push(format!("host veth {} is not attached to bridge {bridge}", spec.host_veth))
                }
                Some(b) => {
                    let have = nl.addresses(b.index)?;
                    for a in &spec.addresses {
                        if let Some(gw) = a.gateway {
                            if !have.iter().any(|n| n.addr() == gw) {
                                drift.push(format!("bridge {bridge} lacks gateway address {gw}"));
                            }
                        }
                    }
                }
            }
        }
        (Some(h), Mode::Routed) => {
            for v4 in [true, false] {
                let routes = nl.routes(v4)?;
                for a in spec.addresses.iter().filter(|a| a.address.addr().is_ipv4() == v4) {
                    let want = IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix");
                    if !routes.iter().any(|r| r.dst == want && r.oif == Some(h.index)) {
                        drift.push(format!("host route {want} dev {} is missing", spec.host_veth));
                    }
                }
            }
        }
    }
    let mut pod_nl = open_in(netns)?;
    let Some(pod) = pod_nl.link_by_name(&spec.ifname)? else {
        drift.push(format!("interface {} is missing in the pod", spec.ifname));
        return Ok(drift);
    };
    let have = pod_nl.addresses(pod.index)?;
    for a in &spec.addresses {
        let want = match spec.mode {
            Mode::Bridge { .. } => a.address,
            Mode::Routed => IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix"),
        };
        if !have.contains(&want) {
            drift.push(format!("address {want} is missing on {} in the pod", spec.ifname));
        }
    }
    for v4 in [true, false] {
        if !spec.addresses.iter().any(|a| a.address.addr().is_ipv4() == v4) {
            continue;
        }
        let routes = pod_nl.routes(v4)?;
        if !routes.iter().any(|r| r.dst.prefix_len() == 0 && r.oif == Some(pod.index)) {
            drift.push(format!("the pod's IPv{} default route via {} is missing", if v4 { 4 } else { 6 }, spec.ifname));
        }
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("pn"));
    }

    #[test]
    fn routed_v6_gateway_is_the_eui64_of_the_host_mac() {
        assert_eq!(ROUTED_GATEWAY_V6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
