//! `overlay`: blocks leased to this node from the cluster store as the node's blocks fill, and,
//! in pools that allow it, addresses borrowed from other nodes' blocks (see `borrow.rs`).

use super::{PickContext, PoolSource, Usage};
use crate::addr::{block_count, nth_block, to_u128};
use crate::allocate::{Picked, Step};
use crate::config::Pool;
use crate::error::IpamError;
use crate::model::BlockLease;
use crate::span::{Reservation, Span};
use ipnet::IpNet;
use std::net::IpAddr;

pub(crate) struct OverlaySource {
    pub pool: Pool,
    pub reservation: Reservation,
}

impl PoolSource for OverlaySource {
    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn pick(&self, step: Step, cx: &mut PickContext<'_, '_>) -> Result<Option<Picked>, IpamError> {
        let pool = &self.pool;
        match step {
            Step::Own => {
                let mut blocks: Vec<IpNet> =
                    cx.guard.blocks()?.into_iter().filter(|b| pool.cidr().contains(b)).collect();
                blocks.sort_by_key(|b| to_u128(b.network()));
                cx.ipam.take_from_own(cx, pool, &blocks)
            }
            Step::Lease => cx.ipam.take_from_new_lease(cx, pool),
            Step::Borrow if pool.cfg.allow_borrowing => cx.ipam.borrow(cx, pool),
            Step::Borrow => Ok(None),
        }
    }

    fn leases_blocks(&self) -> bool {
        true
    }

    fn span_of(&self, ip: IpAddr, node_blocks: &[IpNet]) -> Option<Span> {
        if !self.pool.cidr().contains(&ip) {
            return None;
        }
        // A borrowed address's block is another node's; either way it is the pool's block that
        // contains the address.
        let block = node_blocks
            .iter()
            .copied()
            .find(|b| b.contains(&ip))
            .unwrap_or_else(|| IpNet::new(ip, self.pool.block_len).expect("block fits").trunc());
        Some(Span::for_block(block, self.reservation))
    }

    fn holds(&self, ip: IpAddr, node_blocks: &[IpNet]) -> bool {
        node_blocks.iter().any(|b| b.contains(&ip))
    }

    fn usage(&self, leases: &[BlockLease], node_blocks: &[IpNet], used: usize) -> Usage {
        let pool = &self.pool;
        let per_block = Span::for_block(nth_block(pool.cidr(), pool.block_len, 0), self.reservation).capacity();
        let blocks = block_count(pool.cidr(), pool.block_len);
        let leased = leases.iter().filter(|l| pool.cidr().contains(&l.block)).count() as u128;
        let mine: Vec<IpNet> = node_blocks.iter().copied().filter(|b| pool.cidr().contains(b)).collect();
        let mine_capacity = mine.len() as u128 * per_block;
        Usage {
            capacity: blocks.saturating_mul(per_block),
            free_blocks: blocks.saturating_sub(leased),
            node_blocks: mine,
            free: mine_capacity.saturating_sub(used as u128),
        }
    }

    fn has_room(&self, _: usize) -> bool {
        // An overlay pool can always lease another block unless the cluster says otherwise; the
        // cheap answer here is "yes", ADD reports exhaustion precisely.
        true
    }
}
