//! `podnetctl [--config CONFLIST] [-o table|json] COMMAND`: one module per command group; each
//! builds a value that `render` prints as a table or as JSON.

mod audit;
mod error;
mod inspect;
pub mod install;
mod ipam;
mod lab;
mod plan;
mod render;

pub use error::CtlError;
pub use render::Output;

use clap::{Parser, Subcommand};
use podnet_node::Network;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "podnetctl", version, about = "Inspect and administer podnet networks")]
struct Cli {
    /// The conflist to act on (default: the first conflist in /etc/cni/net.d with a podnet plugin).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Output format: tables for people, JSON for scripts.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the network's endpoints: container, pod, interface, host veth, MAC, IPs, routes, gateway, time.
    Inspect,
    /// IPAM: `show` pool usage, `check` for leaks, duplicates, borrowed addresses and orphaned
    /// blocks (exit code 1 when it finds any), `rebuild` after corruption, `release IP` or
    /// `release --node NAME`.
    Ipam {
        #[command(subcommand)]
        cmd: ipam::IpamCmd,
    },
    /// Install podnet: copy the plugins into the CNI bin dir and write a validated conflist (from
    /// --config FILE, or built from flags). Idempotent; prints what it changed.
    Install(install::InstallArgs),
    /// Remove podnet's plugins, its conflist, its bridge and its state, and nothing else.
    Uninstall(install::UninstallArgs),
    /// Who had an address, and when: `who IP [--at T]`, `history [filters]`, `export`.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// What a cluster design costs in VNet addresses and routes per mode (vnet, overlay, range),
    /// and the largest cluster each allows; touches nothing.
    Plan(plan::PlanArgs),
    /// A cluster in network namespaces on this machine: `up`, `status`, `ping`, `down`.
    Lab {
        #[command(subcommand)]
        cmd: lab::LabCmd,
    },
    /// Print podnetctl's version.
    Version,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podnetctl: {e}");
            2
        }
    }
}

/// The network `--config` names, else the default conflist's.
fn network(config: Option<&Path>) -> Result<Network, CtlError> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => podnet_node::default_config(Path::new(podnet_node::DEFAULT_CONF_DIR))?,
    };
    Ok(Network::load(&path)?)
}

fn run(cli: &Cli) -> Result<i32, CtlError> {
    match &cli.command {
        Cmd::Inspect => {
            render::emit(cli.output, &inspect::inspect(&network(cli.config.as_deref())?)?);
            Ok(0)
        }
        Cmd::Ipam { cmd } => ipam::run(cmd, &network(cli.config.as_deref())?, cli.output),
        Cmd::Install(args) => install::install(args, cli.config.as_deref()),
        Cmd::Uninstall(args) => install::uninstall(args, cli.config.as_deref()),
        Cmd::Lab { cmd } => lab::run(cmd, cli.output),
        Cmd::Plan(args) => plan::run(args, cli.config.as_deref(), cli.output),
        Cmd::Audit { cmd } => audit::run(cmd, &network(cli.config.as_deref())?, cli.output),
        Cmd::Version => {
            println!("podnetctl {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}
