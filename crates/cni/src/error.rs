//! CNI errors: the spec's well-known codes and podnet's own (>= 100), printed as the spec's error JSON.

use serde_json::json;
use std::fmt;

/// Error codes. 1-99 are the spec's; 100+ are podnet's and are documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    LimitedConnectivity = 51,
    /// No free address in the node's blocks and no free block (or range address) in any eligible pool.
    PoolExhausted = 100,
    /// An address this node holds is claimed by another attachment in the cluster store
    /// (pools that allow borrowing): one of the two pods must be re-created.
    ClaimConflict = 101,
    /// A state file failed its checksum or could not be decoded; podnet refuses to guess.
    StoreCorrupt = 103,
    /// CHECK found the endpoint differs from what ADD set up.
    EndpointDrift = 104,
    /// A kernel (netlink, sysctl, netns) operation failed.
    Kernel = 105,
    /// The pod's namespace may use no pool of this network.
    NoEligiblePool = 106,
    /// A delegated (exec'd) IPAM plugin failed without a CNI error of its own.
    DelegateFailed = 107,
    /// A bug in podnet (a panic); the message says where. Please report it.
    Internal = 199,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError { code: code as u32, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::IncompatibleVersion, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnv, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Decode, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Io, msg)
    }
    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Kernel, msg)
    }

    /// The spec's error JSON. `cniVersion` is the version in use (the config's, else the latest).
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = json!({ "cniVersion": version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }

    /// Parse the error JSON a delegated plugin printed.
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let code = v.get("code")?.as_u64()? as u32;
        Some(CniError {
            code,
            msg: v.get("msg").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
            details: v.get("details").and_then(|m| m.as_str()).unwrap_or_default().to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
