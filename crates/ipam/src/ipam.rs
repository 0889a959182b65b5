//! [`Ipam`]: one network's IPAM on this node, over its node store and a cluster store. The
//! operations live in modules by job: `allocate` (ADD's search), `commit` (the two-phase write),
//! `lease` and `borrow` (the cluster-store protocols), `release` (every mutation that frees
//! addresses or blocks), `query` (read-only), `report` and `rebuild` (podnetctl).

use crate::config::{IpamConfig, Pool};
use crate::journal::Journal;
use crate::node::NodeStore;
use crate::source::{self, PoolSource};
use crate::span::Reservation;
use crate::store::local::LocalStore;
use crate::store::{ClusterStore, Deadline};
use std::sync::Arc;

pub struct Ipam {
    pub(crate) cfg: IpamConfig,
    pub(crate) network: String,
    pub(crate) reservation: Reservation,
    pub(crate) node: NodeStore,
    pub(crate) cluster: Arc<dyn ClusterStore>,
    /// One per pool of `cfg.pools`, in the same order.
    pub(crate) sources: Vec<Box<dyn PoolSource>>,
    /// The cluster-store budget of this handle's operations: a CNI invocation opens one `Ipam`,
    /// so `timeoutMs` bounds all of its cluster work (an ADD and the undo of a failed one).
    pub(crate) deadline: Deadline,
}

impl Ipam {
    pub fn new(cfg: IpamConfig, network: &str, reservation: Reservation, cluster: Arc<dyn ClusterStore>) -> Ipam {
        let node = NodeStore::new(&cfg.data_dir, network);
        let sources = cfg.pools.iter().map(|p| source::for_pool(p, reservation, node.dir())).collect();
        let deadline = Deadline::new(cfg.cluster_timeout());
        Ipam { cfg, network: network.to_string(), reservation, node, cluster, sources, deadline }
    }

    /// An IPAM over the local cluster store (`store.type` local), e.g. for tests and tools.
    pub fn local(cfg: IpamConfig, network: &str, reservation: Reservation) -> Ipam {
        let store = Arc::new(LocalStore::new(cfg.local_cluster_dir(), network));
        Ipam::new(cfg, network, reservation, store)
    }

    /// Every allocation and release of this IPAM goes through `journal` (see [`crate::journal`]).
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Ipam {
        self.node = NodeStore::with_journal(&self.cfg.data_dir, &self.network, journal);
        self
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }
    pub fn network(&self) -> &str {
        &self.network
    }
    pub fn reservation(&self) -> Reservation {
        self.reservation
    }
    /// The cluster store this IPAM leases from: a long-running agent watches the same one.
    pub fn cluster_store(&self) -> &Arc<dyn ClusterStore> {
        &self.cluster
    }
    /// The same IPAM with a fresh cluster-store budget: one `Ipam` bounds one operation's
    /// cluster work, so a long-running agent takes a fresh one per pass (stores shared).
    pub fn fresh(&self) -> Ipam {
        let mut ipam = Ipam::new(self.cfg.clone(), &self.network, self.reservation, self.cluster.clone());
        ipam.node = self.node.clone();
        ipam
    }
    /// Round trips to a remote cluster store so far (0 inside the node's own blocks).
    pub fn cluster_requests(&self) -> usize {
        self.cluster.requests()
    }

    /// The source of `pool` (a pool of this config).
    pub(crate) fn source(&self, pool: &str) -> Option<&dyn PoolSource> {
        self.sources.iter().find(|s| s.pool().name() == pool).map(|s| s.as_ref())
    }

    /// The source of the pool containing `ip`.
    pub(crate) fn source_containing(&self, ip: std::net::IpAddr) -> Option<&dyn PoolSource> {
        self.sources.iter().find(|s| s.pool().cidr().contains(&ip)).map(|s| s.as_ref())
    }

    /// Sources of the pools this namespace may use, in the order to try.
    pub(crate) fn eligible_sources(&self, namespace: Option<&str>) -> Vec<&dyn PoolSource> {
        self.cfg.eligible_pools(namespace).into_iter().filter_map(|p: &Pool| self.source(p.name())).collect()
    }

    /// Whether this node may hold claims in the cluster store (GC then looks for stale ones).
    pub(crate) fn may_claim(&self) -> bool {
        self.cfg.pools.iter().any(|p| p.cfg.allow_borrowing) || self.node.is_claimant()
    }
}
