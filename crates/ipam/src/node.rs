//! The node store: this node's addresses and its cached block leases, under
//! `<dataDir>/<network>/ipam/`. One file per address, named `<ip>_<containerID>:<ifname>`, so the
//! hot path (pick an address, release a handle) needs directory listings only, never file reads.
//!
//! Every change goes through a [`NodeGuard`], which only [`NodeStore::lock`] hands out: the
//! mutators cannot be reached without the lock held. Address files are added and removed only by
//! [`NodeGuard::stage_allocations`] and [`NodeGuard::release`] (and rebuild's
//! [`NodeGuard::quarantine_freed`]), each passing the change to the node's [`Journal`].

use crate::addr::{net_from_file_name, net_to_file_name};
use crate::error::IpamError;
use crate::journal::{Change, Journal, NoJournal, ReleaseCause};
use crate::model::{Allocation, BlockLease, Handle};
use ipnet::IpNet;
use podnet_fsio::{
    atomic_write, encode_record, ensure_dir, list, list_locked, read_record, remove, sync_dir, Batch, Published,
    StoreLock, LOCK_WAIT,
};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[derive(Clone)]
pub struct NodeStore {
    dir: PathBuf,
    journal: Arc<dyn Journal>,
}

impl NodeStore {
    pub fn new(data_dir: &Path, network: &str) -> NodeStore {
        Self::with_journal(data_dir, network, Arc::new(NoJournal))
    }
    pub fn with_journal(data_dir: &Path, network: &str, journal: Arc<dyn Journal>) -> NodeStore {
        NodeStore { dir: data_dir.join(network).join("ipam"), journal }
    }
    /// `<dataDir>/<network>/ipam`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Whether this network was ever used on this node (read paths then create nothing).
    pub fn exists(&self) -> bool {
        self.dir.join("lock").exists()
    }
    pub(crate) fn addrs_dir(&self) -> PathBuf {
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

    /// Take the node store lock: held only to pick addresses and write them, never across
    /// kernel work.
    pub fn lock(&self) -> Result<NodeGuard<'_>, IpamError> {
        let path = self.dir.join("lock");
        let lock = match StoreLock::acquire(&path, LOCK_WAIT) {
            // First use of this network on this node: make the store's directory, then lock.
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
                ensure_dir(&self.dir)?;
                StoreLock::acquire(&path, LOCK_WAIT)?
            }
            other => other?,
        };
        // Its subdirectories are made under the lock: a process that takes the lock the moment
        // it can must never find them missing (parallel first ADDs on a new node did: code 5).
        // The last one made stands for all, so a used store costs one stat here.
        if !self.cursor_dir().exists() {
            for d in [self.addrs_dir(), self.blocks_dir(), self.cursor_dir()] {
                ensure_dir(&d)?;
            }
        }
        Ok(NodeGuard { store: self, _lock: lock })
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

    /// Blocks marked lending (see [`Lending`]).
    pub fn lending_blocks(&self) -> Vec<IpNet> {
        list(&self.lending_dir()).unwrap_or_default().iter().filter_map(|n| net_from_file_name(n)).collect()
    }

    /// Where the etcd store notes an outage for the node's other processes (none before the
    /// network's first use on this node).
    pub fn outage_note(&self) -> Option<PathBuf> {
        self.dir.exists().then(|| self.dir.join("cluster-unavailable"))
    }

    pub fn is_claimant(&self) -> bool {
        self.dir.join("claimant").exists()
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

    /// The block lease records (whole files: atomic renames make them safe to read unlocked).
    pub fn block_leases(&self) -> Result<Vec<BlockLease>, IpamError> {
        list(&self.blocks_dir())?.iter().map(|n| Ok(read_record(&self.blocks_dir().join(n))?)).collect()
    }

    /// An address record, checked against its file name. Records are whole files (atomic
    /// renames), so reading needs no lock; listing them does ([`NodeGuard::entries`]).
    pub fn read(&self, entry: &AddrEntry) -> Result<Allocation, IpamError> {
        let path = self.addrs_dir().join(&entry.file);
        let a: Allocation = read_record(&path)?;
        if a.address.addr() != entry.ip || a.handle != entry.handle {
            return Err(IpamError::Corrupt { path, why: "the record disagrees with its file name".into() });
        }
        Ok(a)
    }

    /// Where the last allocation of `pool` ended: a hint for round-robin, so it is written without
    /// fsync and a garbled one is ignored.
    pub fn cursor(&self, pool: &str) -> Option<IpAddr> {
        std::fs::read_to_string(self.cursor_dir().join(pool)).ok()?.trim().parse().ok()
    }
}

/// The node store, locked. Reads that need a stable view and every change live here.
pub struct NodeGuard<'a> {
    store: &'a NodeStore,
    _lock: StoreLock,
}

impl std::ops::Deref for NodeGuard<'_> {
    type Target = NodeStore;
    fn deref(&self) -> &NodeStore {
        self.store
    }
}

impl NodeGuard<'_> {
    /// Every address file. A name that does not decode is reported, not skipped: it may hold an
    /// address.
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

    /// Every name in the address directory, decodable or not (rebuild looks at them all).
    pub fn entry_files(&self) -> Result<Vec<String>, IpamError> {
        Ok(list_locked(&self.addrs_dir())?)
    }

    /// Read an address file whatever its name (rebuild, for names that do not decode).
    pub fn read_file(&self, file: &str) -> Result<Allocation, IpamError> {
        Ok(read_record(&self.addrs_dir().join(file))?)
    }

    /// Add the allocations' files to `batch`, telling the journal; they exist once it commits.
    pub fn stage_allocations(&self, allocations: &[Allocation], batch: &mut Batch) -> Result<(), IpamError> {
        for a in allocations {
            batch.put(&self.addrs_dir(), &AddrEntry::file_name(a.address.addr(), &a.handle), encode_record(a));
            self.journal.record(&Change::Allocated(a), batch)?;
        }
        Ok(())
    }

    /// Release addresses: remove their files, telling the journal (what it keeps of them is
    /// durable before they go), with one directory fsync for the removals.
    pub fn release(&self, entries: &[AddrEntry], cause: ReleaseCause) -> Result<(), IpamError> {
        Ok(self.release_unsynced(entries, cause)?.sync()?)
    }

    /// [`NodeGuard::release`] up to the removals' directory fsync, which the caller makes (after
    /// the lock, to keep it short: a pod that takes a freed address meanwhile fsyncs the same
    /// directory, the removal with it). What the journal kept is durable already.
    pub fn release_unsynced(&self, entries: &[AddrEntry], cause: ReleaseCause) -> Result<Published, IpamError> {
        if entries.is_empty() {
            return Ok(Published::default());
        }
        let mut batch = Batch::default();
        let dir = self.addrs_dir();
        for e in entries {
            let record = if self.journal.wants_records() { self.read(e).ok() } else { None };
            batch.remove(&dir, &e.file);
            let file = Some((dir.as_path(), e.file.as_str()));
            let change = Change::Released { ip: e.ip, handle: &e.handle, record: record.as_ref(), file, cause };
            self.journal.record(&change, &mut batch)?;
        }
        Ok(batch.publish()?)
    }

    /// Rebuild's release of an address whose record is corrupt: the file goes into `quarantine`
    /// (kept, never deleted) instead of being removed.
    pub fn quarantine_freed(&self, entry: &AddrEntry, quarantine: &Path) -> Result<(), IpamError> {
        podnet_fsio::quarantine(&self.addrs_dir(), &entry.file, quarantine, false)?;
        let mut batch = Batch::default();
        let change = Change::Released {
            ip: entry.ip,
            handle: &entry.handle,
            record: None,
            file: None,
            cause: ReleaseCause::Rebuild,
        };
        self.journal.record(&change, &mut batch)?;
        Ok(batch.commit()?)
    }

    /// Move an address file that is no address (its name does not decode) into `quarantine`.
    pub fn quarantine_file(&self, file: &str, quarantine: &Path, copy: bool) -> Result<(), IpamError> {
        podnet_fsio::quarantine(&self.addrs_dir(), file, quarantine, copy)?;
        Ok(())
    }

    /// Rewrite an address record in place (atomically): its claim id, or rebuild restoring it.
    /// The address stays held, so the journal hears nothing.
    pub fn rewrite(&self, file: &str, a: &Allocation) -> Result<(), IpamError> {
        Ok(atomic_write(&self.addrs_dir(), file, &encode_record(a))?)
    }

    /// Blocks this node holds, from file names.
    pub fn blocks(&self) -> Result<Vec<IpNet>, IpamError> {
        Ok(list_locked(&self.blocks_dir())?.iter().filter_map(|n| net_from_file_name(n)).collect())
    }

    /// Names in the block directory, decodable or not (rebuild).
    pub fn block_files(&self) -> Result<Vec<String>, IpamError> {
        Ok(list_locked(&self.blocks_dir())?)
    }

    pub fn read_block_file(&self, file: &str) -> Result<BlockLease, IpamError> {
        Ok(read_record(&self.blocks_dir().join(file))?)
    }

    pub fn quarantine_block_file(&self, file: &str, quarantine: &Path, copy: bool) -> Result<(), IpamError> {
        podnet_fsio::quarantine(&self.blocks_dir(), file, quarantine, copy)?;
        Ok(())
    }

    pub fn add_block(&self, lease: &BlockLease) -> Result<(), IpamError> {
        Ok(atomic_write(&self.blocks_dir(), &net_to_file_name(lease.block), &encode_record(lease))?)
    }

    pub fn remove_block(&self, block: IpNet) -> Result<(), IpamError> {
        remove(&self.blocks_dir(), &net_to_file_name(block))?;
        Ok(sync_dir(&self.blocks_dir())?)
    }

    /// Note, durably and once, that this node makes claims in the cluster store: GC, DEL and
    /// `ipam check` then look for them even after borrowing is switched off.
    pub fn mark_claimant(&self) -> Result<(), IpamError> {
        if !self.is_claimant() {
            atomic_write(&self.dir, "claimant", b"this node claims addresses in the cluster store\n")?;
        }
        Ok(())
    }

    /// Durable: from here on the node claims every address of the block, whatever the config says.
    pub fn set_lending(&self, block: IpNet, state: Lending) -> Result<(), IpamError> {
        ensure_dir(&self.lending_dir())?;
        let text = match state {
            Lending::Claiming => "claiming",
            Lending::Announced => "lending",
        };
        Ok(atomic_write(&self.lending_dir(), &net_to_file_name(block), text.as_bytes())?)
    }

    /// Forget that `block` lends: only once the cluster store no longer leases it to this node.
    /// Until then a mark outlives the block's record, so a block adopted again keeps claiming.
    pub fn clear_lending(&self, block: IpNet) -> Result<(), IpamError> {
        if remove(&self.lending_dir(), &net_to_file_name(block))? {
            sync_dir(&self.lending_dir())?;
        }
        Ok(())
    }

    /// Note that `block` has been empty since `unix_secs`, unless already noted. A hint, written
    /// without fsync: if lost, the block is only handed back later.
    pub fn mark_empty(&self, block: IpNet, unix_secs: u64) {
        let path = self.empty_dir().join(net_to_file_name(block));
        // A garbled mark is rewritten rather than left to hide the block forever.
        let readable = std::fs::read_to_string(&path).ok().is_some_and(|t| t.trim().parse::<u64>().is_ok());
        if !readable {
            let _ = ensure_dir(&self.empty_dir());
            let _ = podnet_fsio::write_hint(&path, unix_secs.to_string().as_bytes());
        }
    }

    /// The block has addresses again (or was handed back).
    pub fn clear_empty(&self, block: IpNet) {
        let _ = std::fs::remove_file(self.empty_dir().join(net_to_file_name(block)));
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
