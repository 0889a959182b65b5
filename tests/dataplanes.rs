//! Pods on a real kernel, in namespaces the test creates: bridge and routed dataplanes.
mod common;

use common::*;
use serde_json::json;

fn lifecycle(dataplane: &str) {
    let node = Node::new();
    let conf = node.podnet_conf(json!({"dataplane": dataplane}));
    let (a, b) = (Netns::new("pa"), Netns::new("pb"));
    let ra = node.add("ctr-a", &a, &conf).must();
    let rb = node.add("ctr-b", &b, &conf).must();
    let (ip_a, ip_b) = (result_ip(&ra), result_ip(&rb));
    assert_ne!(ip_a, ip_b);
    assert_eq!(a.addrs4("eth0"), vec![ip_a.clone()], "the pod holds the address the result names");

    // Two pods reach each other, and each reaches the node.
    assert!(a.ping(&ip_b), "{dataplane}: pod a cannot reach pod b {ip_b}");
    assert!(b.ping(&ip_a), "{dataplane}: pod b cannot reach pod a {ip_a}");
    assert!(a.ping(&node.ip), "{dataplane}: pod a cannot reach the node {}", node.ip);

    // The result names host veth (no sandbox) and pod interface (sandbox = netns); ips point at the pod.
    let ifaces = ra["interfaces"].as_array().unwrap();
    let pod_idx = ifaces.iter().position(|i| i["name"] == "eth0").unwrap();
    assert_eq!(ifaces[pod_idx]["sandbox"], a.path().display().to_string());
    assert_eq!(ra["ips"][0]["interface"], pod_idx);
    assert!(ifaces.iter().any(|i| i["name"].as_str().unwrap().starts_with("pn") && i.get("sandbox").is_none()));
    if dataplane == "bridge" {
        assert_eq!(ifaces[0]["name"], "podnet0");
        assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/24"));
    } else {
        assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/32"));
        assert_eq!(ra["ips"][0]["gateway"], "169.254.1.1");
        assert!(!node.ns.links().contains(&"podnet0".to_string()), "routed mode makes no bridge");
        let routes = node.ns.exec(&["ip", "route", "show", &ip_a]);
        assert!(routes.contains("scope link"), "a /32 host route to the pod: {routes}");
    }

    // CHECK passes on the untouched pod, then reports the address deleted by hand.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = ra.clone();
    assert!(node.call(PODNET, "CHECK", "ctr-a", Some(&a.path()), "eth0", &check_conf).ok);
    let prefix = ra["ips"][0]["address"].as_str().unwrap();
    a.exec(&["ip", "addr", "del", prefix, "dev", "eth0"]);
    let drift = node.call(PODNET, "CHECK", "ctr-a", Some(&a.path()), "eth0", &check_conf);
    assert!(!drift.ok);
    assert_eq!(drift.code(), 104, "{}", drift.raw);
    assert!(drift.json["msg"].as_str().unwrap().contains(&ip_a), "{}", drift.raw);

    // DEL twice succeeds; the address and the endpoint record are gone.
    assert!(node.del("ctr-a", Some(&a), &conf).ok);
    assert!(node.del("ctr-a", Some(&a), &conf).ok, "a second DEL succeeds");
    assert!(!a.links().contains(&"eth0".to_string()));

    // DEL after the pod's namespace is gone (the kernel took the veth with it).
    drop(b);
    let d = node.del("ctr-b", None, &conf);
    assert!(d.ok, "{}", d.raw);
    assert!(node.allocations().is_empty(), "left: {:?}", node.allocations());
    assert!(node.endpoints(&conf).is_empty());
    assert!(node.host_veths().is_empty(), "left: {:?}", node.host_veths());
}

#[test]
fn bridge_pods_reach_each_other_and_the_node() {
    lifecycle("bridge");
}

#[test]
fn routed_pods_reach_each_other_and_the_node() {
    lifecycle("routed");
}

#[test]
fn bridge_pods_in_different_blocks_reach_each_other() {
    // /29 blocks hold 5 pods each (network, gateway and broadcast are kept), so 7 pods need two
    // blocks; each block's gateway sits on the bridge.
    let node = Node::new();
    let conf =
        node.podnet_conf(json!({"ipam": {"pools": [{"name": "small", "cidr": "10.60.0.0/24", "blockSize": 29}]}}));
    let pods: Vec<Netns> = (0..7).map(|i| Netns::new(&format!("p{i}"))).collect();
    let ips: Vec<String> =
        pods.iter().enumerate().map(|(i, p)| result_ip(&node.add(&format!("c{i}"), p, &conf).must())).collect();
    let gws = node.ns.addrs4("podnet0");
    assert_eq!(gws, vec!["10.60.0.1", "10.60.0.9"], "one gateway per block");
    assert!(ips[6].starts_with("10.60.0.1"), "the 6th+ pod is in the second block: {ips:?}");
    assert!(pods[0].ping(&ips[6]), "block 1 pod reaches block 2 pod");
    assert!(pods[6].ping(&ips[0]));
    let leases = list_dir(&node.data_dir().join("_cluster/podnet/blocks"));
    assert_eq!(leases, vec!["10.60.0.0_29", "10.60.0.8_29"]);
    for (i, p) in pods.iter().enumerate() {
        assert!(node.del(&format!("c{i}"), Some(p), &conf).ok);
    }
    assert!(node.allocations().is_empty());
}

#[test]
fn mtu_and_hairpin_are_applied() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({"mtu": 1400, "hairpinMode": true}));
    let pod = Netns::new("p");
    let r = node.add("c1", &pod, &conf).must();
    assert!(pod.exec(&["ip", "link", "show", "eth0"]).contains("mtu 1400"));
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let detail = node.ns.exec(&["ip", "-d", "link", "show", &veth]);
    assert!(detail.contains("hairpin on"), "{detail}");
    assert!(detail.contains("mtu 1400"));
    // Without an mtu key the pod gets the uplink's MTU.
    let node2 = Node::new();
    node2.ns.exec(&["ip", "link", "set", "up0", "mtu", "1450"]);
    let pod2 = Netns::new("p2");
    node2.add("c2", &pod2, &node2.podnet_conf(json!({}))).must();
    assert!(pod2.exec(&["ip", "link", "show", "eth0"]).contains("mtu 1450"));
}

#[test]
fn without_an_mtu_key_pods_get_the_default_route_s_link_s_mtu_however_the_node_routes() {
    let mtu_of_a_pod = |node: &Node, cid: &str| {
        let pod = Netns::new(cid);
        node.add(cid, &pod, &node.podnet_conf(json!({}))).must();
        let link = pod.exec(&["ip", "link", "show", "eth0"]);
        link.split_whitespace().skip_while(|w| *w != "mtu").nth(1).unwrap().to_string()
    };
    // A route of its own covers the address the lookup probes (a documentation range): the
    // default route is then found in the listing of routes.
    let node = Node::new();
    node.ns.exec(&["ip", "link", "set", "up0", "mtu", "1450"]);
    node.ns.exec(&["ip", "link", "add", "name", "side0", "mtu", "1300", "type", "veth", "peer", "name", "side0p"]);
    node.ns.exec(&["ip", "link", "set", "side0", "up"]);
    node.ns.exec(&["ip", "route", "add", "203.0.113.0/24", "dev", "side0"]);
    assert_eq!(mtu_of_a_pod(&node, "m1"), "1450");
    // Only an IPv6 default route: its link's.
    let node = Node::new();
    node.ns.exec(&["ip", "link", "set", "up0", "mtu", "1420"]);
    node.ns.exec(&["ip", "route", "del", "default"]);
    node.ns.exec(&["ip", "-6", "route", "add", "default", "dev", "up0"]);
    assert_eq!(mtu_of_a_pod(&node, "m2"), "1420");
    // No default route at all: 1500.
    let node = Node::new();
    node.ns.exec(&["ip", "link", "set", "up0", "mtu", "1400"]);
    node.ns.exec(&["ip", "route", "del", "default"]);
    assert_eq!(mtu_of_a_pod(&node, "m3"), "1500");
}

#[test]
fn check_reports_a_missing_route_and_a_missing_veth() {
    for dataplane in ["bridge", "routed"] {
        let node = Node::new();
        let conf = node.podnet_conf(json!({"dataplane": dataplane}));
        let pod = Netns::new("c");
        let r = node.add("chk", &pod, &conf).must();
        let mut check_conf = conf.clone();
        check_conf["prevResult"] = r.clone();
        let check = || node.call(PODNET, "CHECK", "chk", Some(&pod.path()), "eth0", &check_conf);
        assert!(check().ok);
        pod.exec(&["ip", "route", "del", "default"]);
        let e = check();
        assert_eq!(e.code(), 104, "{dataplane}: {}", e.raw);
        assert!(e.json["msg"].as_str().unwrap().contains("default route"), "{}", e.raw);
        let veth =
            r["interfaces"].as_array().unwrap().iter().find(|i| i["name"].as_str().unwrap().starts_with("pn")).unwrap()
                ["name"]
                .as_str()
                .unwrap()
                .to_string();
        node.ns.exec(&["ip", "link", "del", &veth]);
        let e = check();
        assert_eq!(e.code(), 104);
        assert!(e.json["msg"].as_str().unwrap().contains(&format!("host veth {veth} is missing")), "{}", e.raw);
        assert!(node.del("chk", Some(&pod), &conf).ok);
        assert!(node.allocations().is_empty());
    }
}

#[test]
fn dual_stack_pods_reach_each_other_over_ipv4_and_ipv6_in_both_dataplanes() {
    for dataplane in ["bridge", "routed"] {
        let node = Node::new();
        let conf = node.podnet_conf(json!({"dataplane": dataplane, "ipam": {"pools": [
            {"name": "v4", "cidr": "10.244.0.0/16", "blockSize": 24},
            {"name": "v6", "cidr": "fd00:10:244::/56", "blockSize": 120}]}}));
        let (a, b) = (Netns::new("a6"), Netns::new("b6"));
        node.ns.exec(&["sysctl", "-qw", "net.ipv6.conf.up0.accept_ra=1"]);
        let ra = node.add("ds-a", &a, &conf).must();
        // IPv6 forwarding came on, and the uplink still accepts router advertisements.
        assert_eq!(node.ns.exec(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).trim(), "1");
        assert_eq!(node.ns.exec(&["cat", "/proc/sys/net/ipv6/conf/up0/accept_ra"]).trim(), "2");
        let rb = node.add("ds-b", &b, &conf).must();
        let v6 = |r: &serde_json::Value| {
            r["ips"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|i| i["address"].as_str().filter(|s| s.contains(':')))
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(ra["ips"].as_array().unwrap().len(), 2, "{dataplane}: one address per family");
        assert_eq!(ra["routes"].as_array().unwrap().len(), 2, "{dataplane}: a default route per family");
        let (a6, b6) = (v6(&ra), v6(&rb));
        assert!(a.ping(&b6), "{dataplane}: {a6} cannot reach {b6}");
        assert!(b.ping(&a6), "{dataplane}: {b6} cannot reach {a6}");
        assert!(a.ping(&result_ip(&rb)), "{dataplane}: IPv4 between dual-stack pods");
        if dataplane == "routed" {
            assert!(ra["ips"][1]["address"].as_str().unwrap().ends_with("/128"));
            assert_eq!(ra["ips"][1]["gateway"], "fe80::ecee:eeff:feee:eeee");
        }
        let mut check = conf.clone();
        check["prevResult"] = ra.clone();
        let c = node.call(PODNET, "CHECK", "ds-a", Some(&a.path()), "eth0", &check);
        assert!(c.ok, "{dataplane}: {}", c.raw);
        for (cid, ns) in [("ds-a", &a), ("ds-b", &b)] {
            assert!(node.del(cid, Some(ns), &conf).ok);
        }
        assert!(node.allocations().is_empty());
    }
}
