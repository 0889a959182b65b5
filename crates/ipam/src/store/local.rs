//! The embedded cluster store: one file per block lease under `<path>/<network>/blocks/`, written
//! atomically under a lock. Several simulated nodes on one machine can share its directory.

use super::ClusterStore;
use crate::addr::{block_count, net_from_file_name, net_to_file_name, nth_block};
use crate::config::Pool;
use crate::error::IpamError;
use crate::fsio::{atomic_write, ensure_dir, list_locked, read_record, remove, sync_dir, StoreLock, LOCK_WAIT};
use crate::model::{now_rfc3339, BlockLease};
use ipnet::IpNet;
use std::collections::HashSet;
use std::path::PathBuf;

pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// `root` is the store path (`ipam.store.path`, default `<dataDir>/cluster`).
    pub fn new(root: PathBuf, network: &str) -> LocalStore {
        LocalStore { dir: root.join(network) }
    }
    fn blocks_dir(&self) -> PathBuf {
        self.dir.join("blocks")
    }
    fn lock(&self) -> Result<StoreLock, IpamError> {
        ensure_dir(&self.blocks_dir())?;
        StoreLock::acquire(&self.dir.join("lock"), LOCK_WAIT)
    }
    fn read_all(&self) -> Result<Vec<BlockLease>, IpamError> {
        let dir = self.blocks_dir();
        let mut out = Vec::new();
        for name in list_locked(&dir)? {
            let path = dir.join(&name);
            let lease: BlockLease = read_record(&path)?;
            if net_from_file_name(&name) != Some(lease.block) {
                return Err(IpamError::Corrupt { path, why: format!("holds block {} under another name", lease.block) });
            }
            out.push(lease);
        }
        Ok(out)
    }
}

impl ClusterStore for LocalStore {
    fn leased_blocks(&self, pool: &Pool, node: &str) -> Result<Vec<BlockLease>, IpamError> {
        let _l = self.lock()?;
        Ok(self.read_all()?.into_iter().filter(|l| l.node == node && pool.cidr().contains(&l.block)).collect())
    }

    fn lease_block(&self, pool: &Pool, node: &str) -> Result<Option<BlockLease>, IpamError> {
        let _l = self.lock()?;
        // Names alone say which blocks are taken, so a lease costs no reads of other nodes' records.
        let taken: HashSet<IpNet> = list_locked(&self.blocks_dir())?.iter().filter_map(|n| net_from_file_name(n)).collect();
        let count = block_count(pool.cidr(), pool.block_len);
        let mut n: u128 = 0;
        while n < count {
            let block = nth_block(pool.cidr(), pool.block_len, n);
            if !taken.contains(&block) {
                let lease = BlockLease { block, pool: pool.name().to_string(), node: node.to_string(), leased_at: now_rfc3339() };
                atomic_write(&self.blocks_dir(), &net_to_file_name(block), &crate::fsio::encode_record(&lease))?;
                return Ok(Some(lease));
            }
            n += 1;
        }
        Ok(None)
    }

    fn release_block(&self, block: IpNet, node: &str) -> Result<bool, IpamError> {
        let _l = self.lock()?;
        let name = net_to_file_name(block);
        let path = self.blocks_dir().join(&name);
        let lease: BlockLease = match read_record(&path) {
            Ok(l) => l,
            Err(IpamError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if lease.node != node {
            return Ok(false);
        }
        let removed = remove(&self.blocks_dir(), &name)?;
        sync_dir(&self.blocks_dir())?;
        Ok(removed)
    }

    fn leases(&self) -> Result<Vec<BlockLease>, IpamError> {
        let _l = self.lock()?;
        self.read_all()
    }
}
