//! `podnetctl ipam rebuild`: recover a node store whose records are corrupt (truncated, NUL-filled,
//! failing their checksum) from what the kernel shows, instead of treating them as "no state".
//!
//! An address file's name (`<ip>_<containerID>:<ifname>`) is set by an atomic rename, so it
//! survives what garbles the content. For each corrupt record the caller's `confirm` asks the
//! kernel whether that attachment's endpoint exists and carries the address: if so the record is
//! written again from the config, the node's leases and the kernel; if not, the address is freed.
//! Nothing is deleted: every corrupt file is kept under `<dataDir>/<network>/ipam/quarantine/`.

use crate::allocator::Span;
use crate::config::Source;
use crate::error::IpamError;
use crate::fsio::{self, atomic_write, encode_record, ensure_dir, read_record, sync_dir};
use crate::model::{now_rfc3339, Allocation, BlockLease, Handle};
use crate::node::AddrEntry;
use crate::Ipam;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What rebuild did with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Repair {
    /// The endpoint is live and carries the address: its record is written again.
    Restored { ip: IpAddr, handle: Handle },
    /// No live endpoint carries the address: it is free again.
    Freed { ip: IpAddr, handle: Handle },
    /// The address lies in no pool of the config, so no record can be made for it.
    Unplaced { ip: IpAddr, handle: Handle },
    /// A block lease record, written again from the cluster store's lease.
    BlockRestored { block: IpNet },
    /// A block lease record the cluster store does not confirm: `ipam check` then reports the lease.
    BlockDropped { block: IpNet },
    /// A file whose name says nothing podnet can use.
    Unnamed { file: String },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    pub repairs: Vec<Repair>,
    /// Where the corrupt files were moved.
    pub quarantine: PathBuf,
}

/// Rebuild the node store of `ipam`. `confirm(handle, candidates)` returns the candidates the
/// kernel shows on that attachment's endpoint (empty when it has none); `attachment(handle,
/// allocations)` makes the record the plugin keeps with a restored allocation.
pub fn rebuild(
    ipam: &Ipam,
    confirm: &dyn Fn(&Handle, &[IpAddr]) -> Vec<IpAddr>,
    attachment: &dyn Fn(&Handle, &[Allocation]) -> Option<serde_json::Value>,
) -> Result<RebuildReport, IpamError> {
    let node = ipam.node_store();
    let quarantine = node.dir().join("quarantine");
    let mut repairs = Vec::new();
    if !node.exists() {
        return Ok(RebuildReport { repairs, quarantine });
    }
    let _lock = node.lock()?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let keep = |dir: &Path, file: &str, copy: bool| -> Result<(), IpamError> {
        ensure_dir(&quarantine)?;
        let to = format!("{stamp}-{file}");
        if copy {
            // The file is rewritten in place next: keep its bytes first.
            let bytes = std::fs::read(dir.join(file)).map_err(|e| IpamError::io(format!("reading {}", dir.join(file).display()), e))?;
            atomic_write(&quarantine, &to, &bytes)
        } else {
            std::fs::rename(dir.join(file), quarantine.join(&to)).map_err(|e| IpamError::io(format!("moving {} into {}", dir.join(file).display(), quarantine.display()), e))?;
            sync_dir(&quarantine)?;
            sync_dir(dir)
        }
    };

    // Block leases first: restored records name their block.
    let blocks_dir = node.dir().join("blocks");
    let me = &ipam.config().node;
    let cluster_leases: Vec<BlockLease> = ipam.cluster().leases()?.into_iter().filter(|l| &l.node == me).collect();
    for name in fsio::list_locked(&blocks_dir)? {
        let Err(IpamError::Corrupt { .. }) = read_record::<BlockLease>(&blocks_dir.join(&name)) else { continue };
        let block = crate::addr::net_from_file_name(&name);
        match cluster_leases.iter().find(|l| Some(l.block) == block) {
            Some(lease) => {
                keep(&blocks_dir, &name, true)?;
                node.add_block(lease)?;
                repairs.push(Repair::BlockRestored { block: lease.block });
            }
            None => {
                keep(&blocks_dir, &name, false)?;
                match block {
                    Some(block) => repairs.push(Repair::BlockDropped { block }),
                    None => repairs.push(Repair::Unnamed { file: format!("blocks/{name}") }),
                }
            }
        }
    }
    let blocks = node.blocks()?;

    // Address records, grouped by handle: a dual-stack attachment's two records are restored together.
    let addrs_dir = node.dir().join("addrs");
    let mut corrupt: BTreeMap<Handle, Vec<AddrEntry>> = BTreeMap::new();
    let mut intact: BTreeMap<Handle, Allocation> = BTreeMap::new();
    for name in fsio::list_locked(&addrs_dir)? {
        let Some(entry) = AddrEntry::parse(&name) else {
            keep(&addrs_dir, &name, false)?;
            repairs.push(Repair::Unnamed { file: format!("addrs/{name}") });
            continue;
        };
        match node.read(&entry) {
            Ok(a) => {
                intact.insert(entry.handle.clone(), a);
            }
            Err(IpamError::Corrupt { .. }) => corrupt.entry(entry.handle.clone()).or_default().push(entry),
            Err(e) => return Err(e),
        }
    }
    let claims = if ipam.may_claim() { ipam.cluster().claims()? } else { Vec::new() };
    for (handle, entries) in corrupt {
        let candidates: Vec<IpAddr> = entries.iter().map(|e| e.ip).collect();
        let live = confirm(&handle, &candidates);
        let sibling = intact.get(&handle);
        let mut restored: Vec<(AddrEntry, Allocation)> = Vec::new();
        for e in entries {
            if !live.contains(&e.ip) {
                keep(&addrs_dir, &e.file, false)?;
                repairs.push(Repair::Freed { ip: e.ip, handle: handle.clone() });
                continue;
            }
            match placed(ipam, &blocks, e.ip) {
                Some((pool, span)) => {
                    let claim_id = claims.iter().find(|c| c.ip == e.ip && c.handle == handle && &c.node == me).map(|c| c.id.clone());
                    let a = Allocation {
                        address: IpNet::new(e.ip, span.pod_prefix_len).expect("prefix fits"),
                        gateway: span.gateway,
                        pool,
                        block: span.subnet,
                        handle: handle.clone(),
                        pod: sibling.map(|s| s.pod.clone()).unwrap_or_default(),
                        node: me.clone(),
                        allocated_at: now_rfc3339(),
                        attachment: None,
                        claim_id,
                    };
                    restored.push((e, a));
                }
                None => {
                    // Left in place: the endpoint is live, so freeing it could hand it out twice.
                    repairs.push(Repair::Unplaced { ip: e.ip, handle: handle.clone() });
                }
            }
        }
        if restored.is_empty() {
            continue;
        }
        let att = match sibling.and_then(|s| s.attachment.clone()) {
            Some(att) => Some(att),
            None => {
                let mut all: Vec<Allocation> = restored.iter().map(|(_, a)| a.clone()).collect();
                all.sort_by_key(|a| !a.address.addr().is_ipv4());
                attachment(&handle, &all)
            }
        };
        for (e, mut a) in restored {
            a.attachment = att.clone();
            keep(&addrs_dir, &e.file, true)?;
            atomic_write(&addrs_dir, &e.file, &encode_record(&a))?;
            repairs.push(Repair::Restored { ip: e.ip, handle: handle.clone() });
        }
    }
    // Claims of freed addresses go back now (still under the lock, as GC does).
    if ipam.may_claim() {
        let entries = node.entries()?;
        ipam.release_stale_claims_locked(&entries)?;
    }
    Ok(RebuildReport { repairs, quarantine })
}

/// The pool and span an address of this node belongs to: its block (overlay), or its range.
fn placed(ipam: &Ipam, blocks: &[IpNet], ip: IpAddr) -> Option<(String, Span)> {
    let pool = ipam.config().pools.iter().find(|p| p.cidr().contains(&ip))?;
    let span = match pool.cfg.source {
        Source::Range => pool.range_span(ipam.reservation()),
        _ => {
            // A borrowed address's block is another node's; either way it is the pool's block
            // that contains the address.
            let block = blocks.iter().copied().find(|b| b.contains(&ip)).unwrap_or_else(|| IpNet::new(ip, pool.block_len).expect("block fits").trunc());
            Span::for_block(block, ipam.reservation())
        }
    };
    Some((pool.name().to_string(), span))
}
