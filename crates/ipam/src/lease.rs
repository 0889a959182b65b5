//! Block leases from this node's side: leasing a new block when the node's blocks are full, and
//! adopting leases the cluster store holds for the node but its node store lost.

use crate::allocate::Picked;
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::BlockLease;
use crate::node::{AddrEntry, NodeGuard};
use crate::source::PickContext;
use crate::store::LeaseAttempt;
use crate::Ipam;
use ipnet::IpNet;
use std::collections::HashSet;

/// How many free blocks one lease request tries, in this node's order: enough that nodes
/// leasing at the same moment almost never all lose.
const LEASE_CANDIDATES: usize = 4;

impl Ipam {
    /// The node's blocks are full. One read of the leases: adopt blocks the cluster store says
    /// are ours but the node store lost (a crash between lease and record); else try the first
    /// free blocks in this node's order ([`Pool::blocks_for`]) in one request.
    /// Only when all of those were taken meanwhile is the read repeated: a lease costs two
    /// requests however many nodes lease at once.
    pub(crate) fn take_from_new_lease(
        &self,
        cx: &mut PickContext<'_, '_>,
        pool: &Pool,
    ) -> Result<Option<Picked>, IpamError> {
        let me = &self.cfg.node;
        let known = cx.guard.blocks()?;
        let mut in_use = None;
        // Blocks that hold claims without a lease: not free, though the leases do not show it.
        let mut claimed: HashSet<IpNet> = HashSet::new();
        loop {
            let snapshot = self.cluster.lease_snapshot(&self.deadline)?;
            let in_pool: Vec<&BlockLease> = snapshot.leases.iter().filter(|l| pool.cidr().contains(&l.block)).collect();
            for lease in in_pool.iter().filter(|l| &l.node == me && !known.contains(&l.block)) {
                self.adopt(cx.guard, lease, cx.entries, &mut in_use)?;
                if let Some(hit) = self.take_from_own(cx, pool, &[lease.block])? {
                    return Ok(Some(hit));
                }
            }
            let taken: HashSet<IpNet> = in_pool.iter().map(|l| l.block).chain(claimed.iter().copied()).collect();
            if taken.len() as u128 >= crate::addr::block_count(pool.cidr(), pool.block_len) {
                return Ok(None);
            }
            let candidates: Vec<IpNet> =
                pool.blocks_for(me).filter(|b| !taken.contains(b)).take(LEASE_CANDIDATES).collect();
            if candidates.is_empty() {
                return Ok(None);
            }
            match self.cluster.lease_one_of(pool, me, &candidates, &self.deadline)? {
                LeaseAttempt::Leased(lease) => {
                    // A new lease: a lending mark left from an earlier lease of it is stale.
                    cx.guard.clear_lending(lease.block)?;
                    cx.guard.add_block(&lease)?;
                    return self.take_from_own(cx, pool, &[lease.block]);
                }
                LeaseAttempt::Taken { claimed: more } => claimed.extend(more),
            }
        }
    }

    /// Record in the node store a block the cluster store leases to this node but the node store
    /// does not know (lost to a crash, or forgotten by a hand-back the cluster store never saw).
    /// `in_use` caches, across calls, the blocks that lend or hold claims: read only when there
    /// is a lease to adopt (a rare path).
    pub(crate) fn adopt(
        &self,
        guard: &NodeGuard<'_>,
        lease: &BlockLease,
        entries: &[AddrEntry],
        in_use: &mut Option<HashSet<IpNet>>,
    ) -> Result<(), IpamError> {
        let in_use = match in_use {
            Some(b) => b,
            None => {
                let mut blocks: HashSet<IpNet> = self.cluster.lending_blocks(&self.deadline)?.into_iter().collect();
                blocks.extend(self.cluster.claims(&self.deadline)?.into_iter().map(|c| c.block));
                in_use.insert(blocks)
            }
        };
        guard.add_block(lease)?;
        // A block that lends, or holds claims, keeps claiming whatever this node's config or lost
        // marks say: others may borrow from it.
        if in_use.contains(&lease.block) && guard.lending(lease.block)?.is_none() {
            self.start_lending(guard, lease.block, entries)?;
        }
        Ok(())
    }
}
