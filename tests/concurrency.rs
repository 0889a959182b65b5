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

/// The first ADDs of a network on a node all at once (a node starting its pods): every one
/// succeeds. Before the node store made its directories under its lock, a process could take the
/// lock the moment it existed and find `blocks/` missing (code 5), as `podnetctl lab up` showed;
/// every other round starts from that moment: the store's directory made, nothing in it.
#[test]
fn the_first_adds_of_a_network_on_a_node_all_at_once_all_succeed() {
    let node = Node::new();
    let pods: Vec<Netns> = (0..6).map(|i| Netns::new(&format!("f{i}"))).collect();
    for round in 0..30 {
        let mut conf = node.podnet_conf(json!({"ipam": {"pools": [{"name": "first", "cidr": "10.51.0.0/16"}]}}));
        conf["name"] = json!(format!("first{round}"));
        if round % 2 == 0 {
            std::fs::create_dir_all(node.data_dir().join(format!("first{round}/ipam"))).unwrap();
        }
        let stdin = serde_json::to_vec(&conf).unwrap();
        let ids: Vec<String> = (0..pods.len()).map(|i| format!("r{round}-{i}")).collect();
        let children: Vec<_> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| {
                let env = [("CNI_CONTAINERID", id.as_str()), ("CNI_IFNAME", "eth0")];
                node.spawn_raw(PODNET, "ADD", &env, Some(&p.path()), &stdin)
            })
            .collect();
        for c in children {
            let out = finish(c);
            assert!(out.ok, "round {round}: {}", out.raw);
        }
        for (p, id) in pods.iter().zip(&ids) {
            assert!(node.del(id, Some(p), &conf).ok);
        }
    }
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
        let _stop = StopOnDrop(&stop);
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

/// A one-address range pool: whoever holds the address is the only pod that may carry it.
fn one_address_conf(node: &Node) -> serde_json::Value {
    node.podnet_conf(json!({"bridge": "br1", "ipam": {"pools": [{"name": "one", "cidr": "10.77.0.0/24",
        "source": "range", "rangeStart": "10.77.0.2", "rangeEnd": "10.77.0.2"}]}}))
}

/// After a race on attachment `c1`: the pods carrying the address and the store agree, and a
/// third container can only get the address when no pod carries it.
fn check_one_address(node: &Node, conf: &serde_json::Value, pods: &[Netns], iteration: usize) {
    let carrying: Vec<&Netns> = pods[..2].iter().filter(|p| !p.addrs4("eth0").is_empty()).collect();
    let held = node.allocations();
    assert!(carrying.len() <= 1, "iteration {iteration}: both pods carry the address");
    assert_eq!(held.len(), carrying.len(), "iteration {iteration}: the store ({held:?}) disagrees with the pods");
    let third = node.add("c2", &pods[2], conf);
    if carrying.is_empty() {
        third.must();
        assert!(node.del("c2", Some(&pods[2]), conf).ok);
    } else {
        assert_eq!(third.code(), 100, "iteration {iteration}: a held address went to a third pod: {}", third.raw);
    }
}

fn race_iterations() -> usize {
    std::env::var("PODNET_RACE_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

#[test]
fn two_adds_of_one_attachment_at_once_never_hand_its_address_to_another_pod() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let node = Node::new();
    let conf = one_address_conf(&node);
    let pods: Vec<Netns> = ["a", "b", "c"].iter().map(|p| Netns::new(p)).collect();
    let stop = AtomicBool::new(false);
    let (outcomes, (rounds, dups)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_for_duplicates(&pods, &stop));
        let _stop = StopOnDrop(&stop);
        let mut outcomes = (0, 0);
        for i in 0..race_iterations() {
            // The runtime bug: two ADDs of (c1, eth0) at once, into different namespaces.
            let (a, b) = std::thread::scope(|r| {
                let a = r.spawn(|| node.add("c1", &pods[0], &conf));
                let b = r.spawn(|| node.add("c1", &pods[1], &conf));
                (a.join().unwrap(), b.join().unwrap())
            });
            assert!(a.ok || b.ok, "iteration {i}: one of the two ADDs succeeds: {} / {}", a.raw, b.raw);
            for o in [&a, &b].into_iter().filter(|o| !o.ok) {
                assert_eq!(o.code(), 4, "iteration {i}: the other one is refused as a repeated ADD: {}", o.raw);
            }
            outcomes.0 += usize::from(a.ok && b.ok);
            outcomes.1 += usize::from(a.ok != b.ok);
            check_one_address(&node, &conf, &pods, i);
            let winner = if a.ok { &pods[0] } else { &pods[1] };
            assert!(node.del("c1", Some(winner), &conf).ok);
            assert!(node.allocations().is_empty() && node.host_veths().is_empty());
        }
        stop.store(true, Ordering::SeqCst);
        (outcomes, sampler.join().unwrap())
    });
    eprintln!(
        "{} iterations: {} with one ADD refused, {} with both succeeding; {rounds} sampling rounds",
        race_iterations(),
        outcomes.1,
        outcomes.0
    );
    assert_eq!(outcomes.0, 0, "the second ADD into another namespace is always refused");
    assert!(dups.is_empty(), "an address on two pods at once: {dups:?}");
}

#[test]
fn an_add_and_a_del_of_one_attachment_at_once_leave_the_pod_and_the_store_in_agreement() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let node = Node::new();
    let conf = one_address_conf(&node);
    let pods: Vec<Netns> = ["a", "b", "c"].iter().map(|p| Netns::new(p)).collect();
    let stop = AtomicBool::new(false);
    let (kept, (rounds, dups)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_for_duplicates(&pods, &stop));
        let _stop = StopOnDrop(&stop);
        let mut kept = 0;
        for i in 0..race_iterations() {
            let delay = std::time::Duration::from_micros(fastrand::u64(0..10_000));
            let (add, del) = std::thread::scope(|r| {
                let add = r.spawn(|| node.add("c1", &pods[0], &conf));
                let del = r.spawn(|| {
                    std::thread::sleep(delay);
                    node.del("c1", Some(&pods[0]), &conf)
                });
                (add.join().unwrap(), del.join().unwrap())
            });
            add.must();
            assert!(del.ok, "iteration {i}: DEL always succeeds: {}", del.raw);
            check_one_address(&node, &conf, &pods, i);
            kept += usize::from(!node.allocations().is_empty());
            assert!(node.del("c1", Some(&pods[0]), &conf).ok);
            // A DEL that ran first leaves the ADD's pod in place: its interface goes with the DEL above.
            assert!(node.allocations().is_empty() && node.host_veths().is_empty(), "iteration {i}");
            assert!(pods[0].addrs4("eth0").is_empty(), "iteration {i}: the pod lost its address with its record");
        }
        stop.store(true, Ordering::SeqCst);
        (kept, sampler.join().unwrap())
    });
    eprintln!("{} iterations: the ADD finished last {kept} times; {rounds} sampling rounds", race_iterations());
    assert!(dups.is_empty(), "an address on two pods at once: {dups:?}");
}
