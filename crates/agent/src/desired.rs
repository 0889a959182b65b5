//! What the node's kernel should hold, computed from the cluster's leases and live nodes alone
//! (pure: no I/O, unit-tested): one route per remote block, never per pod; for peers reached
//! over VXLAN their forwarding and neighbour entries; a blackhole per own block in the routed
//! dataplane.

use ipnet::IpNet;
use podnet_dataplane::neigh::NeighbourEntry;
use podnet_dataplane::routes::{OwnedRoute, RouteTarget};
use podnet_ipam::{BlockLease, Dataplane, NodeRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

/// How this node reaches other nodes' blocks (`--encap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Direct routes via the other node's address: it must be on a subnet of this node.
    None,
    /// Every other node through the VXLAN device.
    Vxlan,
    /// Direct where the other node is on a subnet of this node, VXLAN elsewhere (Calico's
    /// CrossSubnet).
    Auto,
}

impl Encap {
    pub fn as_str(self) -> &'static str {
        match self {
            Encap::None => "none",
            Encap::Vxlan => "vxlan",
            Encap::Auto => "auto",
        }
    }
    /// Whether this node keeps a VXLAN device (so other nodes can reach it through one).
    pub fn has_vxlan(self) -> bool {
        self != Encap::None
    }
}

/// What this node knows about itself.
#[derive(Debug, Clone)]
pub struct Me {
    pub node: String,
    pub encap: Encap,
    pub dataplane: Dataplane,
    /// The subnets of this node's uplink: peers inside one are reached directly.
    pub connected: Vec<IpNet>,
    pub uplink: u32,
    /// The VXLAN device's index, once it exists.
    pub vxlan: Option<u32>,
}

/// How a route reaches its block, for the `podnet_routes{kind}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    Direct,
    Vxlan,
    Blackhole,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Direct => "direct",
            RouteKind::Vxlan => "vxlan",
            RouteKind::Blackhole => "blackhole",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<OwnedRoute, RouteKind>,
    /// On the VXLAN device: a peer's VTEP MAC goes to the peer's address.
    pub fdb: BTreeSet<NeighbourEntry>,
    /// On the VXLAN device: a peer's VTEP next hop resolves to its VTEP MAC.
    pub neighbours: BTreeSet<NeighbourEntry>,
    /// Live nodes with blocks this node cannot reach with its `--encap`.
    pub unreachable: BTreeSet<String>,
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect::<Result<_, _>>().ok()?;
    parts.try_into().ok()
}

/// The IPv6 link-local address of a MAC (EUI-64): a peer's VTEP next hop for IPv6 blocks.
pub fn link_local(mac: [u8; 6]) -> IpAddr {
    let b = [mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]];
    let seg = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, seg(0), seg(2), seg(4), seg(6)))
}

/// The kernel state for `leases` given the `live` nodes (dead nodes' blocks get no route).
pub fn desired(me: &Me, leases: &[BlockLease], live: &[NodeRecord]) -> Desired {
    let mut out = Desired::default();
    let nodes: BTreeMap<&str, &NodeRecord> = live.iter().map(|n| (n.node.as_str(), n)).collect();
    for lease in leases {
        if lease.node == me.node {
            if me.dataplane == Dataplane::Routed {
                out.routes
                    .insert(OwnedRoute { dst: lease.block, target: RouteTarget::Blackhole }, RouteKind::Blackhole);
            }
            continue;
        }
        let Some(peer) = nodes.get(lease.node.as_str()) else { continue };
        let v4 = lease.block.addr().is_ipv4();
        let direct_hop = if v4 {
            Some(peer.ip).filter(IpAddr::is_ipv4)
        } else {
            peer.ipv6.or(Some(peer.ip).filter(IpAddr::is_ipv6))
        };
        let connected = direct_hop.filter(|hop| me.connected.iter().any(|n| n.contains(hop)));
        let vtep = peer.vtep_mac.as_deref().and_then(parse_mac).zip(me.vxlan);
        let via_vxlan = match me.encap {
            Encap::None => false,
            Encap::Vxlan => true,
            Encap::Auto => connected.is_none(),
        };
        match (via_vxlan, connected, vtep) {
            (false, Some(hop), _) => {
                let route = OwnedRoute {
                    dst: lease.block,
                    target: RouteTarget::Via { gateway: hop, oif: me.uplink, onlink: false },
                };
                out.routes.insert(route, RouteKind::Direct);
            }
            (true, _, Some((mac, dev))) if peer.ip.is_ipv4() => {
                // Flannel's scheme: the peer's VTEP address (v4; v6: the link-local address of its
                // VTEP MAC) is the next hop onlink through the device, it resolves to the VTEP MAC,
                // and the MAC is sent to the peer's own address.
                let hop = if v4 { peer.vtep_ip.filter(IpAddr::is_ipv4).unwrap_or(peer.ip) } else { link_local(mac) };
                let route =
                    OwnedRoute { dst: lease.block, target: RouteTarget::Via { gateway: hop, oif: dev, onlink: true } };
                out.routes.insert(route, RouteKind::Vxlan);
                out.neighbours.insert(NeighbourEntry { ip: hop, mac });
                out.fdb.insert(NeighbourEntry { ip: peer.ip, mac });
            }
            _ => {
                out.unreachable.insert(peer.node.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(block: &str, node: &str) -> BlockLease {
        BlockLease { block: block.parse().unwrap(), pool: "p".into(), node: node.into(), leased_at: String::new() }
    }

    fn node(name: &str, ip: &str, vtep_mac: Option<&str>) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            ip: ip.parse().unwrap(),
            ipv6: None,
            encap: "auto".into(),
            vtep_mac: vtep_mac.map(str::to_string),
            vtep_ip: Some(ip.parse().unwrap()),
            started_at: String::new(),
            heartbeat_at: None,
        }
    }

    fn me(encap: Encap, dataplane: Dataplane) -> Me {
        Me {
            node: "a".into(),
            encap,
            dataplane,
            connected: vec!["192.168.10.0/24".parse().unwrap()],
            uplink: 2,
            vxlan: encap.has_vxlan().then_some(9),
        }
    }

    fn routes(d: &Desired) -> Vec<(String, RouteKind)> {
        d.routes.iter().map(|(r, k)| (format!("{} {:?}", r.dst, r.target), *k)).collect()
    }

    #[test]
    fn none_routes_directly_to_nodes_on_a_shared_subnet_and_counts_the_rest() {
        let leases = [
            lease("10.244.0.0/24", "a"),
            lease("10.244.1.0/24", "b"),
            lease("10.244.2.0/24", "c"),
            lease("10.244.3.0/24", "b"),
        ];
        let live = [node("b", "192.168.10.3", None), node("c", "192.168.20.4", None)];
        let d = desired(&me(Encap::None, Dataplane::Bridge), &leases, &live);
        assert_eq!(
            routes(&d),
            [
                ("10.244.1.0/24 Via { gateway: 192.168.10.3, oif: 2, onlink: false }".to_string(), RouteKind::Direct),
                ("10.244.3.0/24 Via { gateway: 192.168.10.3, oif: 2, onlink: false }".to_string(), RouteKind::Direct),
            ],
            "one route per remote block; own blocks need none on a bridge"
        );
        assert_eq!(d.unreachable.iter().collect::<Vec<_>>(), ["c"]);
        assert!(d.fdb.is_empty() && d.neighbours.is_empty());
    }

    #[test]
    fn vxlan_goes_through_the_device_with_fdb_and_neighbour_entries() {
        let leases = [lease("10.244.1.0/24", "b"), lease("fd00:244::100/120", "b")];
        let live = [node("b", "192.168.10.3", Some("02:00:00:00:00:0b"))];
        let d = desired(&me(Encap::Vxlan, Dataplane::Bridge), &leases, &live);
        let mac = [2, 0, 0, 0, 0, 0x0b];
        assert_eq!(
            routes(&d),
            [
                ("10.244.1.0/24 Via { gateway: 192.168.10.3, oif: 9, onlink: true }".to_string(), RouteKind::Vxlan),
                (
                    "fd00:244::100/120 Via { gateway: fe80::ff:fe00:b, oif: 9, onlink: true }".to_string(),
                    RouteKind::Vxlan
                ),
            ]
        );
        assert_eq!(d.fdb.iter().collect::<Vec<_>>(), [&NeighbourEntry { ip: "192.168.10.3".parse().unwrap(), mac }]);
        assert_eq!(d.neighbours.len(), 2, "each family's next hop resolves to the VTEP MAC");
        // A peer with no VTEP (its --encap is none) cannot be reached over VXLAN.
        let d = desired(&me(Encap::Vxlan, Dataplane::Bridge), &leases[..1], &[node("b", "192.168.10.3", None)]);
        assert!(d.routes.is_empty() && d.unreachable.contains("b"));
    }

    #[test]
    fn auto_is_direct_on_a_shared_subnet_and_vxlan_across_and_dead_nodes_get_nothing() {
        let leases = [lease("10.244.1.0/24", "b"), lease("10.244.2.0/24", "c"), lease("10.244.9.0/24", "dead")];
        let live = [
            node("b", "192.168.10.3", Some("02:00:00:00:00:0b")),
            node("c", "192.168.20.4", Some("02:00:00:00:00:0c")),
        ];
        let d = desired(&me(Encap::Auto, Dataplane::Bridge), &leases, &live);
        let kinds: Vec<RouteKind> = d.routes.values().copied().collect();
        assert_eq!(kinds, [RouteKind::Direct, RouteKind::Vxlan]);
        assert!(d.unreachable.is_empty());
        assert!(!d.routes.keys().any(|r| r.dst.to_string() == "10.244.9.0/24"), "a dead node's block has no route");
    }

    #[test]
    fn the_routed_dataplane_blackholes_its_own_blocks() {
        let leases = [lease("10.244.0.0/24", "a"), lease("10.244.5.0/24", "a")];
        let d = desired(&me(Encap::None, Dataplane::Routed), &leases, &[]);
        assert_eq!(d.routes.values().filter(|k| **k == RouteKind::Blackhole).count(), 2);
    }

    #[test]
    fn macs_and_link_locals() {
        assert_eq!(parse_mac("02:AB:cd:00:00:01"), Some([2, 0xab, 0xcd, 0, 0, 1]));
        assert_eq!(parse_mac("02:ab"), None);
        assert_eq!(link_local([0xee; 6]).to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
