//! Events and the intervals they make, in the contract's JSON shapes.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Allocated,
    Released,
}

/// One allocation or release (RFC 3339 times, UTC, microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub time: String,
    pub node: String,
    pub network: String,
    pub pool: String,
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub event: EventKind,
}

/// An address held by one attachment from `from` (included) until `until` (excluded; None while
/// held).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    pub ip: IpAddr,
    pub node: String,
    pub pool: String,
    pub container_id: String,
    pub ifname: String,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub from: String,
    pub until: Option<String>,
}

impl AuditEvent {
    /// What pairs an allocation with its release: the attachment and the address.
    pub fn key(&self) -> (IpAddr, &str, &str) {
        (self.ip, &self.container_id, &self.ifname)
    }

    /// The `allocated` event of an allocation record.
    pub fn allocated(a: &podnet_ipam::Allocation, network: &str) -> AuditEvent {
        AuditEvent {
            time: a.allocated_at.clone(),
            node: a.node.clone(),
            network: network.into(),
            pool: a.pool.clone(),
            ip: a.address.addr(),
            container_id: a.handle.container_id.clone(),
            ifname: a.handle.ifname.clone(),
            pod_namespace: a.pod.namespace.clone(),
            pod_name: a.pod.name.clone(),
            pod_uid: a.pod.uid.clone(),
            event: EventKind::Allocated,
        }
    }
}
