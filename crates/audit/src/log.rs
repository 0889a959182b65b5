//! The node log and its collector. Events live in CRC-framed segments (`audit/log/<seq>.log`, each
//! up to an eighth of `audit.maxBytes`); the collector moves allocation records and pending
//! releases into the newest segment, exactly once each, and drops whole old segments past
//! `audit.retentionDays` or `audit.maxBytes`. An index (`audit/index/<ip>`: the position of every
//! event of that address) lets `who` and `history --ip` read only that address's events; it is
//! derived, rebuilt from the segments whenever it is missing or behind.

use crate::event::{AuditEvent, EventKind};
use crate::journal::{self, Pending};
use podnet_fsio::{RecordLog, SyncPolicy};
use podnet_ipam::{Allocation, Ipam, IpamError};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// `<dataDir>/<network>/audit`.
pub fn audit_dir(data_dir: &Path, network: &str) -> PathBuf {
    data_dir.join(network).join("audit")
}

pub(crate) fn dir_of(ipam: &Ipam) -> PathBuf {
    audit_dir(&ipam.config().data_dir, ipam.network())
}

/// Segments, oldest first: (sequence number, path).
pub(crate) fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("log"))
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_suffix(".log")?.parse().ok()?;
                Some((seq, e.path()))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join("log").join(format!("{seq:010}.log"))
}

fn decode(path: &Path, offset: u64, payload: &[u8]) -> Result<AuditEvent, IpamError> {
    serde_json::from_slice(payload).map_err(|e| IpamError::Corrupt {
        path: path.to_path_buf(),
        why: format!("the event at offset {offset} does not decode: {e}"),
    })
}

/// Every event of the node log, in the order collected. A torn or corrupt frame is an error
/// naming where it is, never skipped.
pub fn events(ipam: &Ipam) -> Result<Vec<AuditEvent>, IpamError> {
    let mut out = Vec::new();
    for (_, path) in segments(&dir_of(ipam)) {
        for frame in RecordLog::read(&path, 0)? {
            let (offset, payload) = frame?;
            out.push(decode(&path, offset, &payload)?);
        }
    }
    Ok(out)
}

/// The events of one address, read through the index (brought up to date first).
pub fn events_of(ipam: &Ipam, ip: IpAddr) -> Result<Vec<AuditEvent>, IpamError> {
    let dir = dir_of(ipam);
    update_index(&dir)?;
    let mut bytes = Vec::new();
    match std::fs::File::open(index_file(&dir, ip)) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(|e| IpamError::io("reading the audit index", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IpamError::io("reading the audit index", e)),
    }
    let mut out = Vec::new();
    let mut open: HashMap<u64, Option<std::fs::File>> = HashMap::new();
    let mut seen = HashSet::new();
    for entry in bytes.chunks_exact(ENTRY) {
        if !seen.insert(entry) {
            continue;
        }
        let seq = u64::from(u32::from_le_bytes(entry[..4].try_into().expect("4 bytes")));
        let offset = u64::from_le_bytes(entry[4..].try_into().expect("8 bytes"));
        // A segment retention dropped: its events are gone on purpose.
        let Some(file) = open.entry(seq).or_insert_with(|| std::fs::File::open(segment_path(&dir, seq)).ok()) else {
            continue;
        };
        let path = segment_path(&dir, seq);
        out.push(read_frame(file, &path, offset)?);
    }
    Ok(out)
}

/// One frame at `offset`, its checksum verified.
fn read_frame(file: &mut std::fs::File, path: &Path, offset: u64) -> Result<AuditEvent, IpamError> {
    let bad = |why: String| IpamError::Corrupt { path: path.to_path_buf(), why };
    let mut header = [0u8; 8];
    file.seek(SeekFrom::Start(offset)).map_err(|e| IpamError::io("seeking in the audit log", e))?;
    file.read_exact(&mut header).map_err(|_| bad(format!("the index points past the end, at offset {offset}")))?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > podnet_fsio::MAX_LOG_RECORD {
        return Err(bad(format!("no record at offset {offset}")));
    }
    let mut payload = vec![0u8; len];
    file.read_exact(&mut payload).map_err(|_| bad(format!("a torn record at offset {offset}")))?;
    if crc32fast_hash(&payload) != u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) {
        return Err(bad(format!("a record fails its checksum at offset {offset}")));
    }
    decode(path, offset, &payload)
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

/// An index entry: the segment (u32) and the offset (u64) of one event, little endian.
const ENTRY: usize = 12;

fn index_file(dir: &Path, ip: IpAddr) -> PathBuf {
    dir.join("index").join(ip.to_string().replace(':', "_"))
}

/// Index every event past the index's checkpoint (all of them when it is missing).
fn update_index(dir: &Path) -> Result<(), IpamError> {
    let idx = dir.join("index");
    let checkpoint = idx.join(".checkpoint");
    let (seq0, off0) = std::fs::read_to_string(&checkpoint)
        .ok()
        .and_then(|s| {
            let (a, b) = s.trim().split_once(' ')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        })
        .unwrap_or((0, 0));
    // Segments retention dropped are simply absent: their entries are skipped when read.
    let segs = segments(dir);
    let mut pending: HashMap<IpAddr, Vec<u8>> = HashMap::new();
    let mut count = 0usize;
    let mut last = (seq0, off0);
    for (seq, path) in segs.iter().filter(|(s, _)| *s >= seq0) {
        let start = if *seq == seq0 { off0 } else { 0 };
        for frame in RecordLog::read(path, start)? {
            let (offset, payload) = frame?;
            let ev = decode(path, offset, &payload)?;
            let e = pending.entry(ev.ip).or_default();
            e.extend_from_slice(&(*seq as u32).to_le_bytes());
            e.extend_from_slice(&offset.to_le_bytes());
            last = (*seq, offset + 8 + payload.len() as u64);
            count += 1;
            // Bounded memory however long the log: write out every so often.
            if count.is_multiple_of(100_000) {
                write_entries(dir, &mut pending)?;
            }
        }
    }
    if last == (seq0, off0) {
        return Ok(());
    }
    write_entries(dir, &mut pending)?;
    // The checkpoint goes last, so it never runs ahead of the entries; no fsync (derived data:
    // after a crash the index may hold an entry twice, which reads the same).
    podnet_fsio::atomic_write(&idx, ".checkpoint", format!("{} {}", last.0, last.1).as_bytes())?;
    Ok(())
}

fn write_entries(dir: &Path, pending: &mut HashMap<IpAddr, Vec<u8>>) -> Result<(), IpamError> {
    podnet_fsio::ensure_dir(&dir.join("index"))?;
    for (ip, entries) in pending.drain() {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(index_file(dir, ip))
            .map_err(|e| IpamError::io("writing the audit index", e))?;
        f.write_all(&entries).map_err(|e| IpamError::io("writing the audit index", e))?;
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CollectReport {
    pub allocated: usize,
    pub released: usize,
    /// Segments dropped by retention.
    pub dropped: usize,
}

type Key = (IpAddr, String, String);
/// Open allocations (attachment and address → from) and closed ones (with their from).
type LogView = (HashMap<Key, String>, HashSet<(Key, String)>);

fn key(e: &AuditEvent) -> Key {
    (e.ip, e.container_id.clone(), e.ifname.clone())
}

/// What the log says, kept beside it (`audit/state.json`) so a collect need not read the whole
/// log: the open allocations, the allocations closed by the latest collect (a pending file it
/// logged may outlive a crash), and the log position the state is valid at.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    seq: u64,
    offset: u64,
    open: Vec<(IpAddr, String, String, String)>,
    recent: Vec<(IpAddr, String, String, String)>,
}

/// The state at the log's end: the kept one, with whatever the log holds past it replayed, and
/// whether anything was (then the state is worth keeping anew).
fn load_state(dir: &Path, wanted: &HashSet<Key>) -> Result<(LogView, bool), IpamError> {
    let kept: State = std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &State| s.seq == 0 || segment_path(dir, s.seq).exists())
        .unwrap_or_default();
    let mut open: HashMap<Key, String> = kept.open.into_iter().map(|(ip, c, i, f)| ((ip, c, i), f)).collect();
    let mut closed: HashSet<(Key, String)> = kept.recent.into_iter().map(|(ip, c, i, f)| ((ip, c, i), f)).collect();
    let mut replayed = false;
    for (seq, path) in segments(dir).into_iter().filter(|(s, _)| *s >= kept.seq) {
        let start = if seq == kept.seq { kept.offset } else { 0 };
        for frame in RecordLog::read(&path, start)? {
            let (offset, payload) = frame?;
            replayed = true;
            let e = decode(&path, offset, &payload)?;
            if !wanted.contains(&key(&e)) {
                continue;
            }
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
    }
    Ok(((open, closed), replayed))
}

/// The log's end: (newest segment, its length).
fn log_end(dir: &Path) -> (u64, u64) {
    segments(dir).last().map(|(s, p)| (*s, std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))).unwrap_or((0, 0))
}

fn keep_state(
    dir: &Path,
    pos: (u64, u64),
    open: &HashMap<Key, String>,
    recent: &[(Key, String)],
) -> Result<(), IpamError> {
    let state = State {
        seq: pos.0,
        offset: pos.1,
        open: open.iter().map(|((ip, c, i), f)| (*ip, c.clone(), i.clone(), f.clone())).collect(),
        recent: recent.iter().map(|((ip, c, i), f)| (*ip, c.clone(), i.clone(), f.clone())).collect(),
    };
    // Derived from the log (rebuilt by replaying it when missing or behind), off the ADD path.
    Ok(podnet_fsio::atomic_write(dir, "state.json", &serde_json::to_vec(&state).expect("state serializes"))?)
}

/// Append events as they are (a benchmark's or a test's history; an import). Not for events
/// the node store still holds: [`collect`] logs those.
pub fn append_events(ipam: &Ipam, events: &[AuditEvent]) -> Result<(), IpamError> {
    let frames: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).expect("events serialize")).collect();
    let segment_bytes = ipam.config().audit.max_bytes / 8;
    for chunk in frames.chunks(4096) {
        append(&dir_of(ipam), segment_bytes, chunk)?;
    }
    Ok(())
}

/// Log what the node store and the pending releases hold that the log does not yet: one append
/// and one fsync for all of it, then the pending files go; then retention. Safe to run at any
/// time and to be killed at any point (a rerun logs nothing twice).
pub fn collect(ipam: &Ipam) -> Result<CollectReport, IpamError> {
    let dir = dir_of(ipam);
    let pending_dir = dir.join("pending");
    let records = ipam.allocations()?;
    let mut names: Vec<String> = match std::fs::read_dir(&pending_dir) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with(".tmp-")).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    // Markers of withdrawals already logged (`done-<name>`): kept while the pod still holds the
    // address, so it is not noted again; gone with the record.
    let held_keys: HashSet<Key> =
        records.iter().map(|a| (a.address.addr(), a.handle.container_id.clone(), a.handle.ifname.clone())).collect();
    let mut pendings = Vec::new();
    for name in names {
        let path = pending_dir.join(&name);
        if name.starts_with("done-") {
            let marker: Option<Pending> = std::fs::read(&path).ok().and_then(|t| serde_json::from_slice(&t).ok());
            if marker.is_none_or(|m| !held_keys.contains(&key(&m.released))) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let Ok(text) = std::fs::read(&path) else { continue };
        let p: Pending = match journal::parse_kept(&name) {
            // The address's record itself, kept at its release (a record that no longer reads
            // back still tells the release from its name).
            Some((time, entry)) => {
                let record = podnet_fsio::decode_record::<Allocation>(&path, &text)
                    .ok()
                    .filter(|a| a.address.addr() == entry.ip && a.handle == entry.handle);
                journal::release_of(time, &ipam.config().node, ipam.network(), entry.ip, &entry.handle, record.as_ref())
            }
            None => serde_json::from_slice(&text).map_err(|e| IpamError::Corrupt {
                path: path.clone(),
                why: format!("a pending release does not decode: {e}"),
            })?,
        };
        pendings.push((name, p));
    }
    // Only these attachments can need an event now: what the log says of others is not read into
    // memory (bounded however long the log).
    let wanted: HashSet<Key> = records
        .iter()
        .map(|a| (a.address.addr(), a.handle.container_id.clone(), a.handle.ifname.clone()))
        .chain(pendings.iter().map(|(_, p)| key(&p.released)))
        .collect();
    let ((mut open, mut closed), replayed) = load_state(&dir, &wanted)?;
    let mut recent: Vec<(Key, String)> = Vec::new();
    let mut new = Vec::new();
    let mut report = CollectReport::default();
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
    let mut done = Vec::new();
    for (name, p) in pendings {
        let k = key(&p.released);
        let from = p.allocated.as_ref().map(|a| a.time.clone()).or_else(|| open.get(&k).cloned());
        // Written, but the record it releases is still there: that release has not happened
        // (a DEL killed half-way); its retry leaves another pending file.
        // (A withdrawal ends the holding while the record stays: it is logged all the same.)
        if !p.withdrawn && from.as_ref().is_some_and(|f| held.contains(&(k.clone(), f.clone()))) {
            continue;
        }
        let Some(from) = from else {
            // Its allocation was never logged and its record was unreadable (a corrupt record
            // `ipam rebuild` freed): the release is all there is to tell.
            new.push(p.released);
            report.released += 1;
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
        closed.insert((k.clone(), from.clone()));
        recent.push((k, from));
        new.push(p.released);
        report.released += 1;
        done.push(name);
    }
    // In time order (parsed: the same instant can be spelled two ways).
    new.sort_by_cached_key(|e| crate::parse_time(&e.time).unwrap_or(SystemTime::UNIX_EPOCH));
    if !new.is_empty() {
        let frames: Vec<Vec<u8>> = new.iter().map(|e| serde_json::to_vec(e).expect("events serialize")).collect();
        let pos = append(&dir, ipam.config().audit.max_bytes / 8, &frames)?;
        keep_state(&dir, pos, &open, &still_held(&closed, &held, recent))?;
    } else if replayed {
        keep_state(&dir, log_end(&dir), &open, &still_held(&closed, &held, recent))?;
    }
    for name in &done {
        let path = pending_dir.join(name);
        if name.starts_with("withdrawn-") {
            let _ = std::fs::rename(&path, pending_dir.join(format!("done-{name}")));
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
    if !done.is_empty() {
        podnet_fsio::sync_dir(&pending_dir)?;
    }
    report.dropped = retain(&dir, ipam.config().audit)?;
    // Keep the index current, so a query never has to build it (after a restart, or the first).
    if dir.join("log").exists() {
        update_index(&dir)?;
    }
    Ok(report)
}

/// What the kept state must remember as closed: this collect's closes (a pending file it logged
/// may outlive a crash), and closed holdings whose record is still there (a withdrawn address
/// its pod still carries: never logged as allocated again).
fn still_held(
    closed: &HashSet<(Key, String)>,
    held: &HashSet<(Key, String)>,
    mut recent: Vec<(Key, String)>,
) -> Vec<(Key, String)> {
    recent.extend(closed.intersection(held).filter(|c| !recent.contains(c)).cloned().collect::<Vec<_>>());
    recent
}

/// Append `frames` to the newest segment, starting a new one when it is full; one fsync. The log
/// position after them.
fn append(dir: &Path, segment_bytes: u64, frames: &[Vec<u8>]) -> Result<(u64, u64), IpamError> {
    let segs = segments(dir);
    let mut seq = segs.last().map(|(s, _)| *s).unwrap_or(1);
    let full = segs.last().is_some_and(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >= segment_bytes);
    if full {
        seq += 1;
    }
    let mut log = RecordLog::open(&segment_path(dir, seq), SyncPolicy::Manual)?;
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    log.append(&refs)?;
    log.sync()?;
    Ok((seq, log.end()))
}

/// Drop whole segments, oldest first, whose last event is older than `retentionDays`, or while
/// the log is over `maxBytes`; never the newest. The count dropped.
fn retain(dir: &Path, cfg: podnet_ipam::config::AuditConfig) -> Result<usize, IpamError> {
    let segs = segments(dir);
    let Some(((newest, _), older)) = segs.split_last() else { return Ok(0) };
    let _ = newest;
    let meta = |p: &Path| std::fs::metadata(p).ok();
    let mut total: u64 = segs.iter().filter_map(|(_, p)| meta(p)).map(|m| m.len()).sum();
    let horizon = SystemTime::now() - Duration::from_secs(cfg.retention_days * 86_400);
    let mut dropped = 0;
    for (_, path) in older {
        let Some(m) = meta(path) else { continue };
        // A segment's mtime is its last append: the time of its newest event, give or take.
        let expired = m.modified().is_ok_and(|t| t < horizon);
        if !(expired || total > cfg.max_bytes) {
            break;
        }
        std::fs::remove_file(path).map_err(|e| IpamError::io(format!("dropping {}", path.display()), e))?;
        total -= m.len();
        dropped += 1;
    }
    if dropped > 0 {
        podnet_fsio::sync_dir(&dir.join("log"))?;
    }
    Ok(dropped)
}
