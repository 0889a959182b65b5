//! Block leases from this node's side: leasing a new block when the node's blocks are full, and
//! adopting leases the cluster store holds for the node but its node store lost.

use crate::allocate::Picked;
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::BlockLease;
use crate::node::{AddrEntry, NodeGuard};
use crate::source::PickContext;
use crate::Ipam;
use ipnet::IpNet;
use std::collections::HashSet;

impl Ipam {
    /// The node's blocks are full. First adopt blocks the cluster store says are ours but the
    /// node store lost (a crash between lease and record), then lease a new one.
    pub(crate) fn take_from_new_lease(
        &self,
        cx: &mut PickContext<'_, '_>,
        pool: &Pool,
    ) -> Result<Option<Picked>, IpamError> {
        let known = cx.guard.blocks()?;
        let mut in_use = None;
        for lease in self.cluster.leased_blocks(pool, &self.cfg.node, &self.deadline)? {
            if !known.contains(&lease.block) {
                self.adopt(cx.guard, &lease, cx.entries, &mut in_use)?;
                if let Some(hit) = self.take_from_own(cx, pool, &[lease.block])? {
                    return Ok(Some(hit));
                }
            }
        }
        match self.cluster.lease_block(pool, &self.cfg.node, &self.deadline)? {
            Some(lease) => {
                // A new lease: a lending mark left from an earlier lease of it is stale.
                cx.guard.clear_lending(lease.block)?;
                cx.guard.add_block(&lease)?;
                self.take_from_own(cx, pool, &[lease.block])
            }
            None => Ok(None),
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
