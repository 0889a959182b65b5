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
    #[serde(skip)]
    state: bool,
}

pub fn inspect(net: &Network) -> Result<Inspect, CtlError> {
    Ok(Inspect { network: net.name.clone(), endpoints: net.endpoints()?, state: net.has_state() })
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
        table(&["CONTAINER", "POD", "IFNAME", "HOST VETH", "MAC", "IPS", "GATEWAY", "ROUTES", "CREATED"], &rows)
    }
}
