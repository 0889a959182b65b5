//! Crash-safe files, shared by every podnet state writer: atomic batches (temp file, made ahead
//! if wanted; fsync, rename, one fsync per directory), CRC-checked records, a quarantine for
//! corrupt files, a store lock with a bounded wait, a lock per key in one file, and an
//! append-only log of CRC-framed records.
//!
//! Nothing here knows about IPAM or CNI: errors are [`FsError`], which callers map to their own.

mod batch;
mod error;
mod lock;
mod log;
mod record;

pub use batch::{
    atomic_write, atomic_write_mode, ensure_dir, list, list_locked, quarantine, remove, sync_dir, write_hint, Batch,
    Blank, Published, STATE_FILE_MODE, TEMP_PREFIX,
};
pub use error::FsError;
pub use lock::{KeyLock, StoreLock, LOCK_WAIT};
pub use log::{LogReader, RecordLog, SyncPolicy, MAX_LOG_RECORD};
pub use record::{decode_record, encode_record, read_record};
