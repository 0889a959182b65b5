//! Where block leases live. The node store ([`crate::node::NodeStore`]) holds addresses; the cluster
//! store holds only which node leases which block, so a pod ADD touches it only for a new block.

pub mod etcd;
pub mod local;

use crate::config::Pool;
use crate::error::IpamError;
use crate::model::BlockLease;
use ipnet::IpNet;

pub trait ClusterStore {
    /// Blocks of `pool` leased to `node` (a node adopts these after a crash between lease and record).
    fn leased_blocks(&self, pool: &Pool, node: &str) -> Result<Vec<BlockLease>, IpamError>;
    /// Lease the first free block of `pool` to `node`; `None` when every block is leased.
    fn lease_block(&self, pool: &Pool, node: &str) -> Result<Option<BlockLease>, IpamError>;
    /// Hand a block back; only its owner may. Returns whether a lease was removed.
    fn release_block(&self, block: IpNet, node: &str) -> Result<bool, IpamError>;
    /// Every lease of the network.
    fn leases(&self) -> Result<Vec<BlockLease>, IpamError>;
    /// Round trips to a remote store so far in this process (0 for the local store).
    fn requests(&self) -> usize {
        0
    }
}
