use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong with a state file.
#[derive(Debug)]
pub enum FsError {
    /// The OS refused: `what` says which step on which path.
    Io { what: String, err: std::io::Error },
    /// A file (or log record) fails its checksum or does not decode: never read as "no state".
    Corrupt { path: PathBuf, why: String },
    /// A store lock stayed held for the whole wait.
    Busy { path: PathBuf, waited: Duration },
}

impl FsError {
    pub fn io(what: impl Into<String>, err: std::io::Error) -> FsError {
        FsError::Io { what: what.into(), err }
    }
    pub fn corrupt(path: impl Into<PathBuf>, why: impl Into<String>) -> FsError {
        FsError::Corrupt { path: path.into(), why: why.into() }
    }
    /// The I/O error kind, if this is one (callers tell "missing" from real failures).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FsError::Io { err, .. } => Some(err.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Io { what, err } => write!(f, "{what}: {err}"),
            FsError::Corrupt { path, why } => write!(f, "state file {} is corrupt ({why})", path.display()),
            FsError::Busy { path, waited } => write!(
                f,
                "store lock {} is still held after {waited:?}; another podnet call is stuck or the node is overloaded, try again",
                path.display()
            ),
        }
    }
}

impl std::error::Error for FsError {}
