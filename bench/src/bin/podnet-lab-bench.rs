//! podnet-lab-bench: `podnetctl lab up --nodes 10 --pods-per-node 20` wall time and where it goes
//! (namespaces, store, agents, pod ADDs, route convergence, as `up -o json` reports them), and
//! `lab down` wall time; `--rounds` rounds per store, the median reported.

use podnet_bench::median;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn die(msg: &str) -> ! {
    eprintln!("podnet-lab-bench: {msg}");
    std::process::exit(2)
}

struct Round {
    wall: f64,
    split: [f64; 5],
    down: f64,
}

fn round(ctl: &PathBuf, name: &str, nodes: &str, pods: &str, store: &str) -> Round {
    let _ = Command::new(ctl).args(["lab", "down", "--name", name]).output();
    // Let the kernel finish dismantling the last round's namespaces first.
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let out = Command::new(ctl)
        .args(["lab", "up", "--name", name, "--nodes", nodes, "--pods-per-node", pods, "--store", store, "-o", "json"])
        .output()
        .unwrap_or_else(|e| die(&format!("running podnetctl: {e}")));
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        die(&format!("lab up: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let state: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| die(&format!("lab up -o json: {e}")));
    let t = &state["timings"];
    let s = |k: &str| t[k].as_f64().unwrap_or(0.0) / 1000.0;
    let split = [s("namespacesMs"), s("storeMs"), s("agentsMs"), s("podsMs"), s("routesMs")];
    let t = Instant::now();
    let out = Command::new(ctl).args(["lab", "down", "--name", name]).output().expect("podnetctl");
    let down = t.elapsed().as_secs_f64();
    if !out.status.success() {
        die(&format!("lab down: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Round { wall, split, down }
}

fn main() {
    let mut dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
    let (mut nodes, mut pods, mut rounds) = ("10".to_string(), "20".to_string(), 5usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| die(&format!("{a} needs a value")));
        match a.as_str() {
            "--podnet-dir" => dir = PathBuf::from(val()),
            "--nodes" => nodes = val(),
            "--pods-per-node" => pods = val(),
            "--rounds" => rounds = val().parse().unwrap_or_else(|_| die("--rounds: a number")),
            _ => die("usage: podnet-lab-bench [--podnet-dir DIR] [--nodes 10] [--pods-per-node 20] [--rounds 5]"),
        }
    }
    let ctl = dir.join("podnetctl");
    let name = format!("bench{}", std::process::id() % 10_000);
    println!(
        "| store | nodes × pods | lab up (wall) | namespaces | store | agents | pod ADDs | routes | lab down | rounds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for store in ["local", "etcd"] {
        let rs: Vec<Round> = (0..rounds).map(|_| round(&ctl, &name, &nodes, &pods, store)).collect();
        let m = |f: &dyn Fn(&Round) -> f64| median(rs.iter().map(f).collect());
        let split: Vec<String> = (0..5).map(|i| format!("{:.2} s", m(&|r| r.split[i]))).collect();
        println!(
            "| {store} | {nodes} × {pods} | {:.2} s (max {:.2} s) | {} | {:.2} s | {} |",
            m(&|r| r.wall),
            rs.iter().map(|r| r.wall).fold(0.0, f64::max),
            split.join(" | "),
            m(&|r| r.down),
            rounds
        );
    }
}
