//! What the stores hold: handles, allocations, block leases.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Who an address belongs to: the runtime's (container ID, ifname) pair, never a pod name
/// (two pods of one name must not share an address: azure-container-networking #885).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    pub container_id: String,
    pub ifname: String,
}

impl Handle {
    pub fn new(container_id: &str, ifname: &str) -> Handle {
        Handle { container_id: container_id.to_string(), ifname: ifname.to_string() }
    }
    /// `containerID:ifname`; neither part may contain `:` (both are validated before use).
    pub fn key(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }
    pub fn from_key(key: &str) -> Option<Handle> {
        let (c, i) = key.split_once(':')?;
        (!c.is_empty() && !i.is_empty()).then(|| Handle::new(c, i))
    }
}

/// Pod attributes from CNI_ARGS, kept with each allocation for `inspect`, `check` and audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_container_id: Option<String>,
}

/// One address held by one handle on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The address with the prefix length the pod's interface gets.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub pool: String,
    /// The block (overlay) or range CIDR the address came from.
    pub block: IpNet,
    pub handle: Handle,
    #[serde(default)]
    pub pod: PodInfo,
    pub node: String,
    pub allocated_at: String,
    /// What the caller keeps with the allocation (podnet: its endpoint record), so one durable
    /// write serves both; opaque to IPAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<serde_json::Value>,
}

/// A block leased to a node, as the cluster store and (as a cache) the node store record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockLease {
    pub block: IpNet,
    pub pool: String,
    pub node: String,
    pub leased_at: String,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
