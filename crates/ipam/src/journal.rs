//! The journal hook: every allocation and release of this node's addresses, whatever made it
//! (ADD, DEL, GC, `ipam release`, `ipam rebuild`), passes through [`Journal::record`] inside the
//! node store's lock, with the batch that makes the change durable. Whatever a journal adds to
//! that batch becomes durable in the same write, so a subscriber (the audit history) never
//! costs an ADD an fsync of its own and never misses a change.

use crate::error::IpamError;
use crate::model::{Allocation, Handle};
use podnet_fsio::Batch;
use std::net::IpAddr;
use std::path::Path;

/// Why addresses were released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseCause {
    /// CNI DEL (or a failed ADD undoing its own allocation).
    Del,
    /// CNI GC: the runtime no longer lists the attachment.
    Gc,
    /// `podnetctl ipam release IP`.
    Admin,
    /// `podnetctl ipam rebuild` freed an address whose endpoint is gone.
    Rebuild,
}

/// One change to this node's addresses.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Allocated(&'a Allocation),
    Released {
        ip: IpAddr,
        handle: &'a Handle,
        /// The address's record, when the journal asked for records ([`Journal::wants_records`])
        /// and it reads back.
        record: Option<&'a Allocation>,
        /// Where the record lies until the batch removes it (not for a record already moved
        /// aside): a journal may keep the file itself ([`Batch::keep_removed`]) instead of
        /// reading it and writing a copy.
        file: Option<(&'a Path, &'a str)>,
        cause: ReleaseCause,
    },
}

pub trait Journal: Send + Sync {
    /// Whether releases should carry the address's record (costs a file read per address).
    fn wants_records(&self) -> bool {
        false
    }
    /// Called under the node store lock, before `batch` is written.
    fn record(&self, change: &Change<'_>, batch: &mut Batch) -> Result<(), IpamError>;
}

/// The journal of a node that keeps no history: the allocation records are the only state.
pub struct NoJournal;

impl Journal for NoJournal {
    fn record(&self, _: &Change<'_>, _: &mut Batch) -> Result<(), IpamError> {
        Ok(())
    }
}
