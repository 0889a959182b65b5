use crate::FsError;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// An exclusive lock on a store, released when dropped or when the process dies (flock), so a
/// crashed holder never leaves a stale lock behind.
pub struct StoreLock {
    _held: Flock<File>,
    path: std::path::PathBuf,
}

/// How long a caller waits for a store lock before giving up with "try again later".
pub const LOCK_WAIT: Duration = Duration::from_secs(20);

impl StoreLock {
    pub fn acquire(path: &Path, wait: Duration) -> Result<StoreLock, FsError> {
        let mut file = Some(open_lock(path)?);
        poll(path, wait, || loop {
            match Flock::lock(file.take().expect("a file to lock"), FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    // A removable lock's holder may have unlinked it after we opened it: then we
                    // hold a lock nobody else sees. Only the file the path names counts.
                    if still_named(&lock, path) {
                        return Ok(Some(StoreLock { _held: lock, path: path.to_path_buf() }));
                    }
                    drop(lock);
                    file = Some(open_lock(path)?);
                }
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                    file = Some(f);
                    return Ok(None);
                }
                Err((_, e)) => return Err(FsError::io(format!("locking {}", path.display()), e.into())),
            }
        })
    }

    /// Remove the lock file, still holding the lock (a lock that goes with what it guards, such
    /// as one attachment's), and release it: this ends the critical section. Waiters that
    /// opened the old file retry on the path, so none holds a lock on a removed file.
    pub fn remove(self) -> Result<(), FsError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(FsError::io(format!("removing lock {}", self.path.display()), e)),
        }
    }
}

/// An exclusive lock on one key of a shared lock file: an open-file-description byte-range lock
/// (`F_OFD_SETLK`) on the byte at an offset derived from the key, released when dropped or when
/// the process dies. Taking it creates no file: a lock file per key costs a new inode per lock
/// and an unlink to get rid of it, and on ext4 without a journal every new inode first scans past
/// the inodes deleted in the last minutes. Two keys that land on one byte only wait for each
/// other. Each lock opens the file anew, so threads of one process exclude each other too.
pub struct KeyLock {
    _file: File,
}

impl KeyLock {
    pub fn acquire(path: &Path, key: &str, wait: Duration) -> Result<KeyLock, FsError> {
        let file = open_lock(path)?;
        // crc32 is fixed forever (unlike std's hasher), so every podnet build agrees on the byte.
        let byte = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: i64::from(crc32fast::hash(key.as_bytes())),
            l_len: 1,
            l_pid: 0,
        };
        poll(path, wait, || match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_OFD_SETLK(&byte)) {
            Ok(_) => Ok(Some(())),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) | Err(Errno::EINTR) => Ok(None),
            Err(e) => Err(FsError::io(format!("locking {key} in {}", path.display()), e.into())),
        })?;
        Ok(KeyLock { _file: file })
    }
}

/// Open (making it if need be) a lock file; its content never matters.
fn open_lock(path: &Path) -> Result<File, FsError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| FsError::io(format!("opening lock {}", path.display()), e))
}

/// Try `attempt` until it takes the lock (`Some`) or `wait` has passed, pausing with backoff in
/// between. Polled rather than a blocking lock so the wait is bounded (lesson of
/// azure-container-networking #2817: an unbounded store lock fails whole bursts of pods).
fn poll<T>(path: &Path, wait: Duration, mut attempt: impl FnMut() -> Result<Option<T>, FsError>) -> Result<T, FsError> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_micros(50);
    loop {
        if let Some(held) = attempt()? {
            return Ok(held);
        }
        if Instant::now() >= deadline {
            return Err(FsError::Busy { path: path.to_path_buf(), waited: wait });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Whether `path` still names the file `lock` holds.
fn still_named(lock: &Flock<File>, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (lock.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(named)) => (held.dev(), held.ino()) == (named.dev(), named.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_makes_others_wait_then_give_up() {
        let d = tempfile::tempdir().unwrap();
        let l = StoreLock::acquire(&d.path().join("lock"), LOCK_WAIT).unwrap();
        let e = StoreLock::acquire(&d.path().join("lock"), Duration::from_millis(20));
        assert!(matches!(e, Err(FsError::Busy { .. })));
        drop(l);
        StoreLock::acquire(&d.path().join("lock"), LOCK_WAIT).unwrap();
    }

    #[test]
    fn a_key_lock_excludes_its_key_only_within_and_across_threads() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("keys");
        let a = KeyLock::acquire(&path, "c1:eth0", LOCK_WAIT).unwrap();
        // Another key is free; the same key waits, then gives up.
        let b = KeyLock::acquire(&path, "c2:eth0", Duration::from_millis(20)).unwrap();
        let e = KeyLock::acquire(&path, "c1:eth0", Duration::from_millis(20));
        assert!(matches!(e, Err(FsError::Busy { .. })));
        drop(a);
        drop(b);
        let holders = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _l = KeyLock::acquire(&path, "c1:eth0", LOCK_WAIT).unwrap();
                        assert_eq!(holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0, "two holders");
                        holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
    }

    #[test]
    fn a_lock_removed_by_its_holder_is_never_held_twice() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("attachment");
        let holders = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let l = StoreLock::acquire(&path, LOCK_WAIT).unwrap();
                        assert_eq!(holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0, "two holders");
                        holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        l.remove().unwrap();
                    }
                });
            }
        });
        assert!(!path.exists());
    }
}
