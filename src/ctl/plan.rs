//! `podnetctl plan`: what a design costs per mode and where it breaks (`podnet_plan` does the
//! arithmetic); `--from-config` takes the pools of the conflist in use.

use super::render::{print_json, table, Output};
use super::CtlError;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use podnet_ipam::{Dataplane, Source};
use podnet_plan::{Design, Plan};
use std::path::Path;

#[derive(Clone, Copy, ValueEnum)]
pub enum DataplaneArg {
    Bridge,
    Routed,
}

#[derive(Args)]
pub struct PlanArgs {
    #[arg(long)]
    nodes: u64,
    #[arg(long)]
    max_pods: u64,
    /// The VNet subnet the nodes (and, in vnet mode, the pods) take addresses from.
    #[arg(long)]
    vnet_cidr: Option<IpNet>,
    #[arg(long)]
    pod_cidr: Option<IpNet>,
    #[arg(long, default_value = "10.0.0.0/16")]
    service_cidr: IpNet,
    /// Prefix length of an overlay block [default: 24].
    #[arg(long)]
    block_size: Option<u8>,
    /// [default: bridge]
    #[arg(long, value_enum)]
    dataplane: Option<DataplaneArg>,
    /// Prefix length of a range (kubenet) node CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_size: u8,
    #[arg(long)]
    dual_stack: bool,
    /// Routes the cloud route table holds (Azure: 400).
    #[arg(long, default_value_t = 400)]
    route_limit: u64,
    /// Addresses the cloud keeps in every subnet (Azure: 5).
    #[arg(long, default_value_t = 5)]
    reserved_per_subnet: u64,
    /// Take the pod CIDR, block size, dataplane, dual-stack and (a vnet pool's) VNet CIDR from
    /// the conflist (--config); flags given override it.
    #[arg(long)]
    from_config: bool,
}

/// The design the flags (and the conflist, with --from-config) describe.
fn design(a: &PlanArgs, config: Option<&Path>) -> Result<Design, CtlError> {
    let (mut vnet, mut pod, mut block, mut dataplane, mut dual) = (None, None, None, None, false);
    if a.from_config {
        let net = super::network(config)?;
        let ipam = net.ipam_config()?;
        dataplane = Some(net.plugin_config()?.dataplane());
        let pools = &ipam.pools;
        vnet = pools.iter().find(|p| p.source == Source::Vnet).map(|p| p.cidr());
        let pod_pool = pools.iter().filter(|p| p.source != Source::Vnet).min_by_key(|p| !p.is_v4());
        pod = pod_pool.map(|p| p.cidr());
        block = pod_pool.filter(|p| p.source == Source::Overlay).map(|p| p.block_len);
        dual = pools.iter().any(|p| p.is_v4()) && pools.iter().any(|p| !p.is_v4());
    }
    let vnet_cidr = a.vnet_cidr.or(vnet).ok_or_else(|| {
        CtlError::Usage(
            "--vnet-cidr is required (the VNet subnet the nodes are on), unless --from-config finds a vnet pool".into(),
        )
    })?;
    let mut d = podnet_plan::design(vnet_cidr, a.nodes, a.max_pods);
    d.pod_cidr = a.pod_cidr.or(pod).unwrap_or(d.pod_cidr).trunc();
    d.service_cidr = a.service_cidr.trunc();
    d.vnet_cidr = vnet_cidr.trunc();
    d.block_size = a.block_size.or(block).unwrap_or(d.block_size);
    d.dataplane = match a.dataplane {
        Some(DataplaneArg::Bridge) => Dataplane::Bridge,
        Some(DataplaneArg::Routed) => Dataplane::Routed,
        None => dataplane.unwrap_or(Dataplane::Bridge),
    };
    d.node_cidr_size = a.node_cidr_size;
    d.dual_stack = a.dual_stack || dual;
    d.route_limit = a.route_limit;
    d.reserved_per_subnet = a.reserved_per_subnet;
    Ok(d)
}

pub fn run(a: &PlanArgs, config: Option<&Path>, output: Output) -> Result<i32, CtlError> {
    let d = design(a, config)?;
    let p = podnet_plan::plan(&d);
    match output {
        Output::Json => print_json(&p),
        Output::Table if p.errors.is_empty() => print!("{}", render(&d, &p)),
        Output::Table => {}
    }
    if p.errors.is_empty() {
        Ok(0)
    } else {
        Err(CtlError::Usage(p.errors.join("; ")))
    }
}

fn render(d: &Design, p: &Plan) -> String {
    let best = p.best();
    let rows: Vec<Vec<String>> = p
        .modes
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.mode.as_str(), if Some(m.mode) == best { " *" } else { "" }),
                m.vnet_addresses.to_string(),
                m.pod_addresses.to_string(),
                m.cloud_routes.to_string(),
                m.host_routes_per_node.to_string(),
                m.blocks_per_node.map_or("-".into(), |b| b.to_string()),
                m.max_nodes.to_string(),
                if m.fits { "yes".into() } else { "NO".into() },
                m.limited_by.words().into(),
            ]
        })
        .collect();
    let mut out = format!(
        "{} nodes x {} pods; VNet {}, pods {} (/{} blocks, {} dataplane), services {}, route limit {}{}\n\n",
        d.nodes,
        d.max_pods,
        d.vnet_cidr,
        d.pod_cidr,
        d.block_size,
        if d.dataplane == Dataplane::Routed { "routed" } else { "bridge" },
        d.service_cidr,
        d.route_limit,
        if d.dual_stack { ", dual-stack" } else { "" }
    );
    out += &table(
        &[
            "MODE",
            "VNET ADDRS",
            "POD ADDRS",
            "CLOUD ROUTES",
            "HOST ROUTES/NODE",
            "BLOCKS/NODE",
            "MAX NODES",
            "FITS",
            "LIMITED BY",
        ],
        &rows,
    );
    match best {
        Some(m) => out += &format!("\n* {}: fits with the most room\n", m.as_str()),
        None => out += "\nno mode fits this design\n",
    }
    for w in &p.warnings {
        out += &format!("warning: {w}\n");
    }
    out
}
