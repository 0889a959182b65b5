//! `lab status` and `lab ping`: the lab as it is now, read from inside its namespaces.

use super::*;
use crate::process::Stdio;
use podnet_dataplane::routes::{RouteTarget, PODNET_ROUTE_PROTOCOL};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

/// A namespace of the lab, opened by name (it outlives the process that made it).
fn open_ns(name: &str) -> Result<File, LabError> {
    File::open(Path::new("/run/netns").join(name)).map_err(|e| {
        err(format!("the namespace {name} is gone ({e}): the lab is broken; podnetctl lab down removes what is left"))
    })
}

/// Run `f` inside the namespace `name`.
fn in_named<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    let file = open_ns(name)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| err(format!("entering {name}: {e}")))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(err("a thread inside the lab panicked")))
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub dst: String,
    pub via: String,
    pub dev: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub netns: String,
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<IpAddr>,
    pub blocks: Vec<String>,
    pub routes: Vec<RouteStatus>,
    pub agent_pid: u32,
    pub agent_healthy: bool,
    pub conflist: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabStatus {
    pub name: String,
    pub mode: Mode,
    pub encap: Encap,
    pub store: Store,
    pub dataplane: Dataplane,
    pub nodes: Vec<NodeStatus>,
    pub pods: Vec<PodStatus>,
    pub external: HostState,
    pub vnet_host: Option<HostState>,
}

/// The lab as it is now: agents alive and healthy, podnet's routes in each node, and each node's
/// blocks as `blocks(node)` reads them from the cluster store (run inside the node's namespace).
pub fn status(
    name: &str,
    blocks: &(dyn Fn(&NodeState) -> Vec<String> + Sync),
) -> Result<(LabState, LabStatus), LabError> {
    let state = load(name)?;
    let mut nodes = Vec::new();
    for n in &state.nodes {
        let routes = routes_of(&n.netns);
        let alive = is_lab_process(n.agent_pid, name);
        let healthy = alive && health(&n.netns, Duration::from_secs(2)) == Some(200);
        let node_blocks = in_named(&n.netns, || blocks(n)).unwrap_or_default();
        nodes.push(NodeStatus {
            name: n.name.clone(),
            netns: n.netns.clone(),
            ip: n.ip,
            ip6: n.ip6,
            blocks: node_blocks,
            routes,
            agent_pid: n.agent_pid,
            agent_healthy: healthy,
            conflist: n.conflist.clone(),
        });
    }
    let pods = state
        .pods
        .iter()
        .map(|p| PodStatus { name: p.name.clone(), node: p.node.clone(), netns: p.netns.clone(), ips: p.ips.clone() })
        .collect();
    let status = LabStatus {
        name: state.spec.name.clone(),
        mode: state.spec.mode,
        encap: state.spec.encap,
        store: state.spec.store,
        dataplane: state.spec.dataplane,
        nodes,
        pods,
        external: state.external.clone(),
        vnet_host: state.vnet_host.clone(),
    };
    Ok((state, status))
}

/// podnet's routes (its protocol number) in the namespace `netns`, both families.
pub(super) fn routes_of(netns: &str) -> Vec<RouteStatus> {
    in_named(netns, || {
        let Ok(mut nl) = podnet_dataplane::Netlink::open() else { return Vec::new() };
        let links: BTreeMap<u32, String> =
            nl.links().unwrap_or_default().into_iter().map(|l| (l.index, l.name)).collect();
        let mut out = Vec::new();
        for v4 in [true, false] {
            for r in nl.table_routes(v4).unwrap_or_default() {
                if r.protocol != PODNET_ROUTE_PROTOCOL {
                    continue;
                }
                let (via, dev) = match r.route.map(|r| r.target) {
                    Some(RouteTarget::Via { gateway, oif, .. }) => {
                        (gateway.to_string(), links.get(&oif).cloned().unwrap_or_default())
                    }
                    Some(RouteTarget::Blackhole) => ("blackhole".to_string(), String::new()),
                    _ => (String::new(), r.oif.and_then(|i| links.get(&i).cloned()).unwrap_or_default()),
                };
                out.push(RouteStatus { dst: r.dst.to_string(), via, dev });
            }
        }
        out
    })
    .unwrap_or_default()
}

/// podnetd's `/healthz` status inside a node (None when it does not answer).
pub(super) fn health(netns: &str, timeout: Duration) -> Option<u16> {
    let url = format!("http://{METRICS_ADDR}/healthz");
    in_named(netns, move || {
        let agent =
            ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().new_agent();
        agent.get(&url).call().ok().map(|r| r.status().as_u16())
    })
    .ok()
    .flatten()
}

/// One probe of `lab ping`.
#[derive(Debug, Clone, Serialize)]
pub struct PingPair {
    pub from: String,
    pub to: String,
    pub ip: IpAddr,
    pub ok: bool,
}

/// `lab ping`: every pod to every other pod's every address and to the external host.
#[derive(Debug, Clone, Serialize)]
pub struct PingReport {
    pub pairs: usize,
    pub failed: Vec<PingFailure>,
    #[serde(skip)]
    pub probes: Vec<PingPair>,
    /// Columns of the matrix: pods, then `external`.
    #[serde(skip)]
    pub targets: Vec<String>,
    #[serde(skip)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PingFailure {
    pub from: String,
    pub to: String,
    pub ip: IpAddr,
}

/// One ICMP echo from the namespace `from` to `ip` (the system's `ping`, run inside it).
fn ping_once(from: &File, ip: IpAddr, count: &str) -> bool {
    let mut cmd = crate::process::command_in(from.as_raw_fd(), "ping");
    cmd.args(["-n", "-q", &format!("-c{count}"), "-W2", &ip.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().is_ok_and(|s| s.success())
}

pub fn ping(name: &str) -> Result<PingReport, LabError> {
    let state = load(name)?;
    if !on_path("ping") {
        return Err(err("lab ping needs ping: install iputils-ping (scripts/deps)"));
    }
    let mut targets: Vec<(String, IpAddr)> =
        state.pods.iter().flat_map(|p| p.ips.iter().map(|ip| (p.name.clone(), *ip))).collect();
    targets.push(("external".into(), state.external.ip));
    if let Some(h) = &state.vnet_host {
        targets.push(("vnet-host".into(), h.ip));
    }
    if let Some(ip6) = state.external.ip6 {
        targets.push(("external".into(), ip6));
    }
    let files: Vec<File> = state.pods.iter().map(|p| open_ns(&p.netns)).collect::<Result<_, _>>()?;
    let mut jobs = Vec::new();
    for (i, p) in state.pods.iter().enumerate() {
        for (to, ip) in &targets {
            if *to != p.name {
                jobs.push((i, to.clone(), *ip));
            }
        }
    }
    let mut results = parallel(jobs.len(), |k| {
        let (i, _, ip) = &jobs[k];
        // A second try: the first packet to a new neighbour can be lost while it resolves.
        Ok(ping_once(&files[*i], *ip, "1") || ping_once(&files[*i], *ip, "2"))
    })?;
    // The kernel's neighbour (ARP/NDP) table is one for the whole machine, every namespace
    // included (gc_thresh3, 1024 entries by default), and entries younger than 5 s cannot be
    // evicted: a big lab pinging at full speed can fill it, and a pair then fails for want of an
    // entry, not of a route. Failed pairs get one more, unhurried, try once it has drained.
    if results.iter().any(|ok| !ok) && jobs.len() > 200 {
        std::thread::sleep(Duration::from_secs(6));
        for (k, (i, _, ip)) in jobs.iter().enumerate() {
            if !results[k] {
                results[k] = ping_once(&files[*i], *ip, "2");
            }
        }
    }
    let probes: Vec<PingPair> = jobs
        .into_iter()
        .zip(results)
        .map(|((i, to, ip), ok)| PingPair { from: state.pods[i].name.clone(), to, ip, ok })
        .collect();
    let failed = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| PingFailure { from: p.from.clone(), to: p.to.clone(), ip: p.ip })
        .collect();
    let mut columns: Vec<String> = state.pods.iter().map(|p| p.name.clone()).collect();
    columns.push("external".into());
    if state.vnet_host.is_some() {
        columns.push("vnet-host".into());
    }
    Ok(PingReport {
        pairs: probes.len(),
        failed,
        probes,
        targets: columns,
        sources: state.pods.iter().map(|p| p.name.clone()).collect(),
    })
}
