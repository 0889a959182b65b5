//! Choosing a free address: pure logic, no I/O. A [`Span`] is where a pod's address may come from
//! (a block, a range, or a set of addresses a source was given) and what inside it is reserved;
//! [`Span::pick`] walks it round-robin from a cursor.

use crate::addr::{bounds, from_u128, max_prefix, to_u128};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// The dataplane a network's pods use, as far as addresses care (README: "Reserved addresses").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    /// A bridge per node holding a gateway address per block (also podnet-ipam exec'd by other plugins).
    Bridge,
    /// Host routes per pod and a link-local gateway.
    Routed,
}

/// Which addresses of an overlay block the dataplane keeps for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Bridge dataplane (and podnet-ipam exec'd by other plugins): the block is a subnet on the bridge,
    /// so its network address, its first address (the gateway) and, for IPv4, its broadcast are kept.
    GatewayPerBlock,
    /// Routed dataplane: pods get /32 (/128) host routes and a link-local gateway; every address is usable.
    None,
}

impl Reservation {
    /// The rule the allocator, `ipam show` and the planner all use.
    pub fn for_dataplane(dataplane: Dataplane) -> Reservation {
        match dataplane {
            Dataplane::Bridge => Reservation::GatewayPerBlock,
            Dataplane::Routed => Reservation::None,
        }
    }
}

/// The addresses a span may hand out, before reservations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// Every address from `first` to `last`.
    Range { first: IpAddr, last: IpAddr },
    /// Exactly these (sorted, one family): e.g. the secondary addresses a NIC was given.
    Set(Vec<IpAddr>),
}

/// Where addresses come from, minus reserved addresses and prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The subnet the span lies in: a block, or a range pool's CIDR.
    pub subnet: IpNet,
    pub addresses: Addresses,
    /// Never handed out (network, broadcast, gateway, `exclude[]`).
    pub reserved: Vec<IpNet>,
    /// Gateway for pods of this span, if the dataplane uses one inside the subnet.
    pub gateway: Option<IpAddr>,
    /// Prefix length configured on the pod's interface.
    pub pod_prefix_len: u8,
}

impl Span {
    /// An overlay block under `reservation`.
    pub fn for_block(block: IpNet, reservation: Reservation) -> Span {
        let v4 = block.addr().is_ipv4();
        let (lo, hi) = bounds(block);
        let addresses = Addresses::Range { first: block.network(), last: from_u128(hi, v4) };
        match reservation {
            Reservation::None => {
                Span { subnet: block, addresses, reserved: Vec::new(), gateway: None, pod_prefix_len: max_prefix(v4) }
            }
            Reservation::GatewayPerBlock => {
                let gw = from_u128(lo + 1, v4);
                let mut reserved = vec![host(block.network()), host(gw)];
                if v4 {
                    reserved.push(host(block.broadcast()));
                }
                Span { subnet: block, addresses, reserved, gateway: Some(gw), pod_prefix_len: block.prefix_len() }
            }
        }
    }

    /// The first address a range span could hand out (for a set: its lowest).
    pub fn first(&self) -> Option<IpAddr> {
        match &self.addresses {
            Addresses::Range { first, .. } => Some(*first),
            Addresses::Set(s) => s.first().copied(),
        }
    }

    fn is_v4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Whether `ip` is inside the span and not reserved.
    pub fn usable(&self, ip: IpAddr) -> bool {
        let inside = match &self.addresses {
            Addresses::Range { first, last } => {
                let v = to_u128(ip);
                ip.is_ipv4() == self.is_v4() && v >= to_u128(*first) && v <= to_u128(*last)
            }
            Addresses::Set(s) => {
                s.binary_search_by_key(&to_u128(ip), |a| to_u128(*a)).is_ok() && ip.is_ipv4() == self.is_v4()
            }
        };
        inside && !self.reserved.iter().any(|r| r.contains(&ip))
    }

    /// Addresses that could ever be handed out (for capacity figures).
    pub fn capacity(&self) -> u128 {
        let (lo, hi) = match &self.addresses {
            Addresses::Range { first, last } => (to_u128(*first), to_u128(*last)),
            Addresses::Set(s) => return s.iter().filter(|ip| self.usable(**ip)).count() as u128,
        };
        let mut n = hi - lo + 1;
        let mut seen: Vec<IpNet> = Vec::new();
        for r in &self.reserved {
            if seen.iter().any(|s| s.contains(r)) {
                continue;
            }
            seen.push(*r);
            let (rlo, rhi) = bounds(*r);
            let (a, b) = (rlo.max(lo), rhi.min(hi));
            if a <= b {
                n -= b - a + 1;
            }
        }
        n
    }

    /// The first free address after `cursor` (wrapping), so a just-freed address is reused last.
    /// Reserved prefixes are skipped whole, so a large `exclude` costs one step, not one per address.
    pub fn pick(&self, used: &HashSet<IpAddr>, cursor: Option<IpAddr>) -> Option<IpAddr> {
        match &self.addresses {
            Addresses::Range { first, last } => {
                let v4 = self.is_v4();
                let (lo, hi) = (to_u128(*first), to_u128(*last));
                let start = match cursor.map(to_u128) {
                    Some(c) if c >= lo && c < hi => c + 1,
                    _ => lo,
                };
                self.scan(start, hi, v4, used).or_else(|| {
                    if start > lo {
                        self.scan(lo, start - 1, v4, used)
                    } else {
                        None
                    }
                })
            }
            Addresses::Set(set) => {
                let free = |ip: &&IpAddr| !used.contains(*ip) && !self.reserved.iter().any(|r| r.contains(*ip));
                let after = cursor.map(to_u128);
                let later = set.iter().filter(|ip| after.is_none_or(|c| to_u128(**ip) > c)).find(free);
                later.or_else(|| set.iter().find(free)).copied()
            }
        }
    }

    fn scan(&self, mut v: u128, hi: u128, v4: bool, used: &HashSet<IpAddr>) -> Option<IpAddr> {
        loop {
            if v > hi {
                return None;
            }
            let ip = from_u128(v, v4);
            if let Some(r) = self.reserved.iter().find(|r| r.contains(&ip)) {
                v = bounds(*r).1.checked_add(1)?;
                continue;
            }
            if !used.contains(&ip) {
                return Some(ip);
            }
            v = v.checked_add(1)?;
        }
    }
}

pub(crate) fn host(ip: IpAddr) -> IpNet {
    IpNet::new(ip, max_prefix(ip.is_ipv4())).expect("host prefix")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ips: &[&str]) -> HashSet<IpAddr> {
        ips.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn bridge_blocks_keep_network_gateway_broadcast() {
        let s = Span::for_block("10.244.1.0/24".parse().unwrap(), Reservation::GatewayPerBlock);
        assert_eq!(s.gateway, Some("10.244.1.1".parse().unwrap()));
        assert_eq!(s.pick(&set(&[]), None), Some("10.244.1.2".parse().unwrap()));
        assert_eq!(s.capacity(), 253);
        assert!(!s.usable("10.244.1.255".parse().unwrap()));
        let s6 = Span::for_block("fd00::100/120".parse().unwrap(), Reservation::GatewayPerBlock);
        assert_eq!(s6.capacity(), 254);
        assert_eq!(s6.pick(&set(&[]), None), Some("fd00::102".parse().unwrap()));
    }

    #[test]
    fn routed_blocks_use_every_address() {
        let s = Span::for_block("10.244.1.0/30".parse().unwrap(), Reservation::None);
        assert_eq!(s.capacity(), 4);
        assert_eq!(s.pod_prefix_len, 32);
        let used = set(&["10.244.1.0", "10.244.1.1", "10.244.1.2"]);
        assert_eq!(s.pick(&used, None), Some("10.244.1.3".parse().unwrap()));
        let all = set(&["10.244.1.0", "10.244.1.1", "10.244.1.2", "10.244.1.3"]);
        assert_eq!(s.pick(&all, None), None);
    }

    #[test]
    fn round_robin_wraps_and_skips_large_excludes() {
        let mut s = Span::for_block("10.0.0.0/8".parse().unwrap(), Reservation::GatewayPerBlock);
        s.reserved.push("10.0.0.0/9".parse().unwrap());
        assert_eq!(s.pick(&set(&[]), None), Some("10.128.0.0".parse().unwrap()));
        let small = Span::for_block("10.1.0.0/29".parse().unwrap(), Reservation::GatewayPerBlock);
        assert_eq!(small.pick(&set(&[]), Some("10.1.0.4".parse().unwrap())), Some("10.1.0.5".parse().unwrap()));
        assert_eq!(
            small.pick(&set(&["10.1.0.6"]), Some("10.1.0.5".parse().unwrap())),
            Some("10.1.0.2".parse().unwrap())
        );
        assert_eq!(small.pick(&set(&[]), Some("10.9.9.9".parse().unwrap())), Some("10.1.0.2".parse().unwrap()));
    }

    #[test]
    fn a_set_hands_out_exactly_its_members_round_robin() {
        let members: Vec<IpAddr> = ["10.5.0.4", "10.5.0.9", "10.5.0.200"].iter().map(|s| s.parse().unwrap()).collect();
        let mut s = Span {
            subnet: "10.5.0.0/24".parse().unwrap(),
            addresses: Addresses::Set(members.clone()),
            reserved: vec![host("10.5.0.1".parse().unwrap())],
            gateway: Some("10.5.0.1".parse().unwrap()),
            pod_prefix_len: 24,
        };
        assert_eq!(s.capacity(), 3);
        assert!(s.usable(members[1]) && !s.usable("10.5.0.5".parse().unwrap()));
        assert_eq!(s.pick(&set(&[]), Some(members[0])), Some(members[1]));
        assert_eq!(s.pick(&set(&["10.5.0.200"]), Some(members[1])), Some(members[0]), "wraps");
        s.reserved.push(host(members[0]));
        assert_eq!(s.capacity(), 2);
        assert_eq!(s.pick(&set(&["10.5.0.9", "10.5.0.200"]), None), None);
    }

    #[test]
    fn never_hands_out_reserved_or_used_exhaustive_small_blocks() {
        for len in 24..=30u8 {
            for res in [Reservation::GatewayPerBlock, Reservation::None] {
                let block: IpNet = format!("192.168.7.0/{len}").parse().unwrap();
                let s = Span::for_block(block, res);
                let mut used = HashSet::new();
                let mut cursor = None;
                while let Some(ip) = s.pick(&used, cursor) {
                    assert!(s.usable(ip), "{ip} in {block}");
                    assert!(used.insert(ip), "{ip} handed out twice");
                    cursor = Some(ip);
                }
                assert_eq!(used.len() as u128, s.capacity(), "{block} {res:?}");
            }
        }
    }

    #[test]
    fn the_dataplane_decides_the_reservation() {
        assert_eq!(Reservation::for_dataplane(Dataplane::Bridge), Reservation::GatewayPerBlock);
        assert_eq!(Reservation::for_dataplane(Dataplane::Routed), Reservation::None);
    }
}
