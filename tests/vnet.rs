//! The `vnet` source: two nodes and a plain VNet host on one fabric subnet (the VNet), a test host
//! agent in each node serving its NIC document (good, changed, malformed, HTTP 500, never
//! answering). Pods take their own node's secondary addresses, are reached by those addresses
//! with no SNAT and no route on the VNet host, and the inventory is kept through a bad agent.
mod common;

use common::*;
use podnet_lab::cluster::metric;
use podnet_lab::hostagent::{document, Answer, HostAgent};
use podnet_lab::{Cluster, ClusterNode, ClusterSpec, StoreKind};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const VNET: &str = "10.240.0.0/16";
const VNET_HOST: &str = "10.240.0.5";
const AGENT: &str = "127.0.0.1:8089";
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// node-i (0-based) has the secondaries 10.240.<i+1>.1 ..= .n and its own address 10.240.0.<10+i>.
fn secondaries(i: usize, n: usize) -> Vec<String> {
    (1..=n).map(|k| format!("10.240.{}.{k}", i + 1)).collect()
}

fn doc_for(i: usize, addrs: &[String]) -> String {
    let mut list = vec![(format!("10.240.0.{}", 10 + i), true)];
    list.extend(addrs.iter().map(|a| (a.clone(), false)));
    document(&[(&format!("00:0d:3a:00:00:0{i}"), true, VNET, list)])
}

struct VnetLab {
    c: Cluster,
    agents: Vec<HostAgent>,
    host: Netns,
}

/// Two nodes and the VNet host; each node's host agent serves `n` secondaries; `pool` keys are
/// merged into the vnet pool.
fn vnet_lab(n: usize, pool: Value) -> VnetLab {
    let mut p = json!({"name": "vnet", "cidr": VNET, "source": "vnet", "natOutgoing": true,
        "inventoryUrl": format!("http://{AGENT}/machine/plugins?comp=nmagent&type=getinterfaceinfov1"), "refreshSeconds": 1});
    merge(&mut p, pool);
    let spec = ClusterSpec {
        prefix: format!("pnv{}-c{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::SeqCst)),
        subnets: vec![VNET.parse().unwrap()],
        placement: vec![0, 0],
        store: StoreKind::Local,
        network: "podnet".into(),
        plugin: json!({"type": "podnet", "dataplane": "routed", "ipam": {"type": "podnet-ipam", "pools": [p]}}),
        bin_dir: Path::new(PODNETD).parent().unwrap().to_path_buf(),
    };
    let mut c = Cluster::create(&spec).unwrap_or_else(|e| panic!("{e}"));
    let agents = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            HostAgent::start(&node.ns, AGENT.parse().unwrap(), Answer::Document(doc_for(i, &secondaries(i, n))))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let host = Netns::new("vh");
    c.fabric.attach(&host, "eth0", 0, 5).unwrap();
    VnetLab { c, agents, host }
}

fn add(n: &ClusterNode, id: &str) -> (Netns, podnet_lab::Outcome) {
    let pod = Netns::new(id);
    let out = n.cni("ADD", id, Some(&pod)).unwrap();
    (pod, out)
}

fn ip_of(out: &podnet_lab::Outcome) -> String {
    assert!(out.ok, "{}", out.raw);
    out.json["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

fn podnetctl_json(n: &ClusterNode, args: &[&str]) -> (i32, Value) {
    let conflist = n.conflist.to_str().unwrap().to_string();
    let mut all = vec![PODNETCTL, "--config", &conflist, "-o", "json"];
    all.extend_from_slice(args);
    let out = n.ns.command(all[0]).args(&all[1..]).output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn pods_take_their_own_node_s_secondaries_and_are_reached_by_them_without_snat() {
    let mut lab = vnet_lab(3, json!({}));
    // podnetd runs (natOutgoing is set on the pool): still no SNAT for a vnet pool.
    for n in &mut lab.c.nodes {
        n.start_agent(&["--poll-seconds", "1", "--metrics-addr", "127.0.0.1:9695"]).unwrap();
    }
    let (p1, o1) = add(&lab.c.nodes[0], "a1");
    let (p2, o2) = add(&lab.c.nodes[1], "b1");
    let (ip1, ip2) = (ip_of(&o1), ip_of(&o2));
    assert!(secondaries(0, 3).contains(&ip1), "{ip1}");
    assert!(secondaries(1, 3).contains(&ip2), "{ip2}");
    assert_eq!(o1.json["ips"][0]["address"].as_str().unwrap(), format!("{ip1}/32"));
    // The VNet host has no route but its subnet: it reaches the pods by their own addresses.
    assert!(lab.host.ping(&ip1) && lab.host.ping(&ip2));
    // Pod to pod across nodes, and to the VNet host, which sees the pod's own address.
    assert!(p1.ping(&ip2), "pod on node-1 to pod on node-2");
    let _listener = echo_peer(&lab.host, VNET_HOST, 7000);
    assert_eq!(seen_by(&p1, VNET_HOST, 7000).as_deref(), Some(ip1.as_str()), "no SNAT for a vnet pool");
    // The node answers ARP for its pods on its uplink only, by proxy entries for those addresses.
    let proxies = lab.c.nodes[0].ns.exec(&["ip", "neigh", "show", "proxy"]);
    assert!(proxies.contains(&ip1) && proxies.contains("eth0"), "{proxies}");
    assert!(!proxies.contains(&ip2));
    // DEL withdraws the entry.
    assert!(lab.c.nodes[0].cni("DEL", "a1", Some(&p1)).unwrap().ok);
    assert!(!lab.c.nodes[0].ns.exec(&["ip", "neigh", "show", "proxy"]).contains(&ip1));
    assert!(!lab.host.try_exec(&["ping", "-c", "1", "-W", "1", &ip1]).0);
    let _ = p2;
}

#[test]
fn capacity_exhaustion_and_inventory_changes() {
    let mut lab = vnet_lab(2, json!({}));
    lab.c.nodes[0].start_agent(&["--poll-seconds", "1", "--metrics-addr", "127.0.0.1:9695"]).unwrap();
    let n = &lab.c.nodes[0];
    let (pa, oa) = add(n, "c1");
    let (_pb, ob) = add(n, "c2");
    let (a, b) = (ip_of(&oa), ip_of(&ob));
    let (code, show) = podnetctl_json(n, &["ipam", "show"]);
    assert_eq!(code, 0, "{show}");
    let pool = show["pools"].as_array().unwrap().iter().find(|p| p["name"] == "vnet").unwrap().clone();
    assert_eq!(pool["capacity"], 2, "{pool}");
    let (code, inspect) = podnetctl_json(n, &["inspect"]);
    assert_eq!(code, 0, "{inspect}");
    assert_eq!(inspect["pools"][0]["capacity"], 2, "{inspect}");
    assert_eq!(inspect["pools"][0]["used"], 2, "{inspect}");
    // Past capacity: code 100 naming the pool and the node, nothing left behind.
    let veths = n.ns.links().len();
    let (_pc, oc) = add(n, "c3");
    assert_eq!(oc.code(), 100, "{}", oc.raw);
    assert!(oc.raw.contains("vnet") && oc.raw.contains("node-1") && oc.raw.contains("secondary"), "{}", oc.raw);
    assert_eq!(n.ns.links().len(), veths);
    // The cloud takes `a` back and gives a new address: after the next refresh, `a` stays with its
    // pod and is reported; the new one is handed out.
    let new = "10.240.1.9".to_string();
    lab.agents[0].set(Answer::Document(doc_for(0, &[b.clone(), new.clone()])));
    std::thread::sleep(Duration::from_millis(1100));
    let (_pd, od) = add(n, "c4");
    assert_eq!(ip_of(&od), new);
    let (code, problems) = podnetctl_json(n, &["ipam", "check"]);
    assert_eq!(code, 1, "{problems}");
    let text = problems.to_string();
    assert!(text.contains("withdrawn") && text.contains(&a), "{text}");
    assert!(pa.addrs4("eth0").contains(&a), "the pod keeps its address");
    // podnetd reports it too.
    let sample = r#"podnet_vnet_addresses{network="podnet",pool="vnet",state="withdrawn"}"#;
    let reported = ClusterNode::wait_until(Duration::from_secs(10), || {
        n.http_get("127.0.0.1:9695", "/metrics").ok().and_then(|(_, t)| metric(&t, sample)) == Some(1.0)
    });
    assert!(reported, "{}", n.http_get("127.0.0.1:9695", "/metrics").map(|r| r.1).unwrap_or_default());
    // The audit history ends c1's holding of `a` when the cloud took it back, though the pod
    // still carries it (the cloud may give it to another node now).
    let closed = ClusterNode::wait_until(Duration::from_secs(10), || {
        let (_, h) = podnetctl_json(n, &["audit", "history", "--ip", &a]);
        h.as_array().is_some_and(|v| v.len() == 1 && v[0]["containerId"] == "c1" && !v[0]["until"].is_null())
    });
    assert!(closed, "{}", podnetctl_json(n, &["audit", "history", "--ip", &a]).1);
    // Its pod goes: the address is free of the pod but never handed out again.
    assert!(n.cni("DEL", "c1", Some(&pa)).unwrap().ok);
    let (_, h) = podnetctl_json(n, &["audit", "history", "--ip", &a]);
    assert_eq!(h.as_array().map(Vec::len), Some(1), "its DEL adds no second release: {h}");
    let (_pe, oe) = add(n, "c5");
    assert_eq!(oe.code(), 100, "{}", oe.raw);
    assert_eq!(podnetctl_json(n, &["ipam", "check"]).0, 0);
}

#[test]
fn a_malformed_failing_or_hanging_host_agent_never_shrinks_the_pool() {
    let lab = vnet_lab(4, json!({}));
    let n = &lab.c.nodes[0];
    let (_p0, o0) = add(n, "d0");
    ip_of(&o0);
    let mut pods = Vec::new();
    for (i, answer) in
        [Answer::Document("<Interfaces><Interface".into()), Answer::Status(500), Answer::Hang].into_iter().enumerate()
    {
        lab.agents[0].set(answer.clone());
        // Past refreshSeconds: this ADD asks, gets nothing good, and uses the kept inventory.
        std::thread::sleep(Duration::from_millis(1100));
        let (p, o) = add(n, &format!("d{}", i + 1));
        assert!(secondaries(0, 4).contains(&ip_of(&o)), "{answer:?}: {}", o.raw);
        pods.push(p);
    }
    let (code, show) = podnetctl_json(n, &["ipam", "show"]);
    assert_eq!(code, 0);
    let pool = show["pools"].as_array().unwrap().iter().find(|p| p["name"] == "vnet").unwrap().clone();
    assert_eq!(pool["capacity"], 4, "{pool}");
}

#[test]
fn a_node_that_never_had_an_inventory_fails_add_with_code_11_leaving_nothing() {
    let lab = vnet_lab(2, json!({}));
    let n = &lab.c.nodes[1];
    for answer in [Answer::Hang, Answer::Status(503), Answer::Document("garbage".into())] {
        lab.agents[1].set(answer.clone());
        let veths = n.ns.links().len();
        let (_p, o) = add(n, "e1");
        assert_eq!(o.code(), 11, "{answer:?}: {}", o.raw);
        assert!(o.raw.contains("no inventory"), "{}", o.raw);
        assert_eq!(n.ns.links().len(), veths, "nothing left");
        assert!(
            !n.data_dir().join("podnet/vnet").exists()
                || n.data_dir().join("podnet/ipam/addrs").read_dir().unwrap().next().is_none()
        );
    }
    // No host agent at all (nothing listening).
    drop(lab.agents);
    let (_p, o) = add(&lab.c.nodes[0], "e2");
    assert_eq!(o.code(), 11, "{}", o.raw);
}

#[test]
fn inventory_file_and_interface_mac_choose_the_nic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interfaces.xml");
    let doc = document(&[
        ("000d3a000000", true, VNET, vec![("10.240.0.10".into(), true), ("10.240.1.1".into(), false)]),
        ("00-0D-3A-00-00-AA", false, VNET, vec![("10.240.0.20".into(), true), ("10.240.7.7".into(), false)]),
    ]);
    std::fs::write(&file, doc).unwrap();
    let mut lab =
        vnet_lab(1, json!({"inventoryUrl": null, "inventoryFile": file, "interfaceMac": "00:0d:3a:00:00:aa"}));
    lab.c.nodes[0].conf["ipam"]["pools"][0].as_object_mut().unwrap().remove("inventoryUrl");
    let (_pod, out) = add(&lab.c.nodes[0], "f1");
    assert_eq!(ip_of(&out), "10.240.7.7", "the second NIC's secondary");
    assert_eq!(lab.agents[0].requests(), 0, "a file, not the host agent");
}

#[test]
fn host_agent_requests_over_a_hundred_adds_are_bounded_by_refresh_seconds() {
    let lab = vnet_lab(4, json!({"refreshSeconds": 3600}));
    let n = &lab.c.nodes[0];
    let pod = Netns::new("g");
    for i in 0..100 {
        let id = format!("g{i}");
        assert!(n.cni("ADD", &id, Some(&pod)).unwrap().ok);
        assert!(n.cni("DEL", &id, Some(&pod)).unwrap().ok);
    }
    assert_eq!(lab.agents[0].requests(), 1, "one fetch within refreshSeconds");
}

#[test]
fn a_vnet_pool_on_the_bridge_dataplane_is_refused_naming_the_routed_one() {
    let mut lab = vnet_lab(2, json!({}));
    lab.c.nodes[0].conf["dataplane"] = json!("bridge");
    let (pod, out) = add(&lab.c.nodes[0], "h1");
    assert_eq!(out.code(), 7, "{}", out.raw);
    assert!(out.raw.contains("routed"), "{}", out.raw);
    assert!(pod.links().iter().all(|l| l == "lo"));
}
