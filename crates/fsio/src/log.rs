//! An append-only log of CRC-framed records (for the audit history). A frame is the payload's
//! length (u32, little endian), its CRC32 (u32, little endian), then the payload. A crash mid-
//! append leaves a torn last frame; a bit flip fails a checksum. Either is reported as
//! [`FsError::Corrupt`] with its offset, never skipped: the caller decides (the repair keeps the
//! damaged bytes in a quarantine directory before truncating).

use crate::{ensure_dir, sync_dir, FsError, STATE_FILE_MODE};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A record longer than this is garbage, not a record (events are a few hundred bytes).
pub const MAX_LOG_RECORD: usize = 1 << 20;
const HEADER: usize = 8;

/// When appended records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync after every append.
    EveryAppend,
    /// The caller calls [`RecordLog::sync`] (to share one fsync among several appends).
    Manual,
}

pub struct RecordLog {
    file: File,
    path: PathBuf,
    end: u64,
    policy: SyncPolicy,
}

impl RecordLog {
    /// Open (or create, 0600) the log for appending. The whole log is verified first: appending
    /// after a torn or corrupt frame would bury the damage, so that is an error (see
    /// [`RecordLog::repair`]).
    pub fn open(path: &Path, policy: SyncPolicy) -> Result<RecordLog, FsError> {
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(STATE_FILE_MODE)
            .open(path)
            .map_err(|e| FsError::io(format!("opening log {}", path.display()), e))?;
        if created {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let mut end = 0;
        for frame in LogReader::new(path, file.try_clone().map_err(|e| FsError::io("cloning a log handle", e))?, 0)? {
            let (offset, payload) = frame?;
            end = offset + (HEADER + payload.len()) as u64;
        }
        Ok(RecordLog { file, path: path.to_path_buf(), end, policy })
    }

    /// Append `records` with one write (and, under [`SyncPolicy::EveryAppend`], one fsync).
    /// Returns the offset of the first.
    pub fn append(&mut self, records: &[&[u8]]) -> Result<u64, FsError> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + HEADER).sum());
        for r in records {
            if r.is_empty() || r.len() > MAX_LOG_RECORD {
                return Err(FsError::io(
                    format!("appending to {}", self.path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "a log record is 1 byte to 1 MiB"),
                ));
            }
            buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        let at = self.end;
        self.file.write_all(&buf).map_err(|e| FsError::io(format!("appending to {}", self.path.display()), e))?;
        self.end += buf.len() as u64;
        if self.policy == SyncPolicy::EveryAppend {
            self.sync()?;
        }
        Ok(at)
    }

    pub fn sync(&self) -> Result<(), FsError> {
        self.file.sync_data().map_err(|e| FsError::io(format!("syncing {}", self.path.display()), e))
    }

    /// Bytes of whole, verified frames.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Cut a damaged tail off the log at `path`: everything from the first frame that does not
    /// verify is copied into `quarantine` (named `<unix secs>-<log name>-<offset>`) and then
    /// truncated away. Returns the offset cut at, or `None` when the log was whole.
    pub fn repair(path: &Path, quarantine: &Path) -> Result<Option<u64>, FsError> {
        let file = File::open(path).map_err(|e| FsError::io(format!("opening log {}", path.display()), e))?;
        let mut good = 0;
        for frame in LogReader::new(path, file, 0)? {
            match frame {
                Ok((offset, payload)) => good = offset + (HEADER + payload.len()) as u64,
                Err(FsError::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| FsError::io(format!("opening log {}", path.display()), e))?;
        let len = file.metadata().map_err(|e| FsError::io(format!("reading {}", path.display()), e))?.len();
        if len == good {
            return Ok(None);
        }
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(good))
            .and_then(|_| file.read_to_end(&mut tail))
            .map_err(|e| FsError::io(format!("reading the tail of {}", path.display()), e))?;
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
        ensure_dir(quarantine)?;
        crate::atomic_write(quarantine, &format!("{stamp}-{name}-{good}"), &tail)?;
        file.set_len(good)
            .and_then(|_| file.sync_all())
            .map_err(|e| FsError::io(format!("truncating {}", path.display()), e))?;
        Ok(Some(good))
    }

    /// Read the log at `path` from `offset` (a frame boundary, e.g. a previous [`RecordLog::end`]).
    pub fn read(path: &Path, offset: u64) -> Result<LogReader, FsError> {
        let file = File::open(path).map_err(|e| FsError::io(format!("opening log {}", path.display()), e))?;
        LogReader::new(path, file, offset)
    }
}

/// The frames of a log, in order: `(offset, payload)`. A damaged frame ends the iteration with
/// one [`FsError::Corrupt`] naming its offset.
pub struct LogReader {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    done: bool,
}

impl LogReader {
    fn new(path: &Path, mut file: File, offset: u64) -> Result<LogReader, FsError> {
        file.seek(SeekFrom::Start(offset)).map_err(|e| FsError::io(format!("seeking in {}", path.display()), e))?;
        Ok(LogReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            path: path.to_path_buf(),
            offset,
            done: false,
        })
    }

    fn corrupt(&mut self, why: &str) -> Option<Result<(u64, Vec<u8>), FsError>> {
        self.done = true;
        Some(Err(FsError::corrupt(&self.path, format!("{why} at offset {}", self.offset))))
    }
}

impl Iterator for LogReader {
    type Item = Result<(u64, Vec<u8>), FsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut header = [0u8; HEADER];
        let mut got = 0;
        while got < HEADER {
            match self.reader.read(&mut header[got..]) {
                Ok(0) if got == 0 => {
                    self.done = true;
                    return None;
                }
                Ok(0) => return self.corrupt("a torn record header"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(FsError::io(format!("reading {}", self.path.display()), e)));
                }
            }
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        // Length 0 is never written: a NUL-filled stretch must not read as empty records.
        if len == 0 || len > MAX_LOG_RECORD {
            return self.corrupt(&format!("a record length of {len}"));
        }
        let mut payload = vec![0u8; len];
        if let Err(e) = self.reader.read_exact(&mut payload) {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return self.corrupt("a torn record");
            }
            self.done = true;
            return Some(Err(FsError::io(format!("reading {}", self.path.display()), e)));
        }
        if crc32fast::hash(&payload) != crc {
            return self.corrupt("a checksum mismatch");
        }
        let at = self.offset;
        self.offset += (HEADER + len) as u64;
        Some(Ok((at, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(path: &Path) -> Vec<Result<Vec<u8>, String>> {
        RecordLog::read(path, 0).unwrap().map(|r| r.map(|(_, p)| p).map_err(|e| e.to_string())).collect()
    }

    #[test]
    fn appends_read_back_in_order_from_any_frame() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("audit/log");
        let mut log = RecordLog::open(&path, SyncPolicy::EveryAppend).unwrap();
        log.append(&[b"one", b"two"]).unwrap();
        let at = log.append(&[b"three"]).unwrap();
        assert_eq!(payloads(&path), vec![Ok(b"one".to_vec()), Ok(b"two".to_vec()), Ok(b"three".to_vec())]);
        let from: Vec<Vec<u8>> = RecordLog::read(&path, at).unwrap().map(|r| r.unwrap().1).collect();
        assert_eq!(from, vec![b"three".to_vec()]);
        // Reopened, it appends after what is there.
        drop(log);
        let mut log = RecordLog::open(&path, SyncPolicy::Manual).unwrap();
        assert_eq!(log.end(), at + 8 + 5);
        log.append(&[b"four"]).unwrap();
        log.sync().unwrap();
        assert_eq!(payloads(&path).len(), 4);
        assert!(log.append(&[b""]).is_err(), "an empty record is refused");
    }

    #[test]
    fn a_torn_or_damaged_tail_is_reported_and_repair_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log");
        let mut log = RecordLog::open(&path, SyncPolicy::EveryAppend).unwrap();
        log.append(&[b"kept"]).unwrap();
        let whole = log.end();
        drop(log);
        for tail in [&b"\x09\x00\x00\x00abcd12"[..], &[0u8; 40][..], &b"\x02\x00\x00\x00\xff\xff\xff\xffzz"[..]] {
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(tail).unwrap();
            drop(f);
            let read = payloads(&path);
            assert_eq!(read[0], Ok(b"kept".to_vec()));
            assert!(read[1].as_ref().is_err_and(|e| e.contains(&format!("offset {whole}"))), "{read:?}");
            assert!(matches!(RecordLog::open(&path, SyncPolicy::Manual), Err(FsError::Corrupt { .. })));
            let q = d.path().join("quarantine");
            assert_eq!(RecordLog::repair(&path, &q).unwrap(), Some(whole));
            assert_eq!(payloads(&path), vec![Ok(b"kept".to_vec())]);
            assert!(crate::list(&q).unwrap().iter().any(|n| n.ends_with(&format!("-log-{whole}"))));
            assert_eq!(RecordLog::repair(&path, &q).unwrap(), None);
        }
    }
}
