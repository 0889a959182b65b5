//! The journal hook's audit side. An allocation needs nothing: its record in the node store is
//! its event until [`crate::collect`] logs it. A release keeps the address's record file itself
//! in the pending directory, under a name that says when it was released ([`kept_name`]): a hard
//! link made and made durable by the very batch that removes the record, so the release is
//! durable exactly when the address is free, and a DEL costs one link and one directory fsync
//! more, an ADD nothing. (A release with no record file to keep, rebuild's of a corrupt record,
//! writes a small pending file instead.)

use crate::event::{AuditEvent, EventKind};
use podnet_fsio::Batch;
use podnet_ipam::journal::{Change, Journal};
use podnet_ipam::node::AddrEntry;
use podnet_ipam::{Allocation, Handle, IpamError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
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
    fn record(&self, change: &Change<'_>, batch: &mut Batch) -> Result<(), IpamError> {
        let Change::Released { ip, handle, record, file, .. } = change else { return Ok(()) };
        let time = now_micros();
        podnet_fsio::ensure_dir(&self.pending)?;
        if let Some((dir, name)) = file {
            if batch.keep_removed(dir, name, &self.pending, &kept_name(&time, name)) {
                return Ok(());
            }
        }
        let pending = release_of(time.clone(), &self.node, &self.network, *ip, handle, *record);
        let body = serde_json::to_vec(&pending).expect("events serialize");
        // Time first, so a directory listing is in release order; the handle's hash keeps names
        // of one instant apart.
        let hash = Sha256::digest(handle.key().as_bytes());
        let name =
            format!("{}-{}-{:02x}{:02x}{:02x}{:02x}", time, ip, hash[0], hash[1], hash[2], hash[3]).replace(':', "_");
        batch.put(&self.pending, &name, body);
        Ok(())
    }
}

/// Between a kept record's release time and its address file's name.
const KEPT: &str = "-released-";

/// The pending name of an address record kept at its release: the release time first (so a
/// listing is in release order), then the record's own file name (address and handle).
pub(crate) fn kept_name(time: &str, file: &str) -> String {
    format!("{}{KEPT}{file}", time.replace(':', "_"))
}

/// The release time and the address file a [`kept_name`] names, if `name` is one.
pub(crate) fn parse_kept(name: &str) -> Option<(String, AddrEntry)> {
    let (time, file) = name.split_once(KEPT)?;
    Some((time.replace('_', ":"), AddrEntry::parse(file)?))
}

/// The pending release of `ip` held by `handle`, released at `time`; `record` is the address's
/// record, when it reads back (the released event takes the pod's names from it).
pub(crate) fn release_of(
    time: String,
    node: &str,
    network: &str,
    ip: IpAddr,
    handle: &Handle,
    record: Option<&Allocation>,
) -> Pending {
    let allocated = record.map(|a| AuditEvent::allocated(a, network));
    let released = AuditEvent {
        time,
        node: node.into(),
        network: network.into(),
        pool: allocated.as_ref().map(|a| a.pool.clone()).unwrap_or_default(),
        ip,
        container_id: handle.container_id.clone(),
        ifname: handle.ifname.clone(),
        pod_namespace: allocated.as_ref().and_then(|a| a.pod_namespace.clone()),
        pod_name: allocated.as_ref().and_then(|a| a.pod_name.clone()),
        pod_uid: allocated.as_ref().and_then(|a| a.pod_uid.clone()),
        event: EventKind::Released,
    };
    Pending { released, allocated, withdrawn: false }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_s_name_gives_back_its_release_time_address_and_handle() {
        let time = "2026-11-30T11:24:20.389305Z";
        let file = AddrEntry::file_name("10.98.2.2".parse().unwrap(), &Handle::new("c1-released-x", "eth0"));
        let name = kept_name(time, &file);
        assert!(name.starts_with("2026-11-30T11_24_20.389305Z-released-10.98.2.2_"), "{name}");
        let (t, entry) = parse_kept(&name).unwrap();
        assert_eq!((t.as_str(), entry.ip.to_string().as_str()), (time, "10.98.2.2"));
        assert_eq!(entry.handle, Handle::new("c1-released-x", "eth0"));
        assert!(parse_kept("2026-11-30T11_24_20.389305Z-10.98.2.2-18b8fe0c").is_none(), "a written pending release");
        assert!(parse_kept("withdrawn-0a0b0c0d0e0f").is_none());
    }
}
