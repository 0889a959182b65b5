//! Address sources: where a pool's addresses reach this node from. Each validated pool gets one
//! [`PoolSource`] when the IPAM opens ([`for_pool`] is the only place a source kind is matched),
//! and every path that needs to know about a pool's addresses (ADD, STATUS, `ipam show`,
//! `ipam check`, rebuild) asks its source, so a new source is one new implementation.

mod overlay;
mod range;
pub(crate) mod vnet;

use crate::allocate::{Picked, Step};
use crate::config::{Pool, Source};
use crate::error::IpamError;
use crate::model::{BlockLease, Handle};
use crate::node::{AddrEntry, NodeGuard};
use crate::span::{Reservation, Span};
use crate::Ipam;
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::IpAddr;

pub use range::range_span;

/// What an ADD's search for an address works with, under the node store lock.
pub(crate) struct PickContext<'a, 'g> {
    pub ipam: &'a Ipam,
    pub guard: &'g NodeGuard<'a>,
    pub handle: &'g Handle,
    /// Every address file of the node.
    pub entries: &'g [AddrEntry],
    /// Addresses taken (on this node, or claimed elsewhere): never picked.
    pub used: &'g mut HashSet<IpAddr>,
}

/// A pool's use on this node, for `ipam show`.
pub(crate) struct Usage {
    /// Addresses the pool can hand out, reserved ones excluded.
    pub capacity: u128,
    /// Blocks of the pool no node leases (0 where the pool has no blocks).
    pub free_blocks: u128,
    /// This node's blocks in the pool (empty where the pool has no blocks).
    pub node_blocks: Vec<IpNet>,
    /// Addresses still free on this node.
    pub free: u128,
}

pub(crate) trait PoolSource: Send + Sync {
    fn pool(&self) -> &Pool;

    /// A free address at `step` of an ADD's search, if this source has one there.
    fn pick(&self, step: Step, cx: &mut PickContext<'_, '_>) -> Result<Option<Picked>, IpamError>;

    /// Whether this source's addresses come in blocks leased from the cluster store (leases,
    /// hand-back, borrowing and claims apply).
    fn leases_blocks(&self) -> bool;

    /// The span `ip` came from on this node, given the node's blocks; `None` when this source
    /// never hands `ip` out here.
    fn span_of(&self, ip: IpAddr, node_blocks: &[IpNet]) -> Option<Span>;

    /// Whether `ip` lies where this node hands out the pool's addresses (not borrowed).
    fn holds(&self, ip: IpAddr, node_blocks: &[IpNet]) -> bool;

    /// Capacity and use for `ipam show`: `leases` are the cluster's, `node_blocks` this node's,
    /// `used` the addresses this node holds in the pool.
    fn usage(&self, leases: &[BlockLease], node_blocks: &[IpNet], used: usize) -> Usage;

    /// STATUS: whether an ADD may still find room (cheaply; ADD reports exhaustion precisely).
    fn has_room(&self, used: usize) -> bool;

    /// Before an ADD takes the node store lock: bring what the source hands out up to date
    /// (vnet: the host agent's inventory, at most every `refreshSeconds`, bounded).
    fn prepare(&self) -> Result<(), IpamError> {
        Ok(())
    }

    /// Bring it up to date now (podnetd, in the background).
    fn refresh(&self) -> Result<(), IpamError> {
        Ok(())
    }

    /// Whether `ip`, held by a pod, was taken back by its source (vnet: no longer the NIC's): it
    /// stays with its pod, is reported, and is never handed out again.
    fn withdrawn(&self, _ip: IpAddr) -> bool {
        false
    }

    /// A hint for the exhaustion error: what to do when this source is full.
    fn when_full(&self) -> &'static str {
        "the node's blocks are full and no block is free; add a pool or widen its cidr"
    }
}

/// The source of a validated pool under the network's reservation rule.
pub(crate) fn for_pool(pool: &Pool, reservation: Reservation, node_dir: &std::path::Path) -> Box<dyn PoolSource> {
    match pool.source {
        Source::Overlay => Box::new(overlay::OverlaySource { pool: pool.clone(), reservation }),
        Source::Range => Box::new(range::RangeSource { pool: pool.clone(), reservation }),
        Source::Vnet => {
            Box::new(vnet::VnetSource { pool: pool.clone(), reservation, cache: vnet::cache_path(pool, node_dir) })
        }
    }
}
