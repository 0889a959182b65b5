//! IPAM errors, each mapped to a CNI code.

use podnet_cni::{CniError, ErrorCode};
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
    /// A state file failed its checksum or does not decode.
    Corrupt {
        path: PathBuf,
        why: String,
    },
    /// The store lock could not be taken in time.
    Busy(String),
    /// The cluster store did not answer within its time budget.
    Unavailable(String),
    Io {
        what: String,
        err: std::io::Error,
    },
}

impl IpamError {
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        IpamError::Io { what: what.into(), err }
    }
}

impl fmt::Display for IpamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpamError::Config(m) | IpamError::Unsupported(m) | IpamError::Exhausted(m) | IpamError::NoEligiblePool(m) | IpamError::Busy(m) | IpamError::Unavailable(m) => f.write_str(m),
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
            IpamError::Corrupt { .. } => ErrorCode::StoreCorrupt,
            IpamError::Busy(_) | IpamError::Unavailable(_) => ErrorCode::TryAgainLater,
            IpamError::Io { .. } => ErrorCode::Io,
        };
        CniError::new(code, e.to_string())
    }
}
