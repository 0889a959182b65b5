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
    _lock: Flock<File>,
}

/// How long a caller waits for a store lock before giving up with "try again later".
pub const LOCK_WAIT: Duration = Duration::from_secs(20);

impl StoreLock {
    pub fn acquire(path: &Path, wait: Duration) -> Result<StoreLock, FsError> {
        let open = || OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path);
        let mut file = open().map_err(|e| FsError::io(format!("opening lock {}", path.display()), e))?;
        let deadline = Instant::now() + wait;
        // Polled with backoff rather than a blocking flock so the wait is bounded (lesson of
        // azure-container-networking #2817: an unbounded store lock fails whole bursts of pods).
        let mut pause = Duration::from_micros(50);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StoreLock { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(FsError::io(format!("locking {}", path.display()), e.into())),
            }
            if Instant::now() >= deadline {
                return Err(FsError::Busy { path: path.to_path_buf(), waited: wait });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
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
}
