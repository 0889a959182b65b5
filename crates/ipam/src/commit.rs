//! The two-phase commit of an ADD's addresses: picked under the node lock ([`Pending`]), written
//! and visible to every process ([`Published`]), then durable ([`Published::finish`]).

use crate::error::IpamError;
use crate::model::{Allocation, Claim};
use crate::node::NodeGuard;
use crate::Ipam;
use podnet_fsio::{Batch, Blank};

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
    pub(crate) ipam: &'a Ipam,
    pub(crate) guard: Option<NodeGuard<'a>>,
    pub allocations: Vec<Allocation>,
    /// The handle already held these (a repeated ADD).
    pub existing: bool,
    /// Claims made in the cluster store for these addresses (pools that allow borrowing): given
    /// back if the addresses are never published.
    pub(crate) claims: Vec<Claim>,
    /// Files made ahead for the address records (see [`Pending::provide`]).
    pub(crate) blanks: Vec<Blank>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Still under the node lock: nothing of this node can see the address in between.
        for c in std::mem::take(&mut self.claims) {
            if let Err(e) = self.ipam.cluster.unclaim(&c, &self.ipam.deadline) {
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

    /// A file made ahead in [`Ipam::address_dir`] (on another thread, while the addresses were
    /// picked) for an address record to use instead of creating its own.
    pub fn provide(&mut self, blank: Blank) {
        self.blanks.push(blank);
    }

    /// First half of [`Pending::commit`]: the address files are written, fsynced and renamed into
    /// place, so every other process sees the addresses as taken (a kill -9 from here on cannot free
    /// an address a pod already carries). Only the directory fsync is left for [`Published::finish`]:
    /// callers may configure the pod in between. A repeated ADD (addresses already held) rewrites
    /// nothing: the first ADD's records stay as they are.
    pub fn publish(mut self) -> Result<Published<'a>, IpamError> {
        let guard = self.guard.take().expect("a pending allocation holds the lock");
        let mut batch = Batch::default();
        for blank in self.blanks.drain(..) {
            batch.provide(blank);
        }
        if !self.existing {
            // On failure `self` drops and gives the claims back.
            guard.stage_allocations(&self.allocations, &mut batch)?;
        }
        let files = batch.publish()?;
        self.claims.clear();
        Ok(Published { guard, allocations: std::mem::take(&mut self.allocations), existing: self.existing, files })
    }
}

/// Addresses written and visible, their directory not yet fsynced; see [`Pending::publish`].
pub struct Published<'a> {
    guard: NodeGuard<'a>,
    pub allocations: Vec<Allocation>,
    pub existing: bool,
    files: podnet_fsio::Published,
}

impl Published<'_> {
    /// Make the addresses durable and release the lock. On error the addresses stay recorded: a
    /// pod may already carry them, so the caller removes the pod's interface first and then
    /// releases them ([`Ipam::release`]); freeing them here would let another pod take an address
    /// still in use.
    pub fn finish(self) -> Result<Allocated, IpamError> {
        self.files.sync()?;
        if !self.existing {
            for a in &self.allocations {
                self.guard.set_cursor(&a.pool, a.address.addr());
                self.guard.clear_empty(a.block);
            }
        }
        Ok(Allocated { allocations: self.allocations, existing: self.existing })
    }
}
