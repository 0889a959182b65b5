//! The embedded cluster store: one file per block lease under `<path>/<network>/blocks/` and one per
//! address claim under `<path>/<network>/claims/<block>/<ip>` (lending blocks are marked in
//! `<path>/<network>/lending/`), written atomically under a lock.
//! Several simulated nodes on one machine can share its directory.

use super::{
    ClusterEvent, ClusterSnapshot, ClusterStore, ClusterWatch, Deadline, LeaseAttempt, LeaseSnapshot, NodeLease,
    WatchError,
};
use crate::addr::{net_from_file_name, net_to_file_name};
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::{now_rfc3339, BlockLease, BlockRelease, Claim, ClaimAs, ClaimOutcome, NodeRecord};
use ipnet::IpNet;
use podnet_fsio::{
    atomic_write, encode_record, ensure_dir, list, list_locked, read_record, remove, sync_dir, StoreLock, LOCK_WAIT,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// `root` is the store path (`ipam.store.path`, default `<dataDir>/cluster`).
    pub fn new(root: PathBuf, network: &str) -> LocalStore {
        LocalStore { dir: root.join(network) }
    }
    fn blocks_dir(&self) -> PathBuf {
        self.dir.join("blocks")
    }
    fn claims_dir(&self, block: IpNet) -> PathBuf {
        self.dir.join("claims").join(net_to_file_name(block))
    }
    fn lending_dir(&self) -> PathBuf {
        self.dir.join("lending")
    }
    fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }
    /// Node records, whole files (atomic renames make them safe to read unlocked); one that
    /// does not read is skipped with a warning (it is rewritten at its next heartbeat).
    fn read_nodes(&self) -> Vec<NodeRecord> {
        let dir = self.nodes_dir();
        let mut out = Vec::new();
        for name in podnet_fsio::list(&dir).unwrap_or_default() {
            match read_record::<NodeRecord>(&dir.join(&name)) {
                Ok(r) if r.node == name => out.push(r),
                Ok(_) => tracing::warn!(file = %dir.join(&name).display(), "a node record under another name; ignored"),
                Err(e) => tracing::warn!(error = %e, "a node record does not read; ignored until rewritten"),
            }
        }
        out
    }
    fn block_claims(&self, block: IpNet) -> Result<Vec<Claim>, IpamError> {
        let dir = self.claims_dir(block);
        list_locked(&dir)?.iter().map(|n| read_claim(&dir.join(n), block)).collect()
    }
    /// Whether the store was ever written: reads of a store that is not there find nothing and
    /// create nothing (podnetctl's read-only commands must leave no trace).
    fn exists(&self) -> bool {
        self.dir.join("lock").exists()
    }
    fn lock(&self) -> Result<StoreLock, IpamError> {
        ensure_dir(&self.blocks_dir())?;
        Ok(StoreLock::acquire(&self.dir.join("lock"), LOCK_WAIT)?)
    }
    fn read_all(&self) -> Result<Vec<BlockLease>, IpamError> {
        let dir = self.blocks_dir();
        let mut out = Vec::new();
        for name in list_locked(&dir)? {
            let path = dir.join(&name);
            let lease: BlockLease = read_record(&path)?;
            if net_from_file_name(&name) != Some(lease.block) {
                return Err(IpamError::Corrupt {
                    path,
                    why: format!("holds block {} under another name", lease.block),
                });
            }
            out.push(lease);
        }
        Ok(out)
    }
}

impl ClusterStore for LocalStore {
    fn lease_one_of(
        &self,
        pool: &Pool,
        node: &str,
        candidates: &[IpNet],
        _: &Deadline,
    ) -> Result<LeaseAttempt, IpamError> {
        let _l = self.lock()?;
        let mut claimed = Vec::new();
        for &block in candidates {
            if !pool.cidr().contains(&block) || self.blocks_dir().join(net_to_file_name(block)).exists() {
                continue;
            }
            // Addresses lent out by a node since released keep their block until they are released.
            if !list_locked(&self.claims_dir(block))?.is_empty() {
                claimed.push(block);
                continue;
            }
            let lease =
                BlockLease { block, pool: pool.name().to_string(), node: node.to_string(), leased_at: now_rfc3339() };
            atomic_write(&self.blocks_dir(), &net_to_file_name(block), &encode_record(&lease))?;
            return Ok(LeaseAttempt::Leased(lease));
        }
        Ok(LeaseAttempt::Taken { claimed })
    }

    fn release_block(
        &self,
        block: IpNet,
        node: &str,
        even_if_claimed: bool,
        _: &Deadline,
    ) -> Result<BlockRelease, IpamError> {
        if !self.exists() {
            return Ok(BlockRelease::NotHeld);
        }
        let _l = self.lock()?;
        let name = net_to_file_name(block);
        let path = self.blocks_dir().join(&name);
        let lease: BlockLease = match read_record(&path) {
            Ok(l) => l,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(BlockRelease::NotHeld),
            Err(e) => return Err(e.into()),
        };
        if lease.node != node {
            return Ok(BlockRelease::NotHeld);
        }
        if !even_if_claimed && !list_locked(&self.claims_dir(block))?.is_empty() {
            return Ok(BlockRelease::Claimed);
        }
        // The lending mark goes first: a crash in between leaves a lease nobody borrows from.
        if remove(&self.lending_dir(), &name)? {
            sync_dir(&self.lending_dir())?;
        }
        let removed = remove(&self.blocks_dir(), &name)?;
        sync_dir(&self.blocks_dir())?;
        Ok(if removed { BlockRelease::Released } else { BlockRelease::NotHeld })
    }

    fn lease_snapshot(&self, _: &Deadline) -> Result<LeaseSnapshot, IpamError> {
        if !self.exists() {
            return Ok(LeaseSnapshot { leases: Vec::new(), revision: 0 });
        }
        let _l = self.lock()?;
        Ok(LeaseSnapshot { leases: self.read_all()?, revision: 0 })
    }

    fn cluster_snapshot(&self, deadline: &Deadline) -> Result<ClusterSnapshot, IpamError> {
        let leases = self.lease_snapshot(deadline)?.leases;
        Ok(ClusterSnapshot { leases, nodes: self.read_nodes(), revision: 0 })
    }

    fn watch(
        &self,
        snapshot: &ClusterSnapshot,
        poll: Duration,
        node_ttl: Duration,
    ) -> Result<Box<dyn ClusterWatch>, IpamError> {
        let now = std::time::SystemTime::now();
        let nodes = snapshot.nodes.iter().filter(|n| n.is_live(now, node_ttl)).cloned().collect();
        Ok(Box::new(PollingWatch {
            store: self.clone(),
            leases: snapshot.leases.clone(),
            nodes,
            poll,
            node_ttl,
            next_poll: Instant::now() + poll,
        }))
    }

    fn put_node(&self, record: &NodeRecord, _ttl: Duration, _: &Deadline) -> Result<NodeLease, IpamError> {
        let mut record = record.clone();
        // Milliseconds: whole seconds would age a fresh heartbeat by up to one.
        record.heartbeat_at = Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string());
        ensure_dir(&self.nodes_dir())?;
        atomic_write(&self.nodes_dir(), &record.node, &encode_record(&record))?;
        Ok(NodeLease(0))
    }

    fn renew_node(
        &self,
        lease: NodeLease,
        record: &NodeRecord,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<NodeLease, IpamError> {
        self.put_node(record, ttl, deadline).map(|_| lease)
    }

    fn put_audit_batch(&self, node: &str, seq: u64, body: &[u8], _: &Deadline) -> Result<(), IpamError> {
        let dir = self.dir.join("audit").join(node);
        ensure_dir(&dir)?;
        Ok(podnet_fsio::atomic_write(&dir, &format!("{seq:020}"), body)?)
    }

    fn audit_batches(&self, _: &Deadline) -> Result<Vec<super::AuditBatch>, IpamError> {
        let root = self.dir.join("audit");
        let mut out = Vec::new();
        for node in list(&root).unwrap_or_default() {
            for name in list(&root.join(&node)).unwrap_or_default() {
                let Ok(seq) = name.parse::<u64>() else { continue };
                let path = root.join(&node).join(&name);
                let body = std::fs::read(&path).map_err(|e| IpamError::io(format!("reading {}", path.display()), e))?;
                out.push(super::AuditBatch { node: node.clone(), seq, body });
            }
        }
        out.sort_by(|a, b| (&a.node, a.seq).cmp(&(&b.node, b.seq)));
        Ok(out)
    }

    fn drop_audit_batches(&self, node: &str, below: u64, _: &Deadline) -> Result<(), IpamError> {
        let dir = self.dir.join("audit").join(node);
        for name in list(&dir).unwrap_or_default() {
            if name.parse::<u64>().is_ok_and(|s| s < below) {
                remove(&dir, &name)?;
            }
        }
        Ok(())
    }

    fn remove_node(&self, node: &str, _: &Deadline) -> Result<(), IpamError> {
        if remove(&self.nodes_dir(), node)? {
            sync_dir(&self.nodes_dir())?;
        }
        Ok(())
    }

    fn claim(&self, claim: &Claim, how: ClaimAs, _: &Deadline) -> Result<ClaimOutcome, IpamError> {
        let _l = self.lock()?;
        let name = net_to_file_name(claim.block);
        let gate = match how {
            ClaimAs::Owner { .. } => self.blocks_dir().join(&name),
            ClaimAs::Borrower => self.lending_dir().join(&name),
        };
        if !gate.exists() {
            return Ok(ClaimOutcome::BlockGone);
        }
        let dir = self.claims_dir(claim.block);
        let path = dir.join(claim.ip.to_string());
        if path.exists() {
            if read_claim(&path, claim.block)? != *claim {
                return Ok(ClaimOutcome::Taken(self.block_claims(claim.block)?));
            }
        } else {
            ensure_dir(&dir)?;
            atomic_write(&dir, &claim.ip.to_string(), &encode_record(claim))?;
        }
        if how == (ClaimAs::Owner { announce: true }) {
            ensure_dir(&self.lending_dir())?;
            atomic_write(&self.lending_dir(), &name, claim.node.as_bytes())?;
        }
        Ok(ClaimOutcome::Claimed)
    }

    fn unclaim(&self, claim: &Claim, _: &Deadline) -> Result<bool, IpamError> {
        if !self.exists() {
            return Ok(false);
        }
        let _l = self.lock()?;
        let dir = self.claims_dir(claim.block);
        let path = dir.join(claim.ip.to_string());
        match read_claim(&path, claim.block) {
            Ok(held) if held == *claim => {}
            Ok(_) => return Ok(false),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        }
        remove(&dir, &claim.ip.to_string())?;
        sync_dir(&dir)?;
        Ok(true)
    }

    fn lending_blocks(&self, _: &Deadline) -> Result<Vec<IpNet>, IpamError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let _l = self.lock()?;
        Ok(list_locked(&self.lending_dir())?.iter().filter_map(|n| net_from_file_name(n)).collect())
    }

    fn claims(&self, _: &Deadline) -> Result<Vec<Claim>, IpamError> {
        if !self.exists() {
            return Ok(Vec::new());
        }
        let _l = self.lock()?;
        let mut out = Vec::new();
        for name in list_locked(&self.dir.join("claims"))? {
            let Some(block) = net_from_file_name(&name) else { continue };
            out.extend(self.block_claims(block)?);
        }
        Ok(out)
    }
}

/// The local store has no change feed: a watch reads the leases and node records every `poll`
/// and reports the difference from what it saw last. A node record not renewed within the TTL
/// counts as gone.
struct PollingWatch {
    store: LocalStore,
    leases: Vec<BlockLease>,
    /// Live records as last seen (a renewal alone is no event).
    nodes: Vec<NodeRecord>,
    poll: Duration,
    node_ttl: Duration,
    next_poll: Instant,
}

impl PollingWatch {
    /// Read the store once; the changes since the last read.
    fn poll_once(&mut self) -> Result<Vec<ClusterEvent>, WatchError> {
        let leases = if self.store.exists() {
            let _l = self.store.lock().map_err(|e| WatchError::Unavailable(e.to_string()))?;
            self.store.read_all().map_err(|e| WatchError::Unavailable(e.to_string()))?
        } else {
            Vec::new()
        };
        let now = std::time::SystemTime::now();
        let nodes: Vec<NodeRecord> =
            self.store.read_nodes().into_iter().filter(|n| n.is_live(now, self.node_ttl)).collect();
        let mut events: Vec<ClusterEvent> = self
            .leases
            .iter()
            .filter(|l| !leases.iter().any(|n| n.block == l.block))
            .map(|l| ClusterEvent::Released(l.block))
            .collect();
        events.extend(leases.iter().filter(|n| !self.leases.contains(n)).cloned().map(ClusterEvent::Leased));
        events.extend(
            self.nodes
                .iter()
                .filter(|o| !nodes.iter().any(|n| n.node == o.node))
                .map(|o| ClusterEvent::NodeGone(o.node.clone())),
        );
        // A renewal only moves the heartbeat: not a change for watchers.
        let same = |a: &NodeRecord, b: &NodeRecord| {
            NodeRecord { heartbeat_at: None, ..a.clone() } == NodeRecord { heartbeat_at: None, ..b.clone() }
        };
        events
            .extend(nodes.iter().filter(|n| !self.nodes.iter().any(|o| same(o, n))).cloned().map(ClusterEvent::NodeUp));
        self.leases = leases;
        self.nodes = nodes;
        Ok(events)
    }
}

impl ClusterWatch for PollingWatch {
    /// Reads the store once per `poll`, however often it is called.
    fn next(&mut self, timeout: Duration) -> Result<Vec<ClusterEvent>, WatchError> {
        let until = Instant::now() + timeout;
        loop {
            if Instant::now() >= self.next_poll {
                self.next_poll = Instant::now() + self.poll;
                let events = self.poll_once()?;
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            let now = Instant::now();
            if now >= until {
                return Ok(Vec::new());
            }
            std::thread::sleep(self.next_poll.min(until).saturating_duration_since(now));
        }
    }
}

/// A claim file, checked against where it lies.
fn read_claim(path: &std::path::Path, block: IpNet) -> Result<Claim, IpamError> {
    let claim: Claim = read_record(path)?;
    let named = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<std::net::IpAddr>().ok());
    if claim.block != block || named != Some(claim.ip) || !block.contains(&claim.ip) {
        return Err(IpamError::Corrupt {
            path: path.to_path_buf(),
            why: format!("holds a claim for {} in {} under another name", claim.ip, claim.block),
        });
    }
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpamConfig;
    use serde_json::json;

    #[test]
    fn a_polling_watch_reports_leases_releases_and_nodes_after_its_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let cfg = IpamConfig::parse(
            &json!({"node": "a", "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]}),
            Some(d.path()),
        )
        .unwrap();
        let pool = &cfg.pools[0];
        let store = LocalStore::new(d.path().join("cluster"), "net");
        let deadline = Deadline::new(Duration::from_secs(5));
        let lease = |node: &str, n: u128| match store
            .lease_one_of(pool, node, &[crate::addr::nth_block(pool.cidr(), 26, n)], &deadline)
            .unwrap()
        {
            LeaseAttempt::Leased(l) => l,
            other => panic!("{other:?}"),
        };
        let first = lease("a", 0);
        let snapshot = store.lease_snapshot(&deadline).unwrap();
        assert_eq!(snapshot.leases, vec![first.clone()]);
        let snapshot = ClusterSnapshot { leases: snapshot.leases, nodes: Vec::new(), revision: 0 };
        let mut watch = store.watch(&snapshot, Duration::from_millis(10), Duration::from_secs(20)).unwrap();
        assert!(watch.next(Duration::from_millis(30)).unwrap().is_empty(), "nothing changed yet");
        let second = lease("b", 1);
        assert_eq!(watch.next(Duration::from_secs(2)).unwrap(), vec![ClusterEvent::Leased(second.clone())]);
        store.release_block(first.block, "a", false, &deadline).unwrap();
        assert_eq!(watch.next(Duration::from_secs(2)).unwrap(), vec![ClusterEvent::Released(first.block)]);
        // A node record comes and, not renewed within the TTL, goes.
        let record = NodeRecord {
            node: "b".into(),
            ip: "198.18.0.2".parse().unwrap(),
            ipv6: None,
            encap: "none".into(),
            vtep_mac: None,
            vtep_ip: None,
            started_at: now_rfc3339(),
            heartbeat_at: None,
        };
        let mut watch = store
            .watch(&store.cluster_snapshot(&deadline).unwrap(), Duration::from_millis(10), Duration::from_secs(1))
            .unwrap();
        store.put_node(&record, Duration::from_secs(1), &deadline).unwrap();
        match watch.next(Duration::from_secs(2)).unwrap().as_slice() {
            [ClusterEvent::NodeUp(r)] => assert_eq!(r.node, "b"),
            other => panic!("{other:?}"),
        }
        // Renewals are not changes; a record left to go stale is.
        store.renew_node(NodeLease(0), &record, Duration::from_secs(1), &deadline).unwrap();
        assert!(watch.next(Duration::from_millis(300)).unwrap().is_empty());
        assert_eq!(watch.next(Duration::from_secs(3)).unwrap(), vec![ClusterEvent::NodeGone("b".into())]);
    }
}
