//! Kernel work for podnet: network namespaces, a synchronous rtnetlink client, sysctls, and the
//! bridge and routed endpoint builders. Nothing here knows about CNI or IPAM.

pub mod endpoint;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod routes;
pub mod sysctl;
pub mod vxlan;

pub use endpoint::{
    host_veth_name, planned_routes, pod_mac, DataplaneError, Endpoint, EndpointSpec, Links, Mode, PodAddress,
};
pub use netlink::Netlink;
pub use netns::{NetNs, NetNsError};
