//! The CNI protocol as podnet speaks it (spec 1.1.0, results for 0.3.0 to 1.1.0).
//!
//! Everything here is pure: parsing, validation and formatting. The only I/O is in [`skel::run`],
//! which reads stdin/env, dispatches a verb to a [`skel::Plugin`] and writes stdout.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod skel;
pub mod version;

pub use args::PodArgs;
pub use config::NetConf;
pub use env::{Command, Env};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;
