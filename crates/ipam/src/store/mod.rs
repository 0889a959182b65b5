//! Where block leases live. The node store ([`crate::node::NodeStore`]) holds addresses; the cluster
//! store holds which node leases which block, so a pod ADD touches it only for a new block. Pools
//! that allow borrowing also keep address claims here (see [`Claim`]): the price of borrowing is a
//! cluster round trip on every ADD and DEL in those pools.

pub mod etcd;
pub mod local;

use crate::config::Pool;
use crate::error::IpamError;
use crate::model::{BlockLease, BlockRelease, Claim, ClaimAs, ClaimOutcome};
use ipnet::IpNet;

pub trait ClusterStore {
    /// Blocks of `pool` leased to `node` (a node adopts these after a crash between lease and record).
    fn leased_blocks(&self, pool: &Pool, node: &str) -> Result<Vec<BlockLease>, IpamError>;
    /// Lease the first free block of `pool` to `node`; `None` when every block is leased. A block
    /// that still has claimed addresses (lent out by a node since released) is not free.
    fn lease_block(&self, pool: &Pool, node: &str) -> Result<Option<BlockLease>, IpamError>;
    /// Hand a block back; only its owner may, and only while none of its addresses is claimed,
    /// unless `even_if_claimed` (a dead node's blocks: the next owner respects the claims).
    fn release_block(&self, block: IpNet, node: &str, even_if_claimed: bool) -> Result<BlockRelease, IpamError>;
    /// Every lease of the network.
    fn leases(&self) -> Result<Vec<BlockLease>, IpamError>;
    /// Claim an address: only if no claim holds it and its block is still leased (borrower: and
    /// lending). A claim equal to `claim` already there (a retried request) counts as claimed.
    fn claim(&self, claim: &Claim, how: ClaimAs) -> Result<ClaimOutcome, IpamError>;
    /// Remove the claim if it is exactly `claim`. Returns whether one was removed.
    fn unclaim(&self, claim: &Claim) -> Result<bool, IpamError>;
    /// Every claim of the network.
    fn claims(&self) -> Result<Vec<Claim>, IpamError>;
    /// Blocks whose owners lend addresses to other nodes.
    fn lending_blocks(&self) -> Result<Vec<IpNet>, IpamError>;
    /// Round trips to a remote store so far in this process (0 for the local store).
    fn requests(&self) -> usize {
        0
    }
}
