//! podnet-lease-bench: N new nodes each ADD one pod at the same moment through `podnet-ipam`,
//! so each must lease its first block from one real etcd while the others do. Reports etcd
//! requests per lease (from etcd's own metrics), ADD p50/p99 and failures, for podnet's binaries
//! and, with `--baseline-dir`, earlier ones side by side.

use podnet_lab::{Etcd, Invocation, Netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Every namespace of this run is named `pnlb-<pid>-…`: exiting skips their drops, so they go
/// by name here (and a run killed outright leaves them to the next run's sweep in `main`).
const NS_PREFIX: &str = "pnlb-";

fn die(msg: &str) -> ! {
    eprintln!("podnet-lease-bench: {msg}");
    Netns::remove_of_process(NS_PREFIX, std::process::id());
    std::process::exit(2)
}

/// etcd's count of KV requests (Range and Txn).
fn kv_requests(etcd: &Etcd, ns: &Netns) -> u64 {
    etcd.kv_requests(ns).unwrap_or_else(|e| die(&format!("reading etcd metrics: {e}")))
}

struct Run {
    per_lease: f64,
    p50: f64,
    p99: f64,
    failures: usize,
    try_again: usize,
}

fn run(bin_dir: &Path, nodes: usize, tag: &str) -> Run {
    let ns = Netns::create(&format!("{NS_PREFIX}{}-{tag}-{nodes}", std::process::id()))
        .unwrap_or_else(|e| die(&e.to_string()));
    let pod = Netns::create(&format!("{NS_PREFIX}{}-{tag}-{nodes}-p", std::process::id()))
        .unwrap_or_else(|e| die(&e.to_string()));
    let etcd = Etcd::start(&ns).unwrap_or_else(|e| die(&e.to_string()));
    let dir = tempfile::tempdir().expect("tempdir");
    let confs: Vec<Vec<u8>> = (0..nodes)
        .map(|i| {
            serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "scale", "ipam": {"type": "podnet-ipam",
                "node": format!("node-{i}"), "dataDir": dir.path().join(format!("n{i}")),
                "store": {"type": "etcd", "endpoints": [etcd.url()]},
                "pools": [{"name": "pods", "cidr": "10.72.0.0/16", "blockSize": 26}]}}))
            .expect("json")
        })
        .collect();
    let plugin = bin_dir.join("podnet-ipam");
    let before = kv_requests(&etcd, &ns);
    let node_ns = ns.path();
    let pod_ns = pod.path();
    let cni_path = bin_dir.display().to_string();
    // Every process starts at once; each thread times its own from spawn to exit.
    let results: Vec<(bool, u64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = confs
            .iter()
            .map(|conf| {
                let (plugin, node_ns, pod_ns, cni_path) = (&plugin, &node_ns, &pod_ns, &cni_path);
                s.spawn(move || {
                    let env = [("CNI_CONTAINERID", "first"), ("CNI_IFNAME", "eth0")];
                    let call = Invocation {
                        plugin,
                        command: "ADD",
                        node_netns: node_ns,
                        pod_netns: Some(pod_ns),
                        env: &env,
                        cni_path,
                        stdin: conf,
                        mount_ns: None,
                    };
                    let started = Instant::now();
                    let out = call.run().unwrap_or_else(|e| die(&format!("running {}: {e}", plugin.display())));
                    (out.ok, out.code(), started.elapsed().as_secs_f64() * 1000.0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a call thread")).collect()
    });
    let requests = kv_requests(&etcd, &ns) - before;
    drop(etcd);
    let mut times: Vec<f64> = results.iter().map(|r| r.2).collect();
    times.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    Run {
        per_lease: requests as f64 / nodes as f64,
        p50: at(0.5),
        p99: at(0.99),
        failures: results.iter().filter(|r| !r.0).count(),
        try_again: results.iter().filter(|r| !r.0 && r.1 == 11).count(),
    }
}

fn main() {
    Netns::remove_stale(NS_PREFIX);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let (mut podnet_dir, mut baseline, mut counts) = (exe_dir, None::<PathBuf>, vec![10usize, 50, 100, 200]);
    let mut i = 0;
    while i < argv.len() {
        let val = || argv.get(i + 1).cloned().unwrap_or_else(|| die(&format!("{} needs a value", argv[i])));
        match argv[i].as_str() {
            "--podnet-dir" => podnet_dir = val().into(),
            "--baseline-dir" => baseline = Some(val().into()),
            "--nodes" => {
                counts = val().split(',').map(|n| n.parse().unwrap_or_else(|_| die("--nodes takes numbers"))).collect()
            }
            _ => die("usage: podnet-lease-bench [--podnet-dir DIR] [--baseline-dir DIR] [--nodes 10,50,100,200]"),
        }
        i += 2;
    }
    let mut sets = vec![("podnet", podnet_dir)];
    if let Some(b) = baseline {
        sets.push(("baseline binaries", b));
    }
    println!(
        "| nodes leasing at once | binaries | etcd requests per lease | ADD p50 | ADD p99 | failed ADDs (code 11) |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &counts {
        for (k, (label, dir)) in sets.iter().enumerate() {
            let r = run(dir, n, &k.to_string());
            println!(
                "| {n} | {label} | {:.2} | {:.0} ms | {:.0} ms | {} ({}) |",
                r.per_lease, r.p50, r.p99, r.failures, r.try_again
            );
        }
    }
}
