//! podnetd, the node agent: announces the node in the cluster store, routes other nodes' blocks
//! (directly or over VXLAN), keeps the SNAT table, garbage-collects leaked addresses and serves
//! `/metrics`. The pieces: `view` (the cluster as the watch tells it) and `desired` (the kernel
//! state it implies) are pure; `kernel` and `snat` diff and apply; `gc`; `metrics`; `agent`
//! runs the loop.

pub mod agent;
pub mod desired;
pub mod gc;
pub mod kernel;
pub mod metrics;
pub mod snat;
pub mod view;

pub use desired::Encap;

use clap::Parser;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Exit codes: bad input (flags, conflist, an address in use) is refused before anything on the
/// node changes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "podnetd",
    version,
    about = "podnet's node agent: routes to other nodes' pod blocks, SNAT, GC, metrics"
)]
pub struct Args {
    /// The conflist the plugin uses (default: the first in /etc/cni/net.d with a podnet plugin).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's address (default: the source address of the default route).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// How other nodes' blocks are reached.
    #[arg(long, value_enum, default_value = "auto")]
    pub encap: Encap,
    #[arg(long, default_value_t = 4096)]
    pub vxlan_vni: u32,
    #[arg(long, default_value_t = 4789)]
    pub vxlan_port: u16,
    /// Destinations never masqueraded (repeat the flag for more).
    #[arg(long = "non-masquerade-cidr")]
    pub non_masquerade_cidr: Vec<IpNet>,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:9695")]
    pub metrics_addr: SocketAddr,
    #[arg(long, default_value_t = 20)]
    pub node_ttl_seconds: u64,
    /// Resync with the kernel (and, on the local store, poll it) this often.
    #[arg(long, default_value_t = 2)]
    pub poll_seconds: u64,
    #[arg(long, default_value_t = 60)]
    pub gc_interval_seconds: u64,
    #[arg(long, default_value_t = 300)]
    pub gc_grace_seconds: u64,
    /// Reconcile once and exit.
    #[arg(long)]
    pub once: bool,
}

impl Args {
    /// Limits clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=0xff_ffff).contains(&self.vxlan_vni) {
            return Err(format!("--vxlan-vni {} must be between 1 and 16777215", self.vxlan_vni));
        }
        if self.vxlan_port == 0 {
            return Err("--vxlan-port must not be 0".into());
        }
        if self.node_ttl_seconds < 3 {
            return Err(format!(
                "--node-ttl-seconds {} must be at least 3 (the record is renewed every third of it)",
                self.node_ttl_seconds
            ));
        }
        if self.poll_seconds == 0 || self.gc_interval_seconds == 0 {
            return Err("--poll-seconds and --gc-interval-seconds must be at least 1".into());
        }
        Ok(())
    }
}

/// podnetd's main: parse, start, run; the exit code.
pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_BAD_INPUT } else { EXIT_OK };
        }
    };
    // PODNETD_LOG: error, warn, info (default), debug or trace.
    let level = std::env::var("PODNETD_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).init();
    agent::run(args)
}
