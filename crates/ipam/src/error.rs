//! IPAM errors, each one kind of failure mapped to one CNI code.

use podnet_cni::{CniError, ErrorCode};
use podnet_fsio::FsError;
use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum IpamError {
    /// The config is wrong; the message names the field.
    Config(String),
    /// A config value names something this build does not offer.
    Unsupported(String),
    /// No free address; the message names pools, node and remedy.
    Exhausted(String),
    /// The pod's namespace may use no pool.
    NoEligiblePool(String),
    /// An address this node holds is claimed by someone else in the cluster store.
    ClaimConflict(String),
    /// A state file failed its checksum or does not decode.
    Corrupt {
        path: PathBuf,
        why: String,
    },
    /// The store lock could not be taken in time.
    Busy(String),
    /// The cluster store did not answer within its time budget.
    Unavailable(String),
    /// A repair would act on the wrong node: none of its recorded attachments is live here.
    NoLiveEndpoint(String),
    Io {
        what: String,
        err: std::io::Error,
    },
}

impl IpamError {
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        IpamError::Io { what: what.into(), err }
    }
    /// A missing file or directory (callers treat "already gone" as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self, IpamError::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound)
    }
}

impl From<FsError> for IpamError {
    fn from(e: FsError) -> IpamError {
        match e {
            FsError::Io { what, err } => IpamError::Io { what, err },
            FsError::Corrupt { path, why } => IpamError::Corrupt { path, why },
            busy @ FsError::Busy { .. } => IpamError::Busy(busy.to_string()),
        }
    }
}

impl fmt::Display for IpamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpamError::Config(m)
            | IpamError::Unsupported(m)
            | IpamError::Exhausted(m)
            | IpamError::NoEligiblePool(m)
            | IpamError::ClaimConflict(m)
            | IpamError::Busy(m)
            | IpamError::Unavailable(m)
            | IpamError::NoLiveEndpoint(m) => f.write_str(m),
            IpamError::Corrupt { path, why } => write!(
                f,
                "state file {} is corrupt ({why}); podnet will not guess what it held: run `podnetctl ipam rebuild`, which rebuilds the node's records from its live endpoints and keeps the corrupt file in quarantine",
                path.display()
            ),
            IpamError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for IpamError {}

impl From<IpamError> for CniError {
    fn from(e: IpamError) -> CniError {
        let code = match &e {
            IpamError::Config(_) => ErrorCode::InvalidConfig,
            IpamError::Unsupported(_) => ErrorCode::UnsupportedField,
            IpamError::Exhausted(_) => ErrorCode::PoolExhausted,
            IpamError::NoEligiblePool(_) => ErrorCode::NoEligiblePool,
            IpamError::ClaimConflict(_) => ErrorCode::ClaimConflict,
            IpamError::Corrupt { .. } => ErrorCode::StoreCorrupt,
            IpamError::Busy(_) | IpamError::Unavailable(_) => ErrorCode::TryAgainLater,
            IpamError::NoLiveEndpoint(_) => ErrorCode::InvalidEnv,
            IpamError::Io { .. } => ErrorCode::Io,
        };
        CniError::new(code, e.to_string())
    }
}
