//! Every mutation that frees something: DEL's release, CNI GC, stale claims, empty blocks going
//! back to their pools, `ipam release IP` and `ipam release --node`. Addresses leave the node
//! store only through [`crate::node::NodeGuard::release`], which tells the journal.

use crate::error::IpamError;
use crate::journal::ReleaseCause;
use crate::model::{Allocation, BlockRelease, Handle};
use crate::node::{AddrEntry, NodeGuard};
use crate::Ipam;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

/// What [`Ipam::release_node`] found: blocks handed back, and leases another writer changed first.
pub struct NodeRelease {
    pub released: Vec<IpNet>,
    pub changed: Vec<IpNet>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Ipam {
    /// Release every address `handle` holds. Idempotent: an unknown handle releases nothing.
    /// A block this empties is noted, to be handed back once empty for the grace time; that
    /// needs no cluster store, so DEL never waits on one.
    pub fn release(&self, handle: &Handle) -> Result<Vec<IpAddr>, IpamError> {
        self.release_as(handle, ReleaseCause::Del)
    }

    /// [`Ipam::release`] for a reason other than DEL (the journal records why).
    pub fn release_as(&self, handle: &Handle, cause: ReleaseCause) -> Result<Vec<IpAddr>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let guard = self.node.lock()?;
        let entries = guard.entries()?;
        let (mine, rest): (Vec<AddrEntry>, Vec<AddrEntry>) = entries.into_iter().partition(|e| &e.handle == handle);
        // Claim ids live in the records: read them (borrowing nodes only) before they go. An
        // unreadable one keeps its claim for GC.
        let records: Vec<Allocation> =
            if self.may_claim() { mine.iter().filter_map(|e| guard.read(e).ok()).collect() } else { Vec::new() };
        let removed = guard.release_unsynced(&mine, cause)?;
        let mut claims = Vec::new();
        if !mine.is_empty() {
            let now = unix_now();
            for block in guard.blocks()? {
                if mine.iter().any(|e| block.contains(&e.ip)) && !rest.iter().any(|e| block.contains(&e.ip)) {
                    guard.mark_empty(block, now);
                }
            }
            if self.may_claim() {
                claims = records.into_iter().filter_map(|a| self.claim_of(&a)).collect();
            }
        }
        drop(guard);
        removed.sync()?;
        // The address is free on this node already; its claim goes after, outside the lock. If
        // the cluster store is down the claim stays (DEL still succeeds) and only blocks the
        // address until GC gives it back.
        for c in &claims {
            if let Err(e) = self.cluster.unclaim(c, &self.deadline) {
                tracing::warn!(ip = %c.ip, error = %e, "could not give back the claim of a released address; GC gives it back later");
            }
        }
        Ok(mine.into_iter().map(|e| e.ip).collect())
    }

    /// Release every address whose handle is not in `keep` (CNI GC).
    /// Claims in the cluster store that no address of this node holds any more are given back
    /// too; if the cluster store is down that part waits for the next GC.
    pub fn gc(&self, keep: &HashSet<Handle>) -> Result<Vec<(Handle, IpAddr)>, IpamError> {
        let guard = self.node.lock()?;
        let (stale, live): (Vec<AddrEntry>, Vec<AddrEntry>) =
            guard.entries()?.into_iter().partition(|e| !keep.contains(&e.handle));
        guard.release(&stale, ReleaseCause::Gc)?;
        if self.may_claim() {
            match self.release_stale_claims_locked(&guard, &live) {
                Ok(ips) if !ips.is_empty() => tracing::info!(count = ips.len(), "gave back claims no address holds"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not give back stale claims; the next GC tries again"),
            }
        }
        Ok(stale.into_iter().map(|e| (e.handle, e.ip)).collect())
    }

    /// GC's cluster half: give back this node's claims that no address record holds.
    pub fn release_stale_claims_now(&self) -> Result<Vec<IpAddr>, IpamError> {
        if !self.may_claim() || !self.node.exists() {
            return Ok(Vec::new());
        }
        let guard = self.node.lock()?;
        let entries = guard.entries()?;
        self.release_stale_claims_locked(&guard, &entries)
    }

    /// Give back claims of this node that no address record holds (an ADD killed between claim
    /// and record, a DEL that could not reach the cluster store). Needs the node lock (`_guard`):
    /// an ADD holds it from claim to record.
    pub(crate) fn release_stale_claims_locked(
        &self,
        _guard: &NodeGuard<'_>,
        entries: &[AddrEntry],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let held: HashSet<(IpAddr, &Handle)> = entries.iter().map(|e| (e.ip, &e.handle)).collect();
        let mut out = Vec::new();
        for c in self.cluster.claims(&self.deadline)?.into_iter().filter(|c| c.node == self.cfg.node) {
            if !held.contains(&(c.ip, &c.handle)) && self.cluster.unclaim(&c, &self.deadline)? {
                out.push(c.ip);
            }
        }
        Ok(out)
    }

    /// Hand back to their pools the blocks that have stayed empty for the grace time (GC and
    /// `podnetctl ipam release --empty-blocks` call this). Returns the blocks handed back.
    pub fn release_empty_blocks(&self) -> Result<Vec<IpNet>, IpamError> {
        if !self.node.exists() {
            return Ok(Vec::new());
        }
        let now = unix_now();
        {
            // Any block found empty starts its grace time now, if no mark says since when: a mark
            // lost to a crash, or blocks emptied by GC or `ipam release IP`, are not stranded.
            let guard = self.node.lock()?;
            let entries = guard.entries()?;
            // Leases the node store lost (a hand-back whose cluster half failed, a crash) are
            // adopted, so they go back too: every node converges once the cluster store answers.
            let known = guard.blocks()?;
            let mut in_use = None;
            let lost = self.cluster.leases(&self.deadline)?;
            for lease in lost.iter().filter(|l| l.node == self.cfg.node && !known.contains(&l.block)) {
                self.adopt(&guard, lease, &entries, &mut in_use)?;
            }
            let marked: Vec<IpNet> = guard.empty_blocks().into_iter().map(|(b, _)| b).collect();
            for block in guard.blocks()? {
                if !marked.contains(&block) && !entries.iter().any(|e| block.contains(&e.ip)) {
                    guard.mark_empty(block, now);
                }
            }
        }
        let due: Vec<IpNet> = self
            .node
            .empty_blocks()
            .into_iter()
            .filter(|(_, since)| now.saturating_sub(*since) >= self.cfg.empty_block_grace.as_secs())
            .map(|(b, _)| b)
            .collect();
        let mut released = Vec::new();
        for block in due {
            let guard = self.node.lock()?;
            // Still empty under the lock, or an ADD got there first.
            if guard.entries()?.iter().any(|e| block.contains(&e.ip)) {
                guard.clear_empty(block);
                continue;
            }
            // The node forgets the block first: were the cluster release lost, `ipam check`
            // reports an unrecorded lease, never a block two nodes allocate from.
            let cached = guard.block_leases()?.into_iter().find(|l| l.block == block);
            guard.remove_block(block)?;
            match self.cluster.release_block(block, &self.cfg.node, false, &self.deadline)? {
                BlockRelease::Released => released.push(block),
                BlockRelease::NotHeld => {}
                BlockRelease::Claimed => {
                    // Other nodes still borrow from it: keep it, and its empty mark to try again
                    // at the next GC.
                    if let Some(lease) = cached {
                        guard.add_block(&lease)?;
                    }
                    continue;
                }
            }
            guard.clear_lending(block)?;
            guard.clear_empty(block);
        }
        Ok(released)
    }

    /// Free one address (`podnetctl ipam release IP`). Refuses (returns the holder) when its
    /// endpoint is live, unless `force`.
    pub fn release_address(
        &self,
        ip: IpAddr,
        force: bool,
        live: &dyn Fn(&Handle) -> bool,
    ) -> Result<Result<Vec<Handle>, Handle>, IpamError> {
        if !self.node.exists() {
            return Ok(Ok(Vec::new()));
        }
        let guard = self.node.lock()?;
        let hits: Vec<AddrEntry> = guard.entries()?.into_iter().filter(|e| e.ip == ip).collect();
        if let Some(busy) = hits.iter().find(|e| live(&e.handle)) {
            if !force {
                return Ok(Err(busy.handle.clone()));
            }
        }
        guard.release(&hits, ReleaseCause::Admin)?;
        if self.may_claim() {
            // Its claim goes too: any of this node's for the address that no record holds now.
            let rest = guard.entries()?;
            let stale = self.cluster.claims(&self.deadline)?.into_iter().filter(|c| {
                c.ip == ip && c.node == self.cfg.node && !rest.iter().any(|e| e.ip == ip && e.handle == c.handle)
            });
            for c in stale {
                self.cluster.unclaim(&c, &self.deadline)?;
            }
        }
        Ok(Ok(hits.into_iter().map(|e| e.handle).collect()))
    }

    /// Hand a dead node's blocks back to the pools (`podnetctl ipam release --node`). Only for
    /// nodes that are gone: a live node keeps allocating from the blocks it believes it holds, so
    /// the caller must be sure.
    pub fn release_node(&self, node: &str) -> Result<NodeRelease, IpamError> {
        let mut out = NodeRelease { released: Vec::new(), changed: Vec::new() };
        // Its claims first: the addresses went with the node. Blocks it lent from go back even
        // while other nodes still borrow from them; they are leased again only once those are gone.
        for c in self.cluster.claims(&self.deadline)?.into_iter().filter(|c| c.node == node) {
            self.cluster.unclaim(&c, &self.deadline)?;
        }
        for lease in self.cluster.leases(&self.deadline)?.into_iter().filter(|l| l.node == node) {
            match self.cluster.release_block(lease.block, node, true, &self.deadline)? {
                BlockRelease::Released => out.released.push(lease.block),
                BlockRelease::NotHeld | BlockRelease::Claimed => out.changed.push(lease.block),
            }
        }
        // The node is out of the cluster: its record goes too (podnetd's peers drop it at once).
        self.cluster.remove_node(node, &self.deadline)?;
        Ok(out)
    }
}
