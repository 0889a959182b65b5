//! Lab parts: network namespaces made and removed through nix and netlink (no shell), links
//! between them, a fabric of subnets that nodes' uplinks join, a real etcd, CNI plugin calls
//! as a runtime makes them, and processes killed by their PID when dropped. Tests, the
//! benchmark and `podnetctl lab` are built from these.

pub mod cluster;
pub mod cni;
pub mod etcd;
pub mod fabric;
pub mod hostagent;
pub mod link;
pub mod named;
pub mod netns;
pub mod process;

pub use cluster::{Cluster, ClusterNode, ClusterSpec, StoreKind};
pub use cni::finish;
pub use cni::{Invocation, Outcome};
pub use etcd::Etcd;
pub use fabric::{Fabric, Subnet, Uplink};
pub use netns::{in_netns, Netns};
pub use process::{die_with_parent, enter_netns_on_exec, Process};
