//! One operation at a time per attachment. The spec forbids a runtime to run two operations for
//! one container at once, but kubelet and containerd have had bugs that did: two ADDs of one
//! attachment, or an ADD and its DEL, racing. Each would undo or release what the other just
//! made, leaving a pod with an address the store calls free. So every verb that changes an
//! attachment holds its lock, a file per (container ID, ifname) under
//! `<dataDir>/<network>/locks/`, across its whole run, kernel work included: short, and never
//! across another attachment's. DEL removes the file with the attachment.

use podnet_cni::{CniError, ErrorCode};
use podnet_fsio::{ensure_dir, FsError, StoreLock, LOCK_WAIT};
use podnet_ipam::Handle;
use std::path::{Path, PathBuf};

pub struct AttachmentLock(StoreLock);

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
        StoreLock::acquire(&dir.join(h.key()), LOCK_WAIT).map(AttachmentLock).map_err(busy)
    }

    /// The attachment is gone (DEL): its lock file goes too.
    pub fn remove(self) {
        if let Err(e) = self.0.remove() {
            tracing::warn!("{e}");
        }
    }
}
