//! A fabric: the network between nodes (a cloud VNet, a datacenter's L2 segments). One namespace
//! holds a bridge per subnet and routes between them, as the VNet's router would; each node's
//! uplink is a veth whose other end is a port of its subnet's bridge.

use crate::link;
use crate::Netns;
use ipnet::IpNet;
use std::net::IpAddr;

/// One L2 segment of the fabric.
#[derive(Debug, Clone)]
pub struct Subnet {
    pub cidr: IpNet,
    /// The bridge in the fabric namespace.
    pub bridge: String,
    /// The fabric's own address on the segment: every host's default gateway.
    pub gateway: IpAddr,
    /// An IPv6 prefix on the same segment (a dual-stack VNet) and the fabric's address in it.
    pub v6: Option<(IpNet, IpAddr)>,
}

pub struct Fabric {
    pub ns: Netns,
    pub subnets: Vec<Subnet>,
    ports: usize,
}

/// A host's link onto the fabric.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub dev: String,
    pub address: IpNet,
    pub gateway: IpAddr,
    /// The host's IPv6 address on a dual-stack segment.
    pub address6: Option<IpNet>,
}

impl Uplink {
    pub fn ip(&self) -> IpAddr {
        self.address.addr()
    }
}

impl Fabric {
    /// A fabric in a new namespace `ns_name` with these subnets; the fabric takes each subnet's
    /// first address and forwards between them.
    pub fn create(ns_name: &str, subnets: &[IpNet]) -> std::io::Result<Fabric> {
        let both: Vec<(IpNet, Option<IpNet>)> = subnets.iter().map(|s| (*s, None)).collect();
        Self::create_dual(ns_name, &both)
    }

    /// The same, each segment optionally with an IPv6 prefix beside its IPv4 one.
    pub fn create_dual(ns_name: &str, subnets: &[(IpNet, Option<IpNet>)]) -> std::io::Result<Fabric> {
        let ns = Netns::create(ns_name)?;
        link::enable_forwarding(&ns)?;
        let mut out = Vec::new();
        for (i, (cidr, cidr6)) in subnets.iter().enumerate() {
            let bridge = format!("seg{i}");
            link::bridge(&ns, &bridge)?;
            let gateway = nth(*cidr, 1)?;
            link::add_address(&ns, &bridge, IpNet::new(gateway, cidr.prefix_len()).expect("prefix fits"))?;
            let v6 = match cidr6 {
                Some(c6) => {
                    let g6 = nth(*c6, 1)?;
                    link::add_address(&ns, &bridge, IpNet::new(g6, c6.prefix_len()).expect("prefix fits"))?;
                    Some((*c6, g6))
                }
                None => None,
            };
            out.push(Subnet { cidr: *cidr, bridge, gateway, v6 });
        }
        Ok(Fabric { ns, subnets: out, ports: 0 })
    }

    /// Route `dst` via `gateway` on the segment that holds it (a cloud route table's entry: kubenet's
    /// node CIDR to its node).
    pub fn add_route(&self, dst: IpNet, gateway: IpAddr) -> std::io::Result<()> {
        let bridge = self
            .subnets
            .iter()
            .find_map(|s| {
                (s.cidr.contains(&gateway) || s.v6.is_some_and(|(c6, _)| c6.contains(&gateway))).then_some(&s.bridge)
            })
            .ok_or_else(|| std::io::Error::other(format!("no segment of the fabric holds {gateway}")))?;
        link::add_route(&self.ns, dst, Some(gateway), bridge)
    }

    /// Put `host` on subnet `subnet` at its `index`th address (2 and up: 1 is the gateway), with
    /// an uplink named `dev` and a default route through the fabric.
    pub fn attach(&mut self, host: &Netns, dev: &str, subnet: usize, index: u128) -> std::io::Result<Uplink> {
        let s = self.subnets.get(subnet).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("the fabric has no subnet {subnet}"))
        })?;
        let ip = nth(s.cidr, index)?;
        let port = format!("port{}", self.ports);
        self.ports += 1;
        link::veth(&self.ns, &port, Some(&s.bridge), host, dev, 1500)?;
        let address = IpNet::new(ip, s.cidr.prefix_len()).expect("prefix fits");
        link::add_address(host, dev, address)?;
        let default: IpNet =
            if ip.is_ipv4() { "0.0.0.0/0".parse().expect("literal") } else { "::/0".parse().expect("literal") };
        link::add_route(host, default, Some(s.gateway), dev)?;
        let address6 = match s.v6 {
            Some((c6, g6)) => {
                let a6 = IpNet::new(nth(c6, index)?, c6.prefix_len()).expect("prefix fits");
                link::add_address(host, dev, a6)?;
                link::add_route(host, "::/0".parse().expect("literal"), Some(g6), dev)?;
                Some(a6)
            }
            None => None,
        };
        Ok(Uplink { dev: dev.to_string(), address, gateway: s.gateway, address6 })
    }
}

/// The `n`th address of `net`.
pub fn nth(net: IpNet, n: u128) -> std::io::Result<IpAddr> {
    let base = match net.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let ip = match net {
        IpNet::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from((base + n) as u32)),
        IpNet::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(base + n)),
    };
    if !net.contains(&ip) || ip == net.broadcast() && net.addr().is_ipv4() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{net} has no host number {n}")));
    }
    Ok(ip)
}
