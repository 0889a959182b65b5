use podnet_node::NodeError;
use std::fmt;

/// Why a podnetctl command could not run (exit code 2).
#[derive(Debug)]
pub enum CtlError {
    /// Reading or acting on a network failed.
    Node(NodeError),
    /// The command line asks for something that cannot be done as given.
    Usage(String),
    /// A file podnetctl reads or writes (install, uninstall).
    Io { what: String, err: std::io::Error },
    /// An atomic write of an installed file failed.
    State(podnet_fsio::FsError),
    /// The action is refused until a person decides (e.g. live endpoints; `--force`).
    Refused(String),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Node(e) => e.fmt(f),
            CtlError::Usage(m) | CtlError::Refused(m) => f.write_str(m),
            CtlError::Io { what, err } => write!(f, "{what}: {err}"),
            CtlError::State(e) => e.fmt(f),
        }
    }
}

impl From<NodeError> for CtlError {
    fn from(e: NodeError) -> CtlError {
        CtlError::Node(e)
    }
}

impl From<podnet_ipam::IpamError> for CtlError {
    fn from(e: podnet_ipam::IpamError) -> CtlError {
        CtlError::Node(NodeError::Ipam(e))
    }
}

impl CtlError {
    pub fn io(what: impl Into<String>, err: std::io::Error) -> CtlError {
        CtlError::Io { what: what.into(), err }
    }
}
