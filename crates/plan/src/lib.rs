//! `podnetctl plan`: what a cluster design costs per mode (vnet, overlay, range) in VNet
//! addresses, pod addresses, cloud and host routes, and the largest cluster each allows, with
//! what limits it. Pure arithmetic, on the IPAM's own rules (the addresses a block keeps per
//! dataplane are the allocator's [`Span`]), so plan and reality cannot disagree.

use ipnet::IpNet;
use podnet_ipam::addr::{block_count, nth_block};
use podnet_ipam::{Dataplane, Reservation, Span};
use serde::Serialize;

/// Docker's default bridge: a pod, service or VNet CIDR overlapping it breaks nodes that run
/// Docker.
pub const DOCKER_BRIDGE: &str = "172.17.0.0/16";

#[derive(Debug, Clone)]
pub struct Design {
    pub nodes: u64,
    pub max_pods: u64,
    pub vnet_cidr: IpNet,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub block_size: u8,
    pub dataplane: Dataplane,
    pub node_cidr_size: u8,
    pub dual_stack: bool,
    pub route_limit: u64,
    pub reserved_per_subnet: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Vnet,
    Overlay,
    Range,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vnet => "vnet",
            Mode::Overlay => "overlay",
            Mode::Range => "range",
        }
    }
}

/// What sets a mode's largest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    VnetAddresses,
    PodCidr,
    RouteLimit,
    NodeCidr,
}

impl Limit {
    /// In words, for the table.
    pub fn words(self) -> &'static str {
        match self {
            Limit::VnetAddresses => "the VNet subnet's addresses",
            Limit::PodCidr => "the pod CIDR's blocks",
            Limit::RouteLimit => "the cloud route table",
            Limit::NodeCidr => "a node CIDR cannot hold --max-pods",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModePlan {
    pub mode: Mode,
    pub vnet_addresses: u128,
    pub pod_addresses: u128,
    pub cloud_routes: u128,
    pub host_routes_per_node: u128,
    pub blocks_per_node: Option<u128>,
    pub max_nodes: u128,
    pub fits: bool,
    pub limited_by: Limit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub modes: Vec<ModePlan>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

impl Plan {
    /// The fitting mode with the most room (largest cluster per node asked for), if any fits.
    pub fn best(&self) -> Option<Mode> {
        self.modes.iter().filter(|m| m.fits).max_by_key(|m| m.max_nodes).map(|m| m.mode)
    }
}

fn size(net: IpNet) -> u128 {
    let bits = u32::from(if net.addr().is_ipv4() { 32u8 } else { 128 }) - u32::from(net.prefix_len());
    if bits >= 128 {
        u128::MAX
    } else {
        1u128 << bits
    }
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The plan, or the errors that stop it (then `modes` is empty).
pub fn plan(d: &Design) -> Plan {
    let mut out = Plan::default();
    check(d, &mut out.errors);
    if !out.errors.is_empty() {
        return out;
    }
    let n = u128::from(d.nodes);
    let p = u128::from(d.max_pods);
    let usable = size(d.vnet_cidr).saturating_sub(u128::from(d.reserved_per_subnet));
    if usable == 0 {
        out.errors.push(format!(
            "--vnet-cidr {} has no address left after the {} a subnet reserves: not even one node fits",
            d.vnet_cidr, d.reserved_per_subnet
        ));
        return out;
    }
    let families: u128 = if d.dual_stack { 2 } else { 1 };
    let row =
        |mode, vnet_addresses, cloud_routes, host_routes_per_node, blocks_per_node, max_nodes, limited_by| ModePlan {
            mode,
            vnet_addresses,
            pod_addresses: n * p,
            cloud_routes,
            host_routes_per_node,
            blocks_per_node,
            max_nodes,
            fits: n <= max_nodes,
            limited_by,
        };

    // vnet: every pod and the node itself take a VNet address, preallocated per node.
    let vnet_max = usable / (p + 1);
    out.modes.push(row(Mode::Vnet, n * (p + 1), 0, 0, None, vnet_max, Limit::VnetAddresses));
    if vnet_max == 0 {
        out.warnings.push(format!(
            "vnet: --vnet-cidr {} ({usable} usable addresses) is too small for even one node of {} addresses",
            d.vnet_cidr,
            p + 1
        ));
    }

    // overlay: blocks of --block-size from the pod CIDR, the allocator's reservations per block.
    let reservation = Reservation::for_dataplane(d.dataplane);
    let per_block = Span::for_block(nth_block(d.pod_cidr, d.block_size, 0), reservation).capacity();
    let blocks = block_count(d.pod_cidr, d.block_size);
    let per_node = p.div_ceil(per_block).max(1);
    let by_pods = blocks / per_node;
    let (overlay_max, overlay_limit) =
        if by_pods <= usable { (by_pods, Limit::PodCidr) } else { (usable, Limit::VnetAddresses) };
    out.modes.push(row(
        Mode::Overlay,
        n,
        0,
        n.saturating_sub(1) * per_node,
        Some(per_node),
        overlay_max,
        overlay_limit,
    ));
    if blocks < n * per_node {
        out.warnings.push(format!(
            "overlay: --pod-cidr {} has {blocks} blocks of /{} ({per_block} pods each), and {n} nodes need {}: nodes past {by_pods} would borrow addresses from other nodes' blocks, a /32 route each",
            d.pod_cidr,
            d.block_size,
            n * per_node
        ));
    }

    // range (kubenet): one node CIDR per node, one cloud route per node and family.
    let node_cidrs = block_count(d.pod_cidr, d.node_cidr_size);
    let node_cidr = nth_block(d.pod_cidr, d.node_cidr_size, 0);
    // A range pool keeps its network, gateway and (IPv4) broadcast, whatever the dataplane.
    let per_node_cidr = Span::for_block(node_cidr, Reservation::GatewayPerBlock).capacity();
    let by_routes = u128::from(d.route_limit) / families;
    let (range_max, range_limit) = if p > per_node_cidr {
        out.warnings.push(format!(
            "range: --max-pods {p} does not fit a /{} node CIDR ({per_node_cidr} pods): use a smaller --node-cidr-size",
            d.node_cidr_size
        ));
        (0, Limit::NodeCidr)
    } else {
        [(by_routes, Limit::RouteLimit), (node_cidrs, Limit::PodCidr), (usable, Limit::VnetAddresses)]
            .into_iter()
            .min_by_key(|(m, _)| *m)
            .expect("three limits")
    };
    out.modes.push(row(Mode::Range, n, n * families, n.saturating_sub(1), Some(1), range_max, range_limit));
    out
}

/// Numbers and CIDRs that make no design; overlapping CIDRs.
fn check(d: &Design, errors: &mut Vec<String>) {
    if d.nodes == 0 {
        errors.push("--nodes must be at least 1".into());
    }
    if d.max_pods == 0 {
        errors.push("--max-pods must be at least 1".into());
    }
    if d.route_limit == 0 {
        errors.push("--route-limit must be at least 1".into());
    }
    let docker: IpNet = DOCKER_BRIDGE.parse().expect("literal");
    let named = [
        ("--pod-cidr", d.pod_cidr),
        ("--service-cidr", d.service_cidr),
        ("--vnet-cidr", d.vnet_cidr),
        ("Docker's bridge", docker),
    ];
    for (i, (an, a)) in named.iter().enumerate() {
        for (bn, b) in &named[i + 1..] {
            if a.addr().is_ipv4() == b.addr().is_ipv4() && overlaps(*a, *b) {
                errors.push(format!("{an} {a} overlaps {bn} {b}: pick CIDRs that do not"));
            }
        }
    }
    let max = if d.pod_cidr.addr().is_ipv4() { 32 } else { 128 };
    for (flag, len) in [("--block-size", d.block_size), ("--node-cidr-size", d.node_cidr_size)] {
        if len < d.pod_cidr.prefix_len() || len > max - 2 {
            errors.push(format!(
                "{flag} {len} does not fit --pod-cidr {}: use {} to {}",
                d.pod_cidr,
                d.pod_cidr.prefix_len(),
                max - 2
            ));
        }
    }
    if !d.vnet_cidr.addr().is_ipv4() {
        errors.push(format!("--vnet-cidr {} must be IPv4 (the VNet's node subnet)", d.vnet_cidr));
    }
}

/// The design's defaults (the contract's), for `vnet_cidr`.
pub fn design(vnet_cidr: IpNet, nodes: u64, max_pods: u64) -> Design {
    Design {
        nodes,
        max_pods,
        vnet_cidr,
        pod_cidr: "10.244.0.0/16".parse().expect("literal"),
        service_cidr: "10.0.0.0/16".parse().expect("literal"),
        block_size: 24,
        dataplane: Dataplane::Bridge,
        node_cidr_size: 24,
        dual_stack: false,
        route_limit: 400,
        reserved_per_subnet: 5,
    }
}
