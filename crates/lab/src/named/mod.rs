//! A named lab that outlives the process that built it (`podnetctl lab up|status|ping|down`).
//! Every piece carries the lab's name: namespaces `pnlab.<name>.*`, files under
//! `/run/podnet/lab/<name>/`, and processes started with `PODNET_LAB=<name>` in their
//! environment. So `down` finds every piece again by that name alone (never by a program's name),
//! also after an `up` that failed half-way or was killed.

use crate::Netns;
use ipnet::IpNet;
use podnet_ipam::{addr, Reservation, Span};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod look;
mod up;

pub use look::{ping, status, LabStatus, NodeStatus, PingFailure, PingPair, PingReport, PodStatus, RouteStatus};
pub use up::up;

/// Where labs keep their state (tmpfs: a reboot takes labs and their state together).
pub const ROOT: &str = "/run/podnet/lab";
/// The environment variable that marks a lab's processes.
pub const TAG: &str = "PODNET_LAB";
/// podnetd's metrics and health address inside each node.
pub const METRICS_ADDR: &str = "127.0.0.1:9695";
const NETWORK: &str = "podnet";
const CONFLIST: &str = "net.d/10-podnet.conflist";
/// Hosts on a segment start at this host number (1 is the fabric's router).
const FIRST_HOST: usize = 10;
const HOSTS_PER_SEGMENT: usize = 240;
const MAX_SUBNETS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Blocks leased from the cluster store, routed by podnetd.
    Overlay,
    /// A node CIDR per node (kubenet), routed by the fabric as a cloud route table would.
    Range,
    /// The node NIC's secondary addresses (not built yet).
    Vnet,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Overlay => "overlay",
            Mode::Range => "range",
            Mode::Vnet => "vnet",
        }
    }
}

/// podnetd's `--encap` on every node: podnetd's own type.
pub use podnet_agent::desired::Encap;

/// The plugin's `dataplane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    Bridge,
    Routed,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Bridge => "bridge",
            Dataplane::Routed => "routed",
        }
    }
    fn reservation(self) -> Reservation {
        Reservation::for_dataplane(match self {
            Dataplane::Bridge => podnet_ipam::Dataplane::Bridge,
            Dataplane::Routed => podnet_ipam::Dataplane::Routed,
        })
    }
}

/// Where the nodes lease blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// One directory every node shares, polled by podnetd.
    Local,
    /// A real etcd the lab starts in its fabric.
    Etcd,
}

impl Store {
    pub fn as_str(self) -> &'static str {
        match self {
            Store::Local => "local",
            Store::Etcd => "etcd",
        }
    }
}

/// What `lab up` builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabSpec {
    pub name: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub mode: Mode,
    pub encap: Encap,
    pub dataplane: Dataplane,
    pub store: Store,
    pub subnets: usize,
    pub dual_stack: bool,
    /// The IPv4 pool (overlay: leased in blocks; range: cut into one node CIDR per node).
    pub pod_cidr: IpNet,
    /// The IPv6 pool with `--dual-stack`.
    pub pod_cidr6: IpNet,
    /// Prefix length of a block (overlay) or node CIDR (range), IPv4; IPv6 uses 96 more.
    pub block_size: u8,
    /// Where `podnet`, `podnet-ipam` and `podnetd` are.
    pub bin_dir: PathBuf,
}

impl LabSpec {
    /// The defaults of the contract, for a lab of this name.
    pub fn new(name: &str, bin_dir: PathBuf) -> LabSpec {
        LabSpec {
            name: name.into(),
            nodes: 3,
            pods_per_node: 2,
            mode: Mode::Overlay,
            encap: Encap::None,
            dataplane: Dataplane::Bridge,
            store: Store::Local,
            subnets: 1,
            dual_stack: false,
            pod_cidr: "10.244.0.0/16".parse().expect("literal"),
            pod_cidr6: "fd00:10:244::/56".parse().expect("literal"),
            block_size: 26,
            bin_dir,
        }
    }

    fn block_size6(&self) -> u8 {
        self.block_size + 96
    }
}

/// Why a lab command could not run; every one is exit code 2.
#[derive(Debug)]
pub struct LabError(pub String);

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(m: impl Into<String>) -> LabError {
    LabError(m.into())
}
fn io_err(what: &str) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |e| err(format!("{what}: {e}"))
}

/// A lab's name: it becomes part of namespace and file names.
pub fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "bad lab name {name:?}: use 1 to 16 lowercase letters, digits and dashes, not starting with a dash"
        )))
    }
}

/// The VNet subnet of `--mode vnet`: nodes, their pods and the VNet host are all on it.
pub const VNET_SUBNET: &str = "10.240.0.0/16";
/// The plain VNet host's address.
pub const VNET_HOST_INDEX: u128 = 5;

/// The fabric's segments: `192.168.<i+1>.0/24` (and `fd00:f:<i+1>::/64` dual-stack), or the VNet
/// subnet in vnet mode, then the external host's segment, outside every cluster CIDR.
fn segments(spec: &LabSpec) -> Vec<(IpNet, Option<IpNet>)> {
    let v6 = |s: String| spec.dual_stack.then(|| s.parse().expect("literal"));
    if spec.mode == Mode::Vnet {
        let ext = "203.0.113.0/24".parse().expect("literal");
        return vec![(VNET_SUBNET.parse().expect("literal"), None), (ext, None)];
    }
    let mut out: Vec<(IpNet, Option<IpNet>)> = (0..spec.subnets)
        .map(|i| (format!("192.168.{}.0/24", i + 1).parse().expect("literal"), v6(format!("fd00:f:{}::/64", i + 1))))
        .collect();
    out.push(("203.0.113.0/24".parse().expect("literal"), v6("2001:db8:e::/64".into())));
    out
}

/// Addresses one block (overlay) or node CIDR (range) of `len` in `pool` holds for pods.
fn capacity(pool: IpNet, len: u8, reservation: Reservation) -> u128 {
    Span::for_block(addr::nth_block(pool, len, 0), reservation).capacity()
}

/// Everything about a spec that can be refused before anything is built: names, numbers, CIDRs
/// and whether the pods fit (the allocator's own block arithmetic).
pub fn validate(spec: &LabSpec) -> Result<(), LabError> {
    check_name(&spec.name)?;
    if spec.mode == Mode::Vnet {
        return validate_vnet(spec);
    }
    if spec.subnets == 0 || spec.subnets > MAX_SUBNETS {
        return Err(err(format!("--subnets {} is out of range: 1 to {MAX_SUBNETS}", spec.subnets)));
    }
    let most = spec.subnets * HOSTS_PER_SEGMENT;
    if spec.nodes == 0 || spec.nodes > most {
        return Err(err(format!(
            "--nodes {} is out of range: 1 to {most} ({HOSTS_PER_SEGMENT} per subnet; add --subnets for more)",
            spec.nodes
        )));
    }
    if !spec.pod_cidr.addr().is_ipv4() || !spec.pod_cidr6.addr().is_ipv6() {
        return Err(err("--pod-cidr must be IPv4 (the IPv6 pool of --dual-stack is fd00:10:244::/56)"));
    }
    let fabric: [IpNet; 2] = ["192.168.0.0/20".parse().expect("literal"), "203.0.113.0/24".parse().expect("literal")];
    if let Some(f) =
        fabric.iter().find(|f| f.contains(&spec.pod_cidr.network()) || spec.pod_cidr.contains(&f.network()))
    {
        return Err(err(format!("--pod-cidr {} overlaps the lab's fabric {f}: pick another", spec.pod_cidr)));
    }
    if spec.block_size < spec.pod_cidr.prefix_len() || spec.block_size > 30 {
        return Err(err(format!(
            "--block-size {} does not fit --pod-cidr {}: use a prefix length from {} to 30",
            spec.block_size,
            spec.pod_cidr,
            spec.pod_cidr.prefix_len()
        )));
    }
    let mut pools = vec![(spec.pod_cidr, spec.block_size)];
    if spec.dual_stack {
        if spec.block_size6() < spec.pod_cidr6.prefix_len() {
            return Err(err(format!(
                "--block-size {} gives IPv6 blocks of /{}, larger than the IPv6 pool {}: use a longer prefix",
                spec.block_size,
                spec.block_size6(),
                spec.pod_cidr6
            )));
        }
        pools.push((spec.pod_cidr6, spec.block_size6()));
    }
    // A range pool keeps its gateway whatever the dataplane; blocks follow the dataplane.
    let reservation = match spec.mode {
        Mode::Range => Reservation::GatewayPerBlock,
        _ => spec.dataplane.reservation(),
    };
    for (pool, len) in pools {
        let per_block = capacity(pool, len, reservation);
        let blocks = addr::block_count(pool, len);
        let (nodes, pods) = (spec.nodes as u128, spec.pods_per_node as u128);
        let needed = match spec.mode {
            Mode::Range if pods > per_block => {
                return Err(err(format!(
                    "--pods-per-node {pods} does not fit a node CIDR of /{len}, which holds {per_block} pods: use a smaller --block-size"
                )))
            }
            Mode::Range => nodes,
            _ => nodes * pods.div_ceil(per_block),
        };
        if needed > blocks {
            return Err(err(format!(
                "{nodes} nodes with {pods} pods each need {needed} blocks of /{len} ({per_block} pods each), and {pool} has {blocks}: use a larger pod CIDR, a different --block-size, or fewer nodes or pods"
            )));
        }
    }
    Ok(())
}

/// `--mode vnet`: one VNet subnet; each node gets a /24 of it for its NIC's secondary addresses.
fn validate_vnet(spec: &LabSpec) -> Result<(), LabError> {
    if spec.subnets != 1 {
        return Err(err("--mode vnet puts every node on the one VNet subnet: leave out --subnets"));
    }
    if spec.dual_stack {
        return Err(err("--mode vnet with --dual-stack is not built in the lab yet: leave out --dual-stack"));
    }
    if spec.dataplane != Dataplane::Routed {
        return Err(err(
            "--mode vnet needs --dataplane routed: vnet pods are /32s on the VNet subnet that their node answers ARP for",
        ));
    }
    if spec.nodes == 0 || spec.nodes > HOSTS_PER_SEGMENT {
        return Err(err(format!("--nodes {} is out of range: 1 to {HOSTS_PER_SEGMENT}", spec.nodes)));
    }
    if spec.pods_per_node > 250 {
        return Err(err(format!(
            "--pods-per-node {} is more than the 250 secondary addresses the lab gives a node's NIC",
            spec.pods_per_node
        )));
    }
    Ok(())
}

/// A node's secondary addresses in vnet mode: `10.240.<i+1>.1` and up, two more than its pods.
pub fn vnet_secondaries(node: usize, pods: usize) -> Vec<IpAddr> {
    (1..=pods + 2).map(|k| IpAddr::from([10, 240, node as u8 + 1, k as u8])).collect()
}

/// A program `up` needs, found on PATH.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}
fn ns_prefix(name: &str) -> String {
    format!("pnlab.{name}.")
}
fn ns_name(lab: &str, what: &str) -> String {
    format!("{}{what}", ns_prefix(lab))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ip: IpAddr,
    pub ip6: Option<IpAddr>,
    pub subnet: usize,
    pub conflist: PathBuf,
    pub agent_pid: u32,
    pub agent_log: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub netns: String,
    pub ip: IpAddr,
    pub ip6: Option<IpAddr>,
}

/// What `up` built: `lab.json` in the lab's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub spec: LabSpec,
    pub created_at: String,
    pub fabric_netns: String,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    pub external: HostState,
    /// The plain host on the VNet subnet (vnet mode).
    #[serde(default)]
    pub vnet_host: Option<HostState>,
    pub etcd_pid: Option<u32>,
    pub timings: Timings,
}

/// Where `up`'s time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Fabric, nodes, external host and pod namespaces with their links.
    pub namespaces_ms: u64,
    /// etcd started and serving (0 on the local store).
    pub store_ms: u64,
    /// Every podnetd started and healthy.
    pub agents_ms: u64,
    /// Every pod's ADD.
    pub pods_ms: u64,
    /// Every node holding a route to every block it can reach.
    pub routes_ms: u64,
    pub total_ms: u64,
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Read a lab's state.
pub fn load(name: &str) -> Result<LabState, LabError> {
    check_name(name)?;
    let path = lab_dir(name).join("lab.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(format!("no lab named {name:?} is up (podnetctl lab up --name {name})")))
        }
        Err(e) => return Err(err(format!("reading {}: {e}", path.display()))),
    };
    serde_json::from_slice(&text).map_err(|e| {
        err(format!(
            "{} is not a lab's state ({e}); podnetctl lab down --name {name} removes what is left",
            path.display()
        ))
    })
}

/// Write `value` to `path` atomically (temp file, fsync, rename).
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), LabError> {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(value).map_err(|e| err(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(io_err("writing the lab's state"))?;
    std::io::Write::write_all(&mut f, &body).map_err(io_err("writing the lab's state"))?;
    f.sync_all().map_err(io_err("writing the lab's state"))?;
    std::fs::rename(&tmp, path).map_err(io_err("writing the lab's state"))
}

/// PIDs of the processes a lab started (those whose environment holds `PODNET_LAB=<name>`).
pub fn lab_processes(name: &str) -> Vec<u32> {
    let want = format!("{TAG}={name}");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        })
        .collect();
    out.sort();
    out
}

/// Whether `pid` is running and was started by the lab `name` (not a reused PID).
pub fn is_lab_process(pid: u32, name: &str) -> bool {
    let want = format!("{TAG}={name}");
    running(pid)
        && std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
}

/// Alive and not a zombie (a zombie has left its namespaces already).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Whether anything of the lab `name` is on the machine.
pub fn exists(name: &str) -> bool {
    lab_dir(name).exists() || !Netns::named_with_prefix(&ns_prefix(name)).is_empty() || !lab_processes(name).is_empty()
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub name: String,
    pub processes: usize,
    pub namespaces: usize,
    pub files: bool,
}

/// Remove everything of the lab `name`: its processes (SIGKILL, by PID, only those carrying its
/// tag), then its namespaces (which takes every link and route in them), then its files. Fine to
/// run twice, or on what a failed or killed `up` left.
pub fn down(name: &str) -> Result<DownReport, LabError> {
    check_name(name)?;
    let mut report = DownReport { name: name.into(), ..Default::default() };
    let pids = lab_processes(name);
    for &pid in &pids {
        // SAFETY: a plain kill(2) on a PID just checked to carry the lab's tag.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    // They leave their namespaces as they exit; a namespace removed before would linger.
    let end = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| running(*p)) && Instant::now() < end {
        // Our own children (a failed `up` cleaning up) are reaped here; others by init.
        // SAFETY: waitpid with WNOHANG on any child of ours.
        unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
        std::thread::sleep(Duration::from_millis(20));
    }
    report.processes = pids.len();
    for ns in Netns::named_with_prefix(&ns_prefix(name)) {
        Netns::remove(&ns).map_err(io_err(&format!("removing the namespace {ns}")))?;
        report.namespaces += 1;
    }
    let dir = lab_dir(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&format!("removing {}", dir.display())))?;
        report.files = true;
    }
    // The last lab down leaves no empty /run/podnet/lab behind (another lab's files keep it).
    let root = Path::new(ROOT);
    if std::fs::remove_dir(root).is_ok() {
        if let Some(parent) = root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(report)
}

/// Run `f(0..n)` on a few threads; the results in order, or the first error.
pub(crate) fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> Result<T, LabError> + Sync) -> Result<Vec<T>, LabError> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T, LabError>>>> = Mutex::new((0..n).map(|_| None).collect());
    let workers = n.clamp(1, 8);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let r = f(i);
                results.lock().expect("no worker panics")[i] = Some(r);
            });
        }
    });
    results.into_inner().expect("no worker panics").into_iter().map(|r| r.expect("every index ran")).collect()
}

pub(crate) fn wait_until(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    crate::ClusterNode::wait_until(limit, cond)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LabSpec {
        LabSpec::new("t", PathBuf::from("/nonexistent"))
    }

    #[test]
    fn the_defaults_are_valid() {
        validate(&spec()).unwrap();
        let mut s = spec();
        s.dual_stack = true;
        s.mode = Mode::Range;
        s.block_size = 24;
        validate(&s).unwrap();
    }

    #[test]
    fn bad_specs_are_refused_with_the_fix() {
        type Change = Box<dyn Fn(&mut LabSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.nodes = 0), "--nodes 0 is out of range"),
            (Box::new(|s| s.mode = Mode::Vnet), "--mode vnet needs --dataplane routed"),
            (Box::new(|s| s.name = "Bad_Name".into()), "bad lab name"),
            (Box::new(|s| s.subnets = 9), "--subnets 9"),
            (Box::new(|s| s.pod_cidr = "192.168.0.0/16".parse().unwrap()), "overlaps the lab's fabric"),
            (Box::new(|s| s.pods_per_node = 100_000), "need 4920 blocks of /26 (61 pods each)"),
            (Box::new(|s| s.block_size = 31), "--block-size 31"),
        ];
        for (change, want) in cases {
            let mut s = spec();
            change(&mut s);
            let e = validate(&s).unwrap_err().0;
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }

    #[test]
    fn capacity_follows_the_allocator_s_reservations() {
        // 1024 /26 blocks in a /16; on a bridge a block keeps network, gateway and broadcast.
        let mut s = spec();
        s.nodes = 1024;
        s.subnets = 5;
        s.pods_per_node = 61;
        validate(&s).unwrap();
        s.pods_per_node = 62;
        assert!(validate(&s).unwrap_err().0.contains("need 2048 blocks"));
        s.dataplane = Dataplane::Routed;
        s.pods_per_node = 64;
        validate(&s).unwrap();
        // range: one node CIDR per node, 253 pods in a /24.
        let mut r = spec();
        r.mode = Mode::Range;
        r.block_size = 24;
        r.pods_per_node = 254;
        assert!(validate(&r).unwrap_err().0.contains("holds 253 pods"));
    }
}
