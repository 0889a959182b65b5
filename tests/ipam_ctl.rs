//! `podnetctl ipam show | check | release` against a node's real state.
mod common;

use common::*;
use serde_json::{json, Value};

fn conflist(node: &Node, plugin: &Value) -> std::path::PathBuf {
    let p = node.dir.path().join("net.conflist");
    write_conflist(&p, plugin);
    p
}

#[test]
fn show_check_and_release_on_the_local_store() {
    let node = Node::new();
    let store = json!({"type": "local", "path": node.dir.path().join("cluster")});
    show_check_and_release(&node, store);
}

#[test]
fn show_check_and_release_on_etcd() {
    let node = Node::new();
    let etcd = Etcd::start_in(&node.ns);
    show_check_and_release(&node, json!({"type": "etcd", "endpoints": [etcd.url()], "timeoutMs": 5000}));
}

fn show_check_and_release(node: &Node, store: Value) {
    let conf = node.podnet_conf(json!({"ipam": {"store": store,
        "pools": [{"name": "pods", "cidr": "10.66.0.0/24", "blockSize": 28}]}}));
    let list = conflist(node, &conf);
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("ic{i}"))).collect();
    let ips: Vec<String> =
        pods.iter().enumerate().map(|(i, p)| result_ip(&node.add(&format!("ic-{i}"), p, &conf).must())).collect();

    let (code, out) = podnetctl(node, &list, &["-o", "json", "ipam", "show"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let pool = &v["pools"][0];
    assert_eq!(pool["capacity"], 16 * 13, "16 /28 blocks of 13 pods each on a bridge");
    assert_eq!(pool["blocksByNode"], json!({"node-1": 1}));
    assert_eq!(
        (pool["used"].as_u64(), pool["free"].as_u64(), pool["freeBlocks"].as_u64()),
        (Some(3), Some(10), Some(15))
    );
    let (code, out) = podnetctl(node, &list, &["ipam", "show"]);
    assert!(code == 0 && out.contains("node-1:1"), "{out}");
    let (code, out) = podnetctl(node, &list, &["ipam", "check"]);
    assert_eq!(code, 0, "a clean node: {out}");

    // A leak: an address held by an attachment with no endpoint (allocated by podnet-ipam alone).
    let ghost = node
        .call(
            PODNET_IPAM,
            "ADD",
            "ghost",
            Some(&pods[0].path()),
            "eth0",
            &json!({"cniVersion": "1.0.0", "name": "podnet",
        "ipam": conf["ipam"].clone(), "dataDir": conf["dataDir"].clone()}),
        )
        .must();
    let ghost_ip = result_ip(&ghost);
    // A duplicate: a second record for a live pod's address under another handle.
    let addrs = node.data_dir().join("podnet/ipam/addrs");
    let live_file = node.allocations().into_iter().find(|f| f.starts_with(&format!("{}_", ips[0]))).unwrap();
    let mut rec: podnet_ipam::Allocation = podnet_fsio::read_record(&addrs.join(&live_file)).unwrap();
    rec.handle = podnet_ipam::Handle::new("dup", "eth0");
    std::fs::write(addrs.join(format!("{}_dup:eth0", ips[0])), podnet_fsio::encode_record(&rec)).unwrap();

    let (code, out) = podnetctl(node, &list, &["-o", "json", "ipam", "check"]);
    assert_eq!(code, 1, "problems give a non-zero exit: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"duplicate") && kinds.contains(&"leaked"), "{out}");
    assert!(out.contains(&ghost_ip) && out.contains("dup:eth0"), "{out}");

    // release IP frees the leak, refuses a live endpoint's address.
    let (code, out) = podnetctl(node, &list, &["ipam", "release", &ghost_ip]);
    assert!(code == 0 && out.contains("ghost:eth0"), "{out}");
    let (code, out) = podnetctl(node, &list, &["ipam", "release", &ips[1]]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("live endpoint"), "{out}");
    std::fs::remove_file(addrs.join(format!("{}_dup:eth0", ips[0]))).unwrap();
    let (code, out) = podnetctl(node, &list, &["ipam", "check"]);
    assert_eq!(code, 0, "{out}");

    // Releasing this node's own blocks while it runs would let two nodes share them.
    let (code, out) = podnetctl(node, &list, &["ipam", "release", "--node", "node-1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("this node"), "{out}");
    // release --node hands a dead node's blocks back to the pool.
    let other = json!({"cniVersion": "1.0.0", "name": "podnet", "ipam": {"type": "podnet-ipam", "node": "node-2",
        "dataDir": node.dir.path().join("node2"), "store": conf["ipam"]["store"].clone(),
        "pools": [{"name": "pods", "cidr": "10.66.0.0/24", "blockSize": 28, "blockOrder": "sequential"}]}});
    node.call(PODNET_IPAM, "ADD", "n2pod", Some(&pods[0].path()), "eth0", &other).must();
    let (_, out) = podnetctl(node, &list, &["-o", "json", "ipam", "show"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["pools"][0]["blocksByNode"],
        json!({"node-1": 1, "node-2": 1})
    );
    let (code, out) = podnetctl(node, &list, &["ipam", "release", "--node", "node-2"]);
    assert!(code == 0 && out.contains("released block 10.66.0.16/28 of node node-2"), "{out}");
    let (_, out) = podnetctl(node, &list, &["-o", "json", "ipam", "show"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["pools"][0]["blocksByNode"], json!({"node-1": 1}));
}
