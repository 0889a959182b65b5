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
pub mod rebuild;
pub mod report;
pub mod store;

pub use allocator::{Reservation, Span};
pub use config::{IpamConfig, Pool, Source};
pub use error::IpamError;
pub use model::{Allocation, BlockLease, Handle, PodInfo};

use ipnet::IpNet;
use model::{BlockRelease, Claim, ClaimAs, ClaimOutcome};
use node::{AddrEntry, Lending, NodeStore};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use store::local::LocalStore;
use store::ClusterStore;

/// Which blocks [`Ipam::pick_in_pool`] may use, in the order an ADD tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The node's own blocks (or its range): no cluster store unless the pool allows borrowing.
    Own,
    /// A block leased now.
    Lease,
    /// Another node's lending block (pools with `allowBorrowing`).
    Borrow,
}

/// A free address and where it came from.
struct Picked {
    span: Span,
    ip: IpAddr,
    claim: Option<Claim>,
}

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
    lock: Option<fsio::StoreLock>,
    pub allocations: Vec<Allocation>,
    /// The handle already held these (a repeated ADD).
    pub existing: bool,
    /// Claims made in the cluster store for these addresses (pools that allow borrowing): given
    /// back if the addresses are never published.
    claims: Vec<Claim>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Still under the node lock: nothing of this node can see the address in between.
        for c in std::mem::take(&mut self.claims) {
            if let Err(e) = self.ipam.cluster.unclaim(&c) {
                tracing::warn!(ip = %c.ip, error = %e, "could not give back the claim of an address never used; GC gives it back later");
            }
        }
    }
}

impl<'a> Pending<'a> {
    /// Keep `attachment` with each picked address (see [`Allocation::attachment`]).
    pub fn attach(&mut self, attachment: serde_json::Value) {
        for a in &mut self.allocations {
            a.attachment = Some(attachment.clone());
        }
    }

    /// Write the picked addresses durably, all or nothing, and release the lock.
    pub fn commit(self) -> Result<Allocated, IpamError> {
        self.publish()?.finish()
    }

    /// First half of [`Pending::commit`]: the address files are written, fsynced and renamed into
    /// place, so every other process sees the addresses as taken (a kill -9 from here on cannot free
    /// an address a pod already carries). Only the directory fsync is left for [`Published::finish`]:
    /// callers may configure the pod in between. A repeated ADD (addresses already held) rewrites
    /// them with the new attachment.
    pub fn publish(mut self) -> Result<Published<'a>, IpamError> {
        let node = &self.ipam.node;
        let mut batch = fsio::Batch::default();
        if !self.existing {
            // A repeated ADD leaves the first ADD's records as they are.
            for a in &self.allocations {
                node.stage(a, &mut batch);
            }
        }
        // On failure `self` drops and gives the claims back.
        let files = batch.publish()?;
        self.claims.clear();
        Ok(Published {
            ipam: self.ipam,
            _lock: self.lock.take(),
            allocations: std::mem::take(&mut self.allocations),
            existing: self.existing,
            files,
        })
    }
}

/// Addresses written and visible, their directory not yet fsynced; see [`Pending::publish`].
pub struct Published<'a> {
    ipam: &'a Ipam,
    _lock: Option<fsio::StoreLock>,
    pub allocations: Vec<Allocation>,
    pub existing: bool,
    files: fsio::Published,
}

impl Published<'_> {
    /// Make the addresses durable and release the lock. On error the addresses stay recorded: a
    /// pod may already carry them, so the caller removes the pod's interface first and then
    /// releases them ([`Ipam::release`]); freeing them here would let another pod take an address
    /// still in use.
    pub fn finish(self) -> Result<Allocated, IpamError> {
        let node = &self.ipam.node;
        self.files.sync()?;
        if !self.existing {
            for a in &self.allocations {
                node.set_cursor(&a.pool, a.address.addr());
                node.clear_empty(a.block);
            }
        }
        Ok(Allocated { allocations: self.allocations, existing: self.existing })
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
        let cluster: Box<dyn ClusterStore> = match &cfg.etcd {
            Some(etcd) => Box::new(store::etcd::EtcdStore::new(etcd.clone(), network, node.outage_note())),
            None => Box::new(LocalStore::new(cfg.local_cluster_dir(), network)),
        };
        Ipam { cfg, network: network.to_string(), reservation, node, cluster }
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }
    pub fn reservation(&self) -> Reservation {
        self.reservation
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
        if self.reservation == Reservation::GatewayPerBlock {
            if let Some(p) = pools.iter().find(|p| p.cfg.allow_borrowing) {
                return Err(IpamError::Config(format!(
                    "ipam.pools[{}].allowBorrowing needs the routed dataplane (\"mode\": \"routed\"): with a gateway per block, a borrowed address would need another node's gateway",
                    p.name()
                )));
            }
        }
        let lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let mine: Vec<&AddrEntry> = entries.iter().filter(|e| &e.handle == handle).collect();
        if !mine.is_empty() {
            // A repeated ADD for the same attachment gets what it already holds.
            let mut allocations = mine.iter().map(|e| self.node.read(e)).collect::<Result<Vec<_>, _>>()?;
            allocations.sort_by_key(|a| !a.address.addr().is_ipv4());
            return Ok(Pending { ipam: self, lock: Some(lock), allocations, existing: true, claims: Vec::new() });
        }
        let mut used: HashSet<IpAddr> = entries.iter().map(|e| e.ip).collect();
        // Built first so that an error below drops it and gives back claims already made.
        let mut pending =
            Pending { ipam: self, lock: Some(lock), allocations: Vec::new(), existing: false, claims: Vec::new() };
        for v4 in [true, false] {
            let family: Vec<&Pool> = pools.iter().copied().filter(|p| p.is_v4() == v4).collect();
            if family.is_empty() {
                continue;
            }
            // The node's own blocks in every eligible pool first; only then lease, so an exhausted
            // first pool never sends an ADD to the cluster store while a later pool has room here.
            // Borrowing, where allowed, comes last of all.
            let mut found = None;
            'steps: for step in [Step::Own, Step::Lease, Step::Borrow] {
                for pool in &family {
                    if let Some(picked) = self.pick_in_pool(pool, &mut used, step, handle, &entries)? {
                        found = Some((pool, picked));
                        break 'steps;
                    }
                }
            }
            let Some((pool, Picked { span, ip, claim })) = found else {
                return Err(self.exhausted(&family));
            };
            used.insert(ip);
            let claim_id = claim.as_ref().map(|c| c.id.clone());
            pending.claims.extend(claim);
            pending.allocations.push(Allocation {
                address: ipnet::IpNet::new(ip, span.pod_prefix_len).expect("prefix fits"),
                gateway: span.gateway,
                pool: pool.name().to_string(),
                block: span.subnet,
                handle: handle.clone(),
                pod: pod.clone(),
                node: self.cfg.node.clone(),
                allocated_at: model::now_rfc3339(),
                attachment: None,
                claim_id,
            });
        }
        Ok(pending)
    }

    /// A free address in `pool` for this node at `step`: from its own blocks, from a block the
    /// cluster store leases to it now, or borrowed from another node's lending block.
    fn pick_in_pool(
        &self,
        pool: &Pool,
        used: &mut HashSet<IpAddr>,
        step: Step,
        handle: &Handle,
        entries: &[AddrEntry],
    ) -> Result<Option<Picked>, IpamError> {
        match (pool.cfg.source, step) {
            (Source::Range, Step::Own) => {
                let span = pool.range_span(self.reservation);
                Ok(span.pick(used, self.node.cursor(pool.name())).map(|ip| Picked { span, ip, claim: None }))
            }
            (Source::Overlay, Step::Own) => {
                let mut blocks: Vec<_> = self.node.blocks()?.into_iter().filter(|b| pool.cidr().contains(b)).collect();
                blocks.sort_by_key(|b| addr::to_u128(b.network()));
                self.take_from_own(pool, &blocks, used, handle, entries)
            }
            (Source::Overlay, Step::Lease) => {
                // The node's blocks are full. First adopt blocks the cluster store says are ours but the
                // node store lost (a crash between lease and record), then lease a new one.
                let known = self.node.blocks()?;
                let mut in_use = None;
                for lease in self.cluster.leased_blocks(pool, &self.cfg.node)? {
                    if !known.contains(&lease.block) {
                        self.adopt(&lease, entries, &mut in_use)?;
                        if let Some(hit) = self.take_from_own(pool, &[lease.block], used, handle, entries)? {
                            return Ok(Some(hit));
                        }
                    }
                }
                match self.cluster.lease_block(pool, &self.cfg.node)? {
                    Some(lease) => {
                        // A new lease: a lending mark left from an earlier lease of it is stale.
                        self.node.clear_lending(lease.block)?;
                        self.node.add_block(&lease)?;
                        self.take_from_own(pool, &[lease.block], used, handle, entries)
                    }
                    None => Ok(None),
                }
            }
            (Source::Overlay, Step::Borrow) if pool.cfg.allow_borrowing => {
                // Every block is leased and this node's are full: borrow from a lending block of
                // another node, skipping every address claimed there.
                let own = self.node.blocks()?;
                let mut lending: Vec<IpNet> = self
                    .cluster
                    .lending_blocks()?
                    .into_iter()
                    .filter(|b| pool.cidr().contains(b) && !own.contains(b))
                    .collect();
                if lending.is_empty() {
                    return Ok(None);
                }
                lending.sort_by_key(|b| addr::to_u128(b.network()));
                used.extend(self.cluster.claims()?.into_iter().filter(|c| pool.cidr().contains(&c.ip)).map(|c| c.ip));
                for block in lending {
                    if let Some(hit) = self.take(block, ClaimAs::Borrower, used, handle, None)? {
                        return Ok(Some(hit));
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Record in the node store a block the cluster store leases to this node but the node store
    /// does not know (lost to a crash, or forgotten by a hand-back the cluster store never saw).
    /// Call with the node lock held. `in_use` caches, across calls, the blocks that lend or hold
    /// claims: read only when there is a lease to adopt (a rare path).
    fn adopt(
        &self,
        lease: &BlockLease,
        entries: &[AddrEntry],
        in_use: &mut Option<HashSet<IpNet>>,
    ) -> Result<(), IpamError> {
        let in_use = match in_use {
            Some(b) => b,
            None => {
                let mut blocks: HashSet<IpNet> = self.cluster.lending_blocks()?.into_iter().collect();
                blocks.extend(self.cluster.claims()?.into_iter().map(|c| c.block));
                in_use.insert(blocks)
            }
        };
        self.node.add_block(lease)?;
        // A block that lends, or holds claims, keeps claiming whatever this node's config or lost
        // marks say: others may borrow from it.
        if in_use.contains(&lease.block) && self.node.lending(lease.block)?.is_none() {
            self.start_lending(lease.block, entries)?;
        }
        Ok(())
    }

    /// A free address in the node's own `blocks`, claimed in the cluster store where the block
    /// lends (or its pool allows borrowing: the block starts lending now).
    fn take_from_own(
        &self,
        pool: &Pool,
        blocks: &[IpNet],
        used: &mut HashSet<IpAddr>,
        handle: &Handle,
        entries: &[AddrEntry],
    ) -> Result<Option<Picked>, IpamError> {
        let cursor = self.node.cursor(pool.name());
        for &block in blocks {
            let lending = match self.node.lending(block)? {
                Some(state) => state,
                None if pool.cfg.allow_borrowing => self.start_lending(block, entries)?,
                None => {
                    let span = Span::for_block(block, self.reservation);
                    match span.pick(used, cursor) {
                        Some(ip) => return Ok(Some(Picked { span, ip, claim: None })),
                        None => continue,
                    }
                }
            };
            if let Some(hit) =
                self.take(block, ClaimAs::Owner { announce: lending == Lending::Claiming }, used, handle, cursor)?
            {
                if lending == Lending::Claiming {
                    self.node.set_lending(block, Lending::Announced)?;
                }
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Claim, in the cluster store, every address the node already holds in `block` (they were
    /// handed out before its pool allowed borrowing), then mark the block: from here on this node
    /// claims every address of it. Other nodes borrow only once the first new claim announces it.
    fn start_lending(&self, block: IpNet, entries: &[AddrEntry]) -> Result<Lending, IpamError> {
        self.node.mark_claimant()?;
        for e in entries.iter().filter(|e| block.contains(&e.ip)) {
            let mut record = self.node.read(e)?;
            let claim = Claim::new(e.ip, block, &self.cfg.node, &e.handle);
            let id = match self.cluster.claim(&claim, ClaimAs::Owner { announce: false })? {
                ClaimOutcome::Claimed => claim.id,
                // This very allocation's claim, from an earlier try.
                ClaimOutcome::Taken(held) if held.iter().any(|c| c.ip == e.ip && c.node == self.cfg.node && c.handle == e.handle) => {
                    held.into_iter().find(|c| c.ip == e.ip).map(|c| c.id).unwrap_or_default()
                }
                _ => {
                    return Err(IpamError::Config(format!(
                        "{} is held on node {} by {} but claimed by someone else in the cluster store; run podnetctl ipam check",
                        e.ip,
                        self.cfg.node,
                        e.handle.key()
                    )))
                }
            };
            if record.claim_id.as_deref() != Some(id.as_str()) {
                record.claim_id = Some(id);
                self.node.rewrite(e, &record)?;
            }
        }
        self.node.set_lending(block, Lending::Claiming)?;
        Ok(Lending::Claiming)
    }

    /// Pick and claim a free address of `block`, skipping addresses the cluster store says are
    /// claimed; `None` when the block is full or no longer usable.
    fn take(
        &self,
        block: IpNet,
        how: ClaimAs,
        used: &mut HashSet<IpAddr>,
        handle: &Handle,
        cursor: Option<IpAddr>,
    ) -> Result<Option<Picked>, IpamError> {
        let span = Span::for_block(block, self.reservation);
        self.node.mark_claimant()?;
        while let Some(ip) = span.pick(used, cursor) {
            let claim = Claim::new(ip, block, &self.cfg.node, handle);
            match self.cluster.claim(&claim, how)? {
                ClaimOutcome::Claimed => return Ok(Some(Picked { span, ip, claim: Some(claim) })),
                ClaimOutcome::Taken(claims) => {
                    used.insert(ip);
                    used.extend(claims.into_iter().map(|c| c.ip));
                }
                ClaimOutcome::BlockGone => return Ok(None),
            }
        }
        Ok(None)
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
    /// A block this empties is noted, to be handed back once empty for the grace time; that
    /// needs no cluster store, so DEL never waits on one.
    pub fn release(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let (mine, rest): (Vec<AddrEntry>, Vec<AddrEntry>) = entries.into_iter().partition(|e| &e.handle == handle);
        // Claim ids live in the records: read them (borrowing nodes only) before they go.
        let records: Vec<Allocation> =
            if self.may_claim() { mine.iter().filter_map(|e| self.node.read(e).ok()).collect() } else { Vec::new() };
        self.node.remove(&mine)?;
        let mut claims = Vec::new();
        if !mine.is_empty() {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let blocks = self.node.blocks()?;
            for &block in &blocks {
                if mine.iter().any(|e| block.contains(&e.ip)) && !rest.iter().any(|e| block.contains(&e.ip)) {
                    self.node.mark_empty(block, now);
                }
            }
            if self.may_claim() {
                // The records were read before removal; see below. An unreadable one keeps its
                // claim for GC.
                claims = records.into_iter().filter_map(|a| self.claim_of(&a)).collect();
            }
        }
        drop(lock);
        // The address is free on this node already; its claim goes after, outside the lock. If
        // the cluster store is down the claim stays (DEL still succeeds) and only blocks the
        // address until GC gives it back.
        for c in &claims {
            if let Err(e) = self.cluster.unclaim(c) {
                tracing::warn!(ip = %c.ip, error = %e, "could not give back the claim of a released address; GC gives it back later");
            }
        }
        Ok(mine.into_iter().map(|e| e.ip).collect())
    }

    /// The cluster claim an allocation holds, from its record.
    pub(crate) fn claim_of(&self, a: &Allocation) -> Option<Claim> {
        let id = a.claim_id.clone()?;
        Some(Claim { ip: a.address.addr(), block: a.block, node: self.cfg.node.clone(), handle: a.handle.clone(), id })
    }

    /// Whether this node may hold claims in the cluster store (GC then looks for stale ones).
    pub(crate) fn may_claim(&self) -> bool {
        self.cfg.pools.iter().any(|p| p.cfg.allow_borrowing) || self.node.is_claimant()
    }

    /// GC's cluster half: give back this node's claims that no address record holds.
    pub fn release_stale_claims_now(&self) -> Result<Vec<IpAddr>, IpamError> {
        if !self.may_claim() || !self.node.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.node.lock()?;
        let entries = self.node.entries()?;
        self.release_stale_claims_locked(&entries)
    }

    /// Give back claims of this node that no address record holds (an ADD killed between claim
    /// and record, a DEL that could not reach the cluster store). Call with the node lock held:
    /// an ADD holds it from claim to record.
    pub(crate) fn release_stale_claims_locked(&self, entries: &[AddrEntry]) -> Result<Vec<IpAddr>, IpamError> {
        let held: HashSet<(IpAddr, &Handle)> = entries.iter().map(|e| (e.ip, &e.handle)).collect();
        let mut out = Vec::new();
        for c in self.cluster.claims()?.into_iter().filter(|c| c.node == self.cfg.node) {
            if !held.contains(&(c.ip, &c.handle)) && self.cluster.unclaim(&c)? {
                out.push(c.ip);
            }
        }
        Ok(out)
    }

    /// Hand back to their pools the blocks that have stayed empty for the grace time (GC and
    /// `podnetctl ipam release --empty-blocks` call this). Returns the blocks handed back.
    pub fn release_empty_blocks(&self) -> Result<Vec<ipnet::IpNet>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        {
            // Any block found empty starts its grace time now, if no mark says since when: a mark
            // lost to a crash, or blocks emptied by GC or `ipam release IP`, are not stranded.
            let _lock = self.node.lock()?;
            let entries = self.node.entries()?;
            // Leases the node store lost (a hand-back whose cluster half failed, a crash) are
            // adopted, so they go back too: every node converges once the cluster store answers.
            let known = self.node.blocks()?;
            let mut in_use = None;
            for lease in
                self.cluster.leases()?.into_iter().filter(|l| l.node == self.cfg.node && !known.contains(&l.block))
            {
                self.adopt(&lease, &entries, &mut in_use)?;
            }
            let marked: Vec<ipnet::IpNet> = self.node.empty_blocks().into_iter().map(|(b, _)| b).collect();
            for block in self.node.blocks()? {
                if !marked.contains(&block) && !entries.iter().any(|e| block.contains(&e.ip)) {
                    self.node.mark_empty(block, now);
                }
            }
        }
        let due: Vec<ipnet::IpNet> = self
            .node
            .empty_blocks()
            .into_iter()
            .filter(|(_, since)| now.saturating_sub(*since) >= self.cfg.empty_block_grace.as_secs())
            .map(|(b, _)| b)
            .collect();
        let mut released = Vec::new();
        for block in due {
            let _lock = self.node.lock()?;
            // Still empty under the lock, or an ADD got there first.
            if self.node.entries()?.iter().any(|e| block.contains(&e.ip)) {
                self.node.clear_empty(block);
                continue;
            }
            // The node forgets the block first: were the cluster release lost, `ipam check`
            // reports an unrecorded lease, never a block two nodes allocate from.
            let cached = self.node.block_leases()?.into_iter().find(|l| l.block == block);
            self.node.remove_block(block)?;
            match self.cluster.release_block(block, &self.cfg.node, false)? {
                BlockRelease::Released => released.push(block),
                BlockRelease::NotHeld => {}
                BlockRelease::Claimed => {
                    // Other nodes still borrow from it: keep it, and its empty mark to try again
                    // at the next GC.
                    if let Some(lease) = cached {
                        self.node.add_block(&lease)?;
                    }
                    continue;
                }
            }
            self.node.clear_lending(block)?;
            self.node.clear_empty(block);
        }
        Ok(released)
    }

    /// Release every address whose handle is not in `keep` (CNI GC).
    /// Claims in the cluster store that no address of this node holds any more are given back
    /// too; if the cluster store is down that part waits for the next GC.
    pub fn gc(&self, keep: &HashSet<Handle>) -> Result<Vec<(Handle, IpAddr)>, IpamError> {
        let _lock = self.node.lock()?;
        let (stale, live): (Vec<AddrEntry>, Vec<AddrEntry>) =
            self.node.entries()?.into_iter().partition(|e| !keep.contains(&e.handle));
        self.node.remove(&stale)?;
        if self.may_claim() {
            match self.release_stale_claims_locked(&live) {
                Ok(ips) if !ips.is_empty() => tracing::info!(count = ips.len(), "gave back claims no address holds"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not give back stale claims; the next GC tries again"),
            }
        }
        Ok(stale.into_iter().map(|e| (e.handle, e.ip)).collect())
    }

    /// Every handle holding an address.
    pub fn handles(&self) -> Result<Vec<Handle>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
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
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let mut out = entries.iter().map(|e| self.node.read(e)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|a| (a.pool.clone(), addr::to_u128(a.address.addr())));
        Ok(out)
    }

    /// STATUS: the stores are readable and every record verifies, and some eligible address is left.
    pub fn status(&self) -> Result<(), IpamError> {
        let allocations = self.allocations()?;
        if self.node.exists() {
            let _lock = self.node.lock()?;
            self.node.block_leases()?;
        }
        let mut used_per_pool: HashMap<&str, u128> = HashMap::new();
        for a in &allocations {
            *used_per_pool.entry(a.pool.as_str()).or_default() += 1;
        }
        let has_room = self.cfg.pools.iter().filter(|p| !p.cfg.disabled).any(|p| match p.cfg.source {
            Source::Range => {
                p.range_span(self.reservation).capacity() > used_per_pool.get(p.name()).copied().unwrap_or(0)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipam(dir: &std::path::Path, pools: serde_json::Value, reservation: Reservation) -> Ipam {
        let cfg = IpamConfig::parse(&json!({"type": "podnet-ipam", "node": "n1", "pools": pools}), Some(dir)).unwrap();
        Ipam::new(cfg, "net", reservation)
    }

    fn pod(ns: &str) -> PodInfo {
        PodInfo { namespace: Some(ns.into()), ..Default::default() }
    }

    #[test]
    fn overlay_leases_blocks_as_they_fill_and_releases_by_handle() {
        let d = tempfile::tempdir().unwrap();
        // /30 blocks on a bridge keep network, gateway and broadcast: one pod per block.
        let ipam = ipam(
            d.path(),
            json!([{"name": "p", "cidr": "10.1.0.0/28", "blockSize": 30}]),
            Reservation::GatewayPerBlock,
        );
        let mut got = Vec::new();
        for i in 0..4 {
            let a = ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("default")).unwrap();
            assert!(!a.existing);
            got.push(a.allocations[0].address.to_string());
        }
        assert_eq!(got, ["10.1.0.2/30", "10.1.0.6/30", "10.1.0.10/30", "10.1.0.14/30"]);
        assert_eq!(ipam.cluster().leases().unwrap().len(), 4);
        let e = ipam.allocate(&Handle::new("c4", "eth0"), &pod("default")).unwrap_err();
        assert!(matches!(e, IpamError::Exhausted(_)), "{e}");
        assert!(e.to_string().contains("p (10.1.0.0/28)") && e.to_string().contains("n1"));
        // Release is by handle and idempotent; the address is free again.
        assert_eq!(ipam.release(&Handle::new("c1", "eth0")).unwrap().len(), 1);
        assert!(ipam.release(&Handle::new("c1", "eth0")).unwrap().is_empty());
        let again = ipam.allocate(&Handle::new("c5", "eth0"), &pod("default")).unwrap();
        assert_eq!(again.allocations[0].address.to_string(), "10.1.0.6/30");
    }

    #[test]
    fn a_repeated_add_gets_what_the_handle_holds() {
        let d = tempfile::tempdir().unwrap();
        let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
        let h = Handle::new("c", "eth0");
        let first = ipam.allocate(&h, &pod("a")).unwrap();
        let second = ipam.allocate(&h, &pod("a")).unwrap();
        assert!(second.existing);
        assert_eq!(first.allocations[0].address, second.allocations[0].address);
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }

    #[test]
    fn dual_stack_and_namespace_pools() {
        let d = tempfile::tempdir().unwrap();
        let ipam = ipam(
            d.path(),
            json!([
                {"name": "team", "cidr": "10.9.0.0/24", "source": "range", "namespaces": ["team-a"]},
                {"name": "v4", "cidr": "10.1.0.0/16", "blockSize": 24},
                {"name": "v6", "cidr": "fd00::/56", "blockSize": 120}
            ]),
            Reservation::GatewayPerBlock,
        );
        let a = ipam.allocate(&Handle::new("a", "eth0"), &pod("team-a")).unwrap();
        let pools: Vec<&str> = a.allocations.iter().map(|x| x.pool.as_str()).collect();
        assert_eq!(pools, ["team", "v6"], "restricted pool first, one address per family");
        assert_eq!(a.allocations[0].gateway, Some("10.9.0.1".parse().unwrap()));
        let b = ipam.allocate(&Handle::new("b", "eth0"), &pod("other")).unwrap();
        let pools: Vec<&str> = b.allocations.iter().map(|x| x.pool.as_str()).collect();
        assert_eq!(pools, ["v4", "v6"], "a namespace no restricted pool lists never gets one");
        assert_eq!(b.allocations[1].address.to_string(), "fd00::3/120");
    }

    #[test]
    fn a_namespace_with_no_pool_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let ipam = ipam(
            d.path(),
            json!([{"name": "team", "cidr": "10.9.0.0/24", "namespaces": ["team-a"]}]),
            Reservation::None,
        );
        assert!(matches!(ipam.allocate(&Handle::new("a", "eth0"), &pod("b")), Err(IpamError::NoEligiblePool(_))));
        let d2 = tempfile::tempdir().unwrap();
        let disabled = ipam_disabled(d2.path());
        assert!(matches!(disabled.allocate(&Handle::new("a", "eth0"), &pod("b")), Err(IpamError::NoEligiblePool(_))));
    }

    fn ipam_disabled(dir: &std::path::Path) -> Ipam {
        ipam(dir, json!([{"name": "p", "cidr": "10.9.0.0/24", "disabled": true}]), Reservation::None)
    }

    #[test]
    fn gc_keeps_only_valid_handles_and_publish_is_visible_before_finish() {
        let d = tempfile::tempdir().unwrap();
        let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
        for c in ["a", "b", "c"] {
            ipam.allocate(&Handle::new(c, "eth0"), &pod("x")).unwrap();
        }
        let keep: HashSet<Handle> = [Handle::new("b", "eth0")].into_iter().collect();
        assert_eq!(ipam.gc(&keep).unwrap().len(), 2);
        assert_eq!(ipam.handles().unwrap(), vec![Handle::new("b", "eth0")]);
        // After publish the file exists (another process sees the address taken) before finish.
        let mut pending = ipam.reserve(&Handle::new("d", "eth0"), &pod("x")).unwrap();
        pending.attach(json!({"endpoint": 1}));
        let published = pending.publish().unwrap();
        assert_eq!(list_dir_names(&d.path().join("net/ipam/addrs")).len(), 2);
        published.finish().unwrap();
        let d_alloc = ipam.allocations().unwrap().into_iter().find(|a| a.handle.container_id == "d").unwrap();
        assert_eq!(d_alloc.attachment, Some(json!({"endpoint": 1})));
        // A reservation dropped without commit writes nothing.
        drop(ipam.reserve(&Handle::new("e", "eth0"), &pod("x")).unwrap());
        assert_eq!(ipam.handles().unwrap().len(), 2);
    }

    #[test]
    fn a_corrupt_record_is_reported_never_read_as_empty() {
        let d = tempfile::tempdir().unwrap();
        let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
        ipam.allocate(&Handle::new("a", "eth0"), &pod("x")).unwrap();
        let dir = d.path().join("net/ipam/addrs");
        let f = dir.join(&list_dir_names(&dir)[0]);
        std::fs::write(&f, [0u8; 40]).unwrap();
        assert!(matches!(ipam.allocations(), Err(IpamError::Corrupt { .. })));
        assert!(matches!(ipam.status(), Err(IpamError::Corrupt { .. })));
        // The address stays taken: allocation reads names only.
        let b = ipam.allocate(&Handle::new("b", "eth0"), &pod("x")).unwrap();
        assert_ne!(b.allocations[0].address.addr(), "10.1.0.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_lease_the_node_store_lost_is_adopted_and_handed_back() {
        let d = tempfile::tempdir().unwrap();
        let cfg = IpamConfig::parse(
            &json!({"node": "n1", "emptyBlockGraceSeconds": 0, "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 29}]}),
            Some(d.path()),
        )
        .unwrap();
        let ipam = Ipam::new(cfg, "net", Reservation::None);
        for i in 0..9 {
            ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("x")).unwrap();
        }
        // A hand-back whose cluster half never happened: the node forgot the second block.
        let lost: ipnet::IpNet = "10.1.0.8/29".parse().unwrap();
        ipam.release(&Handle::new("c8", "eth0")).unwrap();
        ipam.node_store().remove_block(lost).unwrap();
        // A block still holding an address is adopted but stays.
        ipam.node_store().remove_block("10.1.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(ipam.release_empty_blocks().unwrap(), vec![lost]);
        let leases: Vec<ipnet::IpNet> = ipam.cluster().leases().unwrap().into_iter().map(|l| l.block).collect();
        assert_eq!(leases, vec!["10.1.0.0/29".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(ipam.node_store().blocks().unwrap(), leases, "the block in use is recorded again");
    }

    #[test]
    fn empty_blocks_go_back_after_the_grace_time_and_only_then() {
        let d = tempfile::tempdir().unwrap();
        let mk = |grace: u64| {
            let cfg = IpamConfig::parse(
                &json!({"node": "n1", "emptyBlockGraceSeconds": grace, "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 29}]}),
                Some(d.path()),
            )
            .unwrap();
            Ipam::new(cfg, "net", Reservation::GatewayPerBlock)
        };
        let ipam = mk(0);
        for i in 0..6 {
            ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("x")).unwrap();
        }
        assert_eq!(ipam.cluster().leases().unwrap().len(), 2, "5 pods per /29 block on a bridge");
        ipam.release(&Handle::new("c5", "eth0")).unwrap();
        // A long grace keeps the block; an expired one hands it back.
        assert!(mk(3600).release_empty_blocks().unwrap().is_empty());
        assert_eq!(ipam.release_empty_blocks().unwrap(), vec!["10.1.0.8/29".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(ipam.cluster().leases().unwrap().len(), 1);
        // A block emptied and refilled before GC is kept.
        ipam.release(&Handle::new("c4", "eth0")).unwrap();
        ipam.allocate(&Handle::new("c6", "eth0"), &pod("x")).unwrap();
        assert!(ipam.release_empty_blocks().unwrap().is_empty());
        assert_eq!(ipam.cluster().leases().unwrap().len(), 1);
    }

    /// Node `node` of a cluster sharing the local store under `root`, routed (every address usable).
    fn node_ipam(root: &std::path::Path, node: &str, borrowing: bool) -> Ipam {
        let cfg = IpamConfig::parse(
            &json!({"node": node, "dataDir": root.join(node), "emptyBlockGraceSeconds": 0,
                "store": {"type": "local", "path": root.join("cluster")},
                "pools": [{"name": "p", "cidr": "10.2.0.0/29", "blockSize": 30, "allowBorrowing": borrowing}]}),
            None,
        )
        .unwrap();
        Ipam::new(cfg, "net", Reservation::None)
    }

    fn add(ipam: &Ipam, id: &str) -> Result<String, IpamError> {
        ipam.allocate(&Handle::new(id, "eth0"), &pod("x")).map(|a| a.allocations[0].address.addr().to_string())
    }

    #[test]
    fn borrowing_takes_free_addresses_of_lending_blocks_only_when_no_block_is_free() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (node_ipam(d.path(), "a", true), node_ipam(d.path(), "b", true));
        // Two /30 blocks of 4: a takes one and uses half, b fills the other.
        assert_eq!([add(&a, "a0").unwrap(), add(&a, "a1").unwrap()], ["10.2.0.0", "10.2.0.1"]);
        for i in 0..4 {
            add(&b, &format!("b{i}")).unwrap();
        }
        // No block is free: b borrows what a does not use, and no more.
        assert_eq!([add(&b, "b4").unwrap(), add(&b, "b5").unwrap()], ["10.2.0.2", "10.2.0.3"]);
        assert!(matches!(add(&b, "b6"), Err(IpamError::Exhausted(_))));
        // a's block is full of its own and lent addresses: a never hands out a borrowed one.
        assert!(matches!(add(&a, "a2"), Err(IpamError::Exhausted(_))));
        let lent = report::borrowed(&a).unwrap();
        assert_eq!(
            lent.iter().map(|x| (x.ip.to_string(), x.borrower.as_str(), x.owner.as_deref())).collect::<Vec<_>>(),
            [("10.2.0.2".to_string(), "b", Some("a")), ("10.2.0.3".to_string(), "b", Some("a"))]
        );
        assert_eq!(report::show(&b).unwrap()[0].borrowed, 2);
        assert!(report::check(&b, &|_| true).unwrap().is_empty(), "borrowing in a borrowing pool is no problem");
        // An empty block that still lends stays with its owner until the borrowed addresses go.
        a.release(&Handle::new("a0", "eth0")).unwrap();
        a.release(&Handle::new("a1", "eth0")).unwrap();
        assert!(a.release_empty_blocks().unwrap().is_empty());
        assert_eq!(a.node_store().blocks().unwrap(), ["10.2.0.0/30".parse::<IpNet>().unwrap()]);
        // The owner reuses its freed addresses meanwhile, skipping the lent ones.
        assert_eq!(add(&a, "a3").unwrap(), "10.2.0.0");
        a.release(&Handle::new("a3", "eth0")).unwrap();
        b.release(&Handle::new("b4", "eth0")).unwrap();
        b.release(&Handle::new("b5", "eth0")).unwrap();
        assert!(a.cluster().claims().unwrap().iter().all(|c| c.node == "b" && c.block.to_string() == "10.2.0.4/30"));
        assert_eq!(a.release_empty_blocks().unwrap(), ["10.2.0.0/30".parse::<IpNet>().unwrap()]);
        // The block is free again: b leases it rather than borrow.
        assert_eq!(add(&b, "b7").unwrap(), "10.2.0.0");
        assert_eq!(b.node_store().blocks().unwrap().len(), 2);
    }

    #[test]
    fn turning_borrowing_on_claims_what_the_owner_holds_and_off_keeps_claiming() {
        let d = tempfile::tempdir().unwrap();
        let strict_a = node_ipam(d.path(), "a", false);
        add(&strict_a, "a0").unwrap();
        assert!(strict_a.cluster().claims().unwrap().is_empty(), "strict pools make no claims");
        let a = node_ipam(d.path(), "a", true);
        let b = node_ipam(d.path(), "b", true);
        assert_eq!(add(&a, "a1").unwrap(), "10.2.0.1");
        let claimed: Vec<String> = a.cluster().claims().unwrap().iter().map(|c| c.ip.to_string()).collect();
        assert_eq!(claimed.len(), 2, "the address held before borrowing was turned on is claimed too: {claimed:?}");
        // Borrowing off again on a: its lending block keeps claiming, so b never gets a's addresses.
        add(&strict_a, "a2").unwrap();
        for i in 0..4 {
            add(&b, &format!("b{i}")).unwrap();
        }
        assert_eq!(add(&b, "b4").unwrap(), "10.2.0.3");
        let all: HashSet<String> = a
            .allocations()
            .unwrap()
            .iter()
            .chain(b.allocations().unwrap().iter())
            .map(|x| x.address.addr().to_string())
            .collect();
        assert_eq!(all.len(), 8, "no address twice: {all:?}");
        assert!(report::check(&a, &|_| true).unwrap().is_empty());
    }

    #[test]
    fn claims_of_unpublished_or_forgotten_addresses_go_back() {
        let d = tempfile::tempdir().unwrap();
        let a = node_ipam(d.path(), "a", true);
        // Picked and claimed, never written: dropping gives the claim back.
        let pending = a.reserve(&Handle::new("x", "eth0"), &pod("x")).unwrap();
        assert_eq!(a.cluster().claims().unwrap().len(), 1);
        drop(pending);
        assert!(a.cluster().claims().unwrap().is_empty());
        // A claim no record holds (a DEL that could not reach the store) is leaked, and GC frees it.
        add(&a, "y").unwrap();
        let stale =
            Claim::new("10.2.0.3".parse().unwrap(), "10.2.0.0/30".parse().unwrap(), "a", &Handle::new("gone", "eth0"));
        assert_eq!(a.cluster().claim(&stale, ClaimAs::Owner { announce: false }).unwrap(), ClaimOutcome::Claimed);
        let problems = report::check(&a, &|_| true).unwrap();
        assert!(problems.len() == 1 && problems[0].kind == report::ProblemKind::Leaked, "{problems:?}");
        a.gc(&[Handle::new("y", "eth0")].into_iter().collect()).unwrap();
        assert_eq!(a.cluster().claims().unwrap().len(), 1, "only y's claim is left");
        // A bridge keeps a gateway per block: borrowing there is refused with a clear error.
        let cfg = a.config().clone();
        let bridge = Ipam::new(cfg, "net", Reservation::GatewayPerBlock);
        let e = bridge.allocate(&Handle::new("z", "eth0"), &pod("x")).unwrap_err();
        assert!(
            matches!(e, IpamError::Config(_)) && e.to_string().contains("allowBorrowing needs the routed dataplane"),
            "{e}"
        );
    }

    #[test]
    fn a_stale_unclaim_never_removes_a_later_claim_of_the_same_handle() {
        let d = tempfile::tempdir().unwrap();
        let a = node_ipam(d.path(), "a", true);
        for i in 0..3 {
            add(&a, &format!("h{i}")).unwrap();
        }
        assert_eq!(add(&a, "x").unwrap(), "10.2.0.3");
        let old = a.cluster().claims().unwrap().into_iter().find(|c| c.handle.container_id == "x").unwrap();
        // DEL, then the runtime's ADD of the same handle gets the same address: a new claim.
        a.release(&Handle::new("x", "eth0")).unwrap();
        assert_eq!(add(&a, "x").unwrap(), "10.2.0.3");
        // The first DEL's unclaim, arriving late, matches nothing.
        assert!(!a.cluster().unclaim(&old).unwrap());
        assert!(a.cluster().claims().unwrap().iter().any(|c| c.handle.container_id == "x"));
    }

    #[test]
    fn a_node_that_lost_its_store_keeps_claiming_in_a_block_that_lends() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (node_ipam(d.path(), "a", true), node_ipam(d.path(), "b", true));
        add(&a, "a0").unwrap();
        for i in 0..4 {
            add(&b, &format!("b{i}")).unwrap();
        }
        assert_eq!(add(&b, "b4").unwrap(), "10.2.0.1", "borrowed from a");
        // a's node store is lost and its config no longer allows borrowing: it adopts its lease
        // and still sees (and skips) what b borrowed.
        std::fs::remove_dir_all(d.path().join("a")).unwrap();
        let a = node_ipam(d.path(), "a", false);
        let got: Vec<String> = (0..2).map(|i| add(&a, &format!("n{i}")).unwrap()).collect();
        assert_eq!(got, ["10.2.0.2", "10.2.0.3"]);
        // The lost a0's claim still holds 10.2.0.0 until GC gives back claims no record holds.
        assert!(matches!(add(&a, "n2"), Err(IpamError::Exhausted(_))));
        assert_eq!(a.release_stale_claims_now().unwrap(), ["10.2.0.0".parse::<IpAddr>().unwrap()]);
        assert_eq!(add(&a, "n2").unwrap(), "10.2.0.0");
    }

    fn list_dir_names(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()
    }
}
