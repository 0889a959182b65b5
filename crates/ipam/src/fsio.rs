//! Crash-safe files: atomic writes (temp, fsync, rename, fsync dir), records with a checksum, and a
//! store lock with a bounded wait. Every state write in podnet goes through here.

use crate::error::IpamError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Temp files start with this; readers skip them and the lock holder removes stale ones.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Create `dir` (and parents) readable by root only: state names pods and addresses.
pub fn ensure_dir(dir: &Path) -> Result<(), IpamError> {
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(IpamError::io(format!("creating state directory {}", dir.display()), e)),
    }
}

/// fsync a directory so a rename or unlink inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), IpamError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IpamError::io(format!("syncing directory {}", dir.display()), e))
}

/// Write `bytes` to `dir/name` so that after a crash the file holds either the old or the new content.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), IpamError> {
    atomic_write_mode(dir, name, bytes, STATE_FILE_MODE)
}

/// [`atomic_write`] with another file mode (podnetctl install writes plugins 0755, configs 0644).
pub fn atomic_write_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), IpamError> {
    let mut batch = Batch::default();
    batch.put_mode(dir, name, bytes.to_vec(), mode);
    batch.commit()
}

/// State files name pods and addresses: root only.
const STATE_FILE_MODE: u32 = 0o600;

/// Files made durable together, all or nothing: each goes write, fsync, rename; then each distinct
/// directory is fsynced once (so a dual-stack ADD's two address files share one directory fsync).
/// [`Batch::publish`] and [`Published::sync`] split the two steps for callers that overlap work.
#[derive(Default)]
pub struct Batch {
    files: Vec<(PathBuf, String, Vec<u8>, u32)>,
}

impl Batch {
    pub fn put(&mut self, dir: &Path, name: &str, bytes: Vec<u8>) {
        self.put_mode(dir, name, bytes, STATE_FILE_MODE);
    }
    pub fn put_mode(&mut self, dir: &Path, name: &str, bytes: Vec<u8>, mode: u32) {
        self.files.push((dir.to_path_buf(), name.to_string(), bytes, mode));
    }

    pub fn commit(self) -> Result<(), IpamError> {
        self.publish()?.sync()
    }

    /// Write, fsync and rename every file: each is then complete and visible to every process
    /// (a kill -9 from here on cannot lose it), but a power cut may still undo the renames until
    /// [`Published::sync`] has fsynced their directories.
    pub fn publish(self) -> Result<Published, IpamError> {
        let temp = |dir: &Path, name: &str| dir.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()));
        let cleanup = |upto: usize, renamed: usize| {
            for (i, (dir, name, _, _)) in self.files.iter().enumerate().take(upto) {
                let _ = fs::remove_file(if i < renamed { dir.join(name) } else { temp(dir, name) });
            }
        };
        let mut handles = Vec::with_capacity(self.files.len());
        for (i, (dir, name, bytes, mode)) in self.files.iter().enumerate() {
            let opened = OpenOptions::new().write(true).create(true).truncate(true).mode(*mode).open(temp(dir, name));
            // The exact mode, whatever the umask.
            let written = opened.and_then(|mut f| {
                f.set_permissions(fs::Permissions::from_mode(*mode))?;
                f.write_all(bytes).map(|_| f)
            });
            match written {
                Ok(f) => handles.push(f),
                Err(e) => {
                    cleanup(i + 1, 0);
                    return Err(IpamError::io(format!("writing {}", dir.join(name).display()), e));
                }
            }
        }
        for (i, f) in handles.iter().enumerate() {
            if let Err(e) = f.sync_all() {
                cleanup(self.files.len(), 0);
                let (dir, name, _, _) = &self.files[i];
                return Err(IpamError::io(format!("syncing {}", dir.join(name).display()), e));
            }
        }
        podnet_cni::fault::crash_point("store-after-write");
        for (i, (dir, name, _, _)) in self.files.iter().enumerate() {
            if let Err(e) = fs::rename(temp(dir, name), dir.join(name)) {
                cleanup(self.files.len(), i);
                return Err(IpamError::io(format!("renaming into {}", dir.join(name).display()), e));
            }
        }
        podnet_cni::fault::crash_point("store-after-rename");
        let mut dirs: Vec<PathBuf> = self.files.into_iter().map(|(d, _, _, _)| d).collect();
        dirs.dedup();
        Ok(Published { dirs })
    }
}

/// Files renamed into place whose directories still need an fsync.
pub struct Published {
    dirs: Vec<PathBuf>,
}

impl Published {
    pub fn sync(self) -> Result<(), IpamError> {
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
pub fn quarantine(dir: &Path, name: &str, quarantine: &Path, copy: bool) -> Result<PathBuf, IpamError> {
    ensure_dir(quarantine)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let from = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let to = format!("{stamp}-{from}-{name}");
    if copy {
        let bytes =
            fs::read(dir.join(name)).map_err(|e| IpamError::io(format!("reading {}", dir.join(name).display()), e))?;
        atomic_write(quarantine, &to, &bytes)?;
    } else {
        fs::rename(dir.join(name), quarantine.join(&to)).map_err(|e| {
            IpamError::io(format!("moving {} into {}", dir.join(name).display(), quarantine.display()), e)
        })?;
        sync_dir(quarantine)?;
        sync_dir(dir)?;
    }
    Ok(quarantine.to_path_buf())
}

/// Remove `dir/name`; a file already gone is fine (DEL is idempotent). The caller syncs the dir.
pub fn remove(dir: &Path, name: &str) -> Result<bool, IpamError> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(IpamError::io(format!("removing {}", dir.join(name).display()), e)),
    }
}

/// Names in `dir`, skipping temp files; a missing dir is empty.
pub fn list(dir: &Path) -> Result<Vec<String>, IpamError> {
    list_inner(dir, false)
}

/// Like [`list`], and removes temp files left by writers that died before their rename. Only for
/// stores whose writers all hold the lock the caller holds.
pub fn list_locked(dir: &Path) -> Result<Vec<String>, IpamError> {
    list_inner(dir, true)
}

fn list_inner(dir: &Path, remove_temps: bool) -> Result<Vec<String>, IpamError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IpamError::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| IpamError::io(format!("listing {}", dir.display()), e))?;
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

/// A record: one line of JSON, then a line `crc32 XXXXXXXX` over it. A torn, truncated or
/// NUL-filled file fails the check instead of reading as "no state".
pub fn encode_record<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("records serialize");
    let mut out = json.clone();
    out.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(&json)).as_bytes());
    out
}

pub fn decode_record<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, IpamError> {
    let corrupt = |why: &str| IpamError::Corrupt { path: path.to_path_buf(), why: why.to_string() };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let (json, trailer) =
        text.trim_end_matches('\n').rsplit_once("\ncrc32 ").ok_or_else(|| corrupt("no checksum line"))?;
    let want = u32::from_str_radix(trailer, 16).map_err(|_| corrupt("bad checksum line"))?;
    if crc32fast::hash(json.as_bytes()) != want {
        return Err(corrupt("checksum mismatch"));
    }
    serde_json::from_str(json).map_err(|e| corrupt(&format!("undecodable record: {e}")))
}

pub fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, IpamError> {
    let bytes = fs::read(path).map_err(|e| IpamError::io(format!("reading {}", path.display()), e))?;
    decode_record(path, &bytes)
}

/// An exclusive lock on a store, released when dropped or when the process dies (flock), so a
/// crashed holder never leaves a stale lock behind.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// How long a caller waits for a store lock before giving up with "try again later".
pub const LOCK_WAIT: Duration = Duration::from_secs(20);

impl StoreLock {
    pub fn acquire(path: &Path, wait: Duration) -> Result<StoreLock, IpamError> {
        let open = || OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path);
        let mut file = open().map_err(|e| IpamError::io(format!("opening lock {}", path.display()), e))?;
        let deadline = Instant::now() + wait;
        // Polled with backoff rather than a blocking flock so the wait is bounded (lesson of
        // azure-container-networking #2817: an unbounded store lock fails whole bursts of pods).
        let mut pause = Duration::from_micros(50);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StoreLock { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(IpamError::io(format!("locking {}", path.display()), e.into())),
            }
            if Instant::now() >= deadline {
                return Err(IpamError::Busy(format!(
                    "store lock {} is still held after {:?}; another podnet call is stuck or the node is overloaded, try again",
                    path.display(),
                    wait
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct R {
        a: u32,
    }

    #[test]
    fn records_detect_corruption() {
        let p = Path::new("/x");
        let bytes = encode_record(&R { a: 7 });
        assert_eq!(decode_record::<R>(p, &bytes).unwrap(), R { a: 7 });
        for bad in [&b""[..], &[0u8; 64][..], &bytes[..bytes.len() / 2], b"{\"a\":8}\ncrc32 00000000\n"] {
            assert!(matches!(decode_record::<R>(p, bad), Err(IpamError::Corrupt { .. })), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_and_lock() {
        let d = tempfile::tempdir().unwrap();
        atomic_write(d.path(), "f", b"one").unwrap();
        atomic_write(d.path(), "f", b"two").unwrap();
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"two");
        assert_eq!(list(d.path()).unwrap(), vec!["f".to_string()]);
        let l = StoreLock::acquire(&d.path().join("lock"), LOCK_WAIT).unwrap();
        let e = StoreLock::acquire(&d.path().join("lock"), Duration::from_millis(20));
        assert!(matches!(e, Err(IpamError::Busy(_))));
        drop(l);
        StoreLock::acquire(&d.path().join("lock"), LOCK_WAIT).unwrap();
    }
}
