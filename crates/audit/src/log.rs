//! The node log and its collector: allocation records and pending releases moved into the
//! append-only, CRC-framed `events.log`, exactly once each.

use crate::event::{AuditEvent, EventKind};
use crate::journal::Pending;
use podnet_fsio::{RecordLog, SyncPolicy};
use podnet_ipam::{Ipam, IpamError};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `<dataDir>/<network>/audit`.
pub fn audit_dir(data_dir: &Path, network: &str) -> PathBuf {
    data_dir.join(network).join("audit")
}

fn log_path(ipam: &Ipam) -> PathBuf {
    audit_dir(&ipam.config().data_dir, ipam.network()).join("events.log")
}

/// Every event of the node log, oldest first. A torn or corrupt frame is an error naming where
/// it is, never skipped.
pub fn events(ipam: &Ipam) -> Result<Vec<AuditEvent>, IpamError> {
    let path = log_path(ipam);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for frame in RecordLog::read(&path, 0)? {
        let (offset, payload) = frame?;
        let ev: AuditEvent = serde_json::from_slice(&payload).map_err(|e| IpamError::Corrupt {
            path: path.clone(),
            why: format!("the event at offset {offset} does not decode: {e}"),
        })?;
        out.push(ev);
    }
    Ok(out)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CollectReport {
    pub allocated: usize,
    pub released: usize,
}

type Key = (IpAddr, String, String);

fn key(e: &AuditEvent) -> Key {
    (e.ip, e.container_id.clone(), e.ifname.clone())
}

/// Log what the node store and the pending releases hold that the log does not yet: one append
/// and one fsync for all of it, then the pending files go. Safe to run at any time and to be
/// killed at any point (a rerun logs nothing twice).
pub fn collect(ipam: &Ipam) -> Result<CollectReport, IpamError> {
    let dir = audit_dir(&ipam.config().data_dir, ipam.network());
    let pending_dir = dir.join("pending");
    // What the log says: open allocations (by attachment and address) and closed ones.
    let mut open: HashMap<Key, String> = HashMap::new();
    let mut closed: HashSet<(Key, String)> = HashSet::new();
    for e in events(ipam)? {
        match e.event {
            EventKind::Allocated => {
                open.insert(key(&e), e.time);
            }
            EventKind::Released => {
                if let Some(from) = open.remove(&key(&e)) {
                    closed.insert((key(&e), from));
                }
            }
        }
    }
    let mut new = Vec::new();
    let mut report = CollectReport::default();
    let records = ipam.allocations()?;
    let held: HashSet<(Key, String)> = records
        .iter()
        .map(|a| ((a.address.addr(), a.handle.container_id.clone(), a.handle.ifname.clone()), a.allocated_at.clone()))
        .collect();
    for a in &records {
        let ev = AuditEvent::allocated(a, ipam.network());
        let k = key(&ev);
        if open.get(&k) != Some(&ev.time) && !closed.contains(&(k.clone(), ev.time.clone())) {
            open.insert(k, ev.time.clone());
            new.push(ev);
            report.allocated += 1;
        }
    }
    let mut names: Vec<String> = match std::fs::read_dir(&pending_dir) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with(".tmp-")).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let mut done = Vec::new();
    for name in names {
        let path = pending_dir.join(&name);
        let Ok(text) = std::fs::read(&path) else { continue };
        let p: Pending = serde_json::from_slice(&text).map_err(|e| IpamError::Corrupt {
            path: path.clone(),
            why: format!("a pending release does not decode: {e}"),
        })?;
        let k = key(&p.released);
        let from = p.allocated.as_ref().map(|a| a.time.clone()).or_else(|| open.get(&k).cloned());
        // Written, but the record it releases is still there: that release has not happened
        // (a DEL killed half-way); its retry leaves another pending file.
        if from.as_ref().is_some_and(|f| held.contains(&(k.clone(), f.clone()))) {
            continue;
        }
        let Some(from) = from else {
            done.push(name);
            continue;
        };
        if closed.contains(&(k.clone(), from.clone())) {
            done.push(name);
            continue;
        }
        if open.get(&k) != Some(&from) {
            if let Some(a) = p.allocated {
                new.push(a);
                report.allocated += 1;
            }
        }
        open.remove(&k);
        closed.insert((k, from));
        new.push(p.released);
        report.released += 1;
        done.push(name);
    }
    // In time order (parsed: the same instant can be spelled two ways).
    new.sort_by_key(|e| crate::parse_time(&e.time).unwrap_or(std::time::SystemTime::UNIX_EPOCH));
    if !new.is_empty() {
        let mut log = RecordLog::open(&dir.join("events.log"), SyncPolicy::Manual)?;
        let frames: Vec<Vec<u8>> = new.iter().map(|e| serde_json::to_vec(e).expect("events serialize")).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        log.append(&refs)?;
        log.sync()?;
    }
    for name in &done {
        let _ = std::fs::remove_file(pending_dir.join(name));
    }
    if !done.is_empty() {
        podnet_fsio::sync_dir(&pending_dir)?;
    }
    Ok(report)
}
