//! One operation at a time per attachment. The spec forbids a runtime to run two operations for
//! one container at once, but kubelet and containerd have had bugs that did: two ADDs of one
//! attachment, or an ADD and its DEL, racing. Each would undo or release what the other just
//! made, leaving a pod with an address the store calls free. So every verb that changes an
//! attachment holds its lock across its whole run, kernel work included: short, and never across
//! another attachment's. The lock is a byte of one file, `<dataDir>/<network>/locks/attachments`
//! (see `KeyLock`), so an ADD creates no lock file and a DEL removes none.

use podnet_cni::{CniError, ErrorCode};
use podnet_fsio::{ensure_dir, FsError, KeyLock, LOCK_WAIT};
use podnet_ipam::Handle;
use std::path::{Path, PathBuf};

pub struct AttachmentLock {
    _held: KeyLock,
    /// Where releases before this one kept a lock file per attachment.
    legacy: PathBuf,
}

fn dir(data_dir: &Path, network: &str) -> PathBuf {
    data_dir.join(network).join("locks")
}

impl AttachmentLock {
    /// Wait (at most the store lock's 20 s, then code 11) until no other operation runs on `h`.
    pub fn acquire(data_dir: &Path, network: &str, h: &Handle) -> Result<AttachmentLock, CniError> {
        let dir = dir(data_dir, network);
        let busy = |e: FsError| match e {
            FsError::Busy { waited, .. } => CniError::new(
                ErrorCode::TryAgainLater,
                format!("another operation on attachment {} is still running after {waited:?}; try again", h.key()),
            ),
            other => CniError::io(other.to_string()),
        };
        ensure_dir(&dir).map_err(busy)?;
        let held = KeyLock::acquire(&dir.join("attachments"), &h.key(), LOCK_WAIT).map_err(busy)?;
        Ok(AttachmentLock { _held: held, legacy: dir.join(h.key()) })
    }

    /// The attachment is gone (DEL): a lock file an earlier release made for it goes too.
    pub fn remove(self) {
        match std::fs::remove_file(&self.legacy) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing the old lock file {}: {e}", self.legacy.display()),
        }
    }
}
