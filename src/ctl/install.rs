//! `podnetctl install` and `uninstall`: put podnet on a node and take it off again.
//!
//! Binaries are copied atomically (a temp file in the target directory, fsync, rename), so a
//! runtime never execs a half-written plugin. Every step is idempotent and reported.

use super::CtlError;
use clap::Args;
use podnet_cni::NetConf;
use podnet_node::Network;
use podnet_plugin::config::PluginConfig;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// What podnet keeps under `<dataDir>/<network>/` (README, "State on disk"); the audit history
/// too (export it first to keep it: `podnetctl audit export`).
const NETWORK_STATE: &[&str] = &["ipam", "endpoints", "quarantine", "locks", "audit"];
/// What the local cluster store keeps under `<store>/<network>/`.
const CLUSTER_STATE: &[&str] = &["blocks", "claims", "lending", "nodes", "lock", "audit"];

/// The CNI plugins podnet installs; podnetctl itself stays wherever it was run from.
const PLUGINS: [&str; 2] = ["podnet", "podnet-ipam"];

#[derive(Args, Debug)]
pub struct Dirs {
    /// CNI plugin directory.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub bin_dir: PathBuf,
    /// CNI network configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub conf_dir: PathBuf,
    /// File name of the conflist in --conf-dir.
    #[arg(long, default_value = "10-podnet.conflist")]
    pub conf_name: String,
    /// Where `--agent` puts podnetd.
    #[arg(long, default_value = "/usr/local/bin")]
    pub agent_bin_dir: PathBuf,
    /// Where `--agent` writes podnetd's systemd unit.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub unit_dir: PathBuf,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// podnetd's systemd unit.
const UNIT_NAME: &str = "podnetd.service";

#[derive(Args, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub dirs: Dirs,
    /// Where the podnet and podnet-ipam binaries to install are (default: beside podnetctl).
    #[arg(long)]
    pub source_dir: Option<PathBuf>,
    /// Network name (when the conflist is built from flags).
    #[arg(long, default_value = "podnet")]
    pub name: String,
    /// `bridge` or `routed`.
    #[arg(long, default_value = "bridge")]
    pub dataplane: String,
    /// Bridge name (bridge dataplane).
    #[arg(long)]
    pub bridge: Option<String>,
    /// Pod MTU (default: the uplink's).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Node state directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// A pool CIDR; repeat for dual-stack (one IPv4 and one IPv6 pool).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Block prefix length of the IPv4 pool (default 26).
    #[arg(long)]
    pub block_size: Option<u8>,
    /// Block prefix length of the IPv6 pool (default 122).
    #[arg(long)]
    pub block_size_v6: Option<u8>,
    /// Chain the reference portmap plugin after podnet (hostPort support).
    #[arg(long)]
    pub portmap: bool,
    /// Install podnetd too, with a systemd unit that runs it on this conflist (enable it with
    /// `systemctl enable --now podnetd`).
    #[arg(long)]
    pub agent: bool,
    /// podnetd flags for the unit's command line, e.g. "--encap vxlan".
    #[arg(long, default_value = "", requires = "agent", allow_hyphen_values = true)]
    pub agent_flags: String,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub dirs: Dirs,
    /// Remove state even while endpoints are still recorded (their pods lose nothing at once, but
    /// podnet forgets their addresses).
    #[arg(long)]
    pub force: bool,
}

/// Build the conflist from flags.
fn conflist_from_flags(a: &InstallArgs) -> Result<Value, CtlError> {
    if a.cidrs.is_empty() {
        return Err(CtlError::Usage("give --config FILE or at least one --cidr".into()));
    }
    let mut pools = Vec::new();
    for cidr in &a.cidrs {
        let net: ipnet::IpNet = cidr.parse().map_err(|_| CtlError::Usage(format!("--cidr {cidr:?} is not a CIDR")))?;
        let family = if net.addr().is_ipv4() { "v4" } else { "v6" };
        let mut pool = json!({"name": format!("pods-{family}"), "cidr": cidr});
        if let Some(b) = if net.addr().is_ipv4() { a.block_size } else { a.block_size_v6 } {
            pool["blockSize"] = json!(b);
        }
        pools.push(pool);
    }
    let mut ipam = json!({"type": "podnet-ipam", "pools": pools});
    if let Some(n) = &a.node {
        ipam["node"] = json!(n);
    }
    let mut plugin = json!({"type": "podnet", "dataplane": a.dataplane, "ipam": ipam});
    if let Some(b) = &a.bridge {
        plugin["bridge"] = json!(b);
    }
    if let Some(m) = a.mtu {
        plugin["mtu"] = json!(m);
    }
    if let Some(d) = &a.data_dir {
        plugin["dataDir"] = json!(d);
    }
    let mut plugins = vec![plugin];
    if a.portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    Ok(json!({"cniVersion": "1.0.0", "name": a.name, "plugins": plugins}))
}

/// Each podnet plugin of the conflist, as the runtime would hand it over (name and cniVersion
/// injected), validated the way the plugin itself validates it.
fn podnet_plugins(list: &Value) -> Result<Vec<(NetConf, PluginConfig)>, String> {
    let name = list.get("name").and_then(Value::as_str).ok_or("the conflist has no \"name\"")?;
    let version = list.get("cniVersion").and_then(Value::as_str).ok_or("the conflist has no \"cniVersion\"")?;
    let plugins = list.get("plugins").and_then(Value::as_array).ok_or("the conflist has no \"plugins\" list")?;
    let mut out = Vec::new();
    for p in plugins.iter().filter(|p| p.get("type").and_then(Value::as_str) == Some("podnet")) {
        let (conf, cfg) = podnet_node::plugin_view(name, version, p).map_err(|e| e.to_string())?;
        if cfg.ipam_in_process {
            podnet_ipam::IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir)).map_err(|e| e.to_string())?;
        }
        out.push((conf, cfg));
    }
    if out.is_empty() {
        return Err("the conflist has no plugin of type podnet".into());
    }
    Ok(out)
}

/// Put `bytes` at `dir/name` unless it already holds them. Returns the line to print.
fn place(dir: &Path, name: &str, bytes: &[u8], mode: u32, dry_run: bool) -> Result<String, CtlError> {
    let path = dir.join(name);
    if fs::read(&path).ok().as_deref() == Some(bytes) {
        return Ok(format!("unchanged {}", path.display()));
    }
    let verb = if path.exists() { "updated" } else { "installed" };
    if dry_run {
        return Ok(format!("would have {verb} {}", path.display()));
    }
    fs::create_dir_all(dir).map_err(|e| CtlError::io(format!("creating {}", dir.display()), e))?;
    // Temp file in the same directory, fsync, rename: a runtime never execs a half-written plugin.
    podnet_fsio::atomic_write_mode(dir, name, bytes, mode).map_err(CtlError::State)?;
    Ok(format!("{verb} {}", path.display()))
}

pub fn install(a: &InstallArgs, config: Option<&Path>) -> Result<i32, CtlError> {
    let list = match config {
        Some(p) => {
            serde_json::from_slice(&fs::read(p).map_err(|e| CtlError::io(format!("reading {}", p.display()), e))?)
                .map_err(|e| CtlError::Usage(format!("{} is not JSON: {e}", p.display())))?
        }
        None => conflist_from_flags(a)?,
    };
    podnet_plugins(&list).map_err(|e| CtlError::Usage(format!("invalid network config: {e}")))?;
    let source = match &a.source_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| CtlError::Usage("cannot tell where podnetctl is; pass --source-dir".into()))?,
    };
    let mut lines = Vec::new();
    for plugin in PLUGINS {
        let src = source.join(plugin);
        let bytes =
            fs::read(&src).map_err(|e| CtlError::io(format!("reading {} (pass --source-dir)", src.display()), e))?;
        lines.push(place(&a.dirs.bin_dir, plugin, &bytes, 0o755, a.dirs.dry_run)?);
    }
    let mut text = serde_json::to_vec_pretty(&list).expect("json");
    text.push(b'\n');
    lines.push(place(&a.dirs.conf_dir, &a.dirs.conf_name, &text, 0o644, a.dirs.dry_run)?);
    if a.agent {
        let src = source.join("podnetd");
        let bytes =
            fs::read(&src).map_err(|e| CtlError::io(format!("reading {} (pass --source-dir)", src.display()), e))?;
        lines.push(place(&a.dirs.agent_bin_dir, "podnetd", &bytes, 0o755, a.dirs.dry_run)?);
        let unit =
            unit_text(&a.dirs.agent_bin_dir.join("podnetd"), &a.dirs.conf_dir.join(&a.dirs.conf_name), &a.agent_flags);
        lines.push(place(&a.dirs.unit_dir, UNIT_NAME, unit.as_bytes(), 0o644, a.dirs.dry_run)?);
    }
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// podnetd's unit: restarted when it exits; SIGTERM stops it and leaves the node programmed, so
/// pods keep talking across a restart or upgrade.
fn unit_text(podnetd: &Path, conflist: &Path, flags: &str) -> String {
    let flags = if flags.trim().is_empty() { String::new() } else { format!(" {}", flags.trim()) };
    format!(
        "[Unit]\nDescription=podnet node agent: routes to other nodes' pods, SNAT, GC, metrics\n\
         Wants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nExecStart={} --config {}{flags}\nRestart=always\nRestartSec=2\n\
         KillSignal=SIGTERM\nTimeoutStopSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
        podnetd.display(),
        conflist.display()
    )
}

/// What podnetd put in the node's kernel: its routes (podnet's route protocol), the VXLAN device
/// and the SNAT table. Run once podnetd is stopped (a running one puts them back).
fn remove_agent_state(dry: bool, lines: &mut Vec<String>) -> Result<(), CtlError> {
    let mut nl = podnet_dataplane::Netlink::open().map_err(|e| CtlError::io("opening netlink", e))?;
    let routes = podnet_agent::kernel::owned_routes(&mut nl).map_err(kernel)?;
    let vxlan = nl.link_by_name(podnet_agent::kernel::VXLAN_DEVICE).map_err(kernel)?;
    // Without nft there is no table podnetd could have made.
    let table = match podnet_agent::snat::nft_installed() {
        true => podnet_agent::snat::current().map_err(|e| CtlError::Node(podnet_node::NodeError::Kernel(e)))?,
        false => None,
    };
    if dry {
        if !routes.is_empty() {
            lines.push(format!("would delete podnetd's {} route(s)", routes.len()));
        }
        if vxlan.is_some() {
            lines.push(format!("would delete {}", podnet_agent::kernel::VXLAN_DEVICE));
        }
        if table.is_some() {
            lines.push(format!("would delete nftables table inet {}", podnet_agent::snat::TABLE));
        }
        return Ok(());
    }
    for r in &routes {
        nl.delete_route(r, podnet_dataplane::routes::PODNET_ROUTE_PROTOCOL).map_err(kernel)?;
    }
    if !routes.is_empty() {
        lines.push(format!("deleted podnetd's {} route(s)", routes.len()));
    }
    if vxlan.is_some() {
        nl.delete_link(podnet_agent::kernel::VXLAN_DEVICE).map_err(kernel)?;
        lines.push(format!("deleted {}", podnet_agent::kernel::VXLAN_DEVICE));
    }
    if table.is_some() {
        podnet_agent::snat::remove().map_err(|e| CtlError::Node(podnet_node::NodeError::Kernel(e)))?;
        lines.push(format!("deleted nftables table inet {}", podnet_agent::snat::TABLE));
    }
    Ok(())
}

pub fn uninstall(a: &UninstallArgs, config: Option<&Path>) -> Result<i32, CtlError> {
    let conf_path = config.map(Path::to_path_buf).unwrap_or_else(|| a.dirs.conf_dir.join(&a.dirs.conf_name));
    let mut lines = Vec::new();
    let dry = a.dirs.dry_run;
    let remove_path = |path: &Path, lines: &mut Vec<String>| -> Result<(), CtlError> {
        if !path.exists() {
            return Ok(());
        }
        if dry {
            lines.push(format!("would remove {}", path.display()));
            return Ok(());
        }
        let r = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
        r.map_err(|e| CtlError::io(format!("removing {}", path.display()), e))?;
        lines.push(format!("removed {}", path.display()));
        Ok(())
    };
    // Only what podnet makes under a network's directories goes; the directory itself only when
    // nothing else is left in it.
    let remove_owned = |dir: &Path, owned: &[&str], lines: &mut Vec<String>| -> Result<(), CtlError> {
        for name in owned {
            remove_path(&dir.join(name), lines)?;
        }
        let others: Vec<String> = fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        if !dir.exists() {
            return Ok(());
        }
        if !others.iter().all(|n| owned.contains(&n.as_str())) {
            lines.push(format!("left {}: it holds files podnet did not make ({})", dir.display(), others.join(", ")));
        } else if dry {
            lines.push(format!("would remove {}", dir.display()));
        } else {
            fs::remove_dir(dir).map_err(|e| CtlError::io(format!("removing {}", dir.display()), e))?;
            lines.push(format!("removed {}", dir.display()));
        }
        Ok(())
    };
    // What podnet owns comes from its own conflist; without one, only the binaries are known.
    if let Ok(bytes) = fs::read(&conf_path) {
        let list: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CtlError::Usage(format!("{} is not JSON: {e}", conf_path.display())))?;
        let plugins = podnet_plugins(&list).map_err(|e| CtlError::Usage(format!("{}: {e}", conf_path.display())))?;
        let network = list["name"].as_str().unwrap_or_default().to_string();
        for (_, cfg) in &plugins {
            let plugin_obj = list["plugins"]
                .as_array()
                .and_then(|l| l.iter().find(|p| p["type"] == "podnet"))
                .cloned()
                .unwrap_or_default();
            let net = Network {
                path: conf_path.clone(),
                name: network.clone(),
                cni_version: String::new(),
                plugin: plugin_obj,
            };
            let live = match net.endpoints() {
                Ok(live) => live,
                Err(e) if !a.force => {
                    return Err(CtlError::Refused(format!(
                        "cannot tell which endpoints are live ({e}); pass --force to remove podnet anyway"
                    )))
                }
                Err(_) => Vec::new(),
            };
            if !live.is_empty() && !a.force {
                return Err(CtlError::Refused(format!(
                    "{} endpoint(s) of network {network} are still recorded (podnetctl inspect); remove their pods first or pass --force",
                    live.len()
                )));
            }
            if let podnet_dataplane::Mode::Bridge { bridge, .. } = &cfg.mode {
                let mut nl = podnet_dataplane::Netlink::open().map_err(|e| CtlError::io("opening netlink", e))?;
                let found = nl.link_by_name(bridge).map_err(kernel)?.filter(|l| l.kind.as_deref() == Some("bridge"));
                // A bridge that still has ports serves something else too: leave it.
                let ports = match &found {
                    Some(b) => nl.links().map_err(kernel)?.iter().filter(|l| l.master == Some(b.index)).count(),
                    None => 0,
                };
                // podnet gives the bridges it makes a MAC derived from the name: one without it was
                // there before podnet, and stays unless --force.
                let made_by_podnet =
                    found.as_ref().is_some_and(|b| b.mac == Some(podnet_dataplane::endpoint::bridge_mac(bridge)));
                if found.is_some() && ports > 0 {
                    lines.push(format!("left bridge {bridge}: {ports} port(s) still attached"));
                } else if found.is_some() && !made_by_podnet && !a.force {
                    lines.push(format!("left bridge {bridge}: podnet did not create it (pass --force to delete it)"));
                } else if found.is_some() {
                    if dry {
                        lines.push(format!("would delete bridge {bridge}"));
                    } else {
                        nl.delete_link(bridge).map_err(kernel)?;
                        lines.push(format!("deleted bridge {bridge}"));
                    }
                }
            }
            remove_owned(&cfg.data_dir.join(&network), NETWORK_STATE, &mut lines)?;
            if cfg.ipam_in_process {
                let ipam_cfg = podnet_ipam::IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir))?;
                remove_owned(&ipam_cfg.data_dir.join(&network), NETWORK_STATE, &mut lines)?;
                if ipam_cfg.etcd.is_none() && ipam_cfg.store.path.is_none() {
                    // The default cluster store is this node's alone.
                    remove_owned(&ipam_cfg.local_cluster_dir().join(&network), CLUSTER_STATE, &mut lines)?;
                } else if dry {
                    lines.push(format!(
                        "would hand back the blocks node {} leases in the shared cluster store",
                        ipam_cfg.node
                    ));
                } else {
                    // A shared store (etcd, or a path several nodes use) keeps the other nodes'
                    // leases: only this node's go back.
                    let node = ipam_cfg.node.clone();
                    let ipam = podnet_plugin::open_ipam(ipam_cfg, &network, cfg.dataplane());
                    let r = ipam.release_node(&node)?;
                    for b in r.released {
                        lines.push(format!("handed back block {b} of node {node}"));
                    }
                }
            }
        }
        remove_path(&conf_path, &mut lines)?;
    }
    for plugin in PLUGINS {
        remove_path(&a.dirs.bin_dir.join(plugin), &mut lines)?;
    }
    remove_path(&a.dirs.unit_dir.join(UNIT_NAME), &mut lines)?;
    remove_path(&a.dirs.agent_bin_dir.join("podnetd"), &mut lines)?;
    remove_agent_state(dry, &mut lines)?;
    if lines.is_empty() {
        lines.push("nothing to remove".into());
    }
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

fn kernel(e: podnet_dataplane::netlink::NlError) -> CtlError {
    CtlError::Node(podnet_node::NodeError::Kernel(e.to_string()))
}
