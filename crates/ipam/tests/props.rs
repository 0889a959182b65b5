//! Property tests: the allocator and block arithmetic, IPv4 and IPv6, and allocate/release
//! sequences on a real store never hand one address to two handles.

use ipnet::IpNet;
use podnet_ipam::addr::{block_count, bounds, from_u128, net_from_file_name, net_to_file_name, nth_block};
use podnet_ipam::{Handle, Ipam, IpamConfig, IpamError, PodInfo, Reservation, Span};
use proptest::prelude::*;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A block: IPv4 /24../32 or IPv6 /120../128, at a random place.
fn block() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 24u8..=32).prop_map(|(a, len)| IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap().trunc()),
        (any::<u128>(), 120u8..=128)
            .prop_map(|(a, len)| IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len).unwrap().trunc()),
    ]
}

fn reservation() -> impl Strategy<Value = Reservation> {
    prop_oneof![Just(Reservation::GatewayPerBlock), Just(Reservation::None)]
}

proptest! {
    #[test]
    fn pick_never_hands_out_a_reserved_or_used_address(block in block(), res in reservation(), used_idx in proptest::collection::vec(any::<u8>(), 0..40), cursor in any::<u8>()) {
        let span = Span::for_block(block, res);
        let (lo, hi) = bounds(block);
        let at = |i: u8| from_u128(lo + (u128::from(i) % (hi - lo + 1)), block.addr().is_ipv4());
        let used: HashSet<IpAddr> = used_idx.into_iter().map(at).collect();
        if let Some(ip) = span.pick(&used, Some(at(cursor))) {
            prop_assert!(block.contains(&ip));
            prop_assert!(span.usable(ip));
            prop_assert!(!used.contains(&ip));
            if res == Reservation::GatewayPerBlock {
                prop_assert_ne!(ip, block.network());
                prop_assert_ne!(Some(ip), span.gateway);
                if block.addr().is_ipv4() {
                    prop_assert_ne!(ip, block.broadcast());
                }
            }
        }
    }

    #[test]
    fn allocating_until_full_gives_exactly_the_capacity_once_each(block in block(), res in reservation()) {
        let span = Span::for_block(block, res);
        let mut used = HashSet::new();
        let mut cursor = None;
        while let Some(ip) = span.pick(&used, cursor) {
            prop_assert!(used.insert(ip), "{} handed out twice", ip);
            cursor = Some(ip);
        }
        prop_assert_eq!(used.len() as u128, span.capacity());
    }

    #[test]
    fn blocks_tile_their_pool(v4 in any::<bool>(), base in any::<u128>(), shrink in 0u8..=12, extra in 0u8..=6) {
        let (max, base) = if v4 { (32u8, u128::from(base as u32)) } else { (128u8, base) };
        let pool_len = max - 8 - shrink.min(if v4 { 8 } else { 12 });
        let block_len = (pool_len + extra).min(max);
        let pool = IpNet::new(from_u128(base, v4), pool_len).unwrap().trunc();
        let count = block_count(pool, block_len);
        let mut next = bounds(pool).0;
        for n in 0..count.min(64) {
            let b = nth_block(pool, block_len, n);
            prop_assert!(pool.contains(&b));
            prop_assert_eq!(bounds(b).0, next, "blocks are adjacent and disjoint");
            next = bounds(b).1 + 1;
            prop_assert_eq!(net_from_file_name(&net_to_file_name(b)), Some(b));
        }
        if count <= 64 {
            prop_assert_eq!(next - 1, bounds(pool).1, "and cover the pool");
        }
    }
}

/// One step of a random workload on one node's store.
#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Del(u8),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn allocate_and_release_never_give_one_address_two_handles(
        ops in proptest::collection::vec(prop_oneof![(0u8..24).prop_map(Op::Add), (0u8..24).prop_map(Op::Del)], 1..80),
        res in reservation(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // Dual-stack, tiny blocks: blocks are leased, filled, exhausted and handed back.
        let cfg = IpamConfig::parse(&serde_json::json!({"node": "n1", "emptyBlockGraceSeconds": 0, "pools": [
            {"name": "v4", "cidr": "10.9.0.0/27", "blockSize": 29},
            {"name": "v6", "cidr": "fd00::/123", "blockSize": 125}]}), Some(dir.path())).unwrap();
        let ipam = Ipam::local(cfg, "net", res);
        for op in ops {
            match op {
                Op::Add(h) => match ipam.allocate(&Handle::new(&format!("c{h}"), "eth0"), &PodInfo::default()) {
                    Ok(a) => prop_assert_eq!(a.allocations.len(), 2, "one address per family"),
                    Err(IpamError::Exhausted(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected error {}", e),
                },
                Op::Del(h) => {
                    ipam.release(&Handle::new(&format!("c{h}"), "eth0")).unwrap();
                    ipam.release_empty_blocks().unwrap();
                }
            }
            let all = ipam.allocations().unwrap();
            let ips: HashSet<IpAddr> = all.iter().map(|a| a.address.addr()).collect();
            prop_assert_eq!(ips.len(), all.len(), "an address held twice: {:?}", all);
            for a in &all {
                prop_assert!(Span::for_block(a.block, res).usable(a.address.addr()), "{} is reserved in {}", a.address, a.block);
            }
        }
    }
}
