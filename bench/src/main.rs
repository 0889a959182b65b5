//! podnet-bench: the same harness drives podnet and Debian's reference plugins (bridge + host-local)
//! in one run, inside network namespaces it creates and removes.
//!
//! For each plugin set and round: ADD then DEL latency over N sequential pods (p50/p99), churn
//! (ADD+DEL cycles per second with W parallel workers), peak RSS of one plugin process, and a leak
//! check (veths and IPAM records left). Medians over rounds are printed as a Markdown table.

use podnet_bench::{median, percentile};
use podnet_lab::{link, Etcd, Invocation, Netns};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Args {
    pods: usize,
    churn_cycles: usize,
    workers: usize,
    rounds: usize,
    podnet_dir: PathBuf,
    reference_dir: PathBuf,
    /// Earlier podnet binaries to run side by side with these (before/after a change).
    baseline_dir: Option<PathBuf>,
    json_out: Option<PathBuf>,
    /// Keep the state and log directory for inspection.
    keep: bool,
    /// Pause before each suite (the kernel dismantles deleted namespaces in the background).
    settle_seconds: u64,
    /// Run only the suites whose label starts with one of these (`|`-separated).
    only: Option<String>,
}

fn parse_args() -> Args {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let mut a = Args {
        pods: 200,
        churn_cycles: 400,
        workers: 8,
        rounds: 3,
        podnet_dir: exe_dir,
        reference_dir: "/usr/lib/cni".into(),
        baseline_dir: None,
        json_out: None,
        keep: false,
        settle_seconds: 5,
        only: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = || argv.get(i + 1).cloned().unwrap_or_else(|| die(&format!("{} needs a value", argv[i])));
        match argv[i].as_str() {
            "--pods" => a.pods = val().parse().unwrap_or_else(|_| die("--pods takes a number")),
            "--churn" => a.churn_cycles = val().parse().unwrap_or_else(|_| die("--churn takes a number")),
            "--workers" => a.workers = val().parse().unwrap_or_else(|_| die("--workers takes a number")),
            "--rounds" => a.rounds = val().parse().unwrap_or_else(|_| die("--rounds takes a number")),
            "--podnet-dir" => a.podnet_dir = val().into(),
            "--reference-dir" => a.reference_dir = val().into(),
            "--baseline-dir" => a.baseline_dir = Some(val().into()),
            "--json" => a.json_out = Some(val().into()),
            "--only" => a.only = Some(val()),
            "--settle" => a.settle_seconds = val().parse().unwrap_or_else(|_| die("--settle takes seconds")),
            "--keep" => {
                a.keep = true;
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                println!("podnet-bench [--pods 200] [--churn 400] [--workers 8] [--rounds 3] [--podnet-dir DIR] [--reference-dir /usr/lib/cni] [--baseline-dir DIR] [--only LABEL-PREFIX] [--settle 5] [--json FILE] [--keep]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
        i += 2;
    }
    a
}

/// Every namespace of this run is named `pnb<pid>-…`: exiting skips their drops, so they go
/// by name here (and a run killed outright leaves them to the next run's sweep in `main`).
const NS_PREFIX: &str = "pnb";

fn die(msg: &str) -> ! {
    eprintln!("podnet-bench: {msg}");
    Netns::remove_of_process(NS_PREFIX, std::process::id());
    std::process::exit(2)
}

/// A namespace the bench made (removed on drop); the bench dies if it cannot make one.
fn netns(name: String) -> Netns {
    Netns::create(&name).unwrap_or_else(|e| die(&format!("creating namespace {name}: {e} (run as root)")))
}

/// A node: a namespace whose uplink is a veth pair with both ends inside (an address to reach and
/// a default route, as on a real node; nothing leaves the namespace).
fn node(name: String) -> Netns {
    let ns = netns(name);
    let setup = || -> std::io::Result<()> {
        link::veth(&ns, "up0", None, &ns, "up0p", 1500)?;
        link::set_up(&ns, "up0")?;
        link::add_address(&ns, "up0", "198.18.0.1/24".parse().expect("literal"))?;
        link::add_route(&ns, "0.0.0.0/0".parse().expect("literal"), Some("198.18.0.2".parse().expect("literal")), "up0")
    };
    setup().unwrap_or_else(|e| die(&format!("setting up the node's uplink: {e}")));
    ns
}

#[derive(Clone)]
struct Suite {
    label: &'static str,
    bin: PathBuf,
    conf: Value,
    /// Where the IPAM keeps one file per address, and which file names are bookkeeping.
    ipam_dir: PathBuf,
    /// Runs an etcd in the node namespace for the round (the podnet etcd-store suite).
    etcd: bool,
    /// Runs a host agent in the node namespace serving the NIC's secondaries (the vnet suite).
    host_agent: bool,
}

/// The vnet suite's VNet: the bench node's uplink subnet, and 1,024 secondaries on its NIC.
const VNET_CIDR: &str = "198.18.0.0/16";
const HOST_AGENT: &str = "127.0.0.1:8089";

fn vnet_document() -> String {
    let mut addrs = vec![("198.18.0.1".to_string(), true)];
    addrs.extend((0..1024u32).map(|k| (format!("198.18.{}.{}", 4 + k / 256, k % 256), false)));
    podnet_lab::hostagent::document(&[("000d3a000001", true, VNET_CIDR, addrs)])
}

struct Call {
    ok: bool,
    elapsed: Duration,
    max_rss_kib: i64,
    stdout: String,
}

/// Run one plugin invocation in `node`'s namespace; timing covers spawn to exit, as a runtime sees it.
fn call(node: &Path, bin: &Path, command: &str, cid: &str, pod: Option<&Path>, conf: &[u8], cni_path: &str) -> Call {
    let env = [("CNI_CONTAINERID", cid), ("CNI_IFNAME", "eth0")];
    let invocation = Invocation {
        plugin: bin,
        command,
        node_netns: node,
        pod_netns: pod,
        env: &env,
        cni_path,
        stdin: conf,
        mount_ns: None,
    };
    let started = Instant::now();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also reports peak RSS
    let mut child = invocation.spawn().unwrap_or_else(|e| die(&format!("running {}: {e}", bin.display())));
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 rather than Child::wait: it also returns the child's peak RSS.
    let pid = child.id() as libc::pid_t;
    // SAFETY: our own unreaped child.
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let elapsed = started.elapsed();
    let mut stdout = String::new();
    use std::io::Read;
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).ok();
    }
    Call { ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, elapsed, max_rss_kib: ru.ru_maxrss, stdout }
}

#[derive(Default, Clone)]
struct RoundResult {
    version_p50: f64,
    /// podnet-ipam alone: sequential allocations per second (podnet suites).
    allocs_per_s: f64,
    /// The round's first ADD: a fresh node (the bridge is made, the first block leased).
    first_add: f64,
    add_p50: f64,
    add_p99: f64,
    del_p50: f64,
    del_p99: f64,
    churn_per_s: f64,
    peak_rss_kib: i64,
    failures: usize,
    leaked_veths: usize,
    leaked_addrs: usize,
}

fn run_round(s: &Suite, a: &Args, round: usize, tag: &str) -> RoundResult {
    let node = node(format!("{NS_PREFIX}{}-{tag}-node-{round}", std::process::id()));
    let node_fd = node.path();
    let _etcd = s.etcd.then(|| Etcd::start(&node).unwrap_or_else(|e| die(&e.to_string())));
    let _agent = s.host_agent.then(|| {
        let answer = podnet_lab::hostagent::Answer::Document(vnet_document());
        podnet_lab::hostagent::HostAgent::start(&node, HOST_AGENT.parse().expect("literal"), answer)
            .unwrap_or_else(|e| die(&e.to_string()))
    });
    let mut conf = s.conf.clone();
    let mut ipam_dir = s.ipam_dir.clone();
    if s.etcd {
        let data = PathBuf::from(s.conf["dataDir"].as_str().unwrap_or("/tmp")).join(format!("round-{round}"));
        ipam_dir = data.join(format!("{}/ipam/addrs", s.conf["name"].as_str().unwrap_or_default()));
        conf["dataDir"] = json!(data);
    }
    let s = &Suite { conf, ipam_dir, ..s.clone() };
    let conf = serde_json::to_vec(&s.conf).unwrap();
    let cni_path = format!("{}:{}", a.podnet_dir.display(), a.reference_dir.display());
    let pods: Vec<Netns> = (0..a.pods.max(a.workers))
        .map(|i| netns(format!("{NS_PREFIX}{}-{tag}-{round}-{i}", std::process::id())))
        .collect();
    let mut r = RoundResult::default();

    // VERSION: a plugin's fixed cost (exec, start-up, exit), the floor under every other verb.
    let mut versions: Vec<f64> = (0..50)
        .map(|_| {
            call(&node_fd, &s.bin, "VERSION", "", None, br#"{"cniVersion":"1.0.0"}"#, &cni_path).elapsed.as_secs_f64()
                * 1000.0
        })
        .collect();
    versions.sort_by(|a, b| a.partial_cmp(b).unwrap());
    r.version_p50 = percentile(&versions, 0.5);

    let mut adds = Vec::new();
    for (i, p) in pods.iter().enumerate().take(a.pods) {
        let c = call(&node_fd, &s.bin, "ADD", &format!("bench-{i}"), Some(&p.path()), &conf, &cni_path);
        if !c.ok {
            r.failures += 1;
            eprintln!("{}: ADD failed: {}", s.label, c.stdout.trim());
        }
        r.peak_rss_kib = r.peak_rss_kib.max(c.max_rss_kib);
        if i == 0 {
            r.first_add = c.elapsed.as_secs_f64() * 1000.0;
        }
        adds.push(c.elapsed.as_secs_f64() * 1000.0);
    }
    let mut dels = Vec::new();
    for (i, p) in pods.iter().enumerate().take(a.pods) {
        let c = call(&node_fd, &s.bin, "DEL", &format!("bench-{i}"), Some(&p.path()), &conf, &cni_path);
        if !c.ok {
            r.failures += 1;
        }
        r.peak_rss_kib = r.peak_rss_kib.max(c.max_rss_kib);
        dels.push(c.elapsed.as_secs_f64() * 1000.0);
    }
    adds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    dels.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (r.add_p50, r.add_p99, r.del_p50, r.del_p99) =
        (percentile(&adds, 0.5), percentile(&adds, 0.99), percentile(&dels, 0.5), percentile(&dels, 0.99));

    // IPAM alone: podnet-ipam allocating for 200 handles in a row, as other plugins would exec it.
    // (Not for a vnet pool: podnet-ipam exec'd keeps a gateway per block, which vnet refuses.)
    if s.bin.file_name().is_some_and(|n| n == "podnet") && !s.host_agent {
        let ipam_bin = s.bin.with_file_name("podnet-ipam");
        let mut ipam_conf = s.conf.clone();
        ipam_conf["name"] = json!(format!("{}-ipam", s.conf["name"].as_str().unwrap_or("bench")));
        let ipam_conf = serde_json::to_vec(&ipam_conf).unwrap();
        let n = 200;
        let started = Instant::now();
        for i in 0..n {
            if !call(&node_fd, &ipam_bin, "ADD", &format!("ipam-{i}"), Some(&pods[0].path()), &ipam_conf, &cni_path).ok
            {
                r.failures += 1;
            }
        }
        r.allocs_per_s = n as f64 / started.elapsed().as_secs_f64();
        for i in 0..n {
            call(&node_fd, &ipam_bin, "DEL", &format!("ipam-{i}"), Some(&pods[0].path()), &ipam_conf, &cni_path);
        }
    }

    // Churn: each worker cycles ADD+DEL over its own pods until the shared count is reached.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fails = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..a.workers {
            let (node_fd, conf, cni_path, pods, next, fails, s) = (&node_fd, &conf, &cni_path, &pods, &next, &fails, s);
            scope.spawn(move || loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= a.churn_cycles {
                    break;
                }
                // Each worker reuses its own pod namespace: its ADD+DEL cycles are sequential.
                let p = &pods[w];
                let cid = format!("churn-{n}");
                for verb in ["ADD", "DEL"] {
                    if !call(node_fd, &s.bin, verb, &cid, Some(&p.path()), conf, cni_path).ok {
                        fails.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    r.churn_per_s = a.churn_cycles as f64 / started.elapsed().as_secs_f64();
    r.failures += fails.load(std::sync::atomic::Ordering::SeqCst);

    // Leak check: veths left in the node, address records left in the IPAM store.
    let links = link::with_netlink(&node, |nl| nl.links()).unwrap_or_default();
    r.leaked_veths = links.iter().filter(|l| l.kind.as_deref() == Some("veth") && !l.name.starts_with("up0")).count();
    r.leaked_addrs = std::fs::read_dir(&s.ipam_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().chars().next().is_some_and(|c| c.is_ascii_digit()))
                .count()
        })
        .unwrap_or(0);
    r
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
}

fn main() {
    Netns::remove_stale(NS_PREFIX);
    let a = parse_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let podnet_conf = |dataplane: &str, net: &str| {
        json!({
            "cniVersion": "1.0.0", "name": net, "type": "podnet", "dataplane": dataplane,
            "dataDir": d.join("podnet"), "logFile": d.join(format!("{net}.log")),
            "ipam": {"type": "podnet-ipam", "node": "bench", "pools": [{"name": "bench", "cidr": "10.98.0.0/16", "blockSize": 24}]}
        })
    };
    let mut suites = vec![
        Suite {
            label: "podnet (bridge)",
            bin: a.podnet_dir.join("podnet"),
            conf: podnet_conf("bridge", "bench-bridge"),
            ipam_dir: d.join("podnet/bench-bridge/ipam/addrs"),
            etcd: false,
            host_agent: false,
        },
        Suite {
            label: "podnet (routed)",
            bin: a.podnet_dir.join("podnet"),
            conf: podnet_conf("routed", "bench-routed"),
            ipam_dir: d.join("podnet/bench-routed/ipam/addrs"),
            etcd: false,
            host_agent: false,
        },
        Suite {
            label: "reference bridge + host-local",
            bin: a.reference_dir.join("bridge"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-ref", "type": "bridge", "bridge": "cni-ref0", "isGateway": true,
                         "ipMasq": false, "mtu": 1500,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.97.0.0/16"}]], "dataDir": d.join("host-local")}}),
            ipam_dir: d.join("host-local/bench-ref"),
            etcd: false,
            host_agent: false,
        },
        Suite {
            label: "podnet (bridge, etcd store)",
            bin: a.podnet_dir.join("podnet"),
            conf: {
                let mut c = podnet_conf("bridge", "bench-etcd");
                c["logLevel"] = json!("debug");
                c["ipam"]["store"] = json!({"type": "etcd", "endpoints": ["http://127.0.0.1:2379"], "timeoutMs": 5000});
                c
            },
            // run_round gives each round a fresh data dir, as each round gets a fresh etcd.
            ipam_dir: PathBuf::new(),
            etcd: true,
            host_agent: false,
        },
        Suite {
            label: "podnet (routed, vnet pool)",
            bin: a.podnet_dir.join("podnet"),
            conf: {
                let mut c = podnet_conf("routed", "bench-vnet");
                c["ipam"]["pools"] = json!([{"name": "vnet", "cidr": VNET_CIDR, "source": "vnet",
                    "inventoryUrl": format!("http://{HOST_AGENT}/machine/plugins?comp=nmagent&type=getinterfaceinfov1")}]);
                c
            },
            ipam_dir: d.join("podnet/bench-vnet/ipam/addrs"),
            etcd: false,
            host_agent: true,
        },
    ];
    if let Some(before) = &a.baseline_dir {
        for dataplane in ["bridge", "routed"] {
            let net = format!("bench-{dataplane}-before");
            suites.push(Suite {
                label: if dataplane == "bridge" {
                    "podnet (bridge), baseline binaries"
                } else {
                    "podnet (routed), baseline binaries"
                },
                bin: before.join("podnet"),
                conf: podnet_conf(dataplane, &net),
                ipam_dir: d.join(format!("podnet/{net}/ipam/addrs")),
                etcd: false,
                host_agent: false,
            });
        }
    }
    if let Some(only) = &a.only {
        suites.retain(|s| only.split('|').any(|prefix| s.label.starts_with(prefix)));
    }
    for s in &suites {
        if !s.bin.is_file() {
            die(&format!(
                "{} not found; build podnet (cargo build --release) and install containernetworking-plugins",
                s.bin.display()
            ));
        }
    }
    eprintln!(
        "podnet-bench: {} pods sequential, {} churn cycles with {} workers, {} rounds",
        a.pods, a.churn_cycles, a.workers, a.rounds
    );
    let mut per_suite: Vec<Vec<RoundResult>> = vec![Vec::new(); suites.len()];
    for round in 0..a.rounds {
        // Interleave suites within each round, in a rotating order, so machine noise hits all of
        // them alike; and let the kernel finish dismantling the last suite's namespaces (it
        // does that in the background, seconds after they are deleted) before the next starts.
        for k in 0..suites.len() {
            let i = (k + round) % suites.len();
            let s = &suites[i];
            std::thread::sleep(Duration::from_secs(a.settle_seconds));
            let r = run_round(s, &a, round, &i.to_string());
            eprintln!(
                "round {round} {}: VERSION p50 {:.2} ms, ADD p50 {:.2} ms, DEL p50 {:.2} ms, churn {:.0}/s",
                s.label, r.version_p50, r.add_p50, r.del_p50, r.churn_per_s
            );
            per_suite[i].push(r);
        }
    }
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "Machine: {}; date {date}; {} sequential pods, churn {} ADD+DEL cycles with {} workers; median of {} rounds.\n",
        machine(),
        a.pods,
        a.churn_cycles,
        a.workers,
        a.rounds
    );
    println!("| plugin | VERSION p50 | first ADD | ADD p50 | ADD p99 | DEL p50 | DEL p99 | churn (pods/s) | peak RSS | failures | leaked veths | leaked addresses |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json_rows = Vec::new();
    for (s, rs) in suites.iter().zip(&per_suite) {
        let m = |f: fn(&RoundResult) -> f64| median(rs.iter().map(f).collect());
        let row = RoundResult {
            version_p50: m(|r| r.version_p50),
            allocs_per_s: m(|r| r.allocs_per_s),
            first_add: m(|r| r.first_add),
            add_p50: m(|r| r.add_p50),
            add_p99: m(|r| r.add_p99),
            del_p50: m(|r| r.del_p50),
            del_p99: m(|r| r.del_p99),
            churn_per_s: m(|r| r.churn_per_s),
            peak_rss_kib: rs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
            failures: rs.iter().map(|r| r.failures).sum(),
            leaked_veths: rs.iter().map(|r| r.leaked_veths).sum(),
            leaked_addrs: rs.iter().map(|r| r.leaked_addrs).sum(),
        };
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} | {:.1} MiB | {} | {} | {} |",
            s.label, row.version_p50, row.first_add, row.add_p50, row.add_p99, row.del_p50, row.del_p99, row.churn_per_s, row.peak_rss_kib as f64 / 1024.0, row.failures, row.leaked_veths, row.leaked_addrs
        );
        json_rows.push(json!({"plugin": s.label, "versionP50Ms": row.version_p50, "firstAddMs": row.first_add, "addP50Ms": row.add_p50, "addP99Ms": row.add_p99, "delP50Ms": row.del_p50, "delP99Ms": row.del_p99,
            "churnPodsPerS": row.churn_per_s, "peakRssKiB": row.peak_rss_kib, "failures": row.failures, "leakedVeths": row.leaked_veths, "leakedAddresses": row.leaked_addrs}));
    }
    // Stores: local files against etcd, and how often an ADD talks to etcd.
    let (mut adds, mut requests, mut leasing) = (0usize, 0usize, 0usize);
    if let Ok(log) = std::fs::read_to_string(d.join("bench-etcd.log")) {
        for n in log
            .lines()
            .filter_map(|l| l.split("cluster_requests=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        {
            adds += 1;
            requests += n;
            leasing += usize::from(n > 0);
        }
    }
    println!("\n| store | ADD p50 | podnet-ipam allocations/s | etcd requests per ADD | ADDs that leased a block |");
    println!("|---|---|---|---|---|");
    for (s, rs) in suites
        .iter()
        .zip(&per_suite)
        .filter(|(s, _)| s.label.starts_with("podnet (bridge") && !s.label.contains("baseline"))
    {
        let m = |f: fn(&RoundResult) -> f64| median(rs.iter().map(f).collect());
        let (req, leased) = if s.etcd {
            (format!("{:.3} ({requests} in {adds})", requests as f64 / adds.max(1) as f64), leasing.to_string())
        } else {
            ("0 (local files)".to_string(), "-".to_string())
        };
        let store = if s.etcd { "etcd" } else { "local" };
        println!("| {store} | {:.2} ms | {:.0} | {req} | {leased} |", m(|r| r.add_p50), m(|r| r.allocs_per_s));
    }
    let size = |p: PathBuf| {
        std::fs::metadata(&p)
            .map(|m| format!("{} {:.1} MiB", p.file_name().unwrap().to_string_lossy(), m.len() as f64 / 1048576.0))
            .unwrap_or_default()
    };
    let sizes: Vec<String> =
        ["podnet", "podnet-ipam", "podnetctl"].iter().map(|b| size(a.podnet_dir.join(b))).collect();
    let ref_sizes: Vec<String> = ["bridge", "host-local"].iter().map(|b| size(a.reference_dir.join(b))).collect();
    println!("\nBinary sizes: {}; reference: {}.", sizes.join(", "), ref_sizes.join(", "));
    let rounds_of = |label: &str| suites.iter().position(|s| s.label == label).map(|i| &per_suite[i]);
    if let (Some(ours), Some(reference)) = (rounds_of("podnet (bridge)"), rounds_of("reference bridge + host-local")) {
        let m = |rs: &Vec<RoundResult>| median(rs.iter().map(|r| r.add_p50).collect());
        let per_round: Vec<String> =
            ours.iter().zip(reference).map(|(o, r)| format!("{:.2}", o.add_p50 / r.add_p50)).collect();
        println!(
            "\npodnet (bridge) ADD p50 is {:.2} of the reference bridge + host-local's ({:.1}x faster; target: at most 0.25); per round: {}.",
            m(ours) / m(reference),
            m(reference) / m(ours),
            per_round.join(", ")
        );
    }
    if let Some(p) = &a.json_out {
        let v = json!({"machine": machine(), "date": date, "binarySizes": sizes, "referenceSizes": ref_sizes, "pods": a.pods, "churnCycles": a.churn_cycles, "workers": a.workers, "rounds": a.rounds, "results": json_rows});
        std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).expect("writing --json");
    }
    let leaks: usize = per_suite.iter().flatten().map(|r| r.leaked_veths + r.leaked_addrs + r.failures).sum();
    if a.keep {
        eprintln!("state and logs kept in {}", dir.keep().display());
    } else {
        drop(dir); // process::exit skips destructors
    }
    std::process::exit(if leaks == 0 { 0 } else { 1 });
}
