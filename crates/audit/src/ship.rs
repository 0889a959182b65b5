//! Shipping the node log to the cluster store, so one query answers for every node: batches of
//! events (JSON lines) under `<prefix>/<network>/audit/<node>/<seq>` (local store: a directory),
//! numbered from a cursor kept beside the log. A batch is put before the cursor moves past it,
//! and a batch is always cut the same way from the same position, so a restart or an outage
//! resumes where it stopped with nothing lost and nothing twice.

use crate::event::AuditEvent;
use podnet_fsio::RecordLog;
use podnet_ipam::store::Deadline;
use podnet_ipam::{Ipam, IpamError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// At most this much per batch (etcd refuses requests over 1.5 MiB).
const BATCH_BYTES: usize = 256 << 10;
/// At most this many batches per call: bounded work per podnetd tick.
const BATCHES_PER_CALL: usize = 16;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cursor {
    /// The log position shipped through.
    seq: u64,
    offset: u64,
    /// The next batch's number.
    next: u64,
    /// The first batch cut from each segment, to drop batches when retention drops segments.
    first_batch: BTreeMap<u64, u64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShipReport {
    pub batches: usize,
    pub events: usize,
    /// Whether the log is shipped to its end.
    pub caught_up: bool,
}

/// Ship what the log holds past the cursor (up to a bound per call), and drop the batches of
/// segments retention dropped.
pub fn ship(ipam: &Ipam) -> Result<ShipReport, IpamError> {
    let dir = crate::log::dir_of(ipam);
    let node = &ipam.config().node;
    let store = ipam.cluster_store();
    let mut cur: Cursor =
        std::fs::read(dir.join("shipped.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let segs = crate::log::segments(&dir);
    let mut report = ShipReport::default();
    // Retention dropped the cursor's segment: resume at the oldest one left.
    if cur.seq != 0 && !segs.iter().any(|(s, _)| *s == cur.seq) {
        if let Some((oldest, _)) = segs.iter().find(|(s, _)| *s > cur.seq) {
            (cur.seq, cur.offset) = (*oldest, 0);
        }
    }
    let from = cur.seq.max(1);
    'segments: for (seq, path) in segs.iter().filter(|(s, _)| *s >= from) {
        if *seq != cur.seq {
            (cur.seq, cur.offset) = (*seq, 0);
        }
        cur.first_batch.entry(*seq).or_insert(cur.next);
        loop {
            if report.batches == BATCHES_PER_CALL {
                break 'segments;
            }
            let (body, events, end) = cut(path, cur.offset)?;
            if events == 0 {
                break;
            }
            store.put_audit_batch(node, cur.next, &body, &Deadline::new(ipam.config().cluster_timeout()))?;
            (cur.offset, cur.next) = (end, cur.next + 1);
            report.batches += 1;
            report.events += events;
            keep(&dir, &cur)?;
        }
    }
    let last = segs.last().map(|(s, p)| (*s, std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    report.caught_up = last.is_none_or(|l| l == (cur.seq, cur.offset));
    // Batches of segments retention dropped go from the cluster store too.
    if let Some((oldest, _)) = segs.first() {
        let below = cur.first_batch.get(oldest).copied().unwrap_or(0);
        if below > 0 && cur.first_batch.keys().next().is_some_and(|k| k < oldest) {
            store.drop_audit_batches(node, below, &Deadline::new(ipam.config().cluster_timeout()))?;
            cur.first_batch.retain(|k, _| k >= oldest);
            keep(&dir, &cur)?;
        }
    }
    Ok(report)
}

fn keep(dir: &Path, cur: &Cursor) -> Result<(), IpamError> {
    Ok(podnet_fsio::atomic_write(dir, "shipped.json", &serde_json::to_vec(cur).expect("a cursor serializes"))?)
}

/// The batch starting at `offset`: JSON lines up to [`BATCH_BYTES`], its event count and where
/// it ends. The same position always gives the same batch.
fn cut(path: &Path, offset: u64) -> Result<(Vec<u8>, usize, u64), IpamError> {
    let mut body = Vec::new();
    let (mut n, mut end) = (0, offset);
    for frame in RecordLog::read(path, offset)? {
        let (at, payload) = frame?;
        if !body.is_empty() && body.len() + payload.len() + 1 > BATCH_BYTES {
            break;
        }
        body.extend_from_slice(&payload);
        body.push(b'\n');
        n += 1;
        end = at + 8 + payload.len() as u64;
    }
    Ok((body, n, end))
}

/// Every other node's shipped events (this node's own come from its log), and per node the time
/// of its newest shipped event.
pub fn cluster_events(ipam: &Ipam) -> Result<(Vec<AuditEvent>, BTreeMap<String, String>), IpamError> {
    let me = &ipam.config().node;
    let mut out = Vec::new();
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for b in ipam.cluster_store().audit_batches(&Deadline::new(ipam.config().cluster_timeout()))? {
        if &b.node == me {
            continue;
        }
        for line in b.body.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            let e: AuditEvent = serde_json::from_slice(line).map_err(|e| IpamError::Corrupt {
                path: format!("audit/{}/{}", b.node, b.seq).into(),
                why: format!("a shipped event does not decode: {e}"),
            })?;
            let t = newest.entry(b.node.clone()).or_default();
            if crate::parse_time(&e.time).ok() > crate::parse_time(t).ok() {
                *t = e.time.clone();
            }
            out.push(e);
        }
    }
    Ok((out, newest))
}
