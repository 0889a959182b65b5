use podnet_ipam::IpamError;
use std::fmt;

/// What went wrong reading or acting on a node's networks.
#[derive(Debug)]
pub enum NodeError {
    /// A conflist cannot be read, is not JSON, or holds no usable podnet plugin.
    Conflist(String),
    /// The network's config is invalid (the message names the key).
    Config(String),
    /// The command needs podnet-ipam but the network execs another IPAM plugin.
    NotPodnetIpam(String),
    Ipam(IpamError),
    /// A netlink request failed.
    Kernel(String),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Conflist(m) | NodeError::Config(m) | NodeError::NotPodnetIpam(m) | NodeError::Kernel(m) => {
                f.write_str(m)
            }
            NodeError::Ipam(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<IpamError> for NodeError {
    fn from(e: IpamError) -> NodeError {
        NodeError::Ipam(e)
    }
}
