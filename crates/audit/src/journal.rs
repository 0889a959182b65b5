//! The journal hook's audit side. An allocation needs nothing: its record in the node store is
//! its event until [`crate::collect`] logs it. A release puts a pending file (the release and the
//! allocation it ends) into the very batch that removes the record, so the release is durable
//! exactly when the address is free, and a DEL costs one small file more, an ADD nothing.

use crate::event::{AuditEvent, EventKind};
use podnet_fsio::Batch;
use podnet_ipam::journal::{Change, Journal};
use podnet_ipam::IpamError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A release waiting to be logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub released: AuditEvent,
    /// The allocation it ends, when its record read back.
    pub allocated: Option<AuditEvent>,
    /// The address was taken back by its source (vnet: the cloud removed it from the NIC) while
    /// its pod still carries it: the holding ends now, though the record stays until the pod goes.
    #[serde(default)]
    pub withdrawn: bool,
}

pub struct AuditJournal {
    pending: PathBuf,
    network: String,
    node: String,
}

impl AuditJournal {
    pub fn new(data_dir: &Path, network: &str, node: &str) -> AuditJournal {
        AuditJournal {
            pending: crate::audit_dir(data_dir, network).join("pending"),
            network: network.into(),
            node: node.into(),
        }
    }
}

pub(crate) fn now_micros() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

impl Journal for AuditJournal {
    fn wants_records(&self) -> bool {
        true
    }

    fn record(&self, change: &Change<'_>, batch: &mut Batch) -> Result<(), IpamError> {
        let Change::Released { ip, handle, record, .. } = change else { return Ok(()) };
        let allocated = record.map(|a| AuditEvent::allocated(a, &self.network));
        let time = now_micros();
        let released = AuditEvent {
            time: time.clone(),
            node: self.node.clone(),
            network: self.network.clone(),
            pool: allocated.as_ref().map(|a| a.pool.clone()).unwrap_or_default(),
            ip: *ip,
            container_id: handle.container_id.clone(),
            ifname: handle.ifname.clone(),
            pod_namespace: allocated.as_ref().and_then(|a| a.pod_namespace.clone()),
            pod_name: allocated.as_ref().and_then(|a| a.pod_name.clone()),
            pod_uid: allocated.as_ref().and_then(|a| a.pod_uid.clone()),
            event: EventKind::Released,
        };
        podnet_fsio::ensure_dir(&self.pending)?;
        let body = serde_json::to_vec(&Pending { released, allocated, withdrawn: false }).expect("events serialize");
        // Time first, so a directory listing is in release order; the handle's hash keeps names
        // of one instant apart.
        let hash = Sha256::digest(handle.key().as_bytes());
        let name =
            format!("{}-{}-{:02x}{:02x}{:02x}{:02x}", time, ip, hash[0], hash[1], hash[2], hash[3]).replace(':', "_");
        batch.put(&self.pending, &name, body);
        Ok(())
    }
}

/// End the holding of every address its source took back while a pod carries it (vnet: the
/// cloud removed it from the NIC; it may be given to another node now): one pending release
/// each, named after the allocation so noting it again changes nothing. `withdrawn` is
/// [`podnet_ipam::Ipam::withdrawn`]'s answer. The number noted anew.
pub fn note_withdrawn(ipam: &podnet_ipam::Ipam, withdrawn: &[(String, std::net::IpAddr)]) -> Result<usize, IpamError> {
    if withdrawn.is_empty() {
        return Ok(0);
    }
    let pending = crate::audit_dir(&ipam.config().data_dir, ipam.network()).join("pending");
    let mut noted = 0;
    for a in
        ipam.allocations()?.iter().filter(|a| withdrawn.iter().any(|(p, ip)| *p == a.pool && *ip == a.address.addr()))
    {
        let hash = Sha256::digest(format!("{} {} {}", a.handle.key(), a.address.addr(), a.allocated_at).as_bytes());
        let name = format!(
            "withdrawn-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            hash[0], hash[1], hash[2], hash[3], hash[4], hash[5]
        );
        if pending.join(&name).exists() || pending.join(format!("done-{name}")).exists() {
            continue;
        }
        let allocated = AuditEvent::allocated(a, ipam.network());
        let released = AuditEvent { time: now_micros(), event: EventKind::Released, ..allocated.clone() };
        podnet_fsio::ensure_dir(&pending)?;
        let body = serde_json::to_vec(&Pending { released, allocated: Some(allocated), withdrawn: true })
            .expect("events serialize");
        podnet_fsio::atomic_write(&pending, &name, &body)?;
        noted += 1;
    }
    Ok(noted)
}
