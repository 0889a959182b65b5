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
    fn file_names_round_trip() {
        for s in ["10.244.3.0/24", "fd00:10:244::100/120"] {
            let n: IpNet = s.parse().unwrap();
            assert_eq!(net_from_file_name(&net_to_file_name(n)), Some(n));
        }
        assert_eq!(net_from_file_name("10.0.0.1_24"), None);
        assert_eq!(net_from_file_name("junk"), None);
    }
}
