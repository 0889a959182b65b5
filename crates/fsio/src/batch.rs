//! Atomic writes: temp file, fsync, rename, then one fsync per directory touched; removals, and
//! files kept elsewhere as they are removed.

use crate::FsError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Temp files start with this; readers skip them and the lock holder removes stale ones.
pub const TEMP_PREFIX: &str = ".tmp-";

/// State files name pods and addresses: root only.
pub const STATE_FILE_MODE: u32 = 0o600;

/// Create `dir` (and parents) readable by root only: state names pods and addresses.
pub fn ensure_dir(dir: &Path) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FsError::io(format!("creating state directory {}", dir.display()), e))
}

/// fsync a directory so a rename or unlink inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::io(format!("syncing directory {}", dir.display()), e))
}

/// Write `bytes` to `dir/name` so that after a crash the file holds either the old or the new content.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FsError> {
    atomic_write_mode(dir, name, bytes, STATE_FILE_MODE)
}

/// [`atomic_write`] with another file mode (podnetctl install writes plugins 0755, configs 0644).
pub fn atomic_write_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), FsError> {
    let mut batch = Batch::default();
    batch.put_mode(dir, name, bytes.to_vec(), mode);
    batch.commit()
}

/// Changes made durable together: each new file goes write, fsync, rename (its temp file may be a
/// [`Blank`] made ahead); a removed file to keep elsewhere is linked there, that directory
/// fsynced; removals unlink; then each distinct directory is fsynced once (so a dual-stack ADD's
/// two address files share one directory fsync). [`Batch::publish`] and [`Published::sync`] split
/// the two steps for callers that overlap work. Puts are all or nothing: a failed write or rename
/// undoes the others.
#[derive(Default)]
pub struct Batch {
    files: Vec<(PathBuf, String, Vec<u8>, u32)>,
    removals: Vec<(PathBuf, String)>,
    /// Removed files kept under another name: (removal's index, directory, name).
    keeps: Vec<(usize, PathBuf, String)>,
    blanks: Vec<Blank>,
}

/// A file made before its content is known: an unnamed inode in `dir` (`O_TMPFILE`, so nothing is
/// left behind if the caller never uses it). Creating the inode is the costly part of a small write
/// on ext4 without a journal (each new inode first scans past those deleted in the last minutes:
/// 0.2 to 1.2 ms measured), so a caller can make one on another thread, outside any lock, while it
/// decides what to write. Once written it is linked under the put's temp name and goes on as any
/// temp file (fsync, rename, directory fsync): it has its link before its fsync, so the fsync makes
/// the link count durable too.
pub struct Blank {
    dir: PathBuf,
    file: File,
}

impl Blank {
    /// None where the filesystem has no unnamed files (or `dir` is missing): the put then makes
    /// its own temp file.
    pub fn create(dir: &Path) -> Option<Blank> {
        let file = OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(STATE_FILE_MODE).open(dir).ok()?;
        Some(Blank { dir: dir.to_path_buf(), file })
    }

    /// Name the written file `temp` (a stale file of that name, left by a dead writer, goes).
    fn link_as(self, temp: &Path) -> std::io::Result<File> {
        use nix::fcntl::{AtFlags, AT_FDCWD};
        let _ = fs::remove_file(temp);
        // Linking by the fd needs CAP_DAC_READ_SEARCH; by its /proc path, only write access.
        nix::unistd::linkat(&self.file, "", AT_FDCWD, temp, AtFlags::AT_EMPTY_PATH).or_else(|_| {
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.file));
            nix::unistd::linkat(AT_FDCWD, proc.as_str(), AT_FDCWD, temp, AtFlags::AT_SYMLINK_FOLLOW)
        })?;
        Ok(self.file)
    }
}

impl Batch {
    pub fn put(&mut self, dir: &Path, name: &str, bytes: Vec<u8>) {
        self.put_mode(dir, name, bytes, STATE_FILE_MODE);
    }
    pub fn put_mode(&mut self, dir: &Path, name: &str, bytes: Vec<u8>, mode: u32) {
        self.files.push((dir.to_path_buf(), name.to_string(), bytes, mode));
    }
    /// Unlink `dir/name` once every put is in place (a file already gone is fine).
    pub fn remove(&mut self, dir: &Path, name: &str) {
        self.removals.push((dir.to_path_buf(), name.to_string()));
    }
    /// Keep the file this batch removes as `dir/name` under the name `into/as_name` too: a hard
    /// link, made and its directory fsynced before the removal, so a crash or power cut leaves
    /// the file under at least one of its names (a file moved with no copy, no new inode, no
    /// fsync of its own; a copy where `into` is on another filesystem). False if the batch
    /// removes no such file.
    pub fn keep_removed(&mut self, dir: &Path, name: &str, into: &Path, as_name: &str) -> bool {
        let Some(i) = self.removals.iter().position(|(d, n)| d == dir && n == name) else { return false };
        self.keeps.push((i, into.to_path_buf(), as_name.to_string()));
        true
    }
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.removals.is_empty()
    }
    /// Let a put into `blank`'s directory use it as its temp file instead of creating one.
    pub fn provide(&mut self, blank: Blank) {
        self.blanks.push(blank);
    }

    pub fn commit(self) -> Result<(), FsError> {
        self.publish()?.sync()
    }

    /// Write, fsync and rename every file, link the removed files to keep (fsyncing their
    /// directories), then unlink the removals: each change is then visible to every process (a
    /// kill -9 from here on cannot undo it), but a power cut may still undo renames and unlinks
    /// until [`Published::sync`] has fsynced their directories.
    pub fn publish(mut self) -> Result<Published, FsError> {
        let temp = |dir: &Path, name: &str| dir.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()));
        let cleanup = |upto: usize, renamed: usize| {
            for (i, (dir, name, _, _)) in self.files.iter().enumerate().take(upto) {
                let _ = fs::remove_file(if i < renamed { dir.join(name) } else { temp(dir, name) });
            }
        };
        let mut handles = Vec::with_capacity(self.files.len());
        for (i, (dir, name, bytes, mode)) in self.files.iter().enumerate() {
            let blank = self.blanks.iter().position(|b| b.dir == *dir).map(|k| self.blanks.swap_remove(k));
            let written = match blank {
                // Made ahead: written unnamed, then named like a temp file.
                Some(b) => b.file.set_permissions(fs::Permissions::from_mode(*mode)).and_then(|_| {
                    (&b.file).write_all(bytes)?;
                    b.link_as(&temp(dir, name))
                }),
                None => OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(*mode)
                    .open(temp(dir, name))
                    .and_then(|mut f| {
                        // The exact mode, whatever the umask.
                        f.set_permissions(fs::Permissions::from_mode(*mode))?;
                        f.write_all(bytes).map(|_| f)
                    }),
            };
            match written {
                Ok(f) => handles.push(f),
                Err(e) => {
                    cleanup(i + 1, 0);
                    return Err(FsError::io(format!("writing {}", dir.join(name).display()), e));
                }
            }
        }
        for (i, f) in handles.iter().enumerate() {
            if let Err(e) = f.sync_all() {
                cleanup(self.files.len(), 0);
                let (dir, name, _, _) = &self.files[i];
                return Err(FsError::io(format!("syncing {}", dir.join(name).display()), e));
            }
        }
        if !self.files.is_empty() {
            podnet_fault::crash_point("store-after-write");
        }
        for (i, (dir, name, _, _)) in self.files.iter().enumerate() {
            if let Err(e) = fs::rename(temp(dir, name), dir.join(name)) {
                cleanup(self.files.len(), i);
                return Err(FsError::io(format!("renaming into {}", dir.join(name).display()), e));
            }
        }
        if !self.files.is_empty() {
            podnet_fault::crash_point("store-after-rename");
        }
        let mut kept: Vec<&PathBuf> = Vec::new();
        for (i, into, as_name) in &self.keeps {
            let (dir, name) = &self.removals[*i];
            let linked = match fs::hard_link(dir.join(name), into.join(as_name)) {
                Ok(()) => true,
                // Gone already: nothing to keep (removals are idempotent too).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                // Another filesystem (a mount between the two), or one without hard links: a copy.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM | libc::EOPNOTSUPP)) => {
                    match fs::read(dir.join(name)) {
                        Ok(bytes) => {
                            atomic_write(into, as_name, &bytes)?;
                            true
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                        Err(e) => return Err(FsError::io(format!("reading {}", dir.join(name).display()), e)),
                    }
                }
                Err(e) => {
                    let what = format!("linking {} as {}", dir.join(name).display(), into.join(as_name).display());
                    return Err(FsError::io(what, e));
                }
            };
            if linked && !kept.contains(&into) {
                kept.push(into);
            }
        }
        for d in &kept {
            sync_dir(d)?;
        }
        if !kept.is_empty() {
            podnet_fault::crash_point("store-after-link");
        }
        for (dir, name) in &self.removals {
            remove(dir, name)?;
        }
        if !self.removals.is_empty() {
            podnet_fault::crash_point("store-after-unlink");
        }
        // Directories of kept links were fsynced above, after every rename into them (again if
        // a removal was made in one since).
        let kept: Vec<PathBuf> = kept.into_iter().cloned().collect();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let files = self.files.into_iter().map(|(d, _, _, _)| d).filter(|d| !kept.contains(d));
        for d in files.chain(self.removals.into_iter().map(|(d, _)| d)) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        Ok(Published { dirs })
    }
}

/// Changes in place whose directories still need an fsync.
#[derive(Default)]
pub struct Published {
    dirs: Vec<PathBuf>,
}

impl Published {
    pub fn sync(self) -> Result<(), FsError> {
        for d in &self.dirs {
            sync_dir(d)?;
        }
        Ok(())
    }
}

/// Write a hint (a cursor, an empty-block mark, an outage note): no fsync, since losing one only
/// costs time, but root-only like every state file.
pub fn write_hint(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(STATE_FILE_MODE).open(path)?;
    // A file an older version left wider is narrowed.
    f.set_permissions(fs::Permissions::from_mode(STATE_FILE_MODE))?;
    f.write_all(bytes)
}

/// Keep a corrupt state file out of the way without losing it: move `dir/name` (or, with `copy`,
/// a durable copy of it, for a file about to be rewritten in place) into `quarantine`, named
/// `<unix secs>-<dir's name>-<name>`. Returns the quarantine directory.
pub fn quarantine(dir: &Path, name: &str, quarantine: &Path, copy: bool) -> Result<PathBuf, FsError> {
    ensure_dir(quarantine)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let from = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let to = format!("{stamp}-{from}-{name}");
    if copy {
        let bytes =
            fs::read(dir.join(name)).map_err(|e| FsError::io(format!("reading {}", dir.join(name).display()), e))?;
        atomic_write(quarantine, &to, &bytes)?;
    } else {
        fs::rename(dir.join(name), quarantine.join(&to)).map_err(|e| {
            FsError::io(format!("moving {} into {}", dir.join(name).display(), quarantine.display()), e)
        })?;
        sync_dir(quarantine)?;
        sync_dir(dir)?;
    }
    Ok(quarantine.to_path_buf())
}

/// Remove `dir/name`; a file already gone is fine (DEL is idempotent). The caller syncs the dir.
pub fn remove(dir: &Path, name: &str) -> Result<bool, FsError> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::io(format!("removing {}", dir.join(name).display()), e)),
    }
}

/// Names in `dir`, skipping temp files; a missing dir is empty.
pub fn list(dir: &Path) -> Result<Vec<String>, FsError> {
    list_inner(dir, false)
}

/// Like [`list`], and removes temp files left by writers that died before their rename. Only for
/// stores whose writers all hold the lock the caller holds.
pub fn list_locked(dir: &Path) -> Result<Vec<String>, FsError> {
    list_inner(dir, true)
}

fn list_inner(dir: &Path, remove_temps: bool) -> Result<Vec<String>, FsError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FsError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| FsError::io(format!("listing {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str() {
            if !name.starts_with(TEMP_PREFIX) {
                out.push(name.to_string());
            } else if remove_temps {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "f", b"one").unwrap();
        atomic_write(d.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        assert_eq!(list(d.path()).unwrap(), vec!["f".to_string()]);
        let mode = fs::metadata(d.path().join("f")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_batch_puts_and_removes_together() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "old", b"x").unwrap();
        let mut b = Batch::default();
        b.put(d.path(), "new", b"y".to_vec());
        b.remove(d.path(), "old");
        b.remove(d.path(), "never-there");
        let published = b.publish().unwrap();
        assert_eq!(list(d.path()).unwrap(), vec!["new".to_string()]);
        published.sync().unwrap();
    }

    #[test]
    fn a_blank_made_ahead_becomes_the_put_and_an_unused_one_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "taken", b"old").unwrap();
        let mut b = Batch::default();
        b.provide(Blank::create(d.path()).expect("ext4 and tmpfs have unnamed files"));
        b.provide(Blank::create(other.path()).unwrap());
        b.put(d.path(), "new", b"one".to_vec());
        b.put(d.path(), "taken", b"two".to_vec());
        drop(Blank::create(d.path()).unwrap());
        b.commit().unwrap();
        assert_eq!(fs::read(d.path().join("new")).unwrap(), b"one");
        assert_eq!(fs::read(d.path().join("taken")).unwrap(), b"two");
        let mut names: Vec<String> =
            fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, vec!["new".to_string(), "taken".to_string()], "no temp file left");
        assert_eq!(fs::read_dir(other.path()).unwrap().count(), 0, "the unused blank is gone");
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(d.path().join("new")).unwrap();
        assert_eq!((meta.permissions().mode() & 0o777, meta.nlink()), (0o600, 1));
    }

    #[test]
    fn a_removed_file_kept_elsewhere_moves_whole_and_a_missing_one_is_no_error() {
        let d = tempfile::tempdir().unwrap();
        let (from, into) = (d.path().join("from"), d.path().join("into"));
        ensure_dir(&from).unwrap();
        ensure_dir(&into).unwrap();
        atomic_write(&from, "record", b"x").unwrap();
        let mut b = Batch::default();
        b.remove(&from, "record");
        b.remove(&from, "never-there");
        assert!(b.keep_removed(&from, "record", &into, "kept"));
        assert!(b.keep_removed(&from, "never-there", &into, "nothing"));
        assert!(!b.keep_removed(&from, "not-removed", &into, "x"), "only a file the batch removes");
        b.commit().unwrap();
        assert!(list(&from).unwrap().is_empty());
        assert_eq!(list(&into).unwrap(), vec!["kept".to_string()]);
        assert_eq!(fs::read(into.join("kept")).unwrap(), b"x");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(into.join("kept")).unwrap().nlink(), 1);
    }

    #[test]
    fn a_removed_file_kept_on_another_filesystem_is_copied() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        // tmpfs, where there is one; skipped where it is the same filesystem.
        let Ok(other) = tempfile::tempdir_in("/dev/shm") else { return };
        if fs::metadata(d.path()).unwrap().dev() == fs::metadata(other.path()).unwrap().dev() {
            return;
        }
        atomic_write(d.path(), "record", b"x").unwrap();
        let mut b = Batch::default();
        b.remove(d.path(), "record");
        assert!(b.keep_removed(d.path(), "record", other.path(), "kept"));
        b.commit().unwrap();
        assert!(list(d.path()).unwrap().is_empty());
        assert_eq!(fs::read(other.path().join("kept")).unwrap(), b"x");
    }
}
