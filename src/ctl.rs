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
    /// IPAM: `show` pool usage, `check` for leaks, duplicates, borrowed addresses and orphaned
    /// blocks (exit code 1 when it finds any), `rebuild` after corruption, `release IP` or
    /// `release --node NAME`.
    Ipam {
        #[command(subcommand)]
        cmd: IpamCmd,
    },
    /// Install podnet: copy the plugins into the CNI bin dir and write a validated conflist (from
    /// --config FILE, or built from flags). Idempotent; prints what it changed.
    Install(install::InstallArgs),
    /// Remove podnet's plugins, its conflist, its bridge and its state, and nothing else.
    Uninstall(install::UninstallArgs),
    /// Print podnetctl's version.
    Version,
}

#[derive(Subcommand)]
enum IpamCmd {
    /// Per pool: size, blocks leased per node, addresses used and free on this node.
    Show,
    /// Cross-check the node store, block leases and live endpoints on this node.
    Check,
    /// Recover from corrupt state files (code 103): rebuild the records of this node's live
    /// endpoints from the kernel, free addresses no live endpoint carries, and keep every corrupt
    /// file in the store's quarantine directory. Run it on the node, in its network namespace.
    Rebuild {
        /// Go on even though no recorded attachment has an endpoint here (every pod is gone).
        #[arg(long)]
        force: bool,
    },
    /// Free one address (refused while its endpoint is live, unless --force), or hand a dead
    /// node's blocks back with --node.
    Release {
        /// The address to free.
        ip: Option<std::net::IpAddr>,
        /// Release every block leased to this node (a node that is gone: a live node would go on
        /// allocating from them). Refused for this node's own name unless --force.
        #[arg(long, conflicts_with = "ip")]
        node: Option<String>,
        /// Hand back this node's blocks that have been empty for the grace time.
        #[arg(long, conflicts_with_all = ["ip", "node"])]
        empty_blocks: bool,
        #[arg(long)]
        force: bool,
    },
}

/// The podnet plugin of a conflist and its network name.
pub struct Network {
    pub name: String,
    pub cni_version: String,
    pub plugin: Value,
}

/// A conflist's podnet plugin as a runtime hands it over (network name and cniVersion injected),
/// validated the way the plugin validates it.
pub fn plugin_view(
    name: &str,
    cni_version: &str,
    plugin: &Value,
) -> Result<(podnet_cni::NetConf, podnet_plugin::config::PluginConfig), String> {
    let mut conf = plugin.clone();
    conf["name"] = Value::from(name);
    conf["cniVersion"] = Value::from(cni_version);
    let conf = podnet_cni::NetConf::parse(&serde_json::to_vec(&conf).expect("json")).map_err(|e| e.msg)?;
    let cfg = podnet_plugin::config::PluginConfig::parse(&conf).map_err(|e| e.msg)?;
    Ok((conf, cfg))
}

/// The network's IPAM as the plugin would open it (same dataplane reservation, same stores).
fn network_ipam(net: &Network) -> Result<podnet_ipam::Ipam, String> {
    let (_, cfg) = plugin_view(&net.name, &net.cni_version, &net.plugin)?;
    if !cfg.ipam_in_process {
        return Err(format!("network {} uses the IPAM plugin {}, not podnet-ipam", net.name, cfg.ipam["type"]));
    }
    let ipam = podnet_ipam::IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir)).map_err(|e| e.to_string())?;
    Ok(podnet_ipam::Ipam::new(ipam, &net.name, podnet_plugin::reservation_for(&cfg.mode)))
}

/// Whether an attachment's endpoint exists here: its host veth is a link of this namespace.
fn live_endpoints() -> Result<impl Fn(&podnet_ipam::Handle) -> bool, String> {
    let mut nl = podnet_dataplane::Netlink::open().map_err(|e| format!("opening netlink: {e}"))?;
    let links: std::collections::HashSet<String> =
        nl.links().map_err(|e| e.to_string())?.into_iter().map(|l| l.name).collect();
    Ok(move |h: &podnet_ipam::Handle| links.contains(&podnet_dataplane::host_veth_name(&h.container_id, &h.ifname)))
}

fn print_json(v: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

fn ipam_cmd(cmd: &IpamCmd, net: &Network, output: Output) -> Result<i32, String> {
    if let IpamCmd::Rebuild { force } = cmd {
        return rebuild_cmd(net, *force, output);
    }
    let ipam = network_ipam(net)?;
    match cmd {
        IpamCmd::Show => {
            let pools = podnet_ipam::report::show(&ipam).map_err(|e| e.to_string())?;
            if output == Output::Json {
                print_json(serde_json::json!({"network": net.name, "node": ipam.config().node, "pools": pools}));
            } else {
                let rows: Vec<Vec<String>> = pools
                    .iter()
                    .map(|p| {
                        let by_node: Vec<String> = p.blocks_by_node.iter().map(|(n, c)| format!("{n}:{c}")).collect();
                        vec![
                            p.name.clone(),
                            p.cidr.to_string(),
                            p.source.clone(),
                            if p.source == "range" { "-".into() } else { format!("/{}", p.block_size) },
                            p.capacity.to_string(),
                            if by_node.is_empty() { "-".into() } else { by_node.join(",") },
                            p.free_blocks.to_string(),
                            p.used.to_string(),
                            p.free.to_string(),
                            p.borrowed.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &[
                            "POOL",
                            "CIDR",
                            "SOURCE",
                            "BLOCK",
                            "CAPACITY",
                            "BLOCKS BY NODE",
                            "FREE BLOCKS",
                            "USED HERE",
                            "FREE HERE",
                            "BORROWED"
                        ],
                        &rows
                    )
                );
            }
            Ok(0)
        }
        IpamCmd::Check => {
            let live = live_endpoints()?;
            let problems = podnet_ipam::report::check(&ipam, &live).map_err(|e| e.to_string())?;
            // Borrowing a pool allows is no problem, but each borrowed address is a route of its own.
            let borrowed = podnet_ipam::report::borrowed(&ipam).map_err(|e| e.to_string())?;
            if output == Output::Json {
                print_json(
                    serde_json::json!({"network": net.name, "node": ipam.config().node, "problems": problems, "borrowed": borrowed}),
                );
            } else {
                if problems.is_empty() {
                    println!("ipam check: no problems on node {}", ipam.config().node);
                } else {
                    let rows: Vec<Vec<String>> = problems
                        .iter()
                        .map(|p| vec![format!("{:?}", p.kind).to_lowercase(), p.detail.clone()])
                        .collect();
                    print!("{}", table(&["PROBLEM", "DETAIL"], &rows));
                }
                if !borrowed.is_empty() {
                    println!("borrowed addresses (allowBorrowing; each is a /32 or /128 route of its own):");
                    let rows: Vec<Vec<String>> = borrowed
                        .iter()
                        .map(|b| {
                            vec![
                                b.ip.to_string(),
                                b.block.to_string(),
                                b.owner.clone().unwrap_or_else(|| "-".into()),
                                b.borrower.clone(),
                                b.handle.key(),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["ADDRESS", "BLOCK", "OWNER", "BORROWER", "HANDLE"], &rows));
                }
            }
            Ok(if problems.is_empty() { 0 } else { 1 })
        }
        IpamCmd::Rebuild { .. } => unreachable!("handled above"),
        IpamCmd::Release { ip: Some(ip), force, .. } => {
            let live = live_endpoints()?;
            match podnet_ipam::report::release_address(&ipam, *ip, *force, &live).map_err(|e| e.to_string())? {
                Ok(handles) if handles.is_empty() => println!("{ip} was not allocated"),
                Ok(handles) => println!(
                    "released {ip} (held by {})",
                    handles.iter().map(|h| h.key()).collect::<Vec<_>>().join(", ")
                ),
                Err(holder) => {
                    eprintln!(
                        "podnetctl: {ip} is in use by the live endpoint {}; DEL it, or pass --force",
                        holder.key()
                    );
                    return Ok(1);
                }
            }
            Ok(0)
        }
        IpamCmd::Release { node: Some(node), force, .. } => {
            if node == &ipam.config().node && !force {
                eprintln!("podnetctl: {node} is this node; releasing its blocks while it runs would let two nodes hand out the same addresses (pass --force if it is really gone)");
                return Ok(1);
            }
            let r = podnet_ipam::report::release_node(&ipam, node).map_err(|e| e.to_string())?;
            if r.released.is_empty() && r.changed.is_empty() {
                println!("node {node} leases no block");
            }
            for b in &r.released {
                println!("released block {b} of node {node}");
            }
            for b in &r.changed {
                println!("left block {b}: its lease changed while releasing (run again to see the current state)");
            }
            Ok(if r.changed.is_empty() { 0 } else { 1 })
        }
        IpamCmd::Release { empty_blocks: true, .. } => {
            let blocks = ipam.release_empty_blocks().map_err(|e| e.to_string())?;
            if blocks.is_empty() {
                println!("no block has been empty for the grace time");
            }
            for b in blocks {
                println!("handed back empty block {b}");
            }
            Ok(0)
        }
        IpamCmd::Release { .. } => Err("name an address to release, --node NAME or --empty-blocks".into()),
    }
}

/// `ipam rebuild`: the node store of a podnet-ipam network, and the endpoint records of any.
fn rebuild_cmd(net: &Network, force: bool, output: Output) -> Result<i32, String> {
    let (_, cfg) = plugin_view(&net.name, &net.cni_version, &net.plugin)?;
    let endpoints = podnet_plugin::rebuild_endpoints(&cfg, &net.name, force)?;
    let mut rows: Vec<Vec<String>> = endpoints
        .iter()
        .map(|r| match r {
            podnet_plugin::EndpointRepair::EndpointRestored { handle } => {
                vec!["restored".into(), "-".into(), format!("endpoint record of {}: its veth is live", handle.key())]
            }
            podnet_plugin::EndpointRepair::EndpointDropped { file } => {
                vec!["dropped".into(), "-".into(), format!("endpoint record {file}: no endpoint on this node")]
            }
        })
        .collect();
    if !cfg.ipam_in_process {
        if output == Output::Json {
            print_json(serde_json::json!({"network": net.name, "repairs": endpoints}));
        } else if rows.is_empty() {
            println!("ipam rebuild: every endpoint record reads back; nothing to do");
        } else {
            print!("{}", table(&["ACTION", "WHAT", "WHY"], &rows));
        }
        return Ok(0);
    }
    let ipam = network_ipam(net)?;
    let report = podnet_plugin::rebuild(&cfg, &ipam, force)?;
    if output == Output::Json {
        let mut repairs = serde_json::to_value(&report.repairs).expect("json");
        repairs
            .as_array_mut()
            .expect("a list")
            .extend(endpoints.iter().map(|r| serde_json::to_value(r).expect("json")));
        print_json(
            serde_json::json!({"network": net.name, "node": ipam.config().node, "repairs": repairs, "quarantine": report.quarantine}),
        );
    } else if report.repairs.is_empty() && rows.is_empty() {
        println!("ipam rebuild: every record of node {} reads back; nothing to do", ipam.config().node);
    } else {
        use podnet_ipam::rebuild::Repair;
        rows.extend(report
            .repairs
            .iter()
            .map(|r| match r {
                Repair::Restored { ip, handle } => vec!["restored".into(), ip.to_string(), format!("{} has a live endpoint", handle.key())],
                Repair::Unleased { ip, handle, block } => vec!["restored".into(), ip.to_string(), format!("{} is live, but block {block} is not leased to this node and no claim covers the address: delete and re-create the pod", handle.key())],
                Repair::Contested { ip, handle, holder } => vec!["restored".into(), ip.to_string(), format!("{} is live, but the address's claim is held by {holder}: re-create one of the two pods", handle.key())],
                Repair::Freed { ip, handle } => vec!["freed".into(), ip.to_string(), format!("{} has no endpoint on this node", handle.key())],
                Repair::Unplaced { ip, handle } => vec!["left".into(), ip.to_string(), format!("{} is live but the address is in no pool of the config", handle.key())],
                Repair::BlockRestored { block } => vec!["restored".into(), block.to_string(), "block lease, from the cluster store".into()],
                Repair::BlockDropped { block } => vec!["dropped".into(), block.to_string(), "block lease the cluster store does not confirm".into()],
                Repair::Unnamed { file } => vec!["quarantined".into(), "-".into(), format!("{file}: its name holds no address and handle")],
            })
        );
        print!("{}", table(&["ACTION", "WHAT", "WHY"], &rows));
        println!("corrupt files kept in {}", report.quarantine.display());
    }
    Ok(if report.repairs.iter().any(|r| r.needs_action()) { 1 } else { 0 })
}

pub fn load_network(path: &Path) -> Result<Network, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let name =
        v.get("name").and_then(Value::as_str).ok_or_else(|| format!("{} has no network name", path.display()))?;
    let cni_version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("1.0.0").to_string();
    podnet_cni::config::validate_network_name(name).map_err(|e| format!("{}: {e}", path.display()))?;
    let plugins: Vec<&Value> = match v.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![&v], // a single-plugin .conf
    };
    let plugin = plugins
        .into_iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("podnet"))
        .ok_or_else(|| format!("{} has no plugin of type podnet", path.display()))?;
    Ok(Network { name: name.to_string(), cni_version, plugin: plugin.clone() })
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
    files
        .into_iter()
        .find(|p| load_network(p).is_ok())
        .ok_or_else(|| format!("no conflist with a podnet plugin in {}; pass --config", dir.display()))
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
        Cmd::Ipam { cmd } => {
            let path = match &cli.config {
                Some(p) => p.clone(),
                None => default_config()?,
            };
            ipam_cmd(cmd, &load_network(&path)?, cli.output)
        }
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
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"network": net.name, "endpoints": eps}))
                        .expect("json")
                ),
                Output::Table => print!("{}", inspect_table(&eps)),
            }
            Ok(0)
        }
    }
}

fn inspect_table(eps: &[EndpointRecord]) -> String {
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
    table(&["CONTAINER", "POD", "IFNAME", "HOST VETH", "MAC", "IPS", "GATEWAY", "ROUTES", "CREATED"], &rows)
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(s.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
