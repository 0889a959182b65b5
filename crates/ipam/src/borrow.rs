//! The borrowing protocol (`allowBorrowing`, overlay pools): a node whose blocks are full and
//! whose pool has no free block takes a free address from another node's block. The owner's node
//! store cannot see other nodes, so in a lending block every allocation, the owner's included,
//! claims its address in the cluster store (create-if-absent decides); a borrower may claim only
//! in a block marked lending, and the owner marks it only once everything it holds there is
//! claimed. See the README, "Borrowing".

use crate::addr::to_u128;
use crate::allocate::Picked;
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::{Allocation, Claim, ClaimAs, ClaimOutcome, Handle};
use crate::node::{AddrEntry, Lending, NodeGuard};
use crate::source::PickContext;
use crate::span::Span;
use crate::Ipam;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

impl Ipam {
    /// A free address in the node's own `blocks`, claimed in the cluster store where the block
    /// lends (or its pool allows borrowing: the block starts lending now).
    pub(crate) fn take_from_own(
        &self,
        cx: &mut PickContext<'_, '_>,
        pool: &Pool,
        blocks: &[IpNet],
    ) -> Result<Option<Picked>, IpamError> {
        let cursor = cx.guard.cursor(pool.name());
        for &block in blocks {
            let lending = match cx.guard.lending(block)? {
                Some(state) => state,
                None if pool.cfg.allow_borrowing => self.start_lending(cx.guard, block, cx.entries)?,
                None => {
                    let span = Span::for_block(block, self.reservation);
                    match span.pick(cx.used, cursor) {
                        Some(ip) => return Ok(Some(Picked { span, ip, claim: None })),
                        None => continue,
                    }
                }
            };
            let how = ClaimAs::Owner { announce: lending == Lending::Claiming };
            if let Some(hit) = self.take(cx.guard, block, how, cx.used, cx.handle, cursor)? {
                if lending == Lending::Claiming {
                    cx.guard.set_lending(block, Lending::Announced)?;
                }
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Every block is leased and this node's are full: borrow from a lending block of another
    /// node, skipping every address claimed there.
    pub(crate) fn borrow(&self, cx: &mut PickContext<'_, '_>, pool: &Pool) -> Result<Option<Picked>, IpamError> {
        let own = cx.guard.blocks()?;
        let mut lending: Vec<IpNet> = self
            .cluster
            .lending_blocks(&self.deadline)?
            .into_iter()
            .filter(|b| pool.cidr().contains(b) && !own.contains(b))
            .collect();
        if lending.is_empty() {
            return Ok(None);
        }
        lending.sort_by_key(|b| to_u128(b.network()));
        let claimed = self.cluster.claims(&self.deadline)?;
        cx.used.extend(claimed.into_iter().filter(|c| pool.cidr().contains(&c.ip)).map(|c| c.ip));
        for block in lending {
            if let Some(hit) = self.take(cx.guard, block, ClaimAs::Borrower, cx.used, cx.handle, None)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// Claim, in the cluster store, every address the node already holds in `block` (they were
    /// handed out before its pool allowed borrowing), then mark the block: from here on this node
    /// claims every address of it. Other nodes borrow only once the first new claim announces it.
    pub(crate) fn start_lending(
        &self,
        guard: &NodeGuard<'_>,
        block: IpNet,
        entries: &[AddrEntry],
    ) -> Result<Lending, IpamError> {
        guard.mark_claimant()?;
        for e in entries.iter().filter(|e| block.contains(&e.ip)) {
            let mut record = guard.read(e)?;
            let claim = Claim::new(e.ip, block, &self.cfg.node, &e.handle);
            let id = match self.cluster.claim(&claim, ClaimAs::Owner { announce: false }, &self.deadline)? {
                ClaimOutcome::Claimed => claim.id,
                // This very allocation's claim, from an earlier try.
                ClaimOutcome::Taken(held)
                    if held.iter().any(|c| c.ip == e.ip && c.node == self.cfg.node && c.handle == e.handle) =>
                {
                    held.into_iter().find(|c| c.ip == e.ip).map(|c| c.id).unwrap_or_default()
                }
                _ => {
                    return Err(IpamError::ClaimConflict(format!(
                        "{} is held on node {} by {} but claimed by someone else in the cluster store; run podnetctl ipam check",
                        e.ip,
                        self.cfg.node,
                        e.handle.key()
                    )))
                }
            };
            if record.claim_id.as_deref() != Some(id.as_str()) {
                record.claim_id = Some(id);
                guard.rewrite(&e.file, &record)?;
            }
        }
        guard.set_lending(block, Lending::Claiming)?;
        Ok(Lending::Claiming)
    }

    /// Pick and claim a free address of `block`, skipping addresses the cluster store says are
    /// claimed; `None` when the block is full or no longer usable.
    fn take(
        &self,
        guard: &NodeGuard<'_>,
        block: IpNet,
        how: ClaimAs,
        used: &mut HashSet<IpAddr>,
        handle: &Handle,
        cursor: Option<IpAddr>,
    ) -> Result<Option<Picked>, IpamError> {
        let span = Span::for_block(block, self.reservation);
        guard.mark_claimant()?;
        while let Some(ip) = span.pick(used, cursor) {
            let claim = Claim::new(ip, block, &self.cfg.node, handle);
            match self.cluster.claim(&claim, how, &self.deadline)? {
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

    /// The cluster claim an allocation holds, from its record.
    pub(crate) fn claim_of(&self, a: &Allocation) -> Option<Claim> {
        let id = a.claim_id.clone()?;
        Some(Claim { ip: a.address.addr(), block: a.block, node: self.cfg.node.clone(), handle: a.handle.clone(), id })
    }
}
