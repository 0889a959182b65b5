//! `podnetctl audit` on a node: who held an address at a time (at, before, after and at the
//! exact edges of an interval, and after its reuse by a second pod), history filters, export as
//! JSON lines and CSV, releases by GC and `ipam release` logged, and bad input refused (exit 2).
//! Crash safety (no allocation without its event) is checked by `tests/crash.rs`.
mod common;

use common::*;
use serde_json::{json, Value};

/// A node with a one-address pool, so every pod gets the same address.
fn one_address(node: &Node) -> Value {
    node.podnet_conf(json!({"ipam": {"pools": [{"name": "one", "cidr": "10.77.0.0/24", "source": "range",
        "rangeStart": "10.77.0.9", "rangeEnd": "10.77.0.9"}]}}))
}

fn audit(node: &Node, list: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["-o", "json", "audit"];
    all.extend_from_slice(args);
    podnetctl(node, list, &all)
}

#[test]
fn who_had_an_address_before_during_after_and_at_the_edges_of_each_interval() {
    let node = Node::new();
    let conf = one_address(&node);
    let list = node.dir.path().join("10-podnet.conflist");
    write_conflist(&list, &conf);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let add = |cid: &str, pod: &Netns, name: &str| {
        let out = node.call_env(
            PODNET,
            "ADD",
            &[
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", &format!("K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name};K8S_POD_UID=uid-{name}")),
            ],
            Some(&pod.path()),
            &conf,
        );
        assert!(out.ok, "{}", out.raw);
    };
    add("c1", &a, "web");
    assert!(node.del("c1", Some(&a), &conf).ok);
    add("c2", &b, "api");
    let (code, text) = audit(&node, &list, &["history", "--ip", "10.77.0.9"]);
    assert_eq!(code, 0, "{text}");
    let hist: Value = serde_json::from_str(&text).unwrap();
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 2, "{text}");
    assert_eq!((hist[0]["podName"].as_str(), hist[1]["podName"].as_str()), (Some("web"), Some("api")));
    let from1 = hist[0]["from"].as_str().unwrap().to_string();
    let until1 = hist[0]["until"].as_str().unwrap().to_string();
    let from2 = hist[1]["from"].as_str().unwrap().to_string();
    assert!(hist[1]["until"].is_null(), "c2 still holds it");
    let who = |at: &str| -> Value {
        let (code, text) = audit(&node, &list, &["who", "10.77.0.9", "--at", at]);
        assert_eq!(code, 0, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    assert!(who("2020-01-01T00:00:00Z")["holder"].is_null(), "before any pod");
    let w = who(&from1);
    assert_eq!(w["holder"]["containerId"], "c1", "from is included: {w}");
    assert_eq!(w["at"], from1.as_str(), "a printed time given back is that instant");
    assert_eq!(w["holder"]["podNamespace"], "shop");
    assert_eq!(w["holder"]["podUid"], "uid-web");
    let at_until = who(&until1);
    assert!(at_until["holder"].is_null() || at_until["holder"]["containerId"] == "c2", "until is excluded: {at_until}");
    assert_eq!(who(&from2)["holder"]["containerId"], "c2");
    assert_eq!(who("2100-01-01T00:00:00Z")["holder"]["containerId"], "c2", "held until now");
    // Filters combine; --since/--until keep what overlaps the window.
    let (_, text) = audit(&node, &list, &["history", "--pod", "shop/web"]);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().len(), 1);
    let (_, text) = audit(&node, &list, &["history", "--since", &until1]);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "web ended exactly when the window starts: {v}");
    let (_, text) = audit(&node, &list, &["history", "--container", "c1", "--node", "nobody"]);
    assert_eq!(text.trim(), "[]");

    // Export: three events, as JSON lines and as CSV with a header.
    let (code, text) = audit(&node, &list, &["export"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["allocated", "released", "allocated"]);
    let (code, text) = audit(&node, &list, &["export", "--format", "csv"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "time,node,network,pool,ip,containerId,ifname,podNamespace,podName,podUid,event");
    assert_eq!(rows.len(), 4);
    assert!(rows[1].ends_with(",allocated") && rows[1].contains(",10.77.0.9,c1,eth0,shop,web,uid-web,"));
}

#[test]
fn releases_by_gc_and_by_ipam_release_are_logged() {
    let node = Node::new();
    let conf = one_address(&node);
    let list = node.dir.path().join("10-podnet.conflist");
    write_conflist(&list, &conf);
    let pod = Netns::new("g");
    assert!(node.add("g1", &pod, &conf).ok);
    // GC with no valid attachment frees it.
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(node.call_env(PODNET, "GC", &[], None, &gc).ok);
    assert!(node.add("g2", &pod, &conf).ok);
    let (code, text) = podnetctl(&node, &list, &["ipam", "release", "10.77.0.9", "--force"]);
    assert_eq!(code, 0, "{text}");
    let (_, text) = audit(&node, &list, &["history"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    let closed: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["until"].is_null())
        .map(|i| i["containerId"].as_str().unwrap())
        .collect();
    assert_eq!(closed, ["g1", "g2"], "{v}");
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let node = Node::new();
    let conf = one_address(&node);
    let list = node.dir.path().join("10-podnet.conflist");
    write_conflist(&list, &conf);
    for (args, want) in [
        (vec!["who", "10.77.0.9", "--at", "last tuesday"], "not an RFC 3339 time"),
        (vec!["who", "10.77.0.999"], "not an IP address"),
        (vec!["history", "--since", "2026-11-30T15:00:00Z", "--until", "2026-11-30T14:00:00Z"], "is after --until"),
        (vec!["history", "--pod", "web"], "NAMESPACE/NAME"),
        (vec!["export", "--format", "xml"], "invalid value"),
    ] {
        let (code, text) = audit(&node, &list, &args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(want), "{args:?} should say {want:?}: {text}");
    }
    // No pod yet: who answers, with no holder.
    let (code, text) = audit(&node, &list, &["who", "10.77.0.9"]);
    assert_eq!(code, 0, "{text}");
    assert!(serde_json::from_str::<Value>(&text).unwrap()["holder"].is_null());
}

/// Two nodes on one etcd, podnetd on each: a query on either answers for both, and shipping
/// resumes after an etcd outage with nothing lost or twice.
#[test]
fn one_query_answers_for_every_node_and_shipping_survives_an_etcd_outage() {
    use podnet_lab::{Cluster, ClusterNode, ClusterSpec, StoreKind};
    let spec = ClusterSpec {
        prefix: format!("pna{}", std::process::id()),
        subnets: vec!["192.168.10.0/24".parse().unwrap()],
        placement: vec![0, 0],
        store: StoreKind::Etcd,
        network: "podnet".into(),
        plugin: json!({"type": "podnet", "ipam": {"type": "podnet-ipam",
            "pools": [{"name": "pods", "cidr": "10.244.0.0/16", "blockSize": 26}]}}),
        bin_dir: std::path::Path::new(PODNETD).parent().unwrap().to_path_buf(),
    };
    let mut c = Cluster::create(&spec).unwrap_or_else(|e| panic!("{e}"));
    for n in &mut c.nodes {
        n.start_agent(&["--poll-seconds", "1", "--metrics-addr", "127.0.0.1:9695"]).unwrap();
    }
    let history = |n: &ClusterNode| -> Vec<Value> {
        let out =
            n.ns.command(PODNETCTL)
                .args(["--config", n.conflist.to_str().unwrap(), "-o", "json", "audit", "history"])
                .output()
                .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
    };
    let count = |h: &[Value], cid: &str, closed: bool| {
        h.iter().filter(|i| i["containerId"] == cid && i["until"].is_null() != closed).count()
    };
    let (p1, p2, p3) = (Netns::new("a1"), Netns::new("a2"), Netns::new("a3"));
    c.nodes[0].add_pod("n1-pod", &p1).unwrap();
    c.nodes[1].add_pod("n2-pod", &p2).unwrap();
    // Each node ships its own events on its own poll, so node-1 may answer for both before
    // node-2 can: wait for both.
    let seen = ClusterNode::wait_until(std::time::Duration::from_secs(20), || {
        let h = history(&c.nodes[0]);
        count(&h, "n2-pod", false) == 1
            && count(&h, "n1-pod", false) == 1
            && count(&history(&c.nodes[1]), "n1-pod", false) == 1
    });
    assert!(seen, "node-1 answers for node-2: {:?}", history(&c.nodes[0]));
    assert_eq!(count(&history(&c.nodes[1]), "n1-pod", false), 1, "and node-2 for node-1");

    // etcd goes away; node-2 deletes its pod and starts another (inside its own block).
    c.etcd.as_mut().unwrap().stop();
    assert!(c.nodes[1].cni("DEL", "n2-pod", Some(&p2)).unwrap().ok);
    c.nodes[1].add_pod("n2-pod-b", &p3).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    c.etcd.as_mut().unwrap().restart(&c.fabric.ns).unwrap();
    let caught_up = ClusterNode::wait_until(std::time::Duration::from_secs(30), || {
        let h = history(&c.nodes[0]);
        count(&h, "n2-pod", true) == 1 && count(&h, "n2-pod-b", false) == 1
    });
    let h = history(&c.nodes[0]);
    assert!(caught_up, "after the outage: {h:?}");
    // Nothing twice: one interval per attachment.
    for cid in ["n1-pod", "n2-pod", "n2-pod-b"] {
        assert_eq!(h.iter().filter(|i| i["containerId"] == cid).count(), 1, "{cid}: {h:?}");
    }
}
