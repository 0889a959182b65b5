//! `podnetctl lab up|status|ping|down`: a cluster in network namespaces on one machine. The lab
//! itself is `podnet_lab::named`; this is its command line and its output.

use super::render::{cell, print_json, table, Output};
use super::CtlError;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use podnet_ipam::Source;
use podnet_lab::named::{self, Dataplane, Encap, LabSpec, LabState, Mode, NodeState, Store};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LabCmd {
    /// Build a lab: a fabric, nodes with podnetd, pods made by the real plugin, an external host.
    Up(UpArgs),
    /// The lab's nodes (blocks, routes, agent), pods and hosts.
    Status(NameArg),
    /// Every pod to every other pod and to the external host; exit code 1 when a pair fails.
    Ping(NameArg),
    /// Remove everything the lab made (processes, namespaces, files); fine to run twice.
    Down(NameArg),
    /// A node's cloud host agent in a vnet lab: serves the NIC document in FILE (read anew for
    /// every request) on ADDR. `lab up` starts one per node.
    #[command(hide = true)]
    HostAgent {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        document: PathBuf,
    },
}

#[derive(Args)]
pub struct NameArg {
    #[arg(long, default_value = "lab")]
    name: String,
}

#[derive(Args)]
pub struct UpArgs {
    /// The lab's name (several labs with different names can run at once).
    #[arg(long, default_value = "lab")]
    name: String,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 2)]
    pods_per_node: usize,
    /// Where pods' addresses come from: blocks leased per node (overlay) or a CIDR per node that
    /// the fabric routes, as a cloud route table does (range).
    #[arg(long, value_enum, default_value_t = Mode::Overlay)]
    mode: Mode,
    /// How podnetd reaches other nodes' blocks.
    #[arg(long, value_enum, default_value_t = Encap::None)]
    encap: Encap,
    /// [default: bridge; routed with --mode vnet]
    #[arg(long, value_enum)]
    dataplane: Option<Dataplane>,
    /// local (one shared directory) or etcd (a real etcd the lab starts in its fabric).
    #[arg(long, value_enum, default_value_t = Store::Local)]
    store: Store,
    /// Nodes are spread over this many subnets, with a router between them.
    #[arg(long, default_value_t = 1)]
    subnets: usize,
    /// An IPv6 pool beside the IPv4 one, and IPv6 on the fabric.
    #[arg(long)]
    dual_stack: bool,
    /// The IPv4 pod CIDR.
    #[arg(long, default_value = "10.244.0.0/16")]
    pod_cidr: IpNet,
    /// Block (overlay) or node CIDR (range) prefix length [default: 26 overlay, 24 range].
    #[arg(long)]
    block_size: Option<u8>,
    /// Where podnet, podnet-ipam and podnetd are [default: podnetctl's own directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn lab_err(e: named::LabError) -> CtlError {
    CtlError::Usage(e.0)
}

pub fn run(cmd: &LabCmd, output: Output) -> Result<i32, CtlError> {
    match cmd {
        LabCmd::Up(a) => up(a, output),
        LabCmd::Status(a) => status(&a.name, output),
        LabCmd::Ping(a) => ping(&a.name, output),
        LabCmd::Down(a) => down(&a.name, output),
        LabCmd::HostAgent { listen, document } => host_agent(*listen, document),
    }
}

fn up(a: &UpArgs, output: Output) -> Result<i32, CtlError> {
    let bin_dir = match &a.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .ok_or_else(|| CtlError::Usage("cannot tell where podnetctl is: pass --bin-dir".into()))?,
    };
    let mut spec = LabSpec::new(&a.name, bin_dir);
    spec.nodes = a.nodes;
    spec.pods_per_node = a.pods_per_node;
    spec.mode = a.mode;
    spec.encap = a.encap;
    spec.dataplane = a.dataplane.unwrap_or(if a.mode == Mode::Vnet { Dataplane::Routed } else { Dataplane::Bridge });
    spec.store = a.store;
    spec.subnets = a.subnets;
    spec.dual_stack = a.dual_stack;
    spec.pod_cidr = a.pod_cidr;
    spec.block_size = a.block_size.unwrap_or(if spec.mode == Mode::Range { 24 } else { 26 });
    let state = named::up(&spec).map_err(lab_err)?;
    match output {
        Output::Json => print_json(&state),
        Output::Table => print!("{}", built(&state)),
    }
    Ok(0)
}

/// What `up` prints for people: what it built, and how to look around.
fn built(s: &LabState) -> String {
    let sp = &s.spec;
    let t = &s.timings;
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let mut out = format!(
        "lab {:?} is up: {} nodes, {} pods ({} mode, encap {}, {} dataplane, {} store{}) in {}\n  namespaces {}, store {}, agents {}, pods {}, routes {}\n\n",
        sp.name,
        s.nodes.len(),
        s.pods.len(),
        sp.mode.as_str(),
        sp.encap.as_str(),
        sp.dataplane.as_str(),
        sp.store.as_str(),
        if sp.dual_stack { ", dual-stack" } else { "" },
        secs(t.total_ms),
        secs(t.namespaces_ms),
        secs(t.store_ms),
        secs(t.agents_ms),
        secs(t.pods_ms),
        secs(t.routes_ms),
    );
    let rows: Vec<Vec<String>> =
        s.nodes
            .iter()
            .map(|n| {
                let pods = s.pods.iter().filter(|p| p.node == n.name).map(|p| {
                    format!("{} {}", p.name, p.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "))
                });
                vec![n.name.clone(), n.netns.clone(), n.ip.to_string(), cell(pods)]
            })
            .collect();
    out += &table(&["NODE", "NETNS", "IP", "PODS"], &rows);
    out += &format!("external host: {} {}\n", s.external.netns, s.external.ip);
    if let Some(h) = &s.vnet_host {
        out += &format!("VNet host: {} {}\n", h.netns, h.ip);
    }
    out.push('\n');
    let (n1, p1) = (&s.nodes[0], s.pods.first());
    let far = s.pods.iter().rev().find(|p| p.node != n1.name).or(s.pods.last());
    let ctl = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "podnetctl".into());
    out += "Look around:\n";
    if sp.mode == Mode::Vnet {
        out += &format!("  ip netns exec {} ip neigh show proxy    # the node answers ARP for its pods\n", n1.netns);
    } else {
        out += &format!("  ip netns exec {} ip route          # one route per remote block (proto 201)\n", n1.netns);
    }
    if let (Some(p), Some(f)) = (p1, far) {
        if let Some(ip) = f.ips.first() {
            out += &format!("  ip netns exec {} ping -c1 {ip}    # {} to {}\n", p.netns, p.name, f.name);
        }
    }
    out += &format!("  ip netns exec {} {ctl} --config {} ipam show\n", n1.netns, n1.conflist.display());
    out += &format!("  ip netns exec {} nft list table inet podnet\n", n1.netns);
    out += &format!(
        "  ip netns exec {} curl -s http://{}/metrics    # podnetd's metrics\n",
        n1.netns,
        named::METRICS_ADDR
    );
    out += &format!("  less {}\n", n1.agent_log.display());
    out += &format!("  {ctl} lab status --name {0}    # also: lab ping, lab down\n", sp.name);
    out
}

/// A node's blocks: its leases in the cluster store (run inside the node, where its store
/// answers), and the node CIDR of a range pool.
fn blocks(n: &NodeState) -> Vec<String> {
    let Ok(net) = podnet_node::Network::load(&n.conflist) else { return Vec::new() };
    let mut out: Vec<String> = net
        .ipam_config()
        .map(|c| c.pools.iter().filter(|p| p.source == Source::Range).map(|p| p.cidr().to_string()).collect())
        .unwrap_or_default();
    let leases = net.open_ipam().ok().and_then(|ipam| ipam.leases().ok()).unwrap_or_default();
    out.extend(leases.into_iter().filter(|l| l.node == n.name).map(|l| l.block.to_string()));
    out
}

/// Routes for a table cell: how many, by device (the JSON lists each).
fn route_summary(routes: &[named::RouteStatus]) -> String {
    let mut by_dev = std::collections::BTreeMap::<&str, usize>::new();
    for r in routes {
        *by_dev.entry(if r.via == "blackhole" { "blackhole" } else { r.dev.as_str() }).or_default() += 1;
    }
    if routes.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = by_dev.iter().map(|(d, n)| format!("{n} {d}")).collect();
    format!("{} ({})", routes.len(), parts.join(", "))
}

fn status(name: &str, output: Output) -> Result<i32, CtlError> {
    let (_, st) = named::status(name, &blocks).map_err(lab_err)?;
    if output == Output::Json {
        print_json(&st);
        return Ok(0);
    }
    let mut out = format!(
        "lab {:?}: {} mode, encap {}, {} dataplane, {} store\n\n",
        st.name,
        st.mode.as_str(),
        st.encap.as_str(),
        st.dataplane.as_str(),
        st.store.as_str()
    );
    let rows: Vec<Vec<String>> = st
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.netns.clone(),
                n.ip.to_string(),
                cell(n.blocks.clone()),
                route_summary(&n.routes),
                format!("{} {}", n.agent_pid, if n.agent_healthy { "healthy" } else { "NOT HEALTHY" }),
            ]
        })
        .collect();
    out += &table(&["NODE", "NETNS", "IP", "BLOCKS", "ROUTES", "PODNETD"], &rows);
    out.push('\n');
    let rows: Vec<Vec<String>> = st
        .pods
        .iter()
        .map(|p| vec![p.name.clone(), p.node.clone(), p.netns.clone(), cell(p.ips.iter().map(|i| i.to_string()))])
        .collect();
    out += &table(&["POD", "NODE", "NETNS", "IPS"], &rows);
    out += &format!("\nexternal host: {} {}\n", st.external.netns, st.external.ip);
    if let Some(h) = &st.vnet_host {
        out += &format!("VNet host: {} {} (reaches pods by their own addresses)\n", h.netns, h.ip);
    }
    print!("{out}");
    Ok(0)
}

fn ping(name: &str, output: Output) -> Result<i32, CtlError> {
    let r = named::ping(name).map_err(lab_err)?;
    if output == Output::Json {
        print_json(&r);
    } else {
        // A matrix: a row per source pod, a column per target; a cell per address.
        let rows: Vec<Vec<String>> = r
            .sources
            .iter()
            .map(|from| {
                let mut row = vec![from.clone()];
                for to in &r.targets {
                    let probes: Vec<&named::PingPair> =
                        r.probes.iter().filter(|p| &p.from == from && &p.to == to).collect();
                    row.push(if probes.is_empty() {
                        "-".into()
                    } else {
                        probes.iter().map(|p| if p.ok { "ok" } else { "FAIL" }).collect::<Vec<_>>().join("/")
                    });
                }
                row
            })
            .collect();
        let mut header = vec!["FROM \\ TO"];
        header.extend(r.targets.iter().map(String::as_str));
        print!("{}", table(&header, &rows));
        if r.failed.is_empty() {
            println!("\nall {} pairs reach each other", r.pairs);
        } else {
            println!("\n{} of {} pairs failed:", r.failed.len(), r.pairs);
            for f in &r.failed {
                println!("  {} -> {} ({})", f.from, f.to, f.ip);
            }
        }
    }
    Ok(if r.failed.is_empty() { 0 } else { 1 })
}

fn host_agent(listen: std::net::SocketAddr, document: &std::path::Path) -> Result<i32, CtlError> {
    use podnet_lab::hostagent::{self, Answer};
    let server = hostagent::listen(listen).map_err(|e| CtlError::io("starting the host agent", e))?;
    let answer = || match std::fs::read_to_string(document) {
        Ok(doc) => Answer::Document(doc),
        Err(_) => Answer::Status(500),
    };
    let (stop, requests) = (std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicUsize::new(0));
    hostagent::serve(server, &answer, &stop, &requests);
    Ok(0)
}

fn down(name: &str, output: Output) -> Result<i32, CtlError> {
    let r = named::down(name).map_err(lab_err)?;
    match output {
        Output::Json => print_json(&r),
        Output::Table if r.processes == 0 && r.namespaces == 0 && !r.files => {
            println!("lab {name:?}: nothing to remove")
        }
        Output::Table => println!(
            "lab {name:?} is down: stopped {} processes, removed {} namespaces{}",
            r.processes,
            r.namespaces,
            if r.files { format!(" and {}", named::lab_dir(name).display()) } else { String::new() }
        ),
    }
    Ok(0)
}
