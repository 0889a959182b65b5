//! podnet IPAM: pools split into per-node blocks, an allocator, and crash-safe stores.
//!
//! [`Ipam`] is the API the plugin calls in-process and `podnet-ipam` wraps as a CNI plugin.
//! Addresses live in the node store; block leases in a [`store::ClusterStore`].
//!
//! Layout, pure parts first (no I/O: the planner can use them alone):
//! - `addr`, `span` (the allocator and the dataplane's reserved-address rule), `model`, `config`
//!   (validation, the host name injected);
//! - `source`: address sources behind one trait (overlay, range, vnet; `inventory` parses the
//!   host agent's NIC document for vnet);
//! - `node` (the node store and its lock guard), `journal` (the hook every allocation and release
//!   passes through), `store` (the cluster-store contract and the local store);
//! - the operations: `allocate` and `commit` (ADD), `lease` and `borrow` (cluster protocols),
//!   `release` (every mutation that frees), `query`, `report`, `rebuild`.

pub mod addr;
mod allocate;
mod borrow;
mod commit;
pub mod config;
pub mod error;
pub mod inventory;
mod ipam;
pub mod journal;
mod lease;
pub mod model;
pub mod node;
mod query;
pub mod rebuild;
mod release;
pub mod report;
mod source;
pub mod span;
pub mod store;

pub use allocate::Step;
pub use commit::{Allocated, Pending, Published};
pub use config::{IpamConfig, Pool, Source};
pub use error::IpamError;
pub use ipam::Ipam;
pub use model::{Allocation, BlockLease, Handle, NodeRecord, PodInfo};
pub use release::NodeRelease;
pub use source::range_span;
pub use source::vnet::{VnetInventory, DEFAULT_INVENTORY_URL};
pub use span::{Addresses, Dataplane, Reservation, Span};
pub use store::local::LocalStore;
pub use store::{
    ClusterEvent, ClusterSnapshot, ClusterStore, ClusterWatch, Deadline, LeaseAttempt, LeaseSnapshot, NodeLease,
    WatchError,
};

#[cfg(test)]
mod ipam_tests;
#[cfg(test)]
mod testing;
