//! A node's view of its podnet networks, shared by `podnetctl` and `podnetd`: find the conflists
//! that hold a `podnet` plugin, read them as the runtime hands them to the plugin, open a
//! network's IPAM, list its endpoints and rebuild its records from the kernel.

mod error;
mod network;
mod rebuild;

pub use error::NodeError;
pub use network::{default_config, plugin_view, Network, DEFAULT_CONF_DIR};
pub use rebuild::{EndpointRepair, Rebuild};

use podnet_ipam::Handle;

/// Whether an attachment's endpoint exists here: its host veth is a link of this namespace.
pub fn live_endpoints() -> Result<impl Fn(&Handle) -> bool, NodeError> {
    let mut nl = podnet_dataplane::Netlink::open().map_err(|e| NodeError::Kernel(format!("opening netlink: {e}")))?;
    let links: std::collections::HashSet<String> =
        nl.links().map_err(|e| NodeError::Kernel(e.to_string()))?.into_iter().map(|l| l.name).collect();
    Ok(move |h: &Handle| links.contains(&podnet_dataplane::host_veth_name(&h.container_id, &h.ifname)))
}
