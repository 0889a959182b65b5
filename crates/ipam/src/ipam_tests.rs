//! Behaviour of the IPAM as a whole: allocation order, leases, hand-back, borrowing, GC.

use crate::model::{Claim, ClaimAs, ClaimOutcome};
use crate::store::ClusterStore;
use crate::*;
use ipnet::IpNet;
use serde_json::json;
use std::collections::HashSet;
use std::net::IpAddr;

fn ipam(dir: &std::path::Path, pools: serde_json::Value, reservation: Reservation) -> Ipam {
    let cfg = parse_sequential(json!({"type": "podnet-ipam", "node": "n1", "pools": pools}), Some(dir));
    Ipam::local(cfg, "net", reservation)
}

/// Parse an `ipam` object, its overlay pools leasing blocks from the pool's start up: these tests
/// name the blocks and addresses they expect.
fn parse_sequential(mut v: serde_json::Value, dir: Option<&std::path::Path>) -> IpamConfig {
    for p in v["pools"].as_array_mut().into_iter().flatten() {
        if p.get("source").is_none_or(|s| s == "overlay") {
            p["blockOrder"] = json!("sequential");
        }
    }
    IpamConfig::parse(&v, dir).unwrap()
}

fn pod(ns: &str) -> PodInfo {
    PodInfo { namespace: Some(ns.into()), ..Default::default() }
}

#[test]
fn overlay_leases_blocks_as_they_fill_and_releases_by_handle() {
    let d = tempfile::tempdir().unwrap();
    // /30 blocks on a bridge keep network, gateway and broadcast: one pod per block.
    let ipam =
        ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/28", "blockSize": 30}]), Reservation::GatewayPerBlock);
    let mut got = Vec::new();
    for i in 0..4 {
        let a = ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("default")).unwrap();
        assert!(!a.existing);
        got.push(a.allocations[0].address.to_string());
    }
    assert_eq!(got, ["10.1.0.2/30", "10.1.0.6/30", "10.1.0.10/30", "10.1.0.14/30"]);
    assert_eq!(ipam.cluster().leases().unwrap().len(), 4);
    let e = ipam.allocate(&Handle::new("c4", "eth0"), &pod("default")).unwrap_err();
    assert!(matches!(e, IpamError::Exhausted(_)), "{e}");
    assert!(e.to_string().contains("p (10.1.0.0/28)") && e.to_string().contains("n1"));
    // Release is by handle and idempotent; the address is free again.
    assert_eq!(ipam.release(&Handle::new("c1", "eth0")).unwrap().len(), 1);
    assert!(ipam.release(&Handle::new("c1", "eth0")).unwrap().is_empty());
    let again = ipam.allocate(&Handle::new("c5", "eth0"), &pod("default")).unwrap();
    assert_eq!(again.allocations[0].address.to_string(), "10.1.0.6/30");
}

#[test]
fn a_repeated_add_gets_what_the_handle_holds() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
    let h = Handle::new("c", "eth0");
    let first = ipam.allocate(&h, &pod("a")).unwrap();
    let second = ipam.allocate(&h, &pod("a")).unwrap();
    assert!(second.existing);
    assert_eq!(first.allocations[0].address, second.allocations[0].address);
    assert_eq!(ipam.allocations().unwrap().len(), 1);
}

#[test]
fn dual_stack_and_namespace_pools() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(
        d.path(),
        json!([
            {"name": "team", "cidr": "10.9.0.0/24", "source": "range", "namespaces": ["team-a"]},
            {"name": "v4", "cidr": "10.1.0.0/16", "blockSize": 24},
            {"name": "v6", "cidr": "fd00::/56", "blockSize": 120}
        ]),
        Reservation::GatewayPerBlock,
    );
    let a = ipam.allocate(&Handle::new("a", "eth0"), &pod("team-a")).unwrap();
    let pools: Vec<&str> = a.allocations.iter().map(|x| x.pool.as_str()).collect();
    assert_eq!(pools, ["team", "v6"], "restricted pool first, one address per family");
    assert_eq!(a.allocations[0].gateway, Some("10.9.0.1".parse().unwrap()));
    let b = ipam.allocate(&Handle::new("b", "eth0"), &pod("other")).unwrap();
    let pools: Vec<&str> = b.allocations.iter().map(|x| x.pool.as_str()).collect();
    assert_eq!(pools, ["v4", "v6"], "a namespace no restricted pool lists never gets one");
    assert_eq!(b.allocations[1].address.to_string(), "fd00::3/120");
}

#[test]
fn a_namespace_with_no_pool_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let ipam =
        ipam(d.path(), json!([{"name": "team", "cidr": "10.9.0.0/24", "namespaces": ["team-a"]}]), Reservation::None);
    assert!(matches!(ipam.allocate(&Handle::new("a", "eth0"), &pod("b")), Err(IpamError::NoEligiblePool(_))));
    let d2 = tempfile::tempdir().unwrap();
    let disabled = ipam_disabled(d2.path());
    assert!(matches!(disabled.allocate(&Handle::new("a", "eth0"), &pod("b")), Err(IpamError::NoEligiblePool(_))));
}

fn ipam_disabled(dir: &std::path::Path) -> Ipam {
    ipam(dir, json!([{"name": "p", "cidr": "10.9.0.0/24", "disabled": true}]), Reservation::None)
}

#[test]
fn gc_keeps_only_valid_handles_and_publish_is_visible_before_finish() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
    for c in ["a", "b", "c"] {
        ipam.allocate(&Handle::new(c, "eth0"), &pod("x")).unwrap();
    }
    let keep: HashSet<Handle> = [Handle::new("b", "eth0")].into_iter().collect();
    assert_eq!(ipam.gc(&keep).unwrap().len(), 2);
    assert_eq!(ipam.handles().unwrap(), vec![Handle::new("b", "eth0")]);
    // After publish the file exists (another process sees the address taken) before finish.
    let mut pending = ipam.reserve(&Handle::new("d", "eth0"), &pod("x")).unwrap();
    pending.attach(json!({"endpoint": 1}));
    let published = pending.publish().unwrap();
    assert_eq!(list_dir_names(&d.path().join("net/ipam/addrs")).len(), 2);
    published.finish().unwrap();
    let d_alloc = ipam.allocations().unwrap().into_iter().find(|a| a.handle.container_id == "d").unwrap();
    assert_eq!(d_alloc.attachment, Some(json!({"endpoint": 1})));
    // A reservation dropped without commit writes nothing.
    drop(ipam.reserve(&Handle::new("e", "eth0"), &pod("x")).unwrap());
    assert_eq!(ipam.handles().unwrap().len(), 2);
}

#[test]
fn a_corrupt_record_is_reported_never_read_as_empty() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), json!([{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]), Reservation::None);
    ipam.allocate(&Handle::new("a", "eth0"), &pod("x")).unwrap();
    let dir = d.path().join("net/ipam/addrs");
    let f = dir.join(&list_dir_names(&dir)[0]);
    std::fs::write(&f, [0u8; 40]).unwrap();
    assert!(matches!(ipam.allocations(), Err(IpamError::Corrupt { .. })));
    assert!(matches!(ipam.status(), Err(IpamError::Corrupt { .. })));
    // The address stays taken: allocation reads names only.
    let b = ipam.allocate(&Handle::new("b", "eth0"), &pod("x")).unwrap();
    assert_ne!(b.allocations[0].address.addr(), "10.1.0.0".parse::<IpAddr>().unwrap());
}

#[test]
fn a_lease_the_node_store_lost_is_adopted_and_handed_back() {
    let d = tempfile::tempdir().unwrap();
    let cfg = parse_sequential(
        json!({"node": "n1", "emptyBlockGraceSeconds": 0, "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 29}]}),
        Some(d.path()),
    );
    let ipam = Ipam::local(cfg, "net", Reservation::None);
    for i in 0..9 {
        ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("x")).unwrap();
    }
    // A hand-back whose cluster half never happened: the node forgot the second block.
    let lost: ipnet::IpNet = "10.1.0.8/29".parse().unwrap();
    ipam.release(&Handle::new("c8", "eth0")).unwrap();
    ipam.node_store().remove_block(lost).unwrap();
    // A block still holding an address is adopted but stays.
    ipam.node_store().remove_block("10.1.0.0/29".parse().unwrap()).unwrap();
    assert_eq!(ipam.release_empty_blocks().unwrap(), vec![lost]);
    let leases: Vec<ipnet::IpNet> = ipam.cluster().leases().unwrap().into_iter().map(|l| l.block).collect();
    assert_eq!(leases, vec!["10.1.0.0/29".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(ipam.node_store().blocks().unwrap(), leases, "the block in use is recorded again");
}

#[test]
fn empty_blocks_go_back_after_the_grace_time_and_only_then() {
    let d = tempfile::tempdir().unwrap();
    let mk = |grace: u64| {
        let cfg = parse_sequential(
            json!({"node": "n1", "emptyBlockGraceSeconds": grace, "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 29}]}),
            Some(d.path()),
        );
        Ipam::local(cfg, "net", Reservation::GatewayPerBlock)
    };
    let ipam = mk(0);
    for i in 0..6 {
        ipam.allocate(&Handle::new(&format!("c{i}"), "eth0"), &pod("x")).unwrap();
    }
    assert_eq!(ipam.cluster().leases().unwrap().len(), 2, "5 pods per /29 block on a bridge");
    ipam.release(&Handle::new("c5", "eth0")).unwrap();
    // A long grace keeps the block; an expired one hands it back.
    assert!(mk(3600).release_empty_blocks().unwrap().is_empty());
    assert_eq!(ipam.release_empty_blocks().unwrap(), vec!["10.1.0.8/29".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(ipam.cluster().leases().unwrap().len(), 1);
    // A block emptied and refilled before GC is kept.
    ipam.release(&Handle::new("c4", "eth0")).unwrap();
    ipam.allocate(&Handle::new("c6", "eth0"), &pod("x")).unwrap();
    assert!(ipam.release_empty_blocks().unwrap().is_empty());
    assert_eq!(ipam.cluster().leases().unwrap().len(), 1);
}

/// Node `node` of a cluster sharing the local store under `root`, routed (every address usable).
fn node_ipam(root: &std::path::Path, node: &str, borrowing: bool) -> Ipam {
    let cfg = parse_sequential(
        json!({"node": node, "dataDir": root.join(node), "emptyBlockGraceSeconds": 0,
            "store": {"type": "local", "path": root.join("cluster")},
            "pools": [{"name": "p", "cidr": "10.2.0.0/29", "blockSize": 30, "allowBorrowing": borrowing}]}),
        None,
    );
    Ipam::local(cfg, "net", Reservation::None)
}

fn add(ipam: &Ipam, id: &str) -> Result<String, IpamError> {
    ipam.allocate(&Handle::new(id, "eth0"), &pod("x")).map(|a| a.allocations[0].address.addr().to_string())
}

#[test]
fn borrowing_takes_free_addresses_of_lending_blocks_only_when_no_block_is_free() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (node_ipam(d.path(), "a", true), node_ipam(d.path(), "b", true));
    // Two /30 blocks of 4: a takes one and uses half, b fills the other.
    assert_eq!([add(&a, "a0").unwrap(), add(&a, "a1").unwrap()], ["10.2.0.0", "10.2.0.1"]);
    for i in 0..4 {
        add(&b, &format!("b{i}")).unwrap();
    }
    // No block is free: b borrows what a does not use, and no more.
    assert_eq!([add(&b, "b4").unwrap(), add(&b, "b5").unwrap()], ["10.2.0.2", "10.2.0.3"]);
    assert!(matches!(add(&b, "b6"), Err(IpamError::Exhausted(_))));
    // a's block is full of its own and lent addresses: a never hands out a borrowed one.
    assert!(matches!(add(&a, "a2"), Err(IpamError::Exhausted(_))));
    let lent = report::borrowed(&a).unwrap();
    assert_eq!(
        lent.iter().map(|x| (x.ip.to_string(), x.borrower.as_str(), x.owner.as_deref())).collect::<Vec<_>>(),
        [("10.2.0.2".to_string(), "b", Some("a")), ("10.2.0.3".to_string(), "b", Some("a"))]
    );
    assert_eq!(report::show(&b).unwrap()[0].borrowed, 2);
    assert!(report::check(&b, &|_| true).unwrap().is_empty(), "borrowing in a borrowing pool is no problem");
    // An empty block that still lends stays with its owner until the borrowed addresses go.
    a.release(&Handle::new("a0", "eth0")).unwrap();
    a.release(&Handle::new("a1", "eth0")).unwrap();
    assert!(a.release_empty_blocks().unwrap().is_empty());
    assert_eq!(a.node_store().blocks().unwrap(), ["10.2.0.0/30".parse::<IpNet>().unwrap()]);
    // The owner reuses its freed addresses meanwhile, skipping the lent ones.
    assert_eq!(add(&a, "a3").unwrap(), "10.2.0.0");
    a.release(&Handle::new("a3", "eth0")).unwrap();
    b.release(&Handle::new("b4", "eth0")).unwrap();
    b.release(&Handle::new("b5", "eth0")).unwrap();
    assert!(a.cluster().claims().unwrap().iter().all(|c| c.node == "b" && c.block.to_string() == "10.2.0.4/30"));
    assert_eq!(a.release_empty_blocks().unwrap(), ["10.2.0.0/30".parse::<IpNet>().unwrap()]);
    // The block is free again: b leases it rather than borrow.
    assert_eq!(add(&b, "b7").unwrap(), "10.2.0.0");
    assert_eq!(b.node_store().blocks().unwrap().len(), 2);
}

#[test]
fn turning_borrowing_on_claims_what_the_owner_holds_and_off_keeps_claiming() {
    let d = tempfile::tempdir().unwrap();
    let strict_a = node_ipam(d.path(), "a", false);
    add(&strict_a, "a0").unwrap();
    assert!(strict_a.cluster().claims().unwrap().is_empty(), "strict pools make no claims");
    let a = node_ipam(d.path(), "a", true);
    let b = node_ipam(d.path(), "b", true);
    assert_eq!(add(&a, "a1").unwrap(), "10.2.0.1");
    let claimed: Vec<String> = a.cluster().claims().unwrap().iter().map(|c| c.ip.to_string()).collect();
    assert_eq!(claimed.len(), 2, "the address held before borrowing was turned on is claimed too: {claimed:?}");
    // Borrowing off again on a: its lending block keeps claiming, so b never gets a's addresses.
    add(&strict_a, "a2").unwrap();
    for i in 0..4 {
        add(&b, &format!("b{i}")).unwrap();
    }
    assert_eq!(add(&b, "b4").unwrap(), "10.2.0.3");
    let all: HashSet<String> = a
        .allocations()
        .unwrap()
        .iter()
        .chain(b.allocations().unwrap().iter())
        .map(|x| x.address.addr().to_string())
        .collect();
    assert_eq!(all.len(), 8, "no address twice: {all:?}");
    assert!(report::check(&a, &|_| true).unwrap().is_empty());
}

#[test]
fn claims_of_unpublished_or_forgotten_addresses_go_back() {
    let d = tempfile::tempdir().unwrap();
    let a = node_ipam(d.path(), "a", true);
    // Picked and claimed, never written: dropping gives the claim back.
    let pending = a.reserve(&Handle::new("x", "eth0"), &pod("x")).unwrap();
    assert_eq!(a.cluster().claims().unwrap().len(), 1);
    drop(pending);
    assert!(a.cluster().claims().unwrap().is_empty());
    // A claim no record holds (a DEL that could not reach the store) is leaked, and GC frees it.
    add(&a, "y").unwrap();
    let stale =
        Claim::new("10.2.0.3".parse().unwrap(), "10.2.0.0/30".parse().unwrap(), "a", &Handle::new("gone", "eth0"));
    assert_eq!(a.cluster().claim(&stale, ClaimAs::Owner { announce: false }).unwrap(), ClaimOutcome::Claimed);
    let problems = report::check(&a, &|_| true).unwrap();
    assert!(problems.len() == 1 && problems[0].kind == report::ProblemKind::Leaked, "{problems:?}");
    a.gc(&[Handle::new("y", "eth0")].into_iter().collect()).unwrap();
    assert_eq!(a.cluster().claims().unwrap().len(), 1, "only y's claim is left");
    // A bridge keeps a gateway per block: borrowing there is refused with a clear error.
    let cfg = a.config().clone();
    let bridge = Ipam::local(cfg, "net", Reservation::GatewayPerBlock);
    let e = bridge.allocate(&Handle::new("z", "eth0"), &pod("x")).unwrap_err();
    assert!(
        matches!(e, IpamError::Config(_)) && e.to_string().contains("allowBorrowing needs the routed dataplane"),
        "{e}"
    );
}

#[test]
fn a_stale_unclaim_never_removes_a_later_claim_of_the_same_handle() {
    let d = tempfile::tempdir().unwrap();
    let a = node_ipam(d.path(), "a", true);
    for i in 0..3 {
        add(&a, &format!("h{i}")).unwrap();
    }
    assert_eq!(add(&a, "x").unwrap(), "10.2.0.3");
    let old = a.cluster().claims().unwrap().into_iter().find(|c| c.handle.container_id == "x").unwrap();
    // DEL, then the runtime's ADD of the same handle gets the same address: a new claim.
    a.release(&Handle::new("x", "eth0")).unwrap();
    assert_eq!(add(&a, "x").unwrap(), "10.2.0.3");
    // The first DEL's unclaim, arriving late, matches nothing.
    assert!(!a.cluster().unclaim(&old).unwrap());
    assert!(a.cluster().claims().unwrap().iter().any(|c| c.handle.container_id == "x"));
}

#[test]
fn a_node_that_lost_its_store_keeps_claiming_in_a_block_that_lends() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (node_ipam(d.path(), "a", true), node_ipam(d.path(), "b", true));
    add(&a, "a0").unwrap();
    for i in 0..4 {
        add(&b, &format!("b{i}")).unwrap();
    }
    assert_eq!(add(&b, "b4").unwrap(), "10.2.0.1", "borrowed from a");
    // a's node store is lost and its config no longer allows borrowing: it adopts its lease
    // and still sees (and skips) what b borrowed.
    std::fs::remove_dir_all(d.path().join("a")).unwrap();
    let a = node_ipam(d.path(), "a", false);
    let got: Vec<String> = (0..2).map(|i| add(&a, &format!("n{i}")).unwrap()).collect();
    assert_eq!(got, ["10.2.0.2", "10.2.0.3"]);
    // The lost a0's claim still holds 10.2.0.0 until GC gives back claims no record holds.
    assert!(matches!(add(&a, "n2"), Err(IpamError::Exhausted(_))));
    assert_eq!(a.release_stale_claims_now().unwrap(), ["10.2.0.0".parse::<IpAddr>().unwrap()]);
    assert_eq!(add(&a, "n2").unwrap(), "10.2.0.0");
}

fn list_dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()
}

/// A journal that notes every change and adds a file of its own to the change's batch.
struct Recording {
    seen: std::sync::Mutex<Vec<String>>,
    dir: std::path::PathBuf,
}

impl journal::Journal for Recording {
    fn wants_records(&self) -> bool {
        true
    }
    fn record(&self, change: &journal::Change<'_>, batch: &mut podnet_fsio::Batch) -> Result<(), IpamError> {
        let line = match change {
            journal::Change::Allocated(a) => format!("allocated {} {}", a.address.addr(), a.handle.key()),
            journal::Change::Released { ip, handle, record, cause, .. } => {
                format!("released {ip} {} {cause:?} record={}", handle.key(), record.is_some())
            }
        };
        let mut seen = self.seen.lock().unwrap();
        batch.put(&self.dir, &format!("event-{}", seen.len()), line.clone().into_bytes());
        seen.push(line);
        Ok(())
    }
}

#[test]
fn every_allocation_and_release_passes_through_the_journal_in_the_same_write() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let rec = std::sync::Arc::new(Recording { seen: Default::default(), dir: events.clone() });
    let cfg = parse_sequential(
        json!({"node": "n1", "pools": [{"name": "p", "cidr": "10.1.0.0/24", "blockSize": 26}]}),
        Some(d.path()),
    );
    let ipam = Ipam::local(cfg, "net", Reservation::None).with_journal(rec.clone());
    for c in ["a", "b", "c", "d"] {
        ipam.allocate(&Handle::new(c, "eth0"), &pod("x")).unwrap();
    }
    // A repeated ADD changes nothing: no event.
    ipam.allocate(&Handle::new("a", "eth0"), &pod("x")).unwrap();
    ipam.release(&Handle::new("a", "eth0")).unwrap();
    ipam.gc(&[Handle::new("c", "eth0"), Handle::new("d", "eth0")].into_iter().collect()).unwrap();
    let ip_c: IpAddr = "10.1.0.2".parse().unwrap();
    assert!(ipam.release_address(ip_c, true, &|_| true).unwrap().is_ok());
    // Rebuild frees a corrupt record whose endpoint is gone.
    let addrs = d.path().join("net/ipam/addrs");
    let d_file = list_dir_names(&addrs).into_iter().find(|n| n.ends_with("_d:eth0")).unwrap();
    std::fs::write(addrs.join(&d_file), [0u8; 16]).unwrap();
    rebuild::rebuild(&ipam, &|_| Ok(false), &|_, _| None, true).unwrap();
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "allocated 10.1.0.0 a:eth0",
            "allocated 10.1.0.1 b:eth0",
            "allocated 10.1.0.2 c:eth0",
            "allocated 10.1.0.3 d:eth0",
            "released 10.1.0.0 a:eth0 Del record=true",
            "released 10.1.0.1 b:eth0 Gc record=true",
            "released 10.1.0.2 c:eth0 Admin record=true",
            "released 10.1.0.3 d:eth0 Rebuild record=false",
        ]
    );
    // What the journal added to each batch was written with it.
    assert_eq!(list_dir_names(&events).len(), seen.len());
    assert!(ipam.allocations().unwrap().is_empty());
}

/// Node `node` on a shared local store, its pool in the default (spread) block order.
fn spread_node(root: &std::path::Path, node: &str) -> Ipam {
    let cfg = IpamConfig::parse(
        &json!({"node": node, "dataDir": root.join(node), "emptyBlockGraceSeconds": 0,
            "store": {"type": "local", "path": root.join("cluster")},
            "pools": [{"name": "p", "cidr": "10.3.0.0/16", "blockSize": 26}]}),
        None,
    )
    .unwrap();
    Ipam::local(cfg, "net", Reservation::None)
}

#[test]
fn nodes_lease_in_orders_of_their_own_and_get_their_block_back() {
    let d = tempfile::tempdir().unwrap();
    let pool: IpNet = "10.3.0.0/16".parse().unwrap();
    let nodes: Vec<Ipam> = (0..8).map(|i| spread_node(d.path(), &format!("node-{i}"))).collect();
    for (i, n) in nodes.iter().enumerate() {
        let got = n.allocate(&Handle::new("c", "eth0"), &pod("x")).unwrap();
        let first = addr::block_order(pool, 26, &format!("node-{i}")).next().unwrap();
        // Its own first block, unless another node's order reached it first.
        let blocks = n.node_store().blocks().unwrap();
        assert_eq!(blocks.len(), 1);
        if blocks[0] != first {
            assert!(n.leases().unwrap().iter().any(|l| l.block == first && l.node != format!("node-{i}")), "node-{i}");
        }
        assert!(blocks[0].contains(&got.allocations[0].address.addr()));
    }
    let leases = nodes[0].leases().unwrap();
    assert_eq!(leases.iter().map(|l| l.block).collect::<HashSet<_>>().len(), 8, "distinct blocks");
    // Emptied and handed back, the block comes back to the same node when it leases again.
    let n = &nodes[3];
    let mine = n.node_store().blocks().unwrap()[0];
    n.release(&Handle::new("c", "eth0")).unwrap();
    assert_eq!(n.release_empty_blocks().unwrap(), vec![mine]);
    n.allocate(&Handle::new("d", "eth0"), &pod("x")).unwrap();
    assert_eq!(n.node_store().blocks().unwrap(), vec![mine]);
}

#[test]
fn a_block_taken_meanwhile_or_holding_claims_is_passed_over_in_one_request() {
    let d = tempfile::tempdir().unwrap();
    let pool_cfg = json!({"node": "a", "pools": [{"name": "p", "cidr": "10.4.0.0/24", "blockSize": 26}]});
    let cfg = IpamConfig::parse(&pool_cfg, Some(d.path())).unwrap();
    let pool = &cfg.pools[0];
    let store = LocalStore::new(d.path().join("cluster"), "net");
    let deadline = Deadline::new(std::time::Duration::from_secs(5));
    let blocks: Vec<IpNet> = (0..4).map(|n| addr::nth_block(pool.cidr(), 26, n)).collect();
    // Block 0 is leased by another node, block 1 holds a claim left by a released lender.
    assert!(matches!(store.lease_one_of(pool, "other", &blocks[..1], &deadline).unwrap(), LeaseAttempt::Leased(_)));
    let stray = Claim::new("10.4.0.70".parse().unwrap(), blocks[1], "gone", &Handle::new("x", "eth0"));
    std::fs::create_dir_all(d.path().join("cluster/net/claims").join(addr::net_to_file_name(blocks[1]))).unwrap();
    podnet_fsio::atomic_write(
        &d.path().join("cluster/net/claims").join(addr::net_to_file_name(blocks[1])),
        "10.4.0.70",
        &podnet_fsio::encode_record(&stray),
    )
    .unwrap();
    match store.lease_one_of(pool, "a", &blocks, &deadline).unwrap() {
        LeaseAttempt::Leased(l) => assert_eq!(l.block, blocks[2], "the first free block"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.lease_one_of(pool, "a", &blocks[..2], &deadline).unwrap(),
        LeaseAttempt::Taken { claimed: vec![blocks[1]] }
    );
}
