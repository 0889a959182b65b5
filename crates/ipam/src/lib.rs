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
pub mod report;
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
    pub fn publish(self) -> Result<Published<'a>, IpamError> {
        let node = &self.ipam.node;
        let mut batch = fsio::Batch::default();
        if !self.existing {
            // A repeated ADD leaves the first ADD's records as they are.
            for a in &self.allocations {
                node.stage(a, &mut batch);
            }
        }
        let files = batch.publish()?;
        Ok(Published { ipam: self.ipam, _lock: self._lock, allocations: self.allocations, existing: self.existing, files })
    }
}

/// Addresses written and visible, their directory not yet fsynced; see [`Pending::publish`].
pub struct Published<'a> {
    ipam: &'a Ipam,
    _lock: fsio::StoreLock,
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
            Some(etcd) => Box::new(store::etcd::EtcdStore::new(etcd.clone(), network)),
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
            // The node's own blocks in every eligible pool first; only then lease, so an exhausted
            // first pool never sends an ADD to the cluster store while a later pool has room here.
            let mut found = None;
            for lease in [false, true] {
                for pool in &family {
                    if let Some((span, ip)) = self.pick_in_pool(pool, &used, lease)? {
                        found = Some((pool, span, ip));
                        break;
                    }
                }
                if found.is_some() {
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

    /// A free address in `pool` for this node: from its own blocks, or (`lease`) from a block the
    /// cluster store leases to it now.
    fn pick_in_pool(&self, pool: &Pool, used: &HashSet<IpAddr>, lease: bool) -> Result<Option<(Span, IpAddr)>, IpamError> {
        let cursor = self.node.cursor(pool.name());
        let pick = |span: Span| span.pick(used, cursor).map(|ip| (span, ip));
        match pool.cfg.source {
            Source::Range if !lease => Ok(pick(pool.range_span(self.reservation))),
            Source::Range | Source::Vnet => Ok(None),
            Source::Overlay => {
                let mut blocks: Vec<_> = self.node.blocks()?.into_iter().filter(|b| pool.cidr().contains(b)).collect();
                blocks.sort_by_key(|b| addr::to_u128(b.network()));
                if !lease {
                    return Ok(blocks.iter().find_map(|b| pick(Span::for_block(*b, self.reservation))));
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
    /// A block this empties is noted, to be handed back once empty for the grace time; that
    /// needs no cluster store, so DEL never waits on one.
    pub fn release(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.node.lock()?;
        let entries = self.node.entries()?;
        let (mine, rest): (Vec<AddrEntry>, Vec<AddrEntry>) = entries.into_iter().partition(|e| &e.handle == handle);
        self.node.remove(&mine)?;
        if !mine.is_empty() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            for block in self.node.blocks()? {
                if mine.iter().any(|e| block.contains(&e.ip)) && !rest.iter().any(|e| block.contains(&e.ip)) {
                    self.node.mark_empty(block, now);
                }
            }
        }
        Ok(mine.into_iter().map(|e| e.ip).collect())
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
            self.node.remove_block(block)?;
            self.node.clear_empty(block);
            if self.cluster.release_block(block, &self.cfg.node)? {
                released.push(block);
            }
        }
        Ok(released)
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
        let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/28", "blockSize": 30}]), Reservation::GatewayPerBlock);
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
        let ipam = ipam(d.path(), json!([{"name": "team", "cidr": "10.9.0.0/24", "namespaces": ["team-a"]}]), Reservation::None);
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

    fn list_dir_names(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()
    }
}
