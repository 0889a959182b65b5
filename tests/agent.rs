//! podnetd on a cluster of namespaces: three nodes on a fabric (node-1 and node-2 on one subnet,
//! node-3 on another behind the fabric's router), an external host outside every cluster CIDR,
//! a real podnetd per node and pods made by the real plugin. Routes, SNAT, node death, block
//! hand-back, restarts, GC, metrics, `--once`, the local store, and bad input.
mod common;

use common::*;
use podnet_dataplane::routes::{RouteTarget, PODNET_ROUTE_PROTOCOL};
use podnet_lab::cluster::metric;
use podnet_lab::{Cluster, ClusterNode, ClusterSpec, StoreKind};
use serde_json::json;
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const METRICS: &str = "127.0.0.1:9695";
/// The external host's subnet (outside every cluster CIDR) and address.
const EXTERNAL_SUBNET: usize = 2;
const EXTERNAL_IP: &str = "203.0.113.10";

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

fn spec(store: StoreKind, pool_extra: serde_json::Value) -> ClusterSpec {
    let mut pool = json!({"name": "pods", "cidr": "10.244.0.0/16", "blockSize": 26, "natOutgoing": true});
    merge(&mut pool, pool_extra);
    ClusterSpec {
        prefix: format!("pnt{}-c{}", std::process::id(), CLUSTERS.fetch_add(1, Ordering::SeqCst)),
        subnets: vec![
            "192.168.10.0/24".parse().unwrap(),
            "192.168.20.0/24".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ],
        placement: vec![0, 0, 1],
        store,
        network: "podnet".into(),
        plugin: json!({"type": "podnet", "ipam": {"type": "podnet-ipam", "emptyBlockGraceSeconds": 0, "pools": [pool]}}),
        bin_dir: Path::new(PODNETD).parent().unwrap().to_path_buf(),
    }
}

fn cluster(store: StoreKind) -> Cluster {
    Cluster::create(&spec(store, json!({}))).unwrap_or_else(|e| panic!("creating the cluster: {e}"))
}

/// Agent flags for a test: quick TTL and polling, and the given encapsulation.
fn agent_args<'a>(encap: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--encap", encap, "--node-ttl-seconds", "3", "--poll-seconds", "1", "--metrics-addr", METRICS];
    a.extend_from_slice(extra);
    a
}

fn start_agents(c: &mut Cluster, encap: &str, extra: &[&str]) {
    for n in &mut c.nodes {
        n.start_agent(&agent_args(encap, extra)).unwrap_or_else(|e| panic!("starting podnetd on {}: {e}", n.name));
    }
}

/// podnet's routes in a node (both families): (destination, kind) with kind direct, vxlan or blackhole.
fn podnet_routes(n: &ClusterNode) -> Vec<(String, &'static str)> {
    let vxlan = podnet_lab::link::with_netlink(&n.ns, |nl| nl.link_by_name("podnet.vxlan")).unwrap().map(|l| l.index);
    let mut out = Vec::new();
    for v4 in [true, false] {
        let routes = podnet_lab::link::with_netlink(&n.ns, |nl| nl.table_routes(v4)).unwrap();
        for r in routes.into_iter().filter(|r| r.protocol == PODNET_ROUTE_PROTOCOL) {
            let kind = match r.route.map(|r| r.target) {
                Some(RouteTarget::Blackhole) => "blackhole",
                Some(RouteTarget::Via { oif, .. }) if Some(oif) == vxlan => "vxlan",
                _ => "direct",
            };
            out.push((r.dst.to_string(), kind));
        }
    }
    out.sort();
    out
}

/// The block (a /26 of the pool) holding `ip`.
fn block_of(ip: IpAddr) -> String {
    ipnet::IpNet::new(ip, 26).unwrap().trunc().to_string()
}

struct Pod {
    ns: Netns,
    ip: IpAddr,
}

fn add_pod(n: &ClusterNode, tag: &str) -> Pod {
    let ns = Netns::new(tag);
    let ip = n.add_pod(tag, &ns).unwrap_or_else(|e| panic!("{e}"));
    Pod { ns, ip }
}

fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool, logs: &Cluster) {
    if !ClusterNode::wait_until(limit, cond) {
        let logs: Vec<String> = logs.nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.agent_log())).collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }
}

fn metrics(n: &ClusterNode) -> String {
    n.http_get(METRICS, "/metrics").unwrap_or_else(|e| panic!("{e}")).1
}

/// The nftables table of the node, as nft lists it ("" when none).
fn nft_table(n: &ClusterNode) -> String {
    let (ok, text) = n.ns.try_exec(&["nft", "list", "table", "inet", "podnet"]);
    if ok {
        text
    } else {
        String::new()
    }
}

#[test]
fn pods_on_three_nodes_reach_each_other_in_every_encapsulation() {
    for encap in ["none", "vxlan", "auto"] {
        let mut c = cluster(StoreKind::Etcd);
        start_agents(&mut c, encap, &[]);
        let vxlan_mtu = |n: &ClusterNode| {
            podnet_lab::link::with_netlink(&n.ns, |nl| nl.link_by_name("podnet.vxlan")).unwrap().map(|l| l.mtu)
        };
        if encap != "none" {
            // Pods made once the node encapsulates take the device's MTU.
            for n in &c.nodes {
                wait_for("the VXLAN device", Duration::from_secs(10), || vxlan_mtu(n).is_some(), &c);
            }
        }
        let pods: Vec<Pod> = c.nodes.iter().enumerate().map(|(i, n)| add_pod(n, &format!("{encap}-p{i}"))).collect();
        let reachable = |from: usize, to: usize| encap != "none" || (from < 2 && to < 2);
        // One route per remote block this node can reach: node-3 is on another subnet.
        for (i, n) in c.nodes.iter().enumerate() {
            let want: Vec<(String, &str)> = {
                let mut w: Vec<(String, &str)> = (0..3)
                    .filter(|j| *j != i && reachable(i, *j))
                    .map(|j| {
                        let kind = match (encap, i < 2 && j < 2) {
                            ("vxlan", _) | ("auto", false) => "vxlan",
                            _ => "direct",
                        };
                        (block_of(pods[j].ip), kind)
                    })
                    .collect();
                w.sort();
                w
            };
            wait_for(
                &format!("{encap}: {}'s routes {want:?}", n.name),
                Duration::from_secs(20),
                || podnet_routes(n) == want,
                &c,
            );
        }
        for (i, p) in pods.iter().enumerate() {
            for (j, q) in pods.iter().enumerate().filter(|(j, _)| *j != i) {
                assert_eq!(
                    p.ns.ping(&q.ip.to_string()),
                    reachable(i, j),
                    "{encap}: pod on node-{} to pod on node-{} ({})",
                    i + 1,
                    j + 1,
                    q.ip
                );
            }
        }
        // `none` cannot reach across the router: counted, not routed.
        let unreachable = |n: &ClusterNode| metric(&metrics(n), "podnet_unreachable_nodes");
        let want = if encap == "none" { [1.0, 1.0, 2.0] } else { [0.0, 0.0, 0.0] };
        for (n, want) in c.nodes.iter().zip(want) {
            wait_for("the unreachable count", Duration::from_secs(10), || unreachable(n) == Some(want), &c);
        }
        let want_mtu = if encap == "none" { 1500 } else { 1450 };
        if encap != "none" {
            assert_eq!(vxlan_mtu(&c.nodes[0]), Some(1450), "the VXLAN device is the uplink's MTU less 50");
        }
        for p in &pods {
            let eth0 = podnet_lab::link::with_netlink(&p.ns, |nl| nl.link_by_name("eth0")).unwrap().unwrap();
            assert_eq!(eth0.mtu, want_mtu, "{encap}: the pod's MTU");
        }
    }
}

#[test]
fn snat_hides_pods_from_the_outside_except_toward_non_masquerade_cidrs() {
    let mut c = cluster(StoreKind::Etcd);
    let ext = Netns::new("ext");
    c.fabric.attach(&ext, "eth0", EXTERNAL_SUBNET, 10).unwrap();
    let _listener = echo_peer(&ext, EXTERNAL_IP, 7000);
    c.nodes[0].start_agent(&agent_args("auto", &[])).unwrap();
    c.nodes[1].start_agent(&agent_args("auto", &["--non-masquerade-cidr", "203.0.113.0/24"])).unwrap();
    let p1 = add_pod(&c.nodes[0], "snat-p1");
    let p2 = add_pod(&c.nodes[1], "snat-p2");
    wait_for("the SNAT table", Duration::from_secs(10), || nft_table(&c.nodes[0]).contains("masquerade"), &c);
    assert_eq!(seen_by(&p1.ns, EXTERNAL_IP, 7000).as_deref(), Some("192.168.10.10"), "masqueraded to node-1's address");
    // Toward a non-masquerade CIDR the pod keeps its address: the fabric is told the way back.
    let block = block_of(p2.ip).parse().unwrap();
    podnet_lab::link::add_route(&c.fabric.ns, block, Some("192.168.10.11".parse().unwrap()), "seg0").unwrap();
    wait_for("node-2's SNAT table", Duration::from_secs(10), || nft_table(&c.nodes[1]).contains("203.0.113.0/24"), &c);
    assert_eq!(
        seen_by(&p2.ns, EXTERNAL_IP, 7000),
        Some(p2.ip.to_string()),
        "not masqueraded toward --non-masquerade-cidr"
    );
    // Pod to pod is never masqueraded: node-2's pod sees node-1's pod's own address.
    assert!(p1.ns.ping(&p2.ip.to_string()));
    // The table is podnet's alone and holds the pools and the exceptions as sets.
    let table = nft_table(&c.nodes[1]);
    assert!(
        table.contains("set pools4") && table.contains("10.244.0.0/16") && table.contains("set exceptions4"),
        "{table}"
    );
}

#[test]
fn a_dead_node_loses_its_routes_a_returned_block_too_and_a_restart_changes_nothing() {
    let mut c = cluster(StoreKind::Etcd);
    start_agents(&mut c, "auto", &["--gc-interval-seconds", "1"]);
    let p1 = add_pod(&c.nodes[0], "life-p1");
    let p2 = add_pod(&c.nodes[1], "life-p2");
    let p3 = add_pod(&c.nodes[2], "life-p3");
    let n1 = &c.nodes[0];
    wait_for("node-1's two routes", Duration::from_secs(20), || podnet_routes(n1).len() == 2, &c);

    // Restart node-1's agent while its pod pings node-2's: every reply comes back, and the new
    // agent changes no route.
    let routes_before = podnet_routes(&c.nodes[0]);
    let pinger = p1.ns.command("ping").args(["-c", "30", "-i", "0.1", "-W", "1", &p2.ip.to_string()]).output();
    let status = c.nodes[0].stop_agent().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    assert_eq!(podnet_routes(&c.nodes[0]), routes_before, "routes stay while the agent is down");
    let log_before = c.nodes[0].agent_log().len();
    c.nodes[0].start_agent(&agent_args("auto", &["--gc-interval-seconds", "1"])).unwrap();
    let n1 = &c.nodes[0];
    wait_for(
        "a reconcile of the restarted agent",
        Duration::from_secs(10),
        || n1.http_get(METRICS, "/healthz").is_ok_and(|(s, _)| s == 200),
        &c,
    );
    let out = pinger.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 0% packet loss"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(podnet_routes(n1), routes_before);
    let restarted_log = &n1.agent_log()[log_before..];
    assert!(!restarted_log.contains("routes reconciled"), "the restart changed routes:\n{}", n1.agent_log());

    // node-3 dies (its agent killed): within its TTL and a little, node-1 withdraws its route.
    c.nodes[2].kill_agent();
    let n1 = &c.nodes[0];
    wait_for(
        "node-3's route to go",
        Duration::from_secs(15),
        || !podnet_routes(n1).iter().any(|(b, _)| *b == block_of(p3.ip)),
        &c,
    );
    wait_for(
        "node-3 counted dead",
        Duration::from_secs(5),
        || metric(&metrics(n1), "podnet_nodes{state=\"dead\"}") == Some(1.0),
        &c,
    );
    assert!(!p1.ns.ping(&p3.ip.to_string()));

    // node-2's only pod goes: its GC hands the empty block back and node-1's route to it goes.
    assert!(c.nodes[1].cni("DEL", "life-p2", Some(&p2.ns)).unwrap().ok);
    wait_for("node-2's returned block's route to go", Duration::from_secs(15), || podnet_routes(n1).is_empty(), &c);
}

#[test]
fn gc_frees_a_leaked_address_and_metrics_count_what_the_test_counts() {
    let mut c = cluster(StoreKind::Etcd);
    start_agents(&mut c, "auto", &["--gc-interval-seconds", "1", "--gc-grace-seconds", "1"]);
    let n1 = &c.nodes[0];
    let kept: Vec<Pod> = (0..3).map(|i| add_pod(n1, &format!("gc-keep{i}"))).collect();
    let leaked = add_pod(n1, "gc-leak");
    let _remote = add_pod(&c.nodes[1], "gc-remote");
    let _remote3 = add_pod(&c.nodes[2], "gc-remote3");
    wait_for("node-1's routes", Duration::from_secs(20), || podnet_routes(n1).len() == 2, &c);
    // Usage gauges are refreshed every --poll-seconds.
    let used = "podnet_node_addresses{network=\"podnet\",pool=\"pods\",state=\"used\"}";
    wait_for("the used gauge", Duration::from_secs(5), || metric(&metrics(n1), used) == Some(4.0), &c);
    let text = metrics(n1);
    assert_eq!(
        metric(&text, "podnet_node_addresses{network=\"podnet\",pool=\"pods\",state=\"used\"}"),
        Some(4.0),
        "{text}"
    );
    // A /26 on a bridge: 64 less network, gateway and broadcast.
    assert_eq!(
        metric(&text, "podnet_node_addresses{network=\"podnet\",pool=\"pods\",state=\"free\"}"),
        Some(57.0),
        "{text}"
    );
    assert_eq!(metric(&text, "podnet_pool_blocks{network=\"podnet\",pool=\"pods\",state=\"leased\"}"), Some(3.0));
    assert_eq!(metric(&text, "podnet_pool_blocks{network=\"podnet\",pool=\"pods\",state=\"free\"}"), Some(1021.0));
    assert_eq!(metric(&text, "podnet_routes{kind=\"direct\"}"), Some(1.0));
    assert_eq!(metric(&text, "podnet_routes{kind=\"vxlan\"}"), Some(1.0));
    assert_eq!(metric(&text, "podnet_routes{kind=\"blackhole\"}"), Some(0.0));
    assert_eq!(metric(&text, "podnet_nodes{state=\"live\"}"), Some(3.0));
    assert_eq!(metric(&text, "podnet_nodes{state=\"dead\"}"), Some(0.0));
    assert!(metric(&text, "podnet_reconcile_total{result=\"ok\"}").is_some_and(|v| v >= 1.0));
    assert!(metric(&text, "podnet_route_programming_seconds_count").is_some_and(|v| v >= 1.0), "{text}");
    assert_eq!(n1.http_get(METRICS, "/healthz").unwrap().0, 200);

    // A route deleted by hand comes back at the next resync.
    let routes = podnet_lab::link::with_netlink(&n1.ns, |nl| nl.table_routes(true)).unwrap();
    let gone = routes.into_iter().find(|r| r.protocol == PODNET_ROUTE_PROTOCOL).and_then(|r| r.route).unwrap();
    podnet_lab::link::with_netlink(&n1.ns, |nl| nl.delete_route(&gone, PODNET_ROUTE_PROTOCOL)).unwrap();
    assert_eq!(podnet_routes(n1).len(), 1);
    wait_for("the deleted route to come back", Duration::from_secs(10), || podnet_routes(n1).len() == 2, &c);

    // The pod's namespace goes without a DEL (a runtime that lost it): its veth goes with it,
    // and after the grace time GC frees the address; the others keep theirs.
    let leaked_ip = leaked.ip;
    drop(leaked);
    wait_for(
        "GC to free the leaked address",
        Duration::from_secs(20),
        || metric(&metrics(n1), "podnet_gc_released_total") == Some(1.0),
        &c,
    );
    wait_for(
        "the used gauge",
        Duration::from_secs(5),
        || metric(&metrics(n1), "podnet_node_addresses{network=\"podnet\",pool=\"pods\",state=\"used\"}") == Some(3.0),
        &c,
    );
    let next = add_pod(n1, "gc-next");
    let kept_ips: Vec<IpAddr> = kept.iter().map(|p| p.ip).collect();
    assert!(!kept_ips.contains(&next.ip));
    for p in &kept {
        assert!(p.ns.ping(&c.nodes[0].uplink.ip().to_string()), "a live pod keeps its address and link");
    }
    assert!(n1.agent_log().contains(&format!("{leaked_ip}")), "GC logs what it freed");

    // A host veth named like podnet's that no record names (an ADD killed between the veth and
    // its record) goes after the grace time; a link not named so stays.
    let other = Netns::new("gc-stray");
    podnet_lab::link::veth(&n1.ns, "pn0123456789ab", None, &other, "eth0", 1500).unwrap();
    podnet_lab::link::veth(&n1.ns, "mine0", None, &other, "eth1", 1500).unwrap();
    wait_for("the stray veth to go", Duration::from_secs(20), || !n1.ns.links().contains(&"pn0123456789ab".into()), &c);
    assert!(n1.ns.links().contains(&"mine0".into()));
    for p in &kept {
        assert!(p.ns.ping(&c.nodes[0].uplink.ip().to_string()), "recorded pods keep their veths");
    }
}

#[test]
fn once_reconciles_and_exits_and_the_local_store_is_polled() {
    let mut c = cluster(StoreKind::Local);
    let p1 = add_pod(&c.nodes[0], "local-p1");
    let p2 = add_pod(&c.nodes[1], "local-p2");
    let p3 = add_pod(&c.nodes[2], "local-p3");
    // --once on every node: records announced, routes programmed, exit 0.
    // (A long TTL: the records must outlive these runs.)
    let once = ["--encap", "auto", "--node-ttl-seconds", "120", "--metrics-addr", METRICS, "--once"];
    for n in &c.nodes {
        let (code, log) = n.run_agent(&once).unwrap();
        assert_eq!(code, 0, "{}: {log}", n.name);
    }
    // node-1 ran first and saw no other node: again, now that all are announced.
    let (code, log) = c.nodes[0].run_agent(&once).unwrap();
    assert_eq!(code, 0, "{log}");
    assert_eq!(podnet_routes(&c.nodes[0]).len(), 2, "{:?}", podnet_routes(&c.nodes[0]));
    assert!(p1.ns.ping(&p2.ip.to_string()) && p1.ns.ping(&p3.ip.to_string()));
    // Agents on the local store: a new pod's block reaches the others by polling.
    start_agents(&mut c, "auto", &[]);
    let p4 = add_pod(&c.nodes[2], "local-p4");
    let _ = p4; // same block as p3: no new route
    let more: Vec<Pod> = (0..62).map(|i| add_pod(&c.nodes[1], &format!("local-m{i}"))).collect();
    let last = more.last().unwrap();
    let n1 = &c.nodes[0];
    wait_for(
        "node-2's second block routed on node-1",
        Duration::from_secs(20),
        || podnet_routes(n1).iter().any(|(b, _)| *b == block_of(last.ip)),
        &c,
    );
    assert!(p1.ns.ping(&last.ip.to_string()));
    // node-3 stops renewing its heartbeat: after the TTL, node-1 withdraws its block.
    c.nodes[2].kill_agent();
    let n1 = &c.nodes[0];
    wait_for(
        "node-3's route to go",
        Duration::from_secs(20),
        || !podnet_routes(n1).iter().any(|(b, _)| *b == block_of(p3.ip)),
        &c,
    );

    // podnetctl uninstall (agent stopped) takes podnetd's routes, VXLAN device and table.
    assert!(c.nodes[0].stop_agent().unwrap().success());
    let n1 = &c.nodes[0];
    assert!(!podnet_routes(n1).is_empty() && !nft_table(n1).is_empty(), "{:?}\n{}", podnet_routes(n1), n1.agent_log());
    let tmp = |d: &str| n1.dir.join(d).display().to_string();
    let (bin, sbin, units) = (tmp("bin"), tmp("sbin"), tmp("units"));
    let conf_dir = n1.conflist.parent().unwrap().display().to_string();
    let out = n1
        .ns
        .command(PODNETCTL)
        .arg("--config")
        .arg(&n1.conflist)
        .args([
            "uninstall",
            "--force",
            "--bin-dir",
            &bin,
            "--conf-dir",
            &conf_dir,
            "--agent-bin-dir",
            &sbin,
            "--unit-dir",
            &units,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("deleted podnetd's 2 route(s)") && text.contains("deleted podnet.vxlan"), "{text}");
    untouched(n1);
}

/// Nothing of podnetd's in the node: no VXLAN device, no routes of podnet's, no table.
fn untouched(n: &ClusterNode) {
    assert!(!n.ns.links().iter().any(|l| l == "podnet.vxlan"), "{:?}", n.ns.links());
    assert!(podnet_routes(n).is_empty());
    assert_eq!(nft_table(n), "");
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    let c = cluster(StoreKind::Local);
    let n = &c.nodes[0];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--config".into(), "/nonexistent/podnet.conflist".into()], "reading /nonexistent/podnet.conflist"),
        (vec!["--encap".into(), "gre".into()], "invalid value 'gre' for '--encap"),
        (vec!["--vxlan-vni".into(), "0".into()], "--vxlan-vni 0 must be between 1 and 16777215"),
        (vec!["--node-ip".into(), "192.0.2.99".into()], "no link of this node holds --node-ip 192.0.2.99"),
    ];
    for (mut args, says) in cases {
        if args[0] != "--config" {
            args.splice(0..0, ["--config".to_string(), n.conflist.display().to_string()]);
        }
        let out = n.ns.command(PODNETD).args(&args).output().unwrap();
        let (code, log) = (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr));
        assert_eq!(code, 2, "{args:?}: {log}");
        assert!(log.contains(says), "{args:?} should say {says:?}: {log}");
        untouched(n);
    }
    // A conflist that is not JSON, and one whose pool is invalid.
    let broken = c.dir.path().join("broken.conflist");
    for (text, says) in [
        ("{not json", "is not JSON"),
        (
            r#"{"name":"podnet","plugins":[{"type":"podnet","ipam":{"type":"podnet-ipam","pools":[{"name":"p","cidr":"10.0.0.0/33"}]}}]}"#,
            "ipam.pools[0].cidr",
        ),
    ] {
        std::fs::write(&broken, text).unwrap();
        let out = n.ns.command(PODNETD).arg("--config").arg(&broken).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{log}");
        assert!(log.contains(says), "{log}");
        untouched(n);
    }
    // The metrics address already taken.
    let _taken = n.ns.run(|| TcpListener::bind(METRICS)).unwrap().unwrap();
    let (code, log) = n.run_agent(&agent_args("vxlan", &[])).unwrap();
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("--metrics-addr 127.0.0.1:9695"), "{log}");
    untouched(n);
}

#[test]
fn routes_stay_through_an_etcd_outage_and_the_agents_follow_again_after_it() {
    let mut c = cluster(StoreKind::Etcd);
    start_agents(&mut c, "auto", &[]);
    let p1 = add_pod(&c.nodes[0], "outage-p1");
    let p2 = add_pod(&c.nodes[1], "outage-p2");
    let n1 = &c.nodes[0];
    wait_for("node-1's route", Duration::from_secs(20), || podnet_routes(n1).len() == 1, &c);
    let before = podnet_routes(n1);
    let etcd = c.etcd.as_mut().unwrap();
    etcd.stop();
    // While the store is away nothing is withdrawn: pods keep talking.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(podnet_routes(&c.nodes[0]), before);
    assert!(p1.ns.ping(&p2.ip.to_string()));
    c.etcd.as_mut().unwrap().restart(&c.fabric.ns).unwrap();
    // Back: a block leased now (node-3's first pod) reaches node-1 through a new watch.
    let p3 = add_pod(&c.nodes[2], "outage-p3");
    let n1 = &c.nodes[0];
    wait_for(
        "node-3's block routed after the outage",
        Duration::from_secs(30),
        || podnet_routes(n1).iter().any(|(b, _)| *b == block_of(p3.ip)),
        &c,
    );
    assert!(p1.ns.ping(&p3.ip.to_string()));
    assert!(n1.agent_log().contains("reading the cluster again"), "{}", n1.agent_log());
}
