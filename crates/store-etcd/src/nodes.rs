//! Node records: `<prefix>/<network>/nodes/<node>`, each bound to an etcd lease that podnetd
//! keeps alive, so a dead node's record (and with it its routes everywhere) goes by itself.

use crate::EtcdStore;
use etcd_client::{KeyValue, PutOptions};
use podnet_ipam::model::NodeRecord;
use podnet_ipam::{Deadline, IpamError, NodeLease};
use std::time::Duration;

impl EtcdStore {
    pub(crate) fn node_key(&self, node: &str) -> String {
        format!("{}{node}", self.nodes_prefix)
    }

    pub(crate) fn decode_nodes(&self, kvs: &[KeyValue]) -> Vec<NodeRecord> {
        kvs.iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?;
                match serde_json::from_slice::<NodeRecord>(kv.value()) {
                    Ok(r) if key.strip_prefix(&self.nodes_prefix) == Some(r.node.as_str()) => Some(r),
                    _ => {
                        tracing::warn!(key, "a node record in etcd does not decode; ignored until rewritten");
                        None
                    }
                }
            })
            .collect()
    }

    /// Grant a lease of `ttl` and put the record under it.
    pub(crate) fn grant_and_put(
        &self,
        record: &NodeRecord,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<NodeLease, IpamError> {
        let secs = ttl.as_secs().max(1) as i64;
        let id = self.call(deadline, |mut c| async move { c.lease_grant(secs, None).await.map(|r| r.id()) })?;
        let (key, value) = (self.node_key(&record.node), serde_json::to_vec(record).expect("records serialize"));
        self.call(deadline, |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, Some(PutOptions::new().with_lease(id))).await }
        })?;
        Ok(NodeLease(id))
    }
}
