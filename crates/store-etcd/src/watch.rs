//! Following the network's prefix: lease and node-record changes as cluster events.

use crate::conn::Conn;
use etcd_client::{EventType, WatchStream};
use podnet_ipam::addr::net_from_file_name;
use podnet_ipam::model::{BlockLease, NodeRecord};
use podnet_ipam::{ClusterEvent, ClusterWatch, WatchError};
use std::time::Duration;

/// Changes from an etcd watch on the network's prefix (leases and node records), on a
/// connection of its own (a watch waits long; the store's connection serves short calls).
pub(crate) struct EtcdWatch {
    pub(crate) conn: Conn,
    pub(crate) stream: WatchStream,
    pub(crate) blocks_prefix: String,
    pub(crate) nodes_prefix: String,
}

impl ClusterWatch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> Result<Vec<ClusterEvent>, WatchError> {
        let until = std::time::Instant::now() + timeout;
        let (rt, _) = &self.conn;
        // The watch's creation and progress notices carry no events: keep waiting for some.
        let resp = loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let got = rt.block_on(async { tokio::time::timeout(left, self.stream.message()).await });
            let resp = match got {
                Err(_) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(WatchError::Unavailable(e.to_string())),
                Ok(Ok(None)) => return Err(WatchError::Unavailable("etcd closed the watch".into())),
                Ok(Ok(Some(resp))) => resp,
            };
            if resp.compact_revision() > 0 {
                return Err(WatchError::Compacted);
            }
            if resp.canceled() {
                return Err(WatchError::Unavailable(format!("etcd cancelled the watch: {}", resp.cancel_reason())));
            }
            if !resp.events().is_empty() || left.is_zero() {
                break resp;
            }
        };
        let mut out = Vec::new();
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = kv.key_str().unwrap_or_default();
            if let Some(name) = key.strip_prefix(&self.blocks_prefix) {
                let Some(block) = net_from_file_name(name) else { continue };
                match ev.event_type() {
                    EventType::Put => match serde_json::from_slice::<BlockLease>(kv.value()) {
                        Ok(lease) if lease.block == block => out.push(ClusterEvent::Leased(lease)),
                        // A value that does not decode leases nothing a route could be made for.
                        _ => tracing::warn!(key, "a lease in etcd does not decode; ignored until rewritten"),
                    },
                    EventType::Delete => out.push(ClusterEvent::Released(block)),
                }
            } else if let Some(node) = key.strip_prefix(&self.nodes_prefix) {
                match ev.event_type() {
                    EventType::Put => match serde_json::from_slice::<NodeRecord>(kv.value()) {
                        Ok(r) if r.node == node => out.push(ClusterEvent::NodeUp(r)),
                        _ => tracing::warn!(key, "a node record in etcd does not decode; ignored until rewritten"),
                    },
                    EventType::Delete => out.push(ClusterEvent::NodeGone(node.to_string())),
                }
            }
        }
        Ok(out)
    }
}
