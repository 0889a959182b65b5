//! podnetd-bench: the node agent's numbers.
//! - latency: a block leased for node-1 → its route in node-2's kernel (podnetd on node-2), p50
//!   and p99 over `--leases` leases, on etcd and on the local store.
//! - scale: `--agents` simulated agents in this process (each its own etcd connection, watch and
//!   view; a route count instead of netlink) while every one of as many nodes leases
//!   `--blocks` blocks: time from the last lease until every agent has every route, etcd
//!   requests the agents make per lease, memory per agent.
//! - idle: podnetd's CPU and RSS with 100 remote blocks, doing nothing for `--idle-seconds`.

use podnet_bench::percentile;
use podnet_ipam::store::{ClusterStore, Deadline, LeaseAttempt};
use podnet_ipam::{IpamConfig, NodeRecord, Pool};
use podnet_lab::{Cluster, ClusterSpec, Etcd, Netns, StoreKind};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Every namespace of this run is named `pndb<pid>-…`: exiting skips their drops, so they go
/// by name here (and a run killed outright leaves them to the next run's sweep in `main`).
const NS_PREFIX: &str = "pndb";

fn die(msg: &str) -> ! {
    eprintln!("podnetd-bench: {msg}");
    Netns::remove_of_process(NS_PREFIX, std::process::id());
    std::process::exit(2)
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| die(&format!("{what}: {e}")))
}

const POOL_CIDR: &str = "10.80.0.0/12";

fn record(node: &str, ip: &str) -> NodeRecord {
    NodeRecord {
        node: node.into(),
        ip: ip.parse().expect("an address"),
        ipv6: None,
        encap: "none".into(),
        vtep_mac: None,
        vtep_ip: None,
        started_at: podnet_ipam::model::now_rfc3339(),
        heartbeat_at: None,
    }
}

fn pool_of(cfg: &IpamConfig) -> Pool {
    cfg.pools[0].clone()
}

fn lease(store: &dyn ClusterStore, pool: &Pool, node: &str, n: u128) {
    let block = podnet_ipam::addr::nth_block(pool.cidr(), pool.block_len, n);
    match ok("leasing", store.lease_one_of(pool, node, &[block], &Deadline::new(Duration::from_secs(10)))) {
        LeaseAttempt::Leased(_) => {}
        other => die(&format!("block {block} was not leased: {other:?}")),
    }
}

/// A two-node cluster with podnetd on node-2 only.
fn two_nodes(bin_dir: &Path, store: StoreKind, tag: &str, agent_args: &[&str]) -> Cluster {
    let spec = ClusterSpec {
        prefix: format!("{NS_PREFIX}{}-{tag}", std::process::id()),
        subnets: vec!["192.168.10.0/24".parse().expect("cidr")],
        placement: vec![0, 0],
        store,
        network: "bench".into(),
        plugin: json!({"type": "podnet", "ipam": {"type": "podnet-ipam",
            "pools": [{"name": "pods", "cidr": POOL_CIDR, "blockSize": 26}]}}),
        bin_dir: bin_dir.to_path_buf(),
    };
    let mut c = ok("creating the cluster", Cluster::create(&spec));
    ok("starting podnetd", c.nodes[1].start_agent(agent_args));
    c
}

/// podnet's routes in a namespace's main table (IPv4).
fn routes_in(nl: &mut podnet_dataplane::Netlink) -> Vec<ipnet::IpNet> {
    nl.table_routes(true)
        .map(|rs| {
            rs.into_iter()
                .filter(|r| r.protocol == podnet_dataplane::routes::PODNET_ROUTE_PROTOCOL)
                .map(|r| r.dst)
                .collect()
        })
        .unwrap_or_default()
}

/// Lease `count` blocks for node-1 one by one; for each, the time until node-2's kernel has
/// its route (ms). node-1's record is put (and renewed) by the benchmark, as its agent would.
fn latency(bin_dir: &Path, store: StoreKind, count: usize, poll: &str) -> Vec<f64> {
    let tag = if store == StoreKind::Etcd { "lat-etcd" } else { "lat-local" };
    let c = two_nodes(bin_dir, store, tag, &["--encap", "none", "--poll-seconds", poll]);
    let spread_ms = if store == StoreKind::Etcd { 50 } else { poll.parse::<u64>().unwrap_or(1) * 1000 };
    let network = ok("reading the conflist", podnet_node::Network::load(&c.nodes[0].conflist));
    let seen: Arc<Mutex<HashMap<ipnet::IpNet, Instant>>> = Arc::default();
    let stop = AtomicBool::new(false);
    let node1_ip = c.nodes[0].uplink.ip().to_string();
    std::thread::scope(|s| {
        // The observer: node-2's routes, read every millisecond.
        let (seen2, stop2, n2) = (seen.clone(), &stop, &c.nodes[1]);
        s.spawn(move || {
            ok(
                "watching node-2's routes",
                n2.ns.run(|| {
                    let mut nl = ok("netlink", podnet_dataplane::Netlink::open());
                    while !stop2.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        let routes = routes_in(&mut nl);
                        let mut seen = seen2.lock().expect("lock");
                        for r in routes {
                            seen.entry(r).or_insert(now);
                        }
                        drop(seen);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }),
            )
        });
        let out = ok(
            "leasing in node-1",
            c.nodes[0].ns.run(|| {
                let ipam = ok("opening node-1's IPAM", network.open_ipam());
                let pool = pool_of(ipam.config());
                let store = ipam.cluster_store().clone();
                let me = record("node-1", &node1_ip);
                let d = Deadline::new(Duration::from_secs(10));
                let mut held = ok("announcing node-1", store.put_node(&me, Duration::from_secs(60), &d));
                let mut renewed = Instant::now();
                // Give node-2's agent time to start and take its first snapshot.
                std::thread::sleep(Duration::from_secs(3));
                let mut out = Vec::new();
                for n in 0..count {
                    if renewed.elapsed() > Duration::from_secs(5) {
                        let d = Deadline::new(Duration::from_secs(10));
                        held = ok("renewing", store.renew_node(held, &me, Duration::from_secs(60), &d));
                        renewed = Instant::now();
                    }
                    lease(store.as_ref(), &pool, "node-1", n as u128);
                    let committed = Instant::now();
                    let block = podnet_ipam::addr::nth_block(pool.cidr(), pool.block_len, n as u128);
                    let end = committed + Duration::from_secs(30);
                    let at = loop {
                        if let Some(t) = seen.lock().expect("lock").get(&block) {
                            break *t;
                        }
                        if Instant::now() > end {
                            die(&format!("no route for {block} in node-2 after 30 s:\n{}", c.nodes[1].agent_log()));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    out.push(at.saturating_duration_since(committed).as_secs_f64() * 1000.0);
                    // A random pause, so leases fall anywhere in the agent's poll interval.
                    std::thread::sleep(Duration::from_millis(20 + fastrand::u64(0..spread_ms)));
                }
                out
            }),
        );
        stop.store(true, Ordering::Relaxed);
        out
    })
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.get(11).zip(f.get(12)).map(|(u, s)| (u + s) / tick).unwrap_or(0.0)
}

/// podnetd with 100 remote blocks routed, left alone for `secs`: CPU share and RSS.
fn idle(bin_dir: &Path, store: StoreKind, secs: u64) -> (f64, u64) {
    let tag = if store == StoreKind::Etcd { "idle-etcd" } else { "idle-local" };
    let c = two_nodes(bin_dir, store, tag, &["--encap", "none"]);
    let network = ok("reading the conflist", podnet_node::Network::load(&c.nodes[0].conflist));
    let node1_ip = c.nodes[0].uplink.ip().to_string();
    let pid = c.nodes[1].agent.as_ref().map(|p| p.id()).unwrap_or_else(|| die("podnetd is not running"));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // node-1's record stays alive meanwhile.
        let (stop2, network, n1) = (&stop, &network, &c.nodes[0]);
        s.spawn(move || {
            ok(
                "node-1",
                n1.ns.run(|| {
                    let ipam = ok("opening node-1's IPAM", network.open_ipam());
                    let pool = pool_of(ipam.config());
                    let store = ipam.cluster_store().clone();
                    let me = record("node-1", &node1_ip);
                    let d = Deadline::new(Duration::from_secs(10));
                    let mut held = ok("announcing node-1", store.put_node(&me, Duration::from_secs(20), &d));
                    for n in 0..100 {
                        lease(store.as_ref(), &pool, "node-1", n);
                    }
                    while !stop2.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_secs(1));
                        let d = Deadline::new(Duration::from_secs(10));
                        held = ok("renewing", store.renew_node(held, &me, Duration::from_secs(20), &d));
                    }
                }),
            )
        });
        let n2 = &c.nodes[1];
        let routed = n2.ns.run(|| {
            let mut nl = ok("netlink", podnet_dataplane::Netlink::open());
            let end = Instant::now() + Duration::from_secs(60);
            while routes_in(&mut nl).len() < 100 && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            routes_in(&mut nl).len()
        });
        if ok("counting routes", routed) < 100 {
            die(&format!("node-2 did not route 100 blocks:\n{}", n2.agent_log()));
        }
        // Settle (first GC and metrics refresh), then measure.
        std::thread::sleep(Duration::from_secs(5));
        let cpu0 = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(secs));
        let cpu = (cpu_seconds(pid) - cpu0) / secs as f64 * 100.0;
        stop.store(true, Ordering::Relaxed);
        (cpu, rss_kb(pid))
    })
}

struct Scale {
    convergence_ms: f64,
    agent_requests_per_lease: f64,
    kb_per_agent: f64,
    incomplete: usize,
}

/// `agents` simulated agents watch one etcd while each of `agents` nodes leases `blocks` blocks.
fn scale(agents: usize, blocks: usize) -> Scale {
    let ns = ok("namespace", Netns::create(&format!("{NS_PREFIX}{}-scale", std::process::id())));
    let etcd = ok("starting etcd", Etcd::start(&ns));
    let dir = tempfile::tempdir().expect("tempdir");
    let ipam = json!({"node": "bench", "store": {"type": "etcd", "endpoints": [etcd.url()]},
        "pools": [{"name": "pods", "cidr": POOL_CIDR, "blockSize": 26}]});
    let cfg = ok("config", IpamConfig::parse_for_host(&ipam, Some(dir.path()), Some("bench")));
    let etcd_cfg = cfg.etcd.clone().expect("an etcd store");
    let pool = pool_of(&cfg);
    let store = |_| podnet_store_etcd::EtcdStore::new(etcd_cfg.clone(), "scale", None);
    let name = |i: usize| format!("node-{i}");
    // Every node announced first (live records).
    ok(
        "announcing the nodes",
        ns.run(|| {
            let s = store(0);
            for i in 0..agents {
                let ip = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
                ok(
                    "announcing",
                    s.put_node(
                        &record(&name(i), &ip),
                        Duration::from_secs(600),
                        &Deadline::new(Duration::from_secs(10)),
                    ),
                );
            }
        }),
    );
    let want = (agents - 1) * blocks;
    let ready = Barrier::new(agents + 1);
    let stop = AtomicBool::new(false);
    let done_at: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; agents]);
    let rss_before = rss_kb(std::process::id());
    let leaser_requests = AtomicUsize::new(0);
    let (kv_before, last_lease, rss_after) = std::thread::scope(|s| {
        for i in 0..agents {
            let (ready, stop, done_at, store, ns) = (&ready, &stop, &done_at, &store, &ns);
            let me = name(i);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    ok(
                        "an agent",
                        ns.run(|| {
                            let st = store(i);
                            let snap = ok("snapshot", st.cluster_snapshot(&Deadline::new(Duration::from_secs(30))));
                            let mut view = podnet_agent::view::ClusterView::from_snapshot(
                                &snap,
                                std::time::SystemTime::now(),
                                Duration::from_secs(600),
                            );
                            let mut watch =
                                ok("watch", st.watch(&snap, Duration::from_secs(2), Duration::from_secs(600)));
                            ready.wait();
                            while !stop.load(Ordering::Relaxed) {
                                let events = match watch.next(Duration::from_millis(200)) {
                                    Ok(e) => e,
                                    Err(e) => die(&format!("agent {i}'s watch: {e}")),
                                };
                                if events.is_empty() {
                                    continue;
                                }
                                view.apply(events);
                                // The route sink: one route per block of another live node.
                                let routes = view
                                    .leases
                                    .values()
                                    .filter(|l| l.node != me && view.nodes.contains_key(&l.node))
                                    .count();
                                if routes == want {
                                    done_at.lock().expect("lock")[i].get_or_insert_with(Instant::now);
                                }
                            }
                        }),
                    )
                })
                .expect("an agent thread");
        }
        ready.wait();
        let kv_before = ok("etcd metrics", etcd.kv_requests(&ns));
        // Every node leases its blocks, 16 nodes at a time.
        let next = AtomicUsize::new(0);
        std::thread::scope(|l| {
            for _ in 0..16 {
                let (next, pool, store, ns, leaser_requests) = (&next, &pool, &store, &ns, &leaser_requests);
                l.spawn(move || {
                    ok(
                        "leasing",
                        ns.run(|| {
                            let st = store(0);
                            loop {
                                let i = next.fetch_add(1, Ordering::SeqCst);
                                if i >= agents {
                                    break;
                                }
                                for b in 0..blocks {
                                    lease(&st, pool, &name(i), (i * blocks + b) as u128);
                                }
                            }
                            leaser_requests.fetch_add(st.requests(), Ordering::SeqCst);
                        }),
                    )
                });
            }
        });
        let last_lease = Instant::now();
        let end = last_lease + Duration::from_secs(60);
        while Instant::now() < end && done_at.lock().expect("lock").iter().any(Option::is_none) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rss_after = rss_kb(std::process::id());
        stop.store(true, Ordering::Relaxed);
        (kv_before, last_lease, rss_after)
    });
    let kv_after = ok("etcd metrics", etcd.kv_requests(&ns));
    let done = done_at.into_inner().expect("lock");
    let incomplete = done.iter().filter(|d| d.is_none()).count();
    let latest = done.iter().flatten().max().copied().unwrap_or(last_lease);
    let leases = (agents * blocks) as f64;
    let agent_requests = (kv_after - kv_before).saturating_sub(leaser_requests.load(Ordering::SeqCst) as u64);
    Scale {
        convergence_ms: latest.saturating_duration_since(last_lease).as_secs_f64() * 1000.0,
        agent_requests_per_lease: agent_requests as f64 / leases / agents as f64,
        kb_per_agent: rss_after.saturating_sub(rss_before) as f64 / agents as f64,
        incomplete,
    }
}

fn main() {
    Netns::remove_stale(NS_PREFIX);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let mut podnet_dir: PathBuf = exe_dir;
    let (mut leases, mut agents, mut blocks, mut idle_secs) = (100usize, 500usize, 4usize, 30u64);
    let mut only: Option<String> = None;
    let mut i = 0;
    while i < argv.len() {
        let val = || argv.get(i + 1).cloned().unwrap_or_else(|| die(&format!("{} needs a value", argv[i])));
        let num = |v: String| v.parse::<usize>().unwrap_or_else(|_| die("a number"));
        match argv[i].as_str() {
            "--podnet-dir" => podnet_dir = val().into(),
            "--leases" => leases = num(val()),
            "--agents" => agents = num(val()),
            "--blocks" => blocks = num(val()),
            "--idle-seconds" => idle_secs = num(val()) as u64,
            "--only" => only = Some(val()),
            _ => die("usage: podnetd-bench [--podnet-dir DIR] [--leases 100] [--agents 500] [--blocks 4] [--idle-seconds 30] [--only latency|scale|idle]"),
        }
        i += 2;
    }
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if runs("latency") {
        println!("| route programming (lease on node-1 → route in node-2's kernel) | leases | p50 | p99 | max |");
        println!("|---|---|---|---|---|");
        for (store, label, poll) in
            [(StoreKind::Etcd, "etcd (watch)", "2"), (StoreKind::Local, "local store, --poll-seconds 1", "1")]
        {
            let mut ms = latency(&podnet_dir, store, leases, poll);
            ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            println!(
                "| {label} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
                ms.len(),
                percentile(&ms, 0.5),
                percentile(&ms, 0.99),
                ms[ms.len() - 1]
            );
        }
    }
    if runs("scale") {
        let r = scale(agents, blocks);
        println!("| simulated agents | leases | every route everywhere after the last lease | agents' etcd requests per lease per agent | memory per agent | agents incomplete |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {agents} | {} | {:.0} ms | {:.4} | {:.0} KiB | {} |",
            agents * blocks,
            r.convergence_ms,
            r.agent_requests_per_lease,
            r.kb_per_agent,
            r.incomplete
        );
    }
    if runs("idle") {
        println!("| podnetd idle, 100 remote blocks | CPU | RSS |");
        println!("|---|---|---|");
        for (store, label) in [(StoreKind::Etcd, "etcd"), (StoreKind::Local, "local store (polls every 2 s)")] {
            let (cpu, rss) = idle(&podnet_dir, store, idle_secs);
            println!("| {label} | {cpu:.2} % of a core | {:.1} MiB |", rss as f64 / 1024.0);
        }
    }
}
