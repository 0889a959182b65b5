//! Choosing a free address: pure logic, no I/O. A [`Span`] is where addresses may come from (a block
//! or a range) and what inside it is reserved; [`Span::pick`] walks it round-robin from a cursor.

use crate::addr::{bounds, from_u128, max_prefix, to_u128};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// Which addresses of an overlay block the dataplane keeps for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Bridge dataplane (and podnet-ipam exec'd by other plugins): the block is a subnet on the bridge,
    /// so its network address, its first address (the gateway) and, for IPv4, its broadcast are kept.
    GatewayPerBlock,
    /// Routed dataplane: pods get /32 (/128) host routes and a link-local gateway; every address is usable.
    None,
}

/// A contiguous stretch of addresses to allocate from, minus reserved addresses and prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The subnet the span lies in: a block, or a range pool's CIDR.
    pub subnet: IpNet,
    pub first: IpAddr,
    pub last: IpAddr,
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
        match reservation {
            Reservation::None => Span {
                subnet: block,
                first: block.network(),
                last: block.broadcast(),
                reserved: Vec::new(),
                gateway: None,
                pod_prefix_len: max_prefix(v4),
            },
            Reservation::GatewayPerBlock => {
                let gw = from_u128(lo + 1, v4);
                let mut reserved = vec![host(block.network()), host(gw)];
                if v4 {
                    reserved.push(host(block.broadcast()));
                }
                Span {
                    subnet: block,
                    first: block.network(),
                    last: from_u128(hi, v4),
                    reserved,
                    gateway: Some(gw),
                    pod_prefix_len: block.prefix_len(),
                }
            }
        }
    }

    /// Whether `ip` is inside the span and not reserved.
    pub fn usable(&self, ip: IpAddr) -> bool {
        let v = to_u128(ip);
        ip.is_ipv4() == self.first.is_ipv4()
            && v >= to_u128(self.first)
            && v <= to_u128(self.last)
            && !self.reserved.iter().any(|r| r.contains(&ip))
    }

    /// Addresses that could ever be handed out (for capacity figures).
    pub fn capacity(&self) -> u128 {
        let (lo, hi) = (to_u128(self.first), to_u128(self.last));
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
        let v4 = self.first.is_ipv4();
        let (lo, hi) = (to_u128(self.first), to_u128(self.last));
        let start = match cursor.map(to_u128) {
            Some(c) if c >= lo && c < hi => c + 1,
            _ => lo,
        };
        self.scan(start, hi, v4, used).or_else(|| if start > lo { self.scan(lo, start - 1, v4, used) } else { None })
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

fn host(ip: IpAddr) -> IpNet {
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
}
