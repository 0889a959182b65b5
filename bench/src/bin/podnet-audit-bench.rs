//! podnet-audit-bench: `podnetctl audit who` over a node log of `--events` events (default
//! 1,000,000: 500,000 allocations and releases over 65,536 addresses), as a whole process: the
//! first query (which builds the index) and then `--runs` queries at random addresses and times;
//! against `podnetctl version` (the process start alone); peak RSS of a query.

use podnet_audit::{AuditEvent, EventKind};
use podnet_bench::median;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

fn die(msg: &str) -> ! {
    eprintln!("podnet-audit-bench: {msg}");
    std::process::exit(2)
}

/// Run to the end: (wall ms, stdout, peak RSS KiB of that process alone, from wait4).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn run_one(ctl: &std::path::Path, args: &[&str]) -> (f64, String, i64) {
    use std::io::Read;
    let t = Instant::now();
    let mut child = Command::new(ctl)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| die(&e.to_string()));
    let mut out = String::new();
    let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
    // SAFETY: wait4 on our own child's PID, with structs we own.
    let (status, rss) = unsafe {
        let mut st = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::wait4(child.id() as libc::pid_t, &mut st, 0, &mut ru);
        (st, ru.ru_maxrss)
    };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        die(&format!("{args:?} failed"));
    }
    (ms, out, rss)
}

fn main() {
    let mut dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
    let (mut n_events, mut runs) = (1_000_000usize, 30usize);
    let mut measure: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| die(&format!("{a} needs a value")));
        match a.as_str() {
            "--podnet-dir" => dir = PathBuf::from(val()),
            "--events" => n_events = val().parse().unwrap_or_else(|_| die("--events: a number")),
            "--runs" => runs = val().parse().unwrap_or_else(|_| die("--runs: a number")),
            "--measure" => measure = Some(PathBuf::from(val())),
            _ => die("usage: podnet-audit-bench [--podnet-dir DIR] [--events 1000000] [--runs 30]"),
        }
    }
    let ctl = dir.join("podnetctl");
    if let Some(tmp) = measure {
        return queries(&ctl, &tmp, n_events, runs);
    }
    let tmp = tempfile::tempdir().expect("a temp dir");
    let list = tmp.path().join("10-podnet.conflist");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{"type": "podnet",
        "dataDir": tmp.path().join("data"), "logFile": tmp.path().join("podnet.log"),
        "ipam": {"type": "podnet-ipam", "node": "node-1", "pools": [{"name": "pods", "cidr": "10.200.0.0/16", "source": "range"}],
                 "audit": {"maxBytes": 4u64 << 30}}}]});
    std::fs::write(&list, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    let net = podnet_node::Network::load(&list).unwrap_or_else(|e| die(&e.to_string()));
    let ipam = net.open_ipam().unwrap_or_else(|e| die(&e.to_string()));

    // Half allocations, half releases: address k holds intervals one after another, 60 s each.
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let at = |s: u64| humantime::format_rfc3339_micros(t0 + Duration::from_secs(s)).to_string();
    let ip_of = |k: usize| std::net::IpAddr::from([10, 200, (k >> 8) as u8, k as u8]);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(100_000);
    for i in 0..n_events / 2 {
        let (k, round) = (i % 65_536, (i / 65_536) as u64);
        let ev = |time: String, kind| AuditEvent {
            time,
            node: "node-1".into(),
            network: "podnet".into(),
            pool: "pods".into(),
            ip: ip_of(k),
            container_id: format!("c{i:08}"),
            ifname: "eth0".into(),
            pod_namespace: Some("shop".into()),
            pod_name: Some(format!("web-{i}")),
            pod_uid: Some(format!("uid-{i}")),
            event: kind,
        };
        batch.push(ev(at(round * 60), EventKind::Allocated));
        batch.push(ev(at(round * 60 + 59), EventKind::Released));
        if batch.len() >= 100_000 {
            podnet_audit::append_events(&ipam, &batch).unwrap_or_else(|e| die(&e.to_string()));
            batch.clear();
        }
    }
    podnet_audit::append_events(&ipam, &batch).unwrap_or_else(|e| die(&e.to_string()));
    let log_bytes: u64 = walk_size(&tmp.path().join("data/podnet/audit/log"));
    eprintln!("wrote {n_events} events ({} MiB) in {:.1} s", log_bytes >> 20, started.elapsed().as_secs_f64());

    // The queries run from a fresh process of this program: a child forked from this one, which
    // holds the events it wrote, would report this process's memory as its own.
    let me = std::env::current_exe().expect("this program");
    let status = Command::new(me)
        .args(["--podnet-dir", dir.to_str().unwrap(), "--events", &n_events.to_string(), "--runs", &runs.to_string()])
        .arg("--measure")
        .arg(tmp.path())
        .status()
        .unwrap_or_else(|e| die(&e.to_string()));
    std::process::exit(status.code().unwrap_or(1));
}

fn queries(ctl: &std::path::Path, tmp: &std::path::Path, n_events: usize, runs: usize) {
    let list = tmp.join("10-podnet.conflist");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let at = |s: u64| humantime::format_rfc3339_micros(t0 + Duration::from_secs(s)).to_string();
    let ip_of = |k: usize| std::net::IpAddr::from([10, 200, (k >> 8) as u8, k as u8]);
    let log_bytes: u64 = walk_size(&tmp.join("data/podnet/audit/log"));
    let run = |args: &[&str]| run_one(ctl, args);
    let config = list.to_str().unwrap().to_string();
    let rounds = (n_events / 2 / 65_536).max(1) as u64;
    let who = |k: usize, s: u64| {
        let ip = ip_of(k).to_string();
        let when = at(s);
        let args = ["--config", &config, "-o", "json", "audit", "who", &ip, "--at", &when];
        run(&args)
    };
    let (first, _, first_rss) = who(7, 30);
    let mut rng = fastrand::Rng::with_seed(1);
    let mut warm = Vec::new();
    let mut rss: i64 = 0;
    for _ in 0..runs {
        let (k, s) = (rng.usize(..65_536), rng.u64(..rounds * 60));
        let (ms, out, r) = who(k, s);
        rss = rss.max(r);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if v["holder"].is_null() && s % 60 != 59 && (s / 60) * 65_536 + (k as u64) < (n_events / 2) as u64 {
            die(&format!("no holder for {} at {s}: {out}", ip_of(k)));
        }
        warm.push(ms);
    }
    let base: Vec<f64> = (0..runs).map(|_| run(&["version"]).0).collect();
    let (w, b) = (median(warm.clone()), median(base));
    warm.sort_by(f64::total_cmp);
    println!("| events | log | first query (builds the index) | its peak RSS | `audit who` p50 | p90 | max | `podnetctl version` p50 | beyond process start | peak RSS of a query |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n_events} | {} MiB | {first:.0} ms | {:.1} MiB | {w:.1} ms | {:.1} ms | {:.1} ms | {b:.1} ms | {:.1} ms | {:.1} MiB |",
        log_bytes >> 20,
        first_rss as f64 / 1024.0,
        warm[warm.len() * 9 / 10],
        warm[warm.len() - 1],
        w - b,
        rss as f64 / 1024.0
    );
}

fn walk_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}
