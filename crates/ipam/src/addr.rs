//! Address arithmetic on u128 so IPv4 and IPv6 share one code path.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `v`'s family. `v` must fit the family (callers stay inside a prefix).
pub fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

pub fn max_prefix(v4: bool) -> u8 {
    if v4 {
        32
    } else {
        128
    }
}

/// First and last address of a prefix, as numbers.
pub fn bounds(net: IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// Number of `block_len` blocks in `pool` (saturating for absurd IPv6 splits).
pub fn block_count(pool: IpNet, block_len: u8) -> u128 {
    let bits = u32::from(block_len.saturating_sub(pool.prefix_len()));
    if bits >= 127 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

/// The `n`th `block_len` block of `pool`.
pub fn nth_block(pool: IpNet, block_len: u8, n: u128) -> IpNet {
    let v4 = pool.addr().is_ipv4();
    let size_bits = u32::from(max_prefix(v4) - block_len);
    let start = to_u128(pool.network()) + (n << size_bits);
    IpNet::new(from_u128(start, v4), block_len).expect("block_len is a valid prefix length")
}

/// The order in which node `seed` tries the blocks of a pool: start at block `h mod n` and step
/// by an odd stride (both from a SHA-256 of the seed), wrapping around. `n` is a power of two, so
/// an odd stride visits every block exactly once. Nodes start and stride differently, so nodes
/// leasing at the same moment rarely want the same block, and a node that hands a block back
/// and leases again tends to get the same block.
pub fn block_order(pool: IpNet, block_len: u8, seed: &str) -> impl Iterator<Item = IpNet> {
    use sha2::{Digest, Sha256};
    let count = block_count(pool, block_len);
    // block_count saturates for absurd IPv6 splits: treat that as 2^128 (every u128).
    let mask = if count.is_power_of_two() { count - 1 } else { u128::MAX };
    let digest = Sha256::digest(seed.as_bytes());
    let word = |i: usize| u128::from_be_bytes(digest[i..i + 16].try_into().expect("16 bytes"));
    let (start, stride) = (word(0) & mask, (word(16) | 1) & mask.max(1));
    let total = if count.is_power_of_two() { count } else { u128::MAX };
    (0..total).map(move |i| nth_block(pool, block_len, start.wrapping_add(i.wrapping_mul(stride)) & mask))
}

/// `10.0.0.0/24` as a file name: `10.0.0.0_24` (a `/` cannot stand in a name).
pub fn net_to_file_name(net: IpNet) -> String {
    format!("{}_{}", net.network(), net.prefix_len())
}

pub fn net_from_file_name(name: &str) -> Option<IpNet> {
    let (ip, len) = name.split_once('_')?;
    IpNet::new(ip.parse().ok()?, len.parse().ok()?).ok().filter(|n| n.network().to_string() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_pools() {
        let pool: IpNet = "10.244.0.0/16".parse().unwrap();
        assert_eq!(block_count(pool, 24), 256);
        assert_eq!(nth_block(pool, 24, 0).to_string(), "10.244.0.0/24");
        assert_eq!(nth_block(pool, 24, 255).to_string(), "10.244.255.0/24");
        let v6: IpNet = "fd00:10:244::/56".parse().unwrap();
        assert_eq!(block_count(v6, 120), 1 << 64);
        assert_eq!(nth_block(v6, 120, 1).to_string(), "fd00:10:244::100/120");
        assert_eq!(block_count("::/0".parse().unwrap(), 128), u128::MAX);
    }

    #[test]
    fn a_nodes_block_order_visits_every_block_once_and_nodes_differ() {
        let pool: IpNet = "10.244.0.0/16".parse().unwrap();
        for seed in ["node-1", "node-2", ""] {
            let order: Vec<IpNet> = block_order(pool, 26, seed).collect();
            assert_eq!(order.len(), 1024);
            let distinct: std::collections::HashSet<IpNet> = order.iter().copied().collect();
            assert_eq!(distinct.len(), 1024, "{seed}: every block once");
            assert!(order.iter().all(|b| pool.contains(b) && b.prefix_len() == 26));
        }
        let firsts: std::collections::HashSet<IpNet> =
            (0..64).map(|i| block_order(pool, 26, &format!("node-{i}")).next().unwrap()).collect();
        assert!(firsts.len() > 55, "64 nodes mostly start at different blocks: {}", firsts.len());
        assert_eq!(block_order(pool, 26, "node-1").next(), block_order(pool, 26, "node-1").next(), "stable");
        assert_eq!(block_order("10.0.0.0/26".parse().unwrap(), 26, "n").collect::<Vec<_>>().len(), 1);
        let v6: IpNet = "fd00::/56".parse().unwrap();
        let first: Vec<IpNet> = block_order(v6, 120, "n").take(3).collect();
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|b| v6.contains(b)));
    }

    #[test]
    fn file_names_round_trip() {
        for s in ["10.244.3.0/24", "fd00:10:244::100/120"] {
            let n: IpNet = s.parse().unwrap();
            assert_eq!(net_from_file_name(&net_to_file_name(n)), Some(n));
        }
        assert_eq!(net_from_file_name("10.0.0.1_24"), None);
        assert_eq!(net_from_file_name("junk"), None);
    }
}
