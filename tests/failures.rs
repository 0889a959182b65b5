//! A failed ADD leaves nothing behind; bad configs and bad env get the spec's codes.
mod common;

use common::*;
use serde_json::json;

#[test]
fn exhausted_pool_fails_with_code_100_and_leaves_nothing() {
    let node = Node::new();
    // A /30 range: network, gateway and broadcast are kept, one address is usable.
    let conf =
        node.podnet_conf(json!({"ipam": {"pools": [{"name": "tiny", "cidr": "10.70.0.0/30", "source": "range"}]}}));
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let r = node.add("c-a", &a, &conf).must();
    assert_eq!(result_ip(&r), "10.70.0.2");
    let e = node.add("c-b", &b, &conf);
    assert!(!e.ok);
    assert_eq!(e.code(), 100, "{}", e.raw);
    let msg = e.json["msg"].as_str().unwrap();
    assert!(msg.contains("tiny") && msg.contains("node-1"), "names pool and node: {msg}");
    assert!(!b.links().contains(&"eth0".to_string()), "no interface in the failed pod");
    assert_eq!(node.allocations().len(), 1, "only the first pod's address");
    assert_eq!(node.host_veths().len(), 1);
    assert_eq!(node.endpoints(&conf).len(), 1);
}

#[test]
fn bad_netns_fails_with_code_4_and_leaves_nothing() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let file = node.dir.path().join("not-a-netns");
    std::fs::write(&file, "x").unwrap();
    let pidns = std::path::PathBuf::from("/proc/self/ns/pid");
    for path in [file.clone(), node.dir.path().join("missing"), pidns] {
        let e = node.call(PODNET, "ADD", "c1", Some(&path), "eth0", &conf);
        assert!(!e.ok);
        assert_eq!(e.code(), 4, "{}: {}", path.display(), e.raw);
        assert!(e.json["msg"].as_str().unwrap().contains("CNI_NETNS"));
    }
    // A symlink pointing into the state directory is not a network namespace either.
    std::fs::create_dir_all(node.data_dir()).unwrap();
    let link = node.dir.path().join("link");
    std::os::unix::fs::symlink(node.data_dir(), &link).unwrap();
    assert_eq!(node.call(PODNET, "ADD", "c1", Some(&link), "eth0", &conf).code(), 4);
    assert!(node.allocations().is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
fn interface_name_taken_in_pod_rolls_back_the_allocation() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let pod = Netns::new("p");
    pod.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other"]);
    let e = node.add("c1", &pod, &conf);
    assert!(!e.ok);
    assert_eq!(e.code(), 4, "{}", e.raw);
    assert!(node.allocations().is_empty(), "the allocation is released");
    assert!(node.host_veths().is_empty());
    assert!(node.endpoints(&conf).is_empty());
}

#[test]
fn bad_configs_get_codes_that_name_the_field() {
    let node = Node::new();
    let pod = Netns::new("p");
    let cases = [
        (json!({"dataplane": "vxlan"}), 7, "dataplane"),
        (json!({"dataPlane": "routed"}), 2, "dataPlane"),
        (json!({"mtu": 10}), 7, "mtu"),
        (json!({"mtu": "big"}), 7, "mtu"),
        (json!({"cniVersion": "0.2.0"}), 1, "0.2.0"),
        (json!({"cniVersion": null}), 7, "cniVersion"),
        (json!({"ipam": {"pools": [{"name": "p", "cidr": "10.0.0.1/8"}]}}), 7, "cidr"),
        (json!({"ipam": {"pools": null}}), 7, "pools"),
        (json!({"ipam": {"pools": [{"name": "p", "cidr": "10.0.0.0/8", "blockSize": 4}]}}), 7, "blockSize"),
        (json!({"ipam": {"type": null}}), 7, "ipam.type"),
        (json!({"ipam": {"store": {"type": "etcd"}}}), 7, "endpoints"),
        (json!({"ipam": {"pools": [{"name": "p", "cidr": "10.0.0.0/8", "source": "vnet"}]}}), 7, "routed dataplane"),
        (
            json!({"dataplane": "routed", "ipam": {"pools": [{"name": "p", "cidr": "10.0.0.0/8", "source": "vnet", "interfaceMac": "nic0"}]}}),
            7,
            "interfaceMac",
        ),
        (json!({"ipam": {"pools": [{"name": "p", "cidr": "10.0.0.0/8", "refreshSeconds": 5}]}}), 7, "vnet pools only"),
        (json!({"dataDir": "relative"}), 7, "dataDir"),
        (json!({"bridge": "a/b"}), 7, "bridge"),
    ];
    for (extra, code, needle) in cases {
        let conf = node.podnet_conf(extra.clone());
        let e = node.add("c1", &pod, &conf);
        assert!(!e.ok, "{extra}");
        assert_eq!(e.code(), code, "{extra}: {}", e.raw);
        assert!(e.json["msg"].as_str().unwrap().contains(needle), "{extra}: {}", e.raw);
    }
    let e = node.call_raw(
        PODNET,
        "ADD",
        &[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")],
        Some(&pod.path()),
        b"{not json",
    );
    assert_eq!(e.code(), 6);
    assert!(node.allocations().is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
fn bad_env_gets_code_4() {
    let node = Node::new();
    let pod = Netns::new("p");
    let conf = node.podnet_conf(json!({}));
    let long = "a".repeat(1024);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("CNI_IFNAME", "eth0")],
        vec![("CNI_CONTAINERID", "c1")],
        vec![("CNI_CONTAINERID", "../../etc"), ("CNI_IFNAME", "eth0")],
        vec![("CNI_CONTAINERID", &long), ("CNI_IFNAME", "eth0")],
        vec![("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "averyveryverylongname")],
        vec![("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth/0")],
        vec![("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth 0")],
        vec![("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", "FOO=bar")],
    ];
    for env in cases {
        let e = node.call_env(PODNET, "ADD", &env, Some(&pod.path()), &conf);
        assert_eq!(e.code(), 4, "{env:?}: {}", e.raw);
    }
    let e = node.call_env(PODNET, "BOGUS", &[], None, &conf);
    assert_eq!(e.code(), 4);
    // Unknown CNI_ARGS pass with IgnoreUnknown=1, and the pod attributes are recorded.
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;FOO=bar";
    node.call_env(
        PODNET,
        "ADD",
        &[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", args)],
        Some(&pod.path()),
        &conf,
    )
    .must();
    let out = std::process::Command::new(PODNETCTL)
        .args(["-o", "json", "--config"])
        .arg(write_conf(&node, &conf))
        .arg("inspect")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["endpoints"][0]["pod"]["namespace"], "team-a");
    assert_eq!(v["endpoints"][0]["pod"]["name"], "web-0");
}

fn write_conf(node: &Node, conf: &serde_json::Value) -> std::path::PathBuf {
    let p = node.dir.path().join("net.conflist");
    let list = json!({"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [conf]});
    std::fs::write(&p, serde_json::to_vec(&list).unwrap()).unwrap();
    p
}

#[test]
fn a_repeated_add_fails_and_leaves_the_live_attachment_alone() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let (pod, other) = (Netns::new("live"), Netns::new("other"));
    let ip = result_ip(&node.add("same", &pod, &conf).must());
    let peer = result_ip(&node.add("peer", &other, &conf).must());
    let again = node.add("same", &pod, &conf);
    assert_eq!(again.code(), 4, "{}", again.raw);
    assert_eq!(pod.addrs4("eth0"), vec![ip.clone()], "the live pod keeps its address");
    assert!(other.ping(&ip), "and stays reachable");
    assert_eq!(node.allocations().len(), 2);
    assert_eq!(node.endpoints(&conf), vec!["peer:eth0".to_string(), "same:eth0".to_string()]);
    assert_ne!(ip, peer);
}

#[test]
fn an_unusable_gateway_from_an_execd_ipam_is_refused_and_undone() {
    let node = Node::new();
    // The reference static IPAM returns what it is told: here a gateway outside the subnet.
    let conf = node.podnet_conf(json!({"ipam": {"type": "static", "node": null, "pools": null,
        "addresses": [{"address": "10.10.0.5/24", "gateway": "10.20.0.1"}]}}));
    let pod = Netns::new("gw");
    let e = node.add("gw-1", &pod, &conf);
    assert_eq!(e.code(), 107, "{}", e.raw);
    assert!(e.json["msg"].as_str().unwrap().contains("10.20.0.1"));
    assert!(node.host_veths().is_empty());
    assert!(!pod.links().contains(&"eth0".to_string()));
}
