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
        let handles: Vec<_> = pods.iter().enumerate().map(|(i, p)| {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.add(&format!("par-{i}"), p, conf))
        }).collect();
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
