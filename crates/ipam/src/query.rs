//! Read-only questions about this node's addresses (the node store lock is taken only for a
//! consistent listing).

use crate::addr::to_u128;
use crate::error::IpamError;
use crate::model::{Allocation, BlockLease, Handle};
use crate::Ipam;
use std::collections::HashMap;
use std::net::IpAddr;

impl Ipam {
    /// Every handle holding an address.
    pub fn handles(&self) -> Result<Vec<Handle>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let guard = self.node.lock()?;
        let mut h: Vec<Handle> = guard.entries()?.into_iter().map(|e| e.handle).collect();
        h.sort();
        h.dedup();
        Ok(h)
    }

    /// Addresses `handle` holds now.
    pub fn addresses_of(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        let guard = self.node.lock()?;
        Ok(guard.entries()?.into_iter().filter(|e| &e.handle == handle).map(|e| e.ip).collect())
    }

    /// Every allocation of this node, records verified.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let guard = self.node.lock()?;
        let entries = guard.entries()?;
        let mut out = entries.iter().map(|e| guard.read(e)).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|a| (a.pool.clone(), to_u128(a.address.addr())));
        Ok(out)
    }

    /// Every block lease of the network, from the cluster store.
    pub fn leases(&self) -> Result<Vec<BlockLease>, IpamError> {
        self.cluster.leases(&self.deadline)
    }

    /// STATUS: the stores are readable and every record verifies, and some eligible address is left.
    pub fn status(&self) -> Result<(), IpamError> {
        let allocations = self.allocations()?;
        if self.node.exists() {
            let guard = self.node.lock()?;
            guard.block_leases()?;
        }
        let mut used_per_pool: HashMap<&str, usize> = HashMap::new();
        for a in &allocations {
            *used_per_pool.entry(a.pool.as_str()).or_default() += 1;
        }
        let has_room = self
            .sources
            .iter()
            .filter(|s| !s.pool().cfg.disabled)
            .any(|s| s.has_room(used_per_pool.get(s.pool().name()).copied().unwrap_or(0)));
        if !has_room {
            return Err(IpamError::Exhausted(format!(
                "every enabled pool of network {} is full on node {}",
                self.network, self.cfg.node
            )));
        }
        Ok(())
    }

    /// Addresses pods hold that their source took back (vnet: the cloud removed them from the
    /// NIC): (pool, address), for `ipam check` and `/metrics`.
    pub fn withdrawn(&self) -> Result<Vec<(String, IpAddr)>, IpamError> {
        let mut out: Vec<(String, IpAddr)> = self
            .allocations()?
            .into_iter()
            .filter(|a| self.source(&a.pool).is_some_and(|s| s.withdrawn(a.address.addr())))
            .map(|a| (a.pool, a.address.addr()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Bring every source up to date (podnetd, in the background, so ADDs rarely wait on a host
    /// agent); the first error, after trying them all.
    pub fn refresh_sources(&self) -> Result<(), IpamError> {
        let mut first = None;
        for s in &self.sources {
            if let Err(e) = s.refresh() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// A vnet pool's kept inventory (None for other pools, or before the first good answer).
    pub fn vnet_inventory(&self, pool: &str) -> Option<crate::VnetInventory> {
        let s = self.source(pool)?;
        (s.pool().source == crate::Source::Vnet).then(|| crate::source::vnet::load(s.pool(), self.node.dir())).flatten()
    }

    /// Where this node's address records are written (see [`crate::Pending::provide`]).
    pub fn address_dir(&self) -> std::path::PathBuf {
        self.node.addrs_dir()
    }

    /// Whether this network was ever used on this node.
    pub fn node_store_exists(&self) -> bool {
        self.node.exists()
    }
}
