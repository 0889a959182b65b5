//! etcd stopped, partitioned (nftables drops its traffic inside the node namespace) and restarted
//! while three nodes churn ADD/DEL: ADDs that need etcd fail with code 11 and leave nothing, ADDs
//! inside a node's own blocks keep working, and afterwards every node converges and
//! `podnetctl ipam check` is clean.
mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NODES: [&str; 3] = ["o1", "o2", "o3"];
const TIMEOUT_MS: u64 = 1000;

#[derive(Default)]
struct Tally {
    tried: usize,
    ok: usize,
    /// ADDs that succeeded while etcd was down or cut off: served from the node's own blocks.
    ok_in_outage: usize,
    failed_11: usize,
    /// How long each ADD that failed with 11 took, in ms.
    failed_ms: Vec<u64>,
}

fn partition(node: &Node, on: bool) {
    if on {
        node.ns.exec(&["nft", "add", "table", "inet", "podnet_partition"]);
        node.ns.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            "podnet_partition",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        node.ns.exec(&["nft", "add", "rule", "inet", "podnet_partition", "out", "tcp", "dport", "2379", "drop"]);
    } else {
        node.ns.exec(&["nft", "delete", "table", "inet", "podnet_partition"]);
    }
}

#[test]
fn etcd_stopped_partitioned_and_restarted_during_churn() {
    let node = Node::new();
    let mut etcd = Etcd::start_in(&node.ns);
    // Routed (the simulated nodes share one namespace), /29 blocks of 8. Six workers per node
    // churn all along and fit in one block; six more join only while etcd is away, and need a
    // second block. Empty blocks go back at once (grace 0), so a node holds one block when an
    // outage starts.
    let confs: Vec<serde_json::Value> = NODES
        .iter()
        .map(|n| {
            node.podnet_conf(json!({"dataplane": "routed", "dataDir": node.dir.path().join(n),
                "ipam": {"node": n, "emptyBlockGraceSeconds": 0,
                    "store": {"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": TIMEOUT_MS},
                    "pools": [{"name": "out", "cidr": "10.55.0.0/24", "blockSize": 29}]}}))
        })
        .collect();
    let lists: Vec<std::path::PathBuf> = NODES
        .iter()
        .zip(&confs)
        .map(|(n, c)| {
            let p = node.dir.path().join(format!("{n}.conflist"));
            write_conflist(&p, c);
            p
        })
        .collect();
    let workers = 36;
    let pods: Vec<Netns> = (0..workers).map(|i| Netns::new(&format!("o{i}"))).collect();
    let (stop, outage) = (AtomicBool::new(false), AtomicBool::new(false));
    let tally = Mutex::new(Tally::default());
    let releases = AtomicUsize::new(0);
    let (rounds, dups) = std::thread::scope(|s| {
        // Stops the workers when the orchestration ends, also by a panic (else the scope never joins).
        let _stop = StopOnDrop(&stop);
        let sampler = s.spawn(|| sample_for_duplicates(&pods, &stop));
        s.spawn(|| {
            // The hand-back of empty blocks runs on (as GC would), failing while etcd is away.
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (code, _) = podnetctl(&node, &lists[n % lists.len()], &["ipam", "release", "--empty-blocks"]);
                if code == 0 {
                    releases.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        for (w, pod) in pods.iter().enumerate() {
            let (conf, dir, stop, outage, tally, workers) = (
                &confs[w % NODES.len()],
                node.dir.path().join(NODES[w % NODES.len()]),
                &stop,
                &outage,
                &tally,
                workers,
            );
            let node = &node;
            s.spawn(move || {
                let mut i = 0;
                // Half the workers run only while etcd is away: their node's one block cannot hold
                // them all, so their ADDs need a new lease.
                let burst = w / NODES.len() >= workers / NODES.len() / 2;
                while !stop.load(Ordering::SeqCst) {
                    if burst && !outage.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let cid = format!("w{w}-{i}");
                    i += 1;
                    // Counted as during an outage only if etcd was away from start to end.
                    let during = outage.load(Ordering::SeqCst);
                    let started = Instant::now();
                    let add = node.add(&cid, pod, conf);
                    let ms = started.elapsed().as_millis() as u64;
                    let during = during && outage.load(Ordering::SeqCst);
                    {
                        let mut t = tally.lock().unwrap();
                        t.tried += 1;
                        if add.ok {
                            t.ok += 1;
                            t.ok_in_outage += usize::from(during);
                        } else {
                            assert_eq!(add.code(), 11, "an ADD fails only with try-again-later: {}", add.raw);
                            t.failed_11 += 1;
                            t.failed_ms.push(ms);
                        }
                    }
                    if !add.ok {
                        // Nothing left behind: no interface in the pod, no record on the node.
                        assert!(!pod.links().contains(&"eth0".to_string()), "{cid}: a failed ADD left eth0");
                        let mine = format!("_{cid}:eth0");
                        let left: Vec<String> = list_dir(&dir.join("podnet/ipam/addrs"))
                            .into_iter()
                            .filter(|f| f.ends_with(&mine))
                            .collect();
                        assert!(left.is_empty(), "{cid}: a failed ADD left {left:?}");
                    }
                    let del = node.del(&cid, Some(pod), conf);
                    assert!(del.ok, "DEL always succeeds, etcd or not: {}", del.raw);
                }
            });
        }
        let phase = |what: &str, secs: u64| {
            eprintln!("outages: {what} for {secs} s");
            std::thread::sleep(Duration::from_secs(secs));
        };
        // The flag is raised only once etcd is really away, and lowered before it returns.
        phase("warm-up", 3);
        etcd.stop();
        outage.store(true, Ordering::SeqCst);
        phase("etcd stopped", 4);
        outage.store(false, Ordering::SeqCst);
        etcd.restart_in(&node.ns);
        phase("etcd back", 3);
        partition(&node, true);
        outage.store(true, Ordering::SeqCst);
        phase("etcd cut off by nftables", 4);
        outage.store(false, Ordering::SeqCst);
        partition(&node, false);
        phase("partition healed", 3);
        // A quick restart under load: no flag, ADDs caught in it may fail with 11 like any other.
        etcd.stop();
        etcd.restart_in(&node.ns);
        phase("etcd restarted", 3);
        stop.store(true, Ordering::SeqCst);
        sampler.join().unwrap()
    });
    let t = tally.into_inner().unwrap();
    let mut ms = t.failed_ms.clone();
    ms.sort_unstable();
    let pct = |p: usize| ms.get((ms.len().saturating_sub(1)) * p / 100).copied().unwrap_or(0);
    eprintln!(
        "outages: {} ADDs tried, {} succeeded ({} of them while etcd was away), {} failed with code 11 (p50 {} ms, max {} ms, timeoutMs {TIMEOUT_MS}); {} sampling rounds, {} duplicates; {} hand-backs ran",
        t.tried,
        t.ok,
        t.ok_in_outage,
        t.failed_11,
        pct(50),
        pct(100),
        rounds,
        dups.len(),
        releases.load(Ordering::SeqCst)
    );
    assert!(dups.is_empty(), "an address on two pods at once: {dups:?}");
    assert!(t.ok_in_outage > 0, "ADDs in the nodes' own blocks went on while etcd was away");
    assert!(t.failed_11 > 0, "some ADDs needed etcd while it was away");

    // Recovery: each node hands back its empty blocks (adopting leases a failed hand-back left
    // behind), and then nothing is leased, recorded or wrong anywhere.
    for (n, list) in NODES.iter().zip(&lists) {
        let (code, out) = podnetctl(&node, list, &["ipam", "release", "--empty-blocks"]);
        assert_eq!(code, 0, "{n}: {out}");
        let (code, out) = podnetctl(&node, list, &["ipam", "check"]);
        assert_eq!(code, 0, "{n} converges: {out}");
        assert!(list_dir(&node.dir.path().join(n).join("podnet/ipam/addrs")).is_empty());
    }
    let (_, out) = podnetctl(&node, &lists[0], &["-o", "json", "ipam", "show"]);
    let show: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(show["pools"][0]["blocksByNode"], json!({}), "every block went back: {out}");
    assert!(node.host_veths().is_empty());
}
