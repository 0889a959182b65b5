//! `podnetctl [--config CONFLIST] [-o table|json] COMMAND`.

use crate::install;
use clap::{Parser, Subcommand, ValueEnum};
use podnet_plugin::records::EndpointRecord;
use serde_json::Value;
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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the network's endpoints: container, pod, interface, host veth, MAC, IPs, routes, gateway, time.
    Inspect,
    /// Install podnet: copy the plugins into the CNI bin dir and write a validated conflist (from
    /// --config FILE, or built from flags). Idempotent; prints what it changed.
    Install(install::InstallArgs),
    /// Remove podnet's plugins, its conflist, its bridge and its state, and nothing else.
    Uninstall(install::UninstallArgs),
    /// Print podnetctl's version.
    Version,
}

/// The podnet plugin of a conflist and its network name.
pub struct Network {
    pub name: String,
    pub plugin: Value,
}

pub fn load_network(path: &Path) -> Result<Network, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(|| format!("{} has no network name", path.display()))?;
    podnet_cni::config::validate_network_name(name).map_err(|e| format!("{}: {e}", path.display()))?;
    let plugins: Vec<&Value> = match v.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![&v], // a single-plugin .conf
    };
    let plugin = plugins
        .into_iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("podnet"))
        .ok_or_else(|| format!("{} has no plugin of type podnet", path.display()))?;
    Ok(Network { name: name.to_string(), plugin: plugin.clone() })
}

fn default_config() -> Result<PathBuf, String> {
    let dir = Path::new("/etc/cni/net.d");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}; pass --config", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist" || x == "conf"))
        .collect();
    files.sort();
    files.into_iter().find(|p| load_network(p).is_ok()).ok_or_else(|| format!("no conflist with a podnet plugin in {}; pass --config", dir.display()))
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

fn run(cli: &Cli) -> Result<i32, String> {
    match &cli.command {
        Cmd::Install(args) => install::install(args, cli.config.as_deref()),
        Cmd::Uninstall(args) => install::uninstall(args, cli.config.as_deref()),
        Cmd::Version => {
            println!("podnetctl {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Cmd::Inspect => {
            let path = match &cli.config {
                Some(p) => p.clone(),
                None => default_config()?,
            };
            let net = load_network(&path)?;
            let eps = podnet_plugin::endpoints(&net.plugin, &net.name)?;
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"network": net.name, "endpoints": eps})).expect("json")),
                Output::Table => print!("{}", inspect_table(&eps)),
            }
            Ok(0)
        }
    }
}

fn inspect_table(eps: &[EndpointRecord]) -> String {
    let header = ["CONTAINER", "POD", "IFNAME", "HOST VETH", "MAC", "IPS", "GATEWAY", "ROUTES", "CREATED"];
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            let pod = match (&e.pod.namespace, &e.pod.name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                (None, Some(n)) => n.clone(),
                _ => "-".into(),
            };
            let join = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(",") };
            vec![
                e.container_id.chars().take(12).collect(),
                pod,
                e.ifname.clone(),
                e.host_veth.clone(),
                e.mac.clone(),
                join(e.ips.iter().map(|i| i.to_string()).collect()),
                join(e.gateways.iter().map(|g| g.to_string()).collect()),
                join(e.routes.iter().map(|r| format!("{} via {}", r.dst, r.gw)).collect()),
                e.created_at.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
