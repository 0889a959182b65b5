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
    /// The id of the address's claim in the cluster store (pools that allow borrowing), so DEL
    /// gives back exactly this allocation's claim and never a later one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
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

/// Now to the microsecond: when an address was allocated (the audit history's `from`).
pub fn now_rfc3339_micros() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// An address claimed in the cluster store. Only pools with `allowBorrowing` keep claims: there an
/// owner and a borrower may both pick from one block, so every allocation also claims its address
/// where both see it, and the store's create-if-absent decides. A claim is deleted by comparing
/// it exactly; its random `id` tells one allocation's claim from a later one's of the same handle.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub ip: IpAddr,
    pub block: IpNet,
    pub node: String,
    pub handle: Handle,
    pub id: String,
}

impl Claim {
    pub fn new(ip: IpAddr, block: IpNet, node: &str, handle: &Handle) -> Claim {
        Claim { ip, block, node: node.to_string(), handle: handle.clone(), id: format!("{:016x}", fastrand::u64(..)) }
    }
}

/// Who claims: the block's owner, or a node borrowing from another node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAs {
    /// `announce`: also mark the block as lending, so other nodes may borrow from it. The owner
    /// does this once every address it holds in the block is claimed.
    Owner { announce: bool },
    /// Only from a block marked as lending.
    Borrower,
}

/// What [`crate::store::ClusterStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed,
    /// Another claim holds the address; these are every claim of its block, to skip them all.
    Taken(Vec<Claim>),
    /// The block is not leased (any more), or (borrower) not lending: do not allocate from it.
    BlockGone,
}

/// What [`crate::store::ClusterStore::release_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRelease {
    Released,
    /// The lease is not this node's (any more).
    NotHeld,
    /// Addresses of the block are claimed (lent to other nodes, or stale claims GC will clear).
    Claimed,
}

/// A node as its agent announces it in the cluster store (`<prefix>/<network>/nodes/<node>`):
/// where its blocks are reached. etcd keeps it only while the agent renews its lease; the local
/// store keeps the time of the last renewal, and a reader counts a record older than the TTL as
/// a dead node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub node: String,
    /// The node's address on its uplink: the next hop for its blocks, and its VTEP's outer address.
    pub ip: IpAddr,
    /// The node's IPv6 address, the next hop for its IPv6 blocks where routes are direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpAddr>,
    /// `none`, `vxlan` or `auto`.
    pub encap: String,
    /// The node's VXLAN device, when it has one.
    #[serde(default)]
    pub vtep_mac: Option<String>,
    /// The next hop for the node's IPv4 blocks over VXLAN.
    #[serde(default)]
    pub vtep_ip: Option<IpAddr>,
    pub started_at: String,
    /// Local store only: the last renewal (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
}

impl NodeRecord {
    /// Whether the record still stands at `now` for a node TTL of `ttl`: an etcd record exists
    /// only while alive; a local one must have been renewed within the TTL.
    pub fn is_live(&self, now: std::time::SystemTime, ttl: std::time::Duration) -> bool {
        match &self.heartbeat_at {
            None => true,
            Some(t) => humantime::parse_rfc3339(t).is_ok_and(|beat| beat + ttl > now),
        }
    }
}
