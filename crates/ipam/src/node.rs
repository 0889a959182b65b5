//! The node store: this node's addresses and its cached block leases, under
//! `<dataDir>/<network>/ipam/`. One file per address, named `<ip>_<containerID>:<ifname>`, so the
//! hot path (pick an address, release a handle) needs directory listings only, never file reads.

use crate::addr::{net_from_file_name, net_to_file_name};
use crate::error::IpamError;
use crate::fsio::{
    atomic_write, encode_record, ensure_dir, list, list_locked, read_record, remove, sync_dir, Batch, StoreLock,
    LOCK_WAIT,
};
use crate::model::{Allocation, BlockLease, Handle};
use ipnet::IpNet;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An address file, decoded from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrEntry {
    pub ip: IpAddr,
    pub handle: Handle,
    pub file: String,
}

impl AddrEntry {
    pub fn file_name(ip: IpAddr, handle: &Handle) -> String {
        format!("{ip}_{}", handle.key())
    }
    pub fn parse(file: &str) -> Option<AddrEntry> {
        let (ip, key) = file.split_once('_')?;
        Some(AddrEntry { ip: ip.parse().ok()?, handle: Handle::from_key(key)?, file: file.to_string() })
    }
}

/// A block of a pool that allows borrowing. Once marked, the owner claims every address it hands
/// out in the block in the cluster store, until the block is handed back: so switching
/// `allowBorrowing` off later never lets the owner hand out an address another node borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lending {
    /// Every address the node holds in the block is claimed; other nodes do not know yet.
    Claiming,
    /// The cluster store marks the block as lending: other nodes may borrow from it.
    Announced,
}

pub struct NodeStore {
    dir: PathBuf,
}

impl NodeStore {
    pub fn new(data_dir: &Path, network: &str) -> NodeStore {
        NodeStore { dir: data_dir.join(network).join("ipam") }
    }
    /// `<dataDir>/<network>/ipam`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Whether this network was ever used on this node (read paths then create nothing).
    pub fn exists(&self) -> bool {
        self.dir.join("lock").exists()
    }
    fn addrs_dir(&self) -> PathBuf {
        self.dir.join("addrs")
    }
    fn blocks_dir(&self) -> PathBuf {
        self.dir.join("blocks")
    }
    fn cursor_dir(&self) -> PathBuf {
        self.dir.join("cursor")
    }
    fn empty_dir(&self) -> PathBuf {
        self.dir.join("empty")
    }
    fn lending_dir(&self) -> PathBuf {
        self.dir.join("lending")
    }

    /// Whether every address of `block` is claimed in the cluster store (see [`Lending`]).
    pub fn lending(&self, block: IpNet) -> Result<Option<Lending>, IpamError> {
        let path = self.lending_dir().join(net_to_file_name(block));
        match std::fs::read_to_string(&path) {
            Ok(t) if t.trim() == "lending" => Ok(Some(Lending::Announced)),
            Ok(_) => Ok(Some(Lending::Claiming)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // Unreadable is not "no": the node would stop claiming in a block others borrow from.
            Err(e) => Err(IpamError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Note, durably and once, that this node makes claims in the cluster store: GC, DEL and
    /// `ipam check` then look for them even after borrowing is switched off.
    pub fn mark_claimant(&self) -> Result<(), IpamError> {
        if !self.is_claimant() {
            atomic_write(&self.dir, "claimant", b"this node claims addresses in the cluster store\n")?;
        }
        Ok(())
    }
    /// Where the etcd store notes an outage for the node's other processes (none before the
    /// network's first use on this node).
    pub fn outage_note(&self) -> Option<PathBuf> {
        self.dir.exists().then(|| self.dir.join("cluster-unavailable"))
    }

    pub fn is_claimant(&self) -> bool {
        self.dir.join("claimant").exists()
    }

    /// Rewrite an address record in place (atomically), e.g. to add its claim id.
    pub fn rewrite(&self, entry: &AddrEntry, a: &Allocation) -> Result<(), IpamError> {
        atomic_write(&self.addrs_dir(), &entry.file, &encode_record(a))
    }
    /// Durable: from here on the node claims every address of the block, whatever the config says.
    pub fn set_lending(&self, block: IpNet, state: Lending) -> Result<(), IpamError> {
        ensure_dir(&self.lending_dir())?;
        let text = match state {
            Lending::Claiming => "claiming",
            Lending::Announced => "lending",
        };
        atomic_write(&self.lending_dir(), &net_to_file_name(block), text.as_bytes())
    }

    /// Note that `block` has been empty since `unix_secs`, unless already noted. A hint, written
    /// without fsync: if lost, the block is only handed back later.
    pub fn mark_empty(&self, block: IpNet, unix_secs: u64) {
        let path = self.empty_dir().join(net_to_file_name(block));
        // A garbled mark is rewritten rather than left to hide the block forever.
        let readable = std::fs::read_to_string(&path).ok().is_some_and(|t| t.trim().parse::<u64>().is_ok());
        if !readable {
            let _ = ensure_dir(&self.empty_dir());
            let _ = crate::fsio::write_hint(&path, unix_secs.to_string().as_bytes());
        }
    }
    /// The block has addresses again (or was handed back).
    pub fn clear_empty(&self, block: IpNet) {
        let _ = std::fs::remove_file(self.empty_dir().join(net_to_file_name(block)));
    }
    /// Blocks noted empty, with since when.
    pub fn empty_blocks(&self) -> Vec<(IpNet, u64)> {
        list(&self.empty_dir())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                Some((
                    net_from_file_name(n)?,
                    std::fs::read_to_string(self.empty_dir().join(n)).ok()?.trim().parse().ok()?,
                ))
            })
            .collect()
    }

    /// Take the node store lock: held only to pick addresses and write their records.
    pub fn lock(&self) -> Result<StoreLock, IpamError> {
        match StoreLock::acquire(&self.dir.join("lock"), LOCK_WAIT) {
            // First use of this network on this node: make the store, then lock.
            Err(IpamError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {
                for d in [self.addrs_dir(), self.blocks_dir(), self.cursor_dir()] {
                    ensure_dir(&d)?;
                }
                StoreLock::acquire(&self.dir.join("lock"), LOCK_WAIT)
            }
            other => other,
        }
    }

    /// Every address file (call with the lock held). A name that does not decode is reported, not
    /// skipped: it may hold an address.
    pub fn entries(&self) -> Result<Vec<AddrEntry>, IpamError> {
        list_locked(&self.addrs_dir())?
            .into_iter()
            .map(|f| {
                AddrEntry::parse(&f).ok_or_else(|| IpamError::Corrupt {
                    path: self.addrs_dir().join(&f),
                    why: "the file name is not <ip>_<containerID>:<ifname>".into(),
                })
            })
            .collect()
    }

    pub fn read(&self, entry: &AddrEntry) -> Result<Allocation, IpamError> {
        let path = self.addrs_dir().join(&entry.file);
        let a: Allocation = read_record(&path)?;
        if a.address.addr() != entry.ip || a.handle != entry.handle {
            return Err(IpamError::Corrupt { path, why: "the record disagrees with its file name".into() });
        }
        Ok(a)
    }

    /// Add the allocation's file to `batch`; it exists once the batch commits.
    pub fn stage(&self, a: &Allocation, batch: &mut Batch) -> AddrEntry {
        let file = AddrEntry::file_name(a.address.addr(), &a.handle);
        batch.put(&self.addrs_dir(), &file, encode_record(a));
        AddrEntry { ip: a.address.addr(), handle: a.handle.clone(), file }
    }

    /// Remove address files, then make the removal durable with one directory fsync.
    pub fn remove(&self, entries: &[AddrEntry]) -> Result<(), IpamError> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            remove(&self.addrs_dir(), &e.file)?;
        }
        podnet_cni::fault::crash_point("store-after-unlink");
        sync_dir(&self.addrs_dir())
    }

    /// Blocks this node holds, from file names.
    pub fn blocks(&self) -> Result<Vec<IpNet>, IpamError> {
        Ok(list_locked(&self.blocks_dir())?.iter().filter_map(|n| net_from_file_name(n)).collect())
    }

    pub fn block_leases(&self) -> Result<Vec<BlockLease>, IpamError> {
        list(&self.blocks_dir())?.iter().map(|n| read_record(&self.blocks_dir().join(n))).collect()
    }

    pub fn add_block(&self, lease: &BlockLease) -> Result<(), IpamError> {
        atomic_write(&self.blocks_dir(), &net_to_file_name(lease.block), &encode_record(lease))
    }

    pub fn remove_block(&self, block: IpNet) -> Result<(), IpamError> {
        remove(&self.blocks_dir(), &net_to_file_name(block))?;
        sync_dir(&self.blocks_dir())
    }

    /// Forget that `block` lends: only once the cluster store no longer leases it to this node.
    /// Until then a mark outlives the block's record, so a block adopted again keeps claiming.
    pub fn clear_lending(&self, block: IpNet) -> Result<(), IpamError> {
        if remove(&self.lending_dir(), &net_to_file_name(block))? {
            sync_dir(&self.lending_dir())?;
        }
        Ok(())
    }

    /// Blocks marked lending (see [`Lending`]).
    pub fn lending_blocks(&self) -> Vec<IpNet> {
        list(&self.lending_dir()).unwrap_or_default().iter().filter_map(|n| net_from_file_name(n)).collect()
    }

    /// Where the last allocation of `pool` ended: a hint for round-robin, so it is written without
    /// fsync and a garbled one is ignored.
    pub fn cursor(&self, pool: &str) -> Option<IpAddr> {
        std::fs::read_to_string(self.cursor_dir().join(pool)).ok()?.trim().parse().ok()
    }
    /// Overwritten in place at a fixed width, never truncated: a rewrite that allocated a new block
    /// would have ext4 (data=ordered) flush it with the next allocation's journal commit.
    pub fn set_cursor(&self, pool: &str, ip: IpAddr) {
        use std::io::{Seek, Write};
        let line = format!("{ip:<39}\n");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.cursor_dir().join(pool));
        if let Ok(mut f) = f {
            let _ = f.seek(std::io::SeekFrom::Start(0)).and_then(|_| f.write_all(line.as_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip() {
        for (ip, cid, ifname) in [("10.0.0.5", "abc", "eth0"), ("fd00::5", "a_b.c-d", "net_1.x")] {
            let h = Handle::new(cid, ifname);
            let name = AddrEntry::file_name(ip.parse().unwrap(), &h);
            let e = AddrEntry::parse(&name).unwrap();
            assert_eq!((e.ip.to_string(), e.handle), (ip.to_string(), h));
        }
        assert!(AddrEntry::parse("garbage").is_none());
        assert!(AddrEntry::parse("10.0.0.1_nocolon").is_none());
    }
}
