//! `podnetctl ipam rebuild`: recover a node store whose records are corrupt (truncated, NUL-filled,
//! failing their checksum) from what the kernel shows, instead of treating them as "no state".
//!
//! An address file's name (`<ip>_<containerID>:<ifname>`) is set by an atomic rename, so it
//! survives what garbles the content. For each corrupt record the caller's `live` asks the kernel
//! whether that attachment's endpoint (its host veth) exists: if so the record is written again
//! from the config, the node's leases and the cluster store's claims; if not, the address is
//! freed. Nothing is deleted: every corrupt file is kept under `<dataDir>/<network>/ipam/quarantine/`.

use crate::error::IpamError;
use crate::model::{Allocation, BlockLease, Claim, ClaimAs, ClaimOutcome, Handle};
use crate::node::AddrEntry;
use crate::Ipam;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

/// What rebuild did with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Repair {
    /// The endpoint is live: its record is written again.
    Restored { ip: IpAddr, handle: Handle },
    /// No live endpoint: the address is free again.
    Freed { ip: IpAddr, handle: Handle },
    /// The endpoint is live but the address lies in no pool of the config: left as it was.
    Unplaced { ip: IpAddr, handle: Handle },
    /// Restored, but neither a lease of its block nor a claim in the cluster store keeps other
    /// nodes from handing it out: delete and re-create the pod.
    Unleased { ip: IpAddr, handle: Handle, block: IpNet },
    /// Restored, but another attachment holds the address's claim in the cluster store: one of
    /// the two pods must be re-created.
    Contested { ip: IpAddr, handle: Handle, holder: String },
    /// A block lease record, written again from the cluster store's lease.
    BlockRestored { block: IpNet },
    /// A block lease record the cluster store does not confirm.
    BlockDropped { block: IpNet },
    /// A file whose name and content say nothing podnet can use.
    Unnamed { file: String },
}

impl Repair {
    /// Whether a person has to act: rebuild could not make the node safe on its own.
    pub fn needs_action(&self) -> bool {
        matches!(self, Repair::Unplaced { .. } | Repair::Unleased { .. } | Repair::Contested { .. })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    pub repairs: Vec<Repair>,
    /// Where the corrupt files were moved.
    pub quarantine: PathBuf,
}

/// Rebuild the node store of `ipam`. `live(handle)` says whether the attachment's endpoint exists
/// in this network namespace (an error stops the rebuild: unsure is not "gone");
/// `attachment(handle, allocations)` makes the record the plugin keeps with a restored allocation.
/// Unless `force`, a node where no recorded attachment is live is refused: that is what running
/// in the wrong network namespace looks like, and it would free every corrupt record's address.
pub fn rebuild(
    ipam: &Ipam,
    live: &dyn Fn(&Handle) -> Result<bool, IpamError>,
    attachment: &dyn Fn(&Handle, &[Allocation]) -> Option<serde_json::Value>,
    force: bool,
) -> Result<RebuildReport, IpamError> {
    let quarantine = ipam.node.dir().join("quarantine");
    let mut repairs = Vec::new();
    if !ipam.node.exists() {
        return Ok(RebuildReport { repairs, quarantine });
    }
    let guard = ipam.node.lock()?;

    // Read everything first; change nothing until the namespace check below has passed.
    let mut corrupt: BTreeMap<Handle, Vec<AddrEntry>> = BTreeMap::new();
    let mut intact: BTreeMap<Handle, Allocation> = BTreeMap::new();
    // Files whose names do not decode, with what their content says (if it reads).
    let mut unnamed: Vec<(String, Option<Allocation>)> = Vec::new();
    for name in guard.entry_files()? {
        match AddrEntry::parse(&name) {
            None => unnamed.push((name.clone(), guard.read_file(&name).ok())),
            Some(entry) => match guard.read(&entry) {
                Ok(a) => {
                    intact.insert(entry.handle.clone(), a);
                }
                Err(IpamError::Corrupt { .. }) => corrupt.entry(entry.handle.clone()).or_default().push(entry),
                Err(e) => return Err(e),
            },
        }
    }
    let bad_blocks: Vec<String> = guard
        .block_files()?
        .into_iter()
        .filter(|n| matches!(guard.read_block_file(n), Err(IpamError::Corrupt { .. })))
        .collect();
    if corrupt.is_empty() && unnamed.is_empty() && bad_blocks.is_empty() {
        return Ok(RebuildReport { repairs, quarantine });
    }
    let handles: BTreeSet<&Handle> = intact
        .keys()
        .chain(corrupt.keys())
        .chain(unnamed.iter().filter_map(|(_, a)| a.as_ref().map(|a| &a.handle)))
        .collect();
    let mut alive: BTreeMap<Handle, bool> = BTreeMap::new();
    for h in handles {
        alive.insert(h.clone(), live(h)?);
    }
    if !force && !alive.is_empty() && !alive.values().any(|l| *l) {
        return Err(IpamError::NoLiveEndpoint(format!(
            "none of the {} attachments recorded on node {} has an endpoint in this network namespace; run podnetctl in the node's network namespace, or pass --force if every pod of the node is really gone",
            alive.len(),
            ipam.cfg.node
        )));
    }

    // Block leases first: restored records name their block.
    let me = &ipam.cfg.node;
    // The cluster store is asked only when it has something to say.
    let cluster_leases: Vec<BlockLease> = if bad_blocks.is_empty() {
        Vec::new()
    } else {
        ipam.cluster.leases(&ipam.deadline)?.into_iter().filter(|l| &l.node == me).collect()
    };
    for name in bad_blocks {
        let block = crate::addr::net_from_file_name(&name);
        match cluster_leases.iter().find(|l| Some(l.block) == block) {
            Some(lease) => {
                guard.quarantine_block_file(&name, &quarantine, true)?;
                guard.add_block(lease)?;
                repairs.push(Repair::BlockRestored { block: lease.block });
            }
            None => {
                guard.quarantine_block_file(&name, &quarantine, false)?;
                match block {
                    Some(block) => repairs.push(Repair::BlockDropped { block }),
                    None => repairs.push(Repair::Unnamed { file: format!("blocks/{name}") }),
                }
            }
        }
    }
    let blocks = guard.blocks()?;

    // A file with a garbled name whose content still reads: back under its proper name if live.
    for (name, content) in unnamed {
        match content {
            Some(a) if alive.get(&a.handle) == Some(&true) => {
                let proper = AddrEntry::file_name(a.address.addr(), &a.handle);
                guard.quarantine_file(&name, &quarantine, false)?;
                guard.rewrite(&proper, &a)?;
                repairs.push(Repair::Restored { ip: a.address.addr(), handle: a.handle.clone() });
                // Its pod attributes and attachment serve the attachment's other records too.
                intact.entry(a.handle.clone()).or_insert(a);
            }
            _ => {
                guard.quarantine_file(&name, &quarantine, false)?;
                repairs.push(Repair::Unnamed { file: format!("addrs/{name}") });
            }
        }
    }

    // Address records, grouped by handle: a dual-stack attachment's two records go together.
    let claims = if ipam.may_claim() { ipam.cluster.claims(&ipam.deadline)? } else { Vec::new() };
    for (handle, entries) in corrupt {
        let sibling = intact.get(&handle);
        if alive.get(&handle) != Some(&true) {
            for e in entries {
                guard.quarantine_freed(&e, &quarantine)?;
                repairs.push(Repair::Freed { ip: e.ip, handle: handle.clone() });
            }
            continue;
        }
        let mut restored: Vec<(AddrEntry, Allocation)> = Vec::new();
        for e in entries {
            let Some(source) = ipam.source_containing(e.ip) else {
                // Left in place: the endpoint is live, so freeing it could hand it out twice.
                repairs.push(Repair::Unplaced { ip: e.ip, handle: handle.clone() });
                continue;
            };
            let Some(span) = source.span_of(e.ip, &blocks) else {
                repairs.push(Repair::Unplaced { ip: e.ip, handle: handle.clone() });
                continue;
            };
            let mut a = Allocation {
                address: IpNet::new(e.ip, span.pod_prefix_len).expect("prefix fits"),
                gateway: span.gateway,
                pool: source.pool().name().to_string(),
                block: span.subnet,
                handle: handle.clone(),
                pod: sibling.map(|s| s.pod.clone()).unwrap_or_default(),
                node: me.clone(),
                allocated_at: crate::model::now_rfc3339_micros(),
                attachment: None,
                claim_id: None,
            };
            let leased = source.leases_blocks();
            let own = blocks.contains(&a.block);
            let held = claims.iter().find(|c| c.ip == e.ip);
            match held {
                Some(c) if c.handle == handle && &c.node == me => a.claim_id = Some(c.id.clone()),
                Some(c) => repairs.push(Repair::Contested {
                    ip: e.ip,
                    handle: handle.clone(),
                    holder: format!("{} on node {}", c.handle.key(), c.node),
                }),
                // A lending block claims every address its owner holds.
                None if leased && own && guard.lending(a.block)?.is_some() => {
                    let claim = Claim::new(e.ip, a.block, me, &handle);
                    match ipam.cluster.claim(&claim, ClaimAs::Owner { announce: false }, &ipam.deadline)? {
                        ClaimOutcome::Claimed => a.claim_id = Some(claim.id),
                        ClaimOutcome::Taken(_) | ClaimOutcome::BlockGone => repairs.push(Repair::Contested {
                            ip: e.ip,
                            handle: handle.clone(),
                            holder: "another claim, or the block's lease changed".into(),
                        }),
                    }
                }
                None if leased && !own => {
                    repairs.push(Repair::Unleased { ip: e.ip, handle: handle.clone(), block: a.block })
                }
                None => {}
            }
            restored.push((e, a));
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
            guard.quarantine_file(&e.file, &quarantine, true)?;
            guard.rewrite(&e.file, &a)?;
            repairs.push(Repair::Restored { ip: e.ip, handle: handle.clone() });
        }
    }
    // Claims of freed addresses go back now (still under the lock, as GC does); if the cluster
    // store is down, GC gives them back later.
    if ipam.may_claim() {
        let entries = guard.entries()?;
        if let Err(e) = ipam.release_stale_claims_locked(&guard, &entries) {
            tracing::warn!(error = %e, "could not give back the claims of freed addresses; GC gives them back later");
        }
    }
    Ok(RebuildReport { repairs, quarantine })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IpamConfig, PodInfo, Reservation};
    use podnet_fsio as fsio;
    use serde_json::json;
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};

    fn ipam(root: &Path, node: &str, pools: serde_json::Value) -> Ipam {
        let cfg = IpamConfig::parse(
            &json!({"node": node, "dataDir": root.join(node), "store": {"type": "local", "path": root.join("cluster")}, "pools": pools}),
            None,
        )
        .unwrap();
        Ipam::local(cfg, "net", Reservation::None)
    }
    fn add(ipam: &Ipam, id: &str) -> Vec<IpAddr> {
        let pod = PodInfo { namespace: Some("team".into()), ..Default::default() };
        let mut p = ipam.reserve(&Handle::new(id, "eth0"), &pod).unwrap();
        p.attach(json!({"endpoint": id}));
        p.commit().unwrap().allocations.iter().map(|a| a.address.addr()).collect()
    }
    fn addr_path(ipam: &Ipam, ip: IpAddr) -> PathBuf {
        let dir = ipam.node_store().dir().join("addrs");
        let name = fsio::list(&dir).unwrap().into_iter().find(|n| n.starts_with(&format!("{ip}_"))).unwrap();
        dir.join(name)
    }
    fn garble(path: &Path) {
        std::fs::write(path, [0u8; 32]).unwrap();
    }
    fn live_set(ids: &[&str]) -> impl Fn(&Handle) -> Result<bool, IpamError> {
        let ids: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
        move |h: &Handle| Ok(ids.contains(&h.container_id))
    }
    fn no_attachment(_: &Handle, _: &[Allocation]) -> Option<serde_json::Value> {
        Some(json!({"rebuilt": true}))
    }

    #[test]
    fn dual_stack_unnamed_files_and_the_wrong_namespace() {
        let d = tempfile::tempdir().unwrap();
        let pools = json!([{"name": "v4", "cidr": "10.3.0.0/24", "blockSize": 28}, {"name": "v6", "cidr": "fd03::/120", "blockSize": 124}]);
        let ipam = ipam(d.path(), "n1", pools);
        let a = add(&ipam, "a");
        let b = add(&ipam, "b");
        // a: its IPv4 record garbled, its IPv6 record intact. b: both garbled, and b is gone.
        garble(&addr_path(&ipam, a[0]));
        garble(&addr_path(&ipam, b[0]));
        garble(&addr_path(&ipam, b[1]));
        // A record under a name that does not decode, whose content reads.
        let good = addr_path(&ipam, a[1]);
        std::fs::rename(&good, good.with_file_name("garbled-name")).unwrap();

        // Nothing live here: the wrong namespace, refused without a change.
        let e = rebuild(&ipam, &live_set(&[]), &no_attachment, false).unwrap_err();
        assert!(e.to_string().contains("network namespace"), "{e}");
        // An error from the kernel stops it too.
        let failing = |_: &Handle| Err(IpamError::io("links", std::io::Error::other("ENOBUFS")));
        assert!(rebuild(&ipam, &failing, &no_attachment, false).is_err());
        assert_eq!(fsio::list(&ipam.node_store().dir().join("addrs")).unwrap().len(), 4, "nothing moved");

        let r = rebuild(&ipam, &live_set(&["a"]), &no_attachment, false).unwrap();
        let ha = Handle::new("a", "eth0");
        let hb = Handle::new("b", "eth0");
        for want in [
            Repair::Restored { ip: a[0], handle: ha.clone() },
            Repair::Restored { ip: a[1], handle: ha.clone() },
            Repair::Freed { ip: b[0], handle: hb.clone() },
            Repair::Freed { ip: b[1], handle: hb.clone() },
        ] {
            assert!(r.repairs.contains(&want), "{want:?} in {:?}", r.repairs);
        }
        assert!(!r.repairs.iter().any(Repair::needs_action));
        let all = ipam.allocations().unwrap();
        assert_eq!(all.len(), 2);
        assert!(
            all.iter().all(|x| x.handle == ha
                && x.pod.namespace.as_deref() == Some("team")
                && x.attachment == Some(json!({"endpoint": "a"}))),
            "{all:?}"
        );
        assert_eq!(fsio::list(&r.quarantine).unwrap().len(), 4, "every garbled or misnamed file is kept");
        // b's addresses are free again: the next pod gets the lowest of them.
        std::fs::remove_dir_all(ipam.node_store().dir().join("cursor")).unwrap();
        std::fs::create_dir(ipam.node_store().dir().join("cursor")).unwrap();
        assert_eq!(add(&ipam, "c"), b);
    }

    #[test]
    fn a_live_address_outside_the_nodes_leases_or_claims_needs_a_person() {
        let d = tempfile::tempdir().unwrap();
        let pools = json!([{"name": "p", "cidr": "10.4.0.0/28", "blockSize": 30, "allowBorrowing": true}]);
        let (n1, n2) = (ipam(d.path(), "n1", pools.clone()), ipam(d.path(), "n2", pools));
        let a = add(&n1, "a")[0];
        let b = add(&n1, "b")[0];
        // n1's block lends, so its addresses are claimed; a rebuilt record gets its claim back.
        let claim_of = |ip: IpAddr| n1.cluster().claims().unwrap().into_iter().find(|c| c.ip == ip);
        let before = claim_of(a).expect("claimed");
        garble(&addr_path(&n1, a));
        let r = rebuild(&n1, &live_set(&["a", "b"]), &no_attachment, false).unwrap();
        assert!(!r.repairs.iter().any(Repair::needs_action), "{:?}", r.repairs);
        assert_eq!(n1.allocations().unwrap().iter().find(|x| x.address.addr() == a).unwrap().claim_id, Some(before.id));

        // The block lease record garbled and the cluster store no longer leasing it to n1 (say, a
        // mistaken `release --node`): the pods are live, so their records come back, flagged.
        let blocks = n1.node_store().dir().join("blocks");
        let name = fsio::list(&blocks).unwrap().remove(0);
        garble(&blocks.join(&name));
        garble(&addr_path(&n1, b));
        let lease = n1.cluster().leases().unwrap().remove(0);
        for c in n1.cluster().claims().unwrap() {
            n1.cluster().unclaim(&c).unwrap();
        }
        n1.cluster().release_block(lease.block, "n1", true).unwrap();
        let r = rebuild(&n1, &live_set(&["a", "b"]), &no_attachment, false).unwrap();
        assert!(r.repairs.contains(&Repair::BlockDropped { block: lease.block }), "{:?}", r.repairs);
        assert!(
            r.repairs.contains(&Repair::Unleased { ip: b, handle: Handle::new("b", "eth0"), block: lease.block }),
            "{:?}",
            r.repairs
        );
        assert!(r.repairs.contains(&Repair::Restored { ip: b, handle: Handle::new("b", "eth0") }));
        let _ = n2;
    }
}
