//! podnet IPAM: pools split into per-node blocks, an allocator, and crash-safe stores.
//!
//! [`Ipam`] is the API the plugin calls in-process and `podnet-ipam` wraps as a CNI plugin.
//! Addresses live in the node store; block leases in a [`store::ClusterStore`].

pub mod addr;
pub mod allocator;
pub mod config;
pub mod error;
pub mod fsio;
pub mod model;
pub mod node;
pub mod store;

pub use allocator::{Reservation, Span};
pub use config::{IpamConfig, Pool, Source};
pub use error::IpamError;
pub use model::{Allocation, BlockLease, Handle, PodInfo};

use node::{AddrEntry, NodeStore};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use store::local::LocalStore;
use store::ClusterStore;

/// What [`Ipam::allocate`] hands back.
#[derive(Debug, Clone)]
pub struct Allocated {
    /// One per address family the eligible pools offer, IPv4 first.
    pub allocations: Vec<Allocation>,
    /// The handle already held these (a repeated ADD): a failure afterwards must not release them.
    pub existing: bool,
}

/// Addresses picked under the node store lock and not yet written; see [`Ipam::reserve`].
pub struct Pending<'a> {
    ipam: &'a Ipam,
    _lock: fsio::StoreLock,
    pub allocations: Vec<Allocation>,
    /// The handle already held these (a repeated ADD).
    pub existing: bool,
}

impl Pending<'_> {
    /// Keep `attachment` with each picked address (see [`Allocation::attachment`]).
    pub fn attach(&mut self, attachment: serde_json::Value) {
        for a in &mut self.allocations {
            a.attachment = Some(attachment.clone());
        }
    }

    /// Write the picked addresses durably, all or nothing, and release the lock. A repeated ADD
    /// (addresses already held) rewrites them with the new attachment.
    pub fn commit(self) -> Result<Allocated, IpamError> {
        let node = &self.ipam.node;
        let mut batch = fsio::Batch::default();
        for a in &self.allocations {
            node.stage(a, &mut batch);
        }
        batch.commit()?;
        if self.existing {
            return Ok(Allocated { allocations: self.allocations, existing: true });
        }
        for a in &self.allocations {
            node.set_cursor(&a.pool, a.address.addr());
        }
        Ok(Allocated { allocations: self.allocations, existing: false })
    }
}

pub struct Ipam {
    cfg: IpamConfig,
    network: String,
    reservation: Reservation,
    node: NodeStore,
    cluster: Box<dyn ClusterStore>,
}

impl Ipam {
    pub fn new(cfg: IpamConfig, network: &str, reservation: Reservation) -> Ipam {
        let node = NodeStore::new(&cfg.data_dir, network);
        let cluster = Box::new(LocalStore::new(cfg.local_cluster_dir(), network));
        Ipam { cfg, network: network.to_string(), reservation, node, cluster }
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }
    pub fn network(&self) -> &str {
        &self.network
    }
    pub fn node_store(&self) -> &NodeStore {
        &self.node
    }
    pub fn cluster(&self) -> &dyn ClusterStore {
        self.cluster.as_ref()
    }

    /// Give `handle` one address per family its namespace's pools offer, durably.
    pub fn allocate(&self, handle: &Handle, pod: &PodInfo) -> Result<Allocated, IpamError> {
        self.reserve(handle, pod)?.commit()
    }

    /// Pick `handle`'s addresses under the node store lock without writing them yet, so the
    /// caller can start work that needs the addresses while [`Pending::commit`] makes them durable.
    /// Dropping the [`Pending`] without committing leaves the store as it was.
    pub fn reserve(&self, handle: &Handle, pod: &PodInfo) -> Result<Pending<'_>, IpamError> {
        let pools = self.cfg.eligible_pools(pod.namespace.as_deref());
        let pools: Vec<&Pool> = pools.into_iter().filter(|p| !p.cfg.disabled).collect();
        if pools.is_empty() {
            return Err(IpamError::NoEligiblePool(format!(
                "no enabled pool of network {} serves namespace {:?}; add the namespace to a pool's namespaces or add a pool without a namespace list",
                self.network,
                pod.namespace.as_deref().unwrap_or("")
            )));
        }
        let lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let mine: Vec<&AddrEntry> = entries.iter().filter(|e| &e.handle == handle).collect();
        if !mine.is_empty() {
            // A repeated ADD for the same attachment gets what it already holds.
            let mut allocations = mine.iter().map(|e| self.node.read(e)).collect::<Result<Vec<_>, _>>()?;
            allocations.sort_by_key(|a| !a.address.addr().is_ipv4());
            return Ok(Pending { ipam: self, _lock: lock, allocations, existing: true });
        }
        let mut used: HashSet<IpAddr> = entries.iter().map(|e| e.ip).collect();
        let mut allocations = Vec::new();
        for v4 in [true, false] {
            let family: Vec<&Pool> = pools.iter().copied().filter(|p| p.is_v4() == v4).collect();
            if family.is_empty() {
                continue;
            }
            let mut found = None;
            for pool in &family {
                if let Some((span, ip)) = self.pick_in_pool(pool, &used)? {
                    found = Some((pool, span, ip));
                    break;
                }
            }
            let Some((pool, span, ip)) = found else {
                return Err(self.exhausted(&family));
            };
            used.insert(ip);
            allocations.push(Allocation {
                address: ipnet::IpNet::new(ip, span.pod_prefix_len).expect("prefix fits"),
                gateway: span.gateway,
                pool: pool.name().to_string(),
                block: span.subnet,
                handle: handle.clone(),
                pod: pod.clone(),
                node: self.cfg.node.clone(),
                allocated_at: model::now_rfc3339(),
                attachment: None,
            });
        }
        Ok(Pending { ipam: self, _lock: lock, allocations, existing: false })
    }

    /// A free address in `pool` for this node: its own blocks first, then a newly leased block.
    fn pick_in_pool(&self, pool: &Pool, used: &HashSet<IpAddr>) -> Result<Option<(Span, IpAddr)>, IpamError> {
        let cursor = self.node.cursor(pool.name());
        let pick = |span: Span| span.pick(used, cursor).map(|ip| (span, ip));
        match pool.cfg.source {
            Source::Range => Ok(pick(pool.range_span(self.reservation))),
            Source::Vnet => Ok(None),
            Source::Overlay => {
                let mut blocks: Vec<_> = self.node.blocks()?.into_iter().filter(|b| pool.cidr().contains(b)).collect();
                blocks.sort_by_key(|b| addr::to_u128(b.network()));
                if let Some(hit) = blocks.iter().find_map(|b| pick(Span::for_block(*b, self.reservation))) {
                    return Ok(Some(hit));
                }
                // The node's blocks are full. First adopt blocks the cluster store says are ours but the
                // node store lost (a crash between lease and record), then lease a new one.
                for lease in self.cluster.leased_blocks(pool, &self.cfg.node)? {
                    if !blocks.contains(&lease.block) {
                        self.node.add_block(&lease)?;
                        if let Some(hit) = pick(Span::for_block(lease.block, self.reservation)) {
                            return Ok(Some(hit));
                        }
                    }
                }
                match self.cluster.lease_block(pool, &self.cfg.node)? {
                    Some(lease) => {
                        self.node.add_block(&lease)?;
                        Ok(pick(Span::for_block(lease.block, self.reservation)))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    fn exhausted(&self, pools: &[&Pool]) -> IpamError {
        let names: Vec<String> = pools.iter().map(|p| format!("{} ({})", p.name(), p.cidr())).collect();
        IpamError::Exhausted(format!(
            "no free address for node {} in pool(s) {}: the node's blocks are full and no block is free; \
             add a pool or widen its cidr, or free addresses (podnetctl ipam show; GC with the live pods)",
            self.cfg.node,
            names.join(", ")
        ))
    }

    /// Release every address `handle` holds. Idempotent: an unknown handle releases nothing.
    pub fn release(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        let _lock = self.node.lock()?;
        let mine: Vec<AddrEntry> = self.node.entries()?.into_iter().filter(|e| &e.handle == handle).collect();
        self.node.remove(&mine)?;
        Ok(mine.into_iter().map(|e| e.ip).collect())
    }

    /// Release every address whose handle is not in `keep` (CNI GC).
    pub fn gc(&self, keep: &HashSet<Handle>) -> Result<Vec<(Handle, IpAddr)>, IpamError> {
        let _lock = self.node.lock()?;
        let stale: Vec<AddrEntry> = self.node.entries()?.into_iter().filter(|e| !keep.contains(&e.handle)).collect();
        self.node.remove(&stale)?;
        Ok(stale.into_iter().map(|e| (e.handle, e.ip)).collect())
    }

    /// Every handle holding an address.
    pub fn handles(&self) -> Result<Vec<Handle>, IpamError> {
        let _lock = self.node.lock()?;
        let mut h: Vec<Handle> = self.node.entries()?.into_iter().map(|e| e.handle).collect();
        h.sort();
        h.dedup();
        Ok(h)
    }

    /// Addresses `handle` holds now.
    pub fn addresses_of(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        let _lock = self.node.lock()?;
        Ok(self.node.entries()?.into_iter().filter(|e| &e.handle == handle).map(|e| e.ip).collect())
    }

    /// Every allocation of this node, records verified.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        let _lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let mut out = entries.iter().map(|e| self.node.read(e)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|a| (a.pool.clone(), addr::to_u128(a.address.addr())));
        Ok(out)
    }

    /// STATUS: the stores are readable and every record verifies, and some eligible address is left.
    pub fn status(&self) -> Result<(), IpamError> {
        let allocations = self.allocations()?;
        let _lock = self.node.lock()?;
        self.node.block_leases()?;
        let mut used_per_pool: HashMap<&str, u128> = HashMap::new();
        for a in &allocations {
            *used_per_pool.entry(a.pool.as_str()).or_default() += 1;
        }
        let has_room = self.cfg.pools.iter().filter(|p| !p.cfg.disabled).any(|p| match p.cfg.source {
            Source::Range => p.range_span(self.reservation).capacity() > used_per_pool.get(p.name()).copied().unwrap_or(0),
            // An overlay pool can always lease another block unless the cluster says otherwise;
            // the cheap answer here is "yes", ADD reports exhaustion precisely.
            Source::Overlay => true,
            Source::Vnet => false,
        });
        if !has_room {
            return Err(IpamError::Exhausted(format!(
                "every enabled pool of network {} is full on node {}",
                self.network, self.cfg.node
            )));
        }
        Ok(())
    }
}
