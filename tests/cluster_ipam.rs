//! Cluster IPAM: blocks leased to nodes in a real etcd (and in the shared local store), concurrency
//! across simulated nodes, outages, exhaustion and namespace pools.
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// The `ipam` object for node `node` of a three-node cluster on `store`.
fn ipam_conf(node: &Node, name: &str, store: &Value, pools: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "ipam": {"type": "podnet-ipam", "node": name,
        "dataDir": node.dir.path().join(name), "store": store, "pools": pools}})
}

/// Retry a call that says "try again later" (code 11), as a runtime does: a restarted etcd
/// member needs a moment to elect itself, and for `timeoutMs` after a failed call the node's
/// processes fail fast rather than each wait out the timeout.
fn until_not_11(mut call: impl FnMut() -> Outcome) -> Outcome {
    for _ in 0..40 {
        let out = call();
        if out.ok || out.code() != 11 {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    call()
}

/// The cluster store's leases, read from inside the node (where etcd listens).
fn leases(node: &Node, conf: &Value) -> Vec<podnet_ipam::BlockLease> {
    let cfg = podnet_ipam::IpamConfig::parse(&conf["ipam"], None).unwrap();
    in_netns(&node.ns, || podnet_plugin::open_ipam(cfg, "cluster", podnet_ipam::Dataplane::Bridge).leases().unwrap())
}

/// Three nodes add 100 pods each at once through the podnet-ipam plugin: 300 distinct addresses,
/// each inside a block leased to its own node, and no more blocks than needed.
fn three_nodes_concurrently(node: &Node, store: Value) {
    let pools = json!([{"name": "pods", "cidr": "10.70.0.0/16", "blockSize": 26}]);
    let confs: Vec<Value> = ["n1", "n2", "n3"].iter().map(|n| ipam_conf(node, n, &store, pools.clone())).collect();
    let netns = node.ns.path();
    let got: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = confs
            .iter()
            .enumerate()
            .map(|(n, conf)| {
                let netns = &netns;
                s.spawn(move || {
                    (0..100)
                        .map(|i| {
                            result_ip(
                                &node
                                    .call(PODNET_IPAM, "ADD", &format!("n{n}-pod{i}"), Some(netns), "eth0", conf)
                                    .must(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: HashSet<&String> = got.iter().flatten().collect();
    assert_eq!(all.len(), 300, "300 distinct addresses");
    let leases = leases(node, &confs[0]);
    // A /26 on a bridge holds 61 pods: 100 pods need 2 blocks per node.
    assert_eq!(leases.len(), 6, "{leases:?}");
    let owner: HashMap<ipnet::IpNet, String> = leases.iter().map(|l| (l.block, l.node.clone())).collect();
    for (n, ips) in got.iter().enumerate() {
        for ip in ips {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let block = owner.keys().find(|b| b.contains(&ip)).expect("inside a leased block");
            assert_eq!(owner[block], format!("n{}", n + 1), "strict affinity: {ip} is in its own node's block");
        }
    }
}

#[test]
fn three_nodes_on_etcd_get_distinct_addresses_in_their_own_blocks() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    three_nodes_concurrently(&node, json!({"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 5000}));
}

#[test]
fn three_nodes_on_the_shared_local_store_get_distinct_addresses_in_their_own_blocks() {
    let dir = tempfile::tempdir().unwrap();
    three_nodes_concurrently(&Node::new(), json!({"type": "local", "path": dir.path()}));
}

#[test]
fn an_etcd_outage_gives_code_11_and_leaves_nothing_and_adds_inside_own_blocks_keep_working() {
    let node = Node::new();
    let mut etcd = Etcd::start_in(&node.ns);
    // /29 blocks hold 5 pods each on a bridge; a pod past the fifth needs a new block from etcd.
    let conf = node
        .podnet_conf(json!({"ipam": {"store": {"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 2000},
        "pools": [{"name": "pods", "cidr": "10.71.0.0/24", "blockSize": 29}]}}));
    let pods: Vec<Netns> = (0..7).map(|i| Netns::new(&format!("o{i}"))).collect();
    for (i, p) in pods.iter().enumerate().take(3) {
        node.add(&format!("o{i}"), p, &conf).must();
    }
    etcd.stop();
    // Inside the node's own block: no etcd needed.
    for (i, p) in pods.iter().enumerate().take(5).skip(3) {
        node.add(&format!("o{i}"), p, &conf).must();
    }
    // The block is full: leasing another needs etcd, which is down.
    let e = node.add("o5", &pods[5], &conf);
    assert_eq!(e.code(), 11, "{}", e.raw);
    assert_eq!(node.allocations().len(), 5, "the failed ADD left no allocation");
    assert!(!pods[5].links().contains(&"eth0".to_string()), "and no interface");
    assert_eq!(node.host_veths().len(), 5);
    // DEL never needs etcd.
    assert!(node.del("o4", Some(&pods[4]), &conf).ok);
    assert!(node.add("o4b", &pods[4], &conf).ok, "the freed address is reused without etcd");
    etcd.restart_in(&node.ns);
    let r = until_not_11(|| node.add("o5", &pods[5], &conf)).must();
    assert!(result_ip(&r).starts_with("10.71.0.1"), "a second block: {}", result_ip(&r));
    assert_eq!(node.allocations().len(), 6);
}

#[test]
fn exhaustion_and_namespace_pools_on_etcd() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    let store = json!({"type": "etcd", "endpoints": [etcd.url()], "prefix": "/test-cluster"});
    // Two /29 blocks in the pool; node a takes both.
    let pools = json!([{"name": "team", "cidr": "10.73.0.0/24", "blockSize": 29, "namespaces": ["team-a"]},
                       {"name": "small", "cidr": "10.72.0.0/28", "blockSize": 29}]);
    let a = ipam_conf(&node, "a", &store, pools.clone());
    let b = ipam_conf(&node, "b", &store, pools);
    let ns = node.ns.path();
    for i in 0..10 {
        node.call(PODNET_IPAM, "ADD", &format!("a{i}"), Some(&ns), "eth0", &a).must();
    }
    let e = node.call(PODNET_IPAM, "ADD", "b0", Some(&ns), "eth0", &b);
    assert_eq!(e.code(), 100, "{}", e.raw);
    let msg = e.json["msg"].as_str().unwrap();
    assert!(msg.contains("small (10.72.0.0/28)") && msg.contains("node b"), "{msg}");
    // team-a pods come from the team pool; other namespaces never do.
    let args = |ns: &str| format!("K8S_POD_NAMESPACE={ns}");
    let team = node
        .call_env(
            PODNET_IPAM,
            "ADD",
            &[("CNI_CONTAINERID", "t1"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", &args("team-a"))],
            Some(&ns),
            &b,
        )
        .must();
    assert!(result_ip(&team).starts_with("10.73.0."), "{team}");
    let other = node.call_env(
        PODNET_IPAM,
        "ADD",
        &[("CNI_CONTAINERID", "t2"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", &args("other"))],
        Some(&ns),
        &b,
    );
    assert_eq!(other.code(), 100, "the open pool is full and the team pool is not theirs: {}", other.raw);
    // Everything lives under <prefix>/<network>/ in etcd.
    assert!(leases(&node, &a).iter().all(|l| l.block.to_string().starts_with("10.7")));
}

#[test]
fn killing_etcd_during_concurrent_adds_fails_only_with_code_11_and_leaves_only_successes() {
    let node = Node::new();
    let mut etcd = Etcd::start_in(&node.ns);
    // /29 blocks: a node leases a new block every 5 pods, so many ADDs need etcd.
    let store = json!({"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 1000});
    let pools = json!([{"name": "pods", "cidr": "10.74.0.0/16", "blockSize": 29}]);
    let confs: Vec<Value> = ["k1", "k2", "k3"].iter().map(|n| ipam_conf(&node, n, &store, pools.clone())).collect();
    let netns = node.ns.path();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<Vec<(String, Outcome)>> = std::thread::scope(|s| {
        let workers: Vec<_> = confs
            .iter()
            .enumerate()
            .map(|(n, conf)| {
                let (node, netns, done) = (&node, &netns, &done);
                s.spawn(move || {
                    (0..40)
                        .map(|i| {
                            let cid = format!("k{n}-{i}");
                            let out = node.call(PODNET_IPAM, "ADD", &cid, Some(netns), "eth0", conf);
                            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            (cid, out)
                        })
                        .collect()
                })
            })
            .collect();
        // Kill etcd once a third of the ADDs are through.
        while done.load(std::sync::atomic::Ordering::SeqCst) < 40 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        etcd.stop();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let (mut ok, mut unavailable) = (0, 0);
    for (n, per_node) in outcomes.iter().enumerate() {
        let store_dir = node.dir.path().join(format!("k{}", n + 1)).join("cluster/ipam/addrs");
        let held: HashSet<String> = list_dir(&store_dir)
            .into_iter()
            .map(|f| f.split_once('_').unwrap().1.split(':').next().unwrap().to_string())
            .collect();
        for (cid, out) in per_node {
            if out.ok {
                ok += 1;
                assert!(held.contains(cid), "{cid} succeeded and is recorded");
            } else {
                unavailable += 1;
                assert_eq!(out.code(), 11, "every failure is try-again-later: {}", out.raw);
                assert!(!held.contains(cid), "{cid} failed and left no allocation");
            }
        }
    }
    assert!(ok >= 40 && unavailable > 0, "ok {ok}, unavailable {unavailable}");
    etcd.restart_in(&node.ns);
    // A restarted member serves once it has elected itself (about a second); meanwhile ADD says
    // "try again later", and a runtime does.
    let after = until_not_11(|| node.call(PODNET_IPAM, "ADD", "after", Some(&netns), "eth0", &confs[0]));
    assert!(after.ok, "ADD succeeds once etcd is back: {}", after.raw);
}

#[test]
fn etcd_over_tls_with_a_client_certificate() {
    let node = Node::new();
    let pki = TestPki::new();
    let etcd = Etcd::start_tls_in(&node.ns, &pki);
    let pools = json!([{"name": "pods", "cidr": "10.75.0.0/24", "blockSize": 28}]);
    let tls = json!({"ca": pki.path("ca.pem"), "cert": pki.path("client.pem"), "key": pki.path("client.key")});
    let conf = ipam_conf(
        &node,
        "t1",
        &json!({"type": "etcd", "endpoints": [etcd.url()], "tls": tls, "timeoutMs": 5000}),
        pools.clone(),
    );
    let ns = node.ns.path();
    let r = node.call(PODNET_IPAM, "ADD", "tls-1", Some(&ns), "eth0", &conf).must();
    assert!(result_ip(&r).starts_with("10.75.0."));
    assert_eq!(leases(&node, &conf).len(), 1, "the lease went through TLS");
    // Without a client certificate the server refuses: try again later, nothing allocated.
    let no_cert = ipam_conf(
        &node,
        "t2",
        &json!({"type": "etcd", "endpoints": [etcd.url()], "tls": {"ca": pki.path("ca.pem")}, "timeoutMs": 1000}),
        pools,
    );
    let e = node.call(PODNET_IPAM, "ADD", "tls-2", Some(&ns), "eth0", &no_cert);
    assert_eq!(e.code(), 11, "{}", e.raw);
    assert!(list_dir(&node.dir.path().join("t2/cluster/ipam/addrs")).is_empty());
}

#[test]
fn etcd_with_username_and_password_file() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    let url = etcd.url();
    // Switch on etcd's auth: a root user (required before auth_enable) with a password.
    in_netns(&node.ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
            c.user_add("root", "s3cret-pw", None).await.unwrap();
            c.user_grant_role("root", "root").await.unwrap();
            c.auth_enable().await.unwrap();
        });
    });
    let pw = node.dir.path().join("etcd-password");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let pools = json!([{"name": "pods", "cidr": "10.76.0.0/24", "blockSize": 28}]);
    let store = |file: &std::path::Path| json!({"type": "etcd", "endpoints": [etcd.url()], "username": "root", "passwordFile": file, "timeoutMs": 3000});
    let conf = ipam_conf(&node, "u1", &store(&pw), pools.clone());
    let ns = node.ns.path();
    let r = node.call(PODNET_IPAM, "ADD", "auth-1", Some(&ns), "eth0", &conf).must();
    assert!(result_ip(&r).starts_with("10.76.0."));
    // A wrong password is a config error at once (code 7), not "try again later".
    let wrong = node.dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope").unwrap();
    let e = node.call(PODNET_IPAM, "ADD", "auth-2", Some(&ns), "eth0", &ipam_conf(&node, "u2", &store(&wrong), pools));
    assert_eq!(e.code(), 7, "{}", e.raw);
    assert!(!e.raw.contains("s3cret") && !e.raw.contains("nope"), "no password in errors: {}", e.raw);
    let log = std::fs::read_to_string(node.dir.path().join("podnet.log")).unwrap_or_default();
    assert!(!log.contains("s3cret"), "no password in the log");
}

/// `podnetctl --config <conflist of conf> args...` in the node; (exit code, output).
fn ctl(node: &Node, conf: &Value, args: &[&str]) -> (i32, String) {
    let list = tempfile::NamedTempFile::new_in(node.dir.path()).unwrap();
    write_conflist(list.path(), conf);
    podnetctl(node, list.path(), args)
}

#[test]
fn borrowing_on_etcd_owner_and_borrower_race_for_one_block_without_duplicates() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    borrowing_race(&node, json!({"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 5000}));
}

#[test]
fn borrowing_on_the_shared_local_store_owner_and_borrower_race_without_duplicates() {
    let node = Node::new();
    let store = json!({"type": "local", "path": node.dir.path().join("cluster")});
    borrowing_race(&node, store);
}

fn borrowing_race(node: &Node, store: Value) {
    // Two /29 blocks of 8 routed pods. a takes one and uses 3; b fills the other and borrows one
    // from a. Then both add 5 pods at once: a from its own block, b borrowing from it. The 4 free
    // addresses go to exactly 4 of the 10 ADDs, each to one pod.
    let conf = |name: &str| {
        node.podnet_conf(json!({"dataplane": "routed", "dataDir": node.dir.path().join(name),
            "ipam": {"node": name, "store": store,
                "pools": [{"name": "pods", "cidr": "10.76.0.0/28", "blockSize": 29, "allowBorrowing": true}]}}))
    };
    let (a, b) = (conf("a"), conf("b"));
    let pods: Vec<Netns> = (0..22).map(|i| Netns::new(&format!("bw{i}"))).collect();
    for (i, pod) in pods.iter().enumerate().take(3) {
        node.add(&format!("a{i}"), pod, &a).must();
    }
    for i in 0..8 {
        node.add(&format!("b{i}"), &pods[3 + i], &b).must();
    }
    let lent = result_ip(&node.add("b8", &pods[21], &b).must());
    assert_eq!(lent, "10.76.0.3", "b's block is full and no block is free: b borrows from a's");
    let race: Vec<(String, &Netns, Outcome)> = std::thread::scope(|s| {
        let spawn = |who: &'static str, conf: &Value, from: usize| {
            let (pods, conf) = (&pods, conf.clone());
            s.spawn(move || {
                (0..5)
                    .map(|i| {
                        let cid = format!("{who}r{i}");
                        let pod = &pods[from + i];
                        let out = node.add(&cid, pod, &conf);
                        (cid, pod, out)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (ta, tb) = (spawn("a", &a, 11), spawn("b", &b, 16));
        let mut v = ta.join().unwrap();
        v.extend(tb.join().unwrap());
        v
    });
    let won: Vec<&(String, &Netns, Outcome)> = race.iter().filter(|(_, _, o)| o.ok).collect();
    assert_eq!(won.len(), 4, "exactly the 4 free addresses were handed out");
    for (cid, pod, out) in &race {
        if out.ok {
            assert_eq!(pod.addrs4("eth0"), vec![result_ip(&out.json)], "{cid}'s pod carries its address");
        } else {
            assert_eq!(out.code(), 100, "{cid}: {}", out.raw);
            assert!(!pod.links().contains(&"eth0".to_string()), "{cid} failed and left no interface");
        }
    }
    // Sampled from the pods' real interfaces: 16 addresses, none twice.
    let mut seen = HashSet::new();
    for p in &pods {
        for ip in p.addrs4("eth0") {
            assert!(seen.insert(ip.clone()), "{ip} is on two pods");
        }
    }
    assert_eq!(seen.len(), 16);
    let borrowed_by_b = 1 + won.iter().filter(|(cid, _, _)| cid.starts_with('b')).count();

    // check reports the borrowing (not as a problem); show counts it.
    let (code, out) = ctl(node, &b, &["-o", "json", "ipam", "check"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["borrowed"].as_array().unwrap().len(), borrowed_by_b, "{out}");
    assert!(v["borrowed"].as_array().unwrap().iter().all(|x| x["owner"] == "a" && x["borrower"] == "b"));
    let (code, out) = ctl(node, &a, &["-o", "json", "ipam", "show"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["pools"][0]["borrowed"], borrowed_by_b);
    let (code, out) = ctl(node, &a, &["ipam", "check"]);
    assert!(code == 0 && out.contains("borrowed addresses") && out.contains(&lent), "{out}");

    // DEL gives the claims back: nothing is borrowed any more.
    assert!(node.del("b8", Some(&pods[21]), &b).ok);
    for (cid, pod, out) in &race {
        if out.ok && cid.starts_with('b') {
            assert!(node.del(cid, Some(pod), &b).ok);
        }
    }
    let (_, out) = ctl(node, &b, &["-o", "json", "ipam", "check"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["borrowed"], json!([]), "{out}");
}

#[test]
fn borrowing_on_a_bridge_is_refused_with_a_clear_error() {
    let node = Node::new();
    let conf =
        node.podnet_conf(json!({"ipam": {"pools": [{"name": "p", "cidr": "10.77.0.0/24", "allowBorrowing": true}]}}));
    let pod = Netns::new("bb");
    let e = node.add("bb", &pod, &conf);
    assert_eq!(e.code(), 7, "{}", e.raw);
    assert!(e.json["msg"].as_str().unwrap().contains("routed"), "{}", e.raw);
    assert!(node.allocations().is_empty() && node.host_veths().is_empty());
}

#[test]
fn borrowing_through_an_etcd_outage_del_succeeds_and_gc_gives_the_claim_back() {
    let node = Node::new();
    let mut etcd = Etcd::start_in(&node.ns);
    let conf = |name: &str| {
        node.podnet_conf(json!({"dataplane": "routed", "dataDir": node.dir.path().join(name),
            "ipam": {"node": name, "store": {"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 1000},
                "pools": [{"name": "pods", "cidr": "10.78.0.0/28", "blockSize": 29, "allowBorrowing": true}]}}))
    };
    let (a, b) = (conf("a"), conf("b"));
    let pods: Vec<Netns> = (0..11).map(|i| Netns::new(&format!("bo{i}"))).collect();
    node.add("a0", &pods[0], &a).must();
    for i in 0..8 {
        node.add(&format!("b{i}"), &pods[1 + i], &b).must();
    }
    node.add("b8", &pods[9], &b).must();
    etcd.stop();
    // DEL always succeeds; the borrowed address's claim stays behind.
    assert!(node.del("b8", Some(&pods[9]), &b).ok);
    // An ADD in a borrowing pool needs etcd: code 11, nothing left.
    let e = node.add("a1", &pods[10], &a);
    assert_eq!(e.code(), 11, "{}", e.raw);
    assert!(!pods[10].links().contains(&"eth0".to_string()));
    etcd.restart_in(&node.ns);
    // Once etcd answers (a restarted member elects itself; a runtime retries), check sees the
    // claim no record holds, and GC gives it back.
    let leaked = (0..40).find_map(|_| {
        let (code, out) = ctl(&node, &b, &["-o", "json", "ipam", "check"]);
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if code == 1 && v["problems"].as_array().is_some_and(|p| p.iter().any(|p| p["kind"] == "leaked")) {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        None
    });
    assert!(leaked.is_some(), "ipam check reports the stale claim");
    let live: Vec<Value> = (0..8).map(|i| json!({"containerID": format!("b{i}"), "ifname": "eth0"})).collect();
    let mut gc = b.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!(live);
    node.call_env(PODNET, "GC", &[], None, &gc).must();
    let (code, out) = ctl(&node, &b, &["ipam", "check"]);
    assert_eq!(code, 0, "{out}");
    // a's own failed ADD left the outage note: for timeoutMs its calls fail fast with 11.
    assert!(until_not_11(|| node.add("a1", &pods[10], &a)).ok, "the freed address is usable again");
}

/// The store contract a long-running agent uses: every lease and node record at a revision, then
/// the changes after it from an etcd watch (a node record bound to an etcd lease goes when it is
/// not renewed); a watch from a compacted revision says so (re-list).
#[test]
fn etcd_snapshot_then_watch_follows_leases_and_nodes_and_reports_compaction() {
    use podnet_ipam::{ClusterEvent, ClusterStore, Deadline, NodeRecord, WatchError};
    use std::time::Duration;
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    let store = json!({"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 2000});
    let pools = json!([{"name": "pods", "cidr": "10.71.0.0/24", "blockSize": 26}]);
    let cfg =
        |n: &str| podnet_ipam::IpamConfig::parse(&ipam_conf(&node, n, &store, pools.clone())["ipam"], None).unwrap();
    let (a, b) = (cfg("a"), cfg("b"));
    let etcd_cfg = a.etcd.clone().unwrap();
    let deadline = || Deadline::new(Duration::from_secs(2));
    let shared = podnet_store_etcd::EtcdStore::new(etcd_cfg, "cluster", None);
    let lease = |pool: &podnet_ipam::Pool, node: &str, n: u128| {
        let block = podnet_ipam::addr::nth_block(pool.cidr(), pool.block_len, n);
        match shared.lease_one_of(pool, node, &[block], &deadline()).unwrap() {
            podnet_ipam::LeaseAttempt::Leased(l) => l,
            other => panic!("{other:?}"),
        }
    };
    let (first, snapshot, mut watch) = in_netns(&node.ns, || {
        let first = lease(&a.pools[0], "a", 0);
        let snapshot = shared.cluster_snapshot(&deadline()).unwrap();
        let watch = shared.watch(&snapshot, Duration::from_secs(1), Duration::from_secs(2)).unwrap();
        (first, snapshot, watch)
    });
    assert_eq!(snapshot.leases, vec![first.clone()]);
    assert!(snapshot.revision > 0);
    // Another node leases a block and the first hands its back: the watch sees both, in order,
    // each as one event (no re-list).
    let before = shared.requests();
    let second = in_netns(&node.ns, || lease(&b.pools[0], "b", 1));
    in_netns(&node.ns, || shared.release_block(first.block, "a", false, &deadline()).unwrap());
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(watch.next(Duration::from_millis(500)).unwrap());
        if seen.len() >= 2 {
            break;
        }
    }
    assert_eq!(seen, vec![ClusterEvent::Leased(second), ClusterEvent::Released(first.block)]);
    assert!(shared.requests() - before <= 4, "the watch itself made no requests");
    // A node record on a 2 s etcd lease: it comes, is renewed, and goes once renewals stop.
    let record = NodeRecord {
        node: "b".into(),
        ip: "198.18.0.9".parse().unwrap(),
        ipv6: None,
        encap: "vxlan".into(),
        vtep_mac: Some("02:00:00:00:00:09".into()),
        vtep_ip: Some("198.18.0.9".parse().unwrap()),
        started_at: "2026-11-30T00:00:00Z".into(),
        heartbeat_at: None,
    };
    let lease_id = in_netns(&node.ns, || shared.put_node(&record, Duration::from_secs(2), &deadline()).unwrap());
    let next = |watch: &mut Box<dyn podnet_ipam::ClusterWatch>| {
        (0..20).find_map(|_| Some(watch.next(Duration::from_millis(500)).unwrap()).filter(|e| !e.is_empty())).unwrap()
    };
    assert_eq!(next(&mut watch), vec![ClusterEvent::NodeUp(record.clone())]);
    std::thread::sleep(Duration::from_millis(1200));
    let renewed =
        in_netns(&node.ns, || shared.renew_node(lease_id, &record, Duration::from_secs(2), &deadline()).unwrap());
    assert_eq!(renewed, lease_id, "renewed in time: the same lease");
    assert_eq!(next(&mut watch), vec![ClusterEvent::NodeGone("b".into())], "not renewed again: gone");
    assert_eq!(in_netns(&node.ns, || shared.cluster_snapshot(&deadline()).unwrap()).nodes, vec![]);
    // Renewing an expired record puts it back under a new lease.
    let again =
        in_netns(&node.ns, || shared.renew_node(lease_id, &record, Duration::from_secs(5), &deadline()).unwrap());
    assert_ne!(again, lease_id);
    assert_eq!(next(&mut watch), vec![ClusterEvent::NodeUp(record.clone())]);
    // Compact past the snapshot: a watch from it must re-list.
    let url = etcd.url();
    in_netns(&node.ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([url], None).await.unwrap();
            let rev = c.get("x", None).await.unwrap().header().unwrap().revision();
            c.compact(rev, None).await.unwrap();
        });
    });
    let mut stale =
        in_netns(&node.ns, || shared.watch(&snapshot, Duration::from_secs(1), Duration::from_secs(2)).unwrap());
    let got = stale.next(Duration::from_secs(5));
    assert!(matches!(got, Err(WatchError::Compacted)), "{:?}", got.map(|_| ()));
}

/// etcd's own count of KV requests (Range and Txn), from its metrics endpoint.
fn etcd_kv_requests(node: &Node) -> u64 {
    use std::io::{Read, Write};
    let text = in_netns(&node.ns, || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 2379)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    text.lines()
        .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains("grpc_service=\"etcdserverpb.KV\""))
        .filter(|l| l.contains("grpc_method=\"Range\"") || l.contains("grpc_method=\"Txn\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sixty new nodes each add a pod at the same moment, so each leases its first block while the
/// others do: every ADD succeeds at once (no code 11), each node gets its own block, and a lease
/// costs etcd under three requests on average (one read, one transaction).
#[test]
fn sixty_nodes_leasing_at_once_cost_under_three_etcd_requests_per_lease() {
    const NODES: usize = 60;
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    let store = json!({"type": "etcd", "endpoints": [etcd.url()]});
    let pools = json!([{"name": "pods", "cidr": "10.72.0.0/16", "blockSize": 26}]);
    let confs: Vec<Value> = (0..NODES).map(|i| ipam_conf(&node, &format!("n{i}"), &store, pools.clone())).collect();
    let pod = Netns::new("p");
    let before = etcd_kv_requests(&node);
    let children: Vec<_> = confs
        .iter()
        .map(|c| {
            let env = [("CNI_CONTAINERID", "first"), ("CNI_IFNAME", "eth0")];
            node.spawn_raw(PODNET_IPAM, "ADD", &env, Some(&pod.path()), &serde_json::to_vec(c).unwrap())
        })
        .collect();
    let outcomes: Vec<Outcome> = children.into_iter().map(finish).collect();
    let requests = etcd_kv_requests(&node) - before;
    for (i, o) in outcomes.iter().enumerate() {
        assert!(o.ok, "node n{i}: {}", o.raw);
    }
    let leases = leases(&node, &confs[0]);
    let by_node: HashMap<&str, usize> = leases.iter().fold(HashMap::new(), |mut m, l| {
        *m.entry(l.node.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_node.len(), NODES, "every node leased");
    assert!(by_node.values().all(|n| *n == 1), "one block each: {by_node:?}");
    let blocks: HashSet<_> = leases.iter().map(|l| l.block).collect();
    assert_eq!(blocks.len(), NODES, "distinct blocks");
    let per_lease = requests as f64 / NODES as f64;
    eprintln!("{NODES} nodes leasing at once: {requests} etcd KV requests, {per_lease:.2} per lease");
    assert!(per_lease < 3.0, "{per_lease:.2} etcd requests per lease");
}
