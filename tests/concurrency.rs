//! Parallel ADDs and DELs on one node share the store safely.
mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;

#[test]
fn parallel_adds_get_distinct_addresses_and_parallel_dels_empty_the_store() {
    const PODS: usize = 32;
    let node = Node::new();
    // /27 blocks (29 usable on the bridge): 32 pods need two blocks, so leasing races too.
    let conf = node.podnet_conf(json!({"ipam": {"pools": [{"name": "par", "cidr": "10.50.0.0/16", "blockSize": 27}]}}));
    let pods: Vec<Netns> = (0..PODS).map(|i| Netns::new(&format!("q{i}"))).collect();
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.add(&format!("par-{i}"), p, conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.into_iter().map(|r| result_ip(&r.must())).collect();
    assert_eq!(ips.len(), PODS, "32 distinct addresses");
    assert_eq!(node.allocations().len(), PODS);
    // The kernel agrees: every pod holds its own address.
    let held: HashSet<String> = pods.iter().flat_map(|p| p.addrs4("eth0")).collect();
    assert_eq!(held, ips);
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let (node, conf) = (&node, &conf);
            s.spawn(move || assert!(node.del(&format!("par-{i}"), Some(p), conf).ok));
        }
    });
    assert!(node.allocations().is_empty(), "left: {:?}", node.allocations());
    assert!(node.endpoints(&conf).is_empty());
    assert!(node.host_veths().is_empty());
}

/// `workers` processes at a time churn ADD then DEL, each on its own pod, until `ops` plugin
/// calls are done, spread over `confs` (one per simulated node); a sampler watches the pods'
/// interfaces throughout, and each node hands back its empty blocks every so often.
fn churn(node: &Node, confs: &[serde_json::Value], workers: usize, ops: usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let pods: Vec<Netns> = (0..workers).map(|i| Netns::new(&format!("w{i}"))).collect();
    let (done, stop, failures) = (AtomicUsize::new(0), AtomicBool::new(false), AtomicUsize::new(0));
    let lists: Vec<tempfile::NamedTempFile> = confs
        .iter()
        .map(|c| {
            let f = tempfile::NamedTempFile::new_in(node.dir.path()).unwrap();
            write_conflist(f.path(), c);
            f
        })
        .collect();
    let (rounds, dups) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_for_duplicates(&pods, &stop));
        let blocks = s.spawn(|| {
            // Empty blocks go back while ADDs run (grace 0), so leasing and handing back race too.
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (code, out) =
                    podnetctl(node, lists[n % lists.len()].path(), &["ipam", "release", "--empty-blocks"]);
                assert_eq!(code, 0, "{out}");
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(w, pod)| {
                let (conf, done, failures) = (&confs[w % confs.len()], &done, &failures);
                s.spawn(move || {
                    let mut i = 0;
                    while done.fetch_add(2, Ordering::SeqCst) < ops {
                        let cid = format!("w{w}-{i}");
                        i += 1;
                        let add = node.add(&cid, pod, conf);
                        if !add.ok {
                            assert!(add.code() > 0, "every failure is a CNI error with a code: {}", add.raw);
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                        let del = node.del(&cid, Some(pod), conf);
                        assert!(del.ok, "DEL always succeeds: {}", del.raw);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        blocks.join().unwrap();
        sampler.join().unwrap()
    });
    let calls = done.load(Ordering::SeqCst).min(ops + 2 * workers);
    eprintln!("{calls} plugin calls by {workers} processes on {} node(s): {} ADDs failed with a code, {rounds} sampling rounds, {} duplicates", confs.len(), failures.load(Ordering::SeqCst), dups.len());
    assert!(dups.is_empty(), "an address on two pods at once: {dups:?}");
    assert!(rounds > 10, "the sampler ran throughout ({rounds} rounds)");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "the pool has room for every worker");
    for c in confs {
        let dir = std::path::Path::new(c["dataDir"].as_str().unwrap()).join("podnet/ipam/addrs");
        assert!(list_dir(&dir).is_empty(), "the store is empty at the end: {:?}", list_dir(&dir));
    }
    assert!(node.host_veths().is_empty(), "no veth is left");
}

fn churn_ops() -> usize {
    std::env::var("PODNET_CHURN_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

#[test]
fn thirty_two_processes_churn_ten_thousand_operations_on_one_node() {
    let node = Node::new();
    // /28 blocks (13 pods on a bridge): 32 pods need three, so blocks are leased and handed back.
    let conf = node.podnet_conf(json!({"ipam": {"emptyBlockGraceSeconds": 0,
        "pools": [{"name": "churn", "cidr": "10.51.0.0/24", "blockSize": 28}]}}));
    churn(&node, &[conf], 32, churn_ops());
}

#[test]
fn three_nodes_on_one_etcd_churn_without_a_duplicate() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    // Routed (the three simulated nodes share one namespace, so no shared bridge), /29 blocks.
    let confs: Vec<serde_json::Value> = ["e1", "e2", "e3"]
        .iter()
        .map(|n| {
            node.podnet_conf(json!({"dataplane": "routed", "dataDir": node.dir.path().join(n),
                "ipam": {"node": n, "emptyBlockGraceSeconds": 0,
                    "store": {"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 5000},
                    "pools": [{"name": "churn", "cidr": "10.52.0.0/24", "blockSize": 29}]}}))
        })
        .collect();
    churn(&node, &confs, 30, churn_ops());
}

#[test]
fn the_sampler_sees_an_address_on_two_pods() {
    let pods: Vec<Netns> = (0..2).map(|i| Netns::new(&format!("sd{i}"))).collect();
    for p in &pods {
        p.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
        p.exec(&["ip", "addr", "add", "10.53.0.7/32", "dev", "eth0"]);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (rounds, dups) = std::thread::scope(|s| {
        let h = s.spawn(|| sample_for_duplicates(&pods, &stop));
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        h.join().unwrap()
    });
    assert!(rounds > 0 && dups.len() == rounds, "{rounds} rounds, {dups:?}");
}
