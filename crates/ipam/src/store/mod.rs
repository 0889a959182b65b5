//! Where block leases live. The node store ([`crate::node::NodeStore`]) holds addresses; the cluster
//! store holds which node leases which block, so a pod ADD touches it only for a new block. Pools
//! that allow borrowing also keep address claims here (see [`Claim`]): the price of borrowing is a
//! cluster round trip on every ADD and DEL in those pools.
//!
//! Implementations: [`local::LocalStore`] (files, several simulated nodes on one machine) here,
//! and the etcd store in its own crate (`podnet-store-etcd`), so what does not talk to etcd does
//! not build its client.

pub mod local;

use crate::config::Pool;
use crate::error::IpamError;
use crate::model::{BlockLease, BlockRelease, Claim, ClaimAs, ClaimOutcome, NodeRecord};
use ipnet::IpNet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The time one operation (an ADD, a GC pass, one reconcile) may spend on the cluster store,
/// retries included. It starts at first use, so an operation that never needs the store pays
/// nothing, and it is handed to every call rather than kept by the store: a long-running agent
/// makes many operations over one store.
#[derive(Debug)]
pub struct Deadline {
    budget: Duration,
    started: OnceLock<Instant>,
}

impl Deadline {
    pub fn new(budget: Duration) -> Deadline {
        Deadline { budget, started: OnceLock::new() }
    }
    pub fn budget(&self) -> Duration {
        self.budget
    }
    /// Time left, starting the clock on the first call.
    pub fn remaining(&self) -> Duration {
        let start = *self.started.get_or_init(Instant::now);
        (start + self.budget).saturating_duration_since(Instant::now())
    }
}

/// Every lease of a network as of one store revision: where a watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub leases: Vec<BlockLease>,
    /// etcd: the revision of the read; local store: a counter of the watcher's own.
    pub revision: i64,
}

/// Every lease and node record of a network as of one store revision: where a watcher starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSnapshot {
    pub leases: Vec<BlockLease>,
    pub nodes: Vec<NodeRecord>,
    /// etcd: the revision of the read; local store: 0.
    pub revision: i64,
}

/// One change after a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A block was leased (or its lease rewritten).
    Leased(BlockLease),
    /// A block went back to its pool.
    Released(IpNet),
    /// A node's record appeared or changed (or, local store, was renewed after going stale).
    NodeUp(NodeRecord),
    /// A node's record went: its agent stopped renewing it.
    NodeGone(String),
}

/// A node record's hold on the cluster store: etcd's lease id (0 for the local store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLease(pub i64);

/// Why a watch ended: the caller takes a new snapshot and watches from there.
#[derive(Debug)]
pub enum WatchError {
    /// The store no longer has the history from the watch's revision (etcd compaction).
    Compacted,
    /// The connection broke or the store did not answer; retry with backoff.
    Unavailable(String),
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Compacted => f.write_str("the watch's revision was compacted away; re-list"),
            WatchError::Unavailable(why) => write!(f, "watch interrupted: {why}"),
        }
    }
}

/// Changes after a snapshot, in order.
pub trait ClusterWatch: Send {
    /// Wait up to `timeout` for changes; an empty list means none came. After an error the
    /// watch is spent.
    fn next(&mut self, timeout: Duration) -> Result<Vec<ClusterEvent>, WatchError>;
}

/// A batch of one node's audit events, as shipped (`<prefix>/<network>/audit/<node>/<seq>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBatch {
    pub node: String,
    pub seq: u64,
    /// JSON lines, one event each.
    pub body: Vec<u8>,
}

/// What [`ClusterStore::lease_one_of`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    Leased(BlockLease),
    /// Every candidate was leased meanwhile, or still holds claims: those are listed, since
    /// the leases do not show them (lent out by a node since released; not free until the
    /// claims go).
    Taken {
        claimed: Vec<IpNet>,
    },
}

pub trait ClusterStore: Send + Sync {
    /// Lease the first of `candidates` (blocks of `pool`) that is free to `node`, in one
    /// request: create-if-absent, and only while the block holds no claims. A request retried
    /// after its reply was lost finds its own lease and counts it as leased.
    fn lease_one_of(
        &self,
        pool: &Pool,
        node: &str,
        candidates: &[IpNet],
        deadline: &Deadline,
    ) -> Result<LeaseAttempt, IpamError>;
    /// Hand a block back; only its owner may, and only while none of its addresses is claimed,
    /// unless `even_if_claimed` (a dead node's blocks: the next owner respects the claims).
    fn release_block(
        &self,
        block: IpNet,
        node: &str,
        even_if_claimed: bool,
        deadline: &Deadline,
    ) -> Result<BlockRelease, IpamError>;
    /// Every lease of the network.
    fn leases(&self, deadline: &Deadline) -> Result<Vec<BlockLease>, IpamError> {
        self.lease_snapshot(deadline).map(|s| s.leases)
    }
    /// Every lease, with the revision of the read.
    fn lease_snapshot(&self, deadline: &Deadline) -> Result<LeaseSnapshot, IpamError>;
    /// Every lease and node record at one revision: where a long-running watcher starts.
    fn cluster_snapshot(&self, deadline: &Deadline) -> Result<ClusterSnapshot, IpamError>;
    /// Follow changes after `snapshot` (etcd: a watch from its revision; local store: polling
    /// every `poll`, counting a node record not renewed within `node_ttl` as gone).
    fn watch(
        &self,
        snapshot: &ClusterSnapshot,
        poll: Duration,
        node_ttl: Duration,
    ) -> Result<Box<dyn ClusterWatch>, IpamError>;
    /// Announce this node's record, alive for `ttl` unless renewed.
    fn put_node(&self, record: &NodeRecord, ttl: Duration, deadline: &Deadline) -> Result<NodeLease, IpamError>;
    /// Renew the record for another `ttl`; a record that expired meanwhile is put again (with a
    /// new lease, returned).
    fn renew_node(
        &self,
        lease: NodeLease,
        record: &NodeRecord,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<NodeLease, IpamError>;
    /// Withdraw a node's record (a node taken out of the cluster).
    fn remove_node(&self, node: &str, deadline: &Deadline) -> Result<(), IpamError>;
    /// Claim an address: only if no claim holds it and its block is still leased (borrower: and
    /// lending). A claim equal to `claim` already there (a retried request) counts as claimed.
    fn claim(&self, claim: &Claim, how: ClaimAs, deadline: &Deadline) -> Result<ClaimOutcome, IpamError>;
    /// Remove the claim if it is exactly `claim`. Returns whether one was removed.
    fn unclaim(&self, claim: &Claim, deadline: &Deadline) -> Result<bool, IpamError>;
    /// Every claim of the network.
    fn claims(&self, deadline: &Deadline) -> Result<Vec<Claim>, IpamError>;
    /// Blocks whose owners lend addresses to other nodes.
    fn lending_blocks(&self, deadline: &Deadline) -> Result<Vec<IpNet>, IpamError>;
    /// Store batch `seq` of `node`'s audit events (JSON lines); putting the same batch again is
    /// harmless (a retry after a lost reply, or a restart before the cursor was kept).
    fn put_audit_batch(&self, node: &str, seq: u64, body: &[u8], deadline: &Deadline) -> Result<(), IpamError>;
    /// Every node's audit batches.
    fn audit_batches(&self, deadline: &Deadline) -> Result<Vec<AuditBatch>, IpamError>;
    /// Drop `node`'s batches numbered below `below` (what the node's retention dropped).
    fn drop_audit_batches(&self, node: &str, below: u64, deadline: &Deadline) -> Result<(), IpamError>;
    /// Round trips to a remote store so far in this process (0 for the local store).
    fn requests(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_starts_at_first_use() {
        let d = Deadline::new(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.remaining() > Duration::from_millis(30), "not started by waiting");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(d.remaining(), Duration::ZERO);
    }
}
