//! Crash injection: the plugin dies at every step of ADD and DEL (the debug-build crash switch
//! `PODNET_CRASH_AT`, and kill -9 from outside at random instants), and each death is followed by
//! what a runtime does: DEL until it succeeds, then ADD again or give up. Afterwards: no address
//! twice, no corrupt store, no stray veth, and after GC the pool's whole capacity is allocatable.
//!
//! Iterations: `PODNET_CRASH_ITERATIONS` (default 1000); the seed is printed and can be replayed
//! with `PODNET_CRASH_SEED`.
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;

const ADD_POINTS: &[&str] = &[
    "add-after-reserve",
    "store-after-write",
    "store-after-rename",
    "add-after-record",
    "add-after-veth",
    "add-after-address",
    "add-after-routes",
];
const DEL_POINTS: &[&str] = &["del-after-teardown", "store-after-link", "store-after-unlink", "del-after-release"];
/// Four /28 blocks of 13 pods on a bridge.
const CAPACITY: usize = 52;

#[derive(Clone, Copy)]
enum Killer {
    /// The crash switch at a named point.
    Switch,
    /// SIGKILL from the test after a random delay up to this many microseconds.
    Outside(u64),
}

#[derive(Default)]
struct Tally {
    calls: usize,
    killed: usize,
    ok: usize,
    failed: usize,
}

struct Churn<'a> {
    node: &'a Node,
    conf: Value,
    rng: fastrand::Rng,
    killer: Killer,
    tally: Tally,
    /// Attachments whose ADD succeeded at least once.
    added: HashSet<String>,
}

impl Churn<'_> {
    /// One plugin call that may be killed: by the switch at a random point of `points`, or from
    /// outside. Returns the outcome (a killed call has `ok == false`).
    fn call(&mut self, verb: &str, cid: &str, pod: &Netns, points: &[&str]) -> Outcome {
        self.tally.calls += 1;
        let stdin = serde_json::to_vec(&self.conf).unwrap();
        let netns = pod.path();
        let base = [("CNI_CONTAINERID", cid), ("CNI_IFNAME", "eth0")];
        // One call in four runs to the end, so pods also live, and DEL meets real endpoints.
        let crash = self.rng.u8(..4) != 0;
        let out = match self.killer {
            Killer::Switch => {
                let point = points[self.rng.usize(..points.len())];
                let mut env = base.to_vec();
                if crash {
                    env.push(("PODNET_CRASH_AT", point));
                }
                self.node.call_raw(PODNET, verb, &env, Some(&netns), &stdin)
            }
            Killer::Outside(max_us) => {
                let mut child = self.node.spawn_raw(PODNET, verb, &base, Some(&netns), &stdin);
                if crash {
                    std::thread::sleep(std::time::Duration::from_micros(self.rng.u64(..=max_us)));
                    // Our own child, by its PID.
                    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                }
                let _ = child.stdin.take();
                finish(child)
            }
        };
        if out.ok {
            self.tally.ok += 1;
            if verb == "ADD" {
                self.added.insert(cid.to_string());
            }
        } else if out.killed {
            self.tally.killed += 1;
        } else {
            self.tally.failed += 1;
            assert!(out.code() > 0, "every failure is a CNI error with a code: {}", out.raw);
        }
        out
    }

    /// DEL as a runtime does: retried until it succeeds (the first tries may be killed).
    fn del(&mut self, cid: &str, pod: &Netns) {
        for _ in 0..20 {
            if self.call("DEL", cid, pod, DEL_POINTS).ok {
                return;
            }
        }
        let last = self.node.del(cid, Some(pod), &self.conf);
        assert!(last.ok, "DEL of {cid} never succeeds: {}", last.raw);
    }
}

fn seed() -> u64 {
    let seed =
        std::env::var("PODNET_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed {seed} (replay with PODNET_CRASH_SEED={seed})");
    seed
}

fn iterations() -> usize {
    std::env::var("PODNET_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

/// The addresses on the pods' real interfaces, each at most once.
fn assert_no_duplicates(pods: &[Netns]) -> usize {
    let mut seen = HashSet::new();
    for p in pods {
        for ip in p.addrs4("eth0") {
            assert!(seen.insert(ip.clone()), "{ip} is on two pods");
        }
    }
    seen.len()
}

fn crash_churn(killer: impl FnOnce(&Node, &Value) -> Killer) {
    let node = Node::new();
    let conf =
        node.podnet_conf(json!({"ipam": {"pools": [{"name": "pods", "cidr": "10.80.0.0/26", "blockSize": 28}]}}));
    let killer = killer(&node, &conf);
    let pods: Vec<Netns> = (0..12).map(|i| Netns::new(&format!("k{i}"))).collect();
    let mut live: Vec<Option<String>> = vec![None; pods.len()];
    let mut churn = Churn {
        node: &node,
        conf: conf.clone(),
        rng: fastrand::Rng::with_seed(seed()),
        killer,
        tally: Tally::default(),
        added: HashSet::new(),
    };
    let n = iterations();
    for i in 0..n {
        let slot = churn.rng.usize(..pods.len());
        let pod = &pods[slot];
        match live[slot].take() {
            // The pod goes away.
            Some(cid) => churn.del(&cid, pod),
            None => {
                let cid = format!("c{i}");
                if churn.call("ADD", &cid, pod, ADD_POINTS).ok {
                    live[slot] = Some(cid);
                } else {
                    // A failed ADD is followed by DEL, then one more try or none.
                    churn.del(&cid, pod);
                    if churn.rng.bool() {
                        if churn.call("ADD", &cid, pod, ADD_POINTS).ok {
                            live[slot] = Some(cid);
                        } else {
                            churn.del(&cid, pod);
                        }
                    }
                }
            }
        }
        if i % 100 == 99 {
            assert_no_duplicates(&pods);
        }
    }
    let t = &churn.tally;
    eprintln!(
        "{n} iterations: {} plugin calls, {} killed, {} failed with a CNI error, {} succeeded",
        t.calls, t.killed, t.failed, t.ok
    );
    assert!(t.killed > n / 4, "the crashes happened");

    // No address twice; each live pod carries exactly what the store says; no stray veth.
    let live_cids: Vec<&String> = live.iter().flatten().collect();
    assert_eq!(assert_no_duplicates(&pods), live_cids.len(), "each live pod has one address, the others none");
    let veths: HashSet<String> = node.host_veths().into_iter().collect();
    let expected: HashSet<String> = live_cids.iter().map(|c| podnet_dataplane::host_veth_name(c, "eth0")).collect();
    assert_eq!(veths, expected, "host veths are exactly the live pods'");
    let held: Vec<String> = node.allocations();
    assert_eq!(held.len(), live_cids.len(), "the store holds exactly the live pods' addresses: {held:?}");
    assert!(held.iter().all(|f| !f.starts_with(".tmp")), "no temp file is left: {held:?}");

    // The audit history: no allocation without its event, whatever was killed when. Every live
    // pod holds an open interval and nothing else is open; every attachment that was ever added
    // has its interval; none is logged twice.
    let cfg = podnet_ipam::IpamConfig::parse(&conf["ipam"], Some(&node.data_dir())).unwrap();
    let audited = podnet_plugin::open_ipam(cfg, "podnet", podnet_ipam::Dataplane::Bridge);
    podnet_audit::collect(&audited).unwrap();
    let intervals = podnet_audit::intervals(&podnet_audit::events(&audited).unwrap());
    let open: HashSet<String> =
        intervals.iter().filter(|i| i.until.is_none()).map(|i| i.container_id.clone()).collect();
    let live_set: HashSet<String> = live_cids.iter().map(|c| c.to_string()).collect();
    assert_eq!(open, live_set, "open intervals are exactly the live pods'");
    let logged: HashSet<String> = intervals.iter().map(|i| i.container_id.clone()).collect();
    assert!(
        churn.added.is_subset(&logged),
        "an added attachment has no interval: {:?}",
        churn.added.difference(&logged).collect::<Vec<_>>()
    );
    let mut once = HashSet::new();
    assert!(
        intervals.iter().all(|i| once.insert((i.container_id.clone(), i.from.clone()))),
        "an interval logged twice"
    );

    // GC with the live attachments finds nothing to free; the store is readable and consistent.
    let attachments: Vec<Value> = live_cids.iter().map(|c| json!({"containerID": c, "ifname": "eth0"})).collect();
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!(attachments);
    assert!(node.call_env(PODNET, "GC", &[], None, &gc).ok);
    assert_eq!(node.allocations().len(), live_cids.len());

    // The pods go; then the pool's whole capacity is allocatable again, and no more.
    for (slot, cid) in live.iter().enumerate() {
        if let Some(cid) = cid {
            assert!(node.del(cid, Some(&pods[slot]), &conf).ok);
        }
    }
    let cfg = podnet_ipam::IpamConfig::parse(&conf["ipam"], Some(&node.data_dir())).unwrap();
    let ipam = podnet_plugin::open_ipam(cfg, "podnet", podnet_ipam::Dataplane::Bridge);
    let pod = podnet_ipam::PodInfo::default();
    let mut got = HashSet::new();
    for i in 0..CAPACITY {
        let a = ipam
            .allocate(&podnet_ipam::Handle::new(&format!("cap{i}"), "eth0"), &pod)
            .unwrap_or_else(|e| panic!("address {i} of {CAPACITY}: {e}"));
        assert!(got.insert(a.allocations[0].address.addr()));
    }
    let e = ipam.allocate(&podnet_ipam::Handle::new("one-more", "eth0"), &pod).unwrap_err();
    assert!(matches!(e, podnet_ipam::IpamError::Exhausted(_)), "{e}");
}

#[test]
fn the_crash_switch_at_every_step_of_add_and_del_loses_nothing() {
    crash_churn(|_, _| Killer::Switch);
}

#[test]
fn kill_9_at_random_instants_loses_nothing() {
    crash_churn(|node, conf| {
        // Kill within the span of a typical ADD (measured here, untimed otherwise).
        let pod = Netns::new("kt");
        let mut spans = Vec::new();
        for i in 0..5 {
            let cid = format!("t{i}");
            let start = std::time::Instant::now();
            node.add(&cid, &pod, conf).must();
            spans.push(start.elapsed().as_micros() as u64);
            assert!(node.del(&cid, Some(&pod), conf).ok);
        }
        spans.sort();
        Killer::Outside(spans[2] * 3 / 2)
    });
}
