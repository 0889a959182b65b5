//! Unit-test access to an [`Ipam`]'s stores without a deadline at every call.

use crate::error::IpamError;
use crate::model::{BlockLease, BlockRelease, Claim, ClaimAs, ClaimOutcome};
use crate::Ipam;
use ipnet::IpNet;
use std::path::Path;

pub(crate) struct TestCluster<'a>(&'a Ipam);
pub(crate) struct TestNode<'a>(&'a Ipam);

impl Ipam {
    pub(crate) fn cluster(&self) -> TestCluster<'_> {
        TestCluster(self)
    }
    pub(crate) fn node_store(&self) -> TestNode<'_> {
        TestNode(self)
    }
}

impl TestCluster<'_> {
    pub fn leases(&self) -> Result<Vec<BlockLease>, IpamError> {
        self.0.cluster.leases(&self.0.deadline)
    }
    pub fn claims(&self) -> Result<Vec<Claim>, IpamError> {
        self.0.cluster.claims(&self.0.deadline)
    }
    pub fn claim(&self, c: &Claim, how: ClaimAs) -> Result<ClaimOutcome, IpamError> {
        self.0.cluster.claim(c, how, &self.0.deadline)
    }
    pub fn unclaim(&self, c: &Claim) -> Result<bool, IpamError> {
        self.0.cluster.unclaim(c, &self.0.deadline)
    }
    pub fn release_block(&self, b: IpNet, node: &str, even_if_claimed: bool) -> Result<BlockRelease, IpamError> {
        self.0.cluster.release_block(b, node, even_if_claimed, &self.0.deadline)
    }
}

impl TestNode<'_> {
    pub fn dir(&self) -> &Path {
        self.0.node.dir()
    }
    pub fn blocks(&self) -> Result<Vec<IpNet>, IpamError> {
        self.0.node.lock()?.blocks()
    }
    pub fn remove_block(&self, b: IpNet) -> Result<(), IpamError> {
        self.0.node.lock()?.remove_block(b)
    }
}
