//! `podnetctl inspect`: the network's endpoints.

use super::render::{cell, table, Render};
use super::CtlError;
use podnet_node::Network;
use podnet_plugin::records::EndpointRecord;
use serde::Serialize;

#[derive(Serialize)]
pub struct Inspect {
    pub network: String,
    pub endpoints: Vec<EndpointRecord>,
    /// Capacity and use of each pool on this node, from the node store alone.
    pub pools: Vec<PoolUse>,
    #[serde(skip)]
    state: bool,
}

#[derive(Serialize)]
pub struct PoolUse {
    pub name: String,
    pub source: String,
    /// Addresses the pool can hand out (vnet: the NIC's secondaries).
    pub capacity: u64,
    /// Addresses this node holds in the pool.
    pub used: usize,
    /// Addresses still free on this node.
    pub free: u64,
}

pub fn inspect(net: &Network) -> Result<Inspect, CtlError> {
    // No cluster-store request: the node store and the sources' own state only.
    let pools = match net.open_ipam() {
        Ok(ipam) if net.has_state() => podnet_ipam::report::show_with_leases(&ipam, &[])
            .map(|ps| {
                ps.into_iter()
                    .map(|p| PoolUse {
                        name: p.name,
                        source: p.source,
                        capacity: p.capacity,
                        used: p.used,
                        free: p.free,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(Inspect { network: net.name.clone(), endpoints: net.endpoints()?, pools, state: net.has_state() })
}

impl Render for Inspect {
    fn table(&self) -> String {
        if !self.state {
            return format!("network {}: no state on this node (no pod was added here yet)\n", self.network);
        }
        let rows: Vec<Vec<String>> = self
            .endpoints
            .iter()
            .map(|e| {
                let pod = match (&e.pod.namespace, &e.pod.name) {
                    (Some(ns), Some(n)) => format!("{ns}/{n}"),
                    (None, Some(n)) => n.clone(),
                    _ => "-".into(),
                };
                vec![
                    e.container_id.chars().take(12).collect(),
                    pod,
                    e.ifname.clone(),
                    e.host_veth.clone(),
                    e.mac.clone(),
                    cell(e.ips.iter().map(|i| i.to_string())),
                    cell(e.gateways.iter().map(|g| g.to_string())),
                    cell(e.routes.iter().map(|r| format!("{} via {}", r.dst, r.gw))),
                    e.created_at.clone(),
                ]
            })
            .collect();
        let mut out =
            table(&["CONTAINER", "POD", "IFNAME", "HOST VETH", "MAC", "IPS", "GATEWAY", "ROUTES", "CREATED"], &rows);
        for p in &self.pools {
            out += &format!(
                "pool {} ({}): {} used, {} free on this node, capacity {}\n",
                p.name, p.source, p.used, p.free, p.capacity
            );
        }
        out
    }
}
