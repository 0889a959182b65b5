//! Audit batches shipped by podnetd: `<prefix>/<network>/audit/<node>/<seq>` (seq zero-padded,
//! so keys sort in shipping order), each a batch of events as JSON lines.

use crate::EtcdStore;
use etcd_client::GetOptions;
use podnet_ipam::store::AuditBatch;
use podnet_ipam::{Deadline, IpamError};

impl EtcdStore {
    pub(crate) fn put_audit(&self, node: &str, seq: u64, body: &[u8], deadline: &Deadline) -> Result<(), IpamError> {
        let key = format!("{}audit/{node}/{seq:020}", self.network_prefix);
        let body = body.to_vec();
        self.call(deadline, |mut c| {
            let (key, body) = (key.clone(), body.clone());
            async move { c.put(key, body, None).await }
        })
        .map(|_| ())
    }

    pub(crate) fn list_audit(&self, deadline: &Deadline) -> Result<Vec<AuditBatch>, IpamError> {
        let prefix = format!("{}audit/", self.network_prefix);
        let resp = self.call(deadline, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let (node, seq) = kv.key_str().ok()?.strip_prefix(&prefix)?.rsplit_once('/')?;
                Some(AuditBatch { node: node.to_string(), seq: seq.parse().ok()?, body: kv.value().to_vec() })
            })
            .collect())
    }

    pub(crate) fn drop_audit(&self, node: &str, below: u64, deadline: &Deadline) -> Result<(), IpamError> {
        let from = format!("{}audit/{node}/", self.network_prefix);
        let to = format!("{}audit/{node}/{below:020}", self.network_prefix);
        self.call(deadline, |mut c| {
            let (from, to) = (from.clone(), to.clone());
            async move { c.delete(from, Some(etcd_client::DeleteOptions::new().with_range(to))).await }
        })
        .map(|_| ())
    }
}
