//! `podnetctl lab` as a user runs it: every mode, encapsulation and store comes up and every pod
//! reaches every other (pinged by this test itself, and by `lab ping`); `lab ping` catches a pod
//! whose interface is down; two labs side by side; `down` leaves nothing, also after an `up` that
//! failed half-way or was killed; bad input is refused before anything is built.
mod common;

use common::*;
use podnet_lab::named;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A lab name unique to this test process (names are at most 16 characters).
fn lab_name(tag: &str) -> String {
    format!("t{}{tag}", std::process::id() % 100_000)
}

fn ctl(args: &[&str]) -> Output {
    Command::new(PODNETCTL).args(args).output().expect("running podnetctl")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Removes the lab when the test ends, also when it fails.
struct Lab(String);

impl Lab {
    fn up(name: &str, extra: &[&str]) -> Lab {
        let lab = Lab(name.into());
        let mut args = vec!["lab", "up", "--name", name];
        args.extend_from_slice(extra);
        let out = ctl(&args);
        assert!(out.status.success(), "lab up {extra:?}: {}", text(&out));
        lab
    }
    fn status(&self) -> Value {
        let out = ctl(&["lab", "status", "--name", &self.0, "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn ping(&self) -> (i32, Value) {
        let out = ctl(&["lab", "ping", "--name", &self.0, "-o", "json"]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (out.status.code().unwrap_or(-1), v)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ctl(&["lab", "down", "--name", &self.0]);
    }
}

/// Nothing of the lab is left: no namespace, process or file.
fn assert_gone(name: &str) {
    let prefix = format!("pnlab.{name}.");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(named::lab_processes(name).is_empty(), "processes left");
    assert!(!Path::new(named::ROOT).join(name).exists(), "files left");
}

/// One ICMP echo from inside `netns` to `ip`, by this test (not the lab).
fn pings(netns: &str, ip: &str) -> bool {
    let once = |count: &str| {
        Command::new("ip")
            .args(["netns", "exec", netns, "ping", "-n", "-q", "-c", count, "-W", "2", ip])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    once("1") || once("2")
}

/// Every pod reaches every other pod's every address and the external host, pinged by the test.
fn assert_full_mesh(status: &Value) {
    let pods = status["pods"].as_array().unwrap();
    let external = status["external"]["ip"].as_str().unwrap();
    let mut failed = Vec::new();
    for from in pods {
        let netns = from["netns"].as_str().unwrap();
        let mut targets: Vec<&str> = vec![external];
        for to in pods.iter().filter(|p| p["name"] != from["name"]) {
            targets.extend(to["ips"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()));
        }
        for ip in targets {
            if !pings(netns, ip) {
                failed.push(format!("{} -> {ip}", from["name"]));
            }
        }
    }
    assert!(failed.is_empty(), "unreachable: {failed:?}");
}

#[test]
fn every_mode_encapsulation_and_store_comes_up_and_every_pod_reaches_every_other() {
    let mut i = 0;
    for mode in ["overlay", "range"] {
        for encap in ["none", "vxlan", "auto"] {
            for store in ["local", "etcd"] {
                i += 1;
                let name = lab_name(&format!("c{i}"));
                // Without encapsulation nodes must share a subnet; otherwise spread them, so
                // VXLAN and auto cross the router. Dual-stack and the routed dataplane in turn.
                let subnets = if encap == "none" && mode == "overlay" { "1" } else { "2" };
                let dataplane = if i % 2 == 0 { "routed" } else { "bridge" };
                let mut args = vec![
                    "--mode",
                    mode,
                    "--encap",
                    encap,
                    "--store",
                    store,
                    "--subnets",
                    subnets,
                    "--dataplane",
                    dataplane,
                ];
                if i % 3 != 0 {
                    args.push("--dual-stack");
                }
                let lab = Lab::up(&name, &args);
                let st = lab.status();
                let what = format!("{args:?}");
                assert_eq!(st["mode"], mode, "{what}");
                assert_eq!(st["encap"], encap, "{what}");
                assert_eq!(st["store"], store, "{what}");
                assert!(st["vnetHost"].is_null());
                let nodes = st["nodes"].as_array().unwrap();
                assert_eq!(nodes.len(), 3, "{what}");
                for n in nodes {
                    assert_eq!(n["agentHealthy"], true, "{what}: {n}");
                    assert!(n["agentPid"].as_u64().unwrap() > 0);
                    assert!(!n["blocks"].as_array().unwrap().is_empty(), "{what}: {n}");
                    if mode == "overlay" {
                        // One route per remote block (and a blackhole per own block when routed).
                        let own = n["blocks"].as_array().unwrap().len();
                        let routes = n["routes"].as_array().unwrap().len();
                        let families = if args.contains(&"--dual-stack") { 2 } else { 1 };
                        let blackholes = if dataplane == "routed" { own } else { 0 };
                        assert_eq!(routes, 2 * families + blackholes, "{what}: {n}");
                    }
                }
                let pods = st["pods"].as_array().unwrap();
                assert_eq!(pods.len(), 6);
                assert_eq!(pods[0]["name"], "node-1-p1");
                assert_full_mesh(&st);
                let (code, report) = lab.ping();
                assert_eq!(code, 0, "{what}: {report}");
                assert_eq!(report["failed"], serde_json::json!([]));
                let per_pod = if args.contains(&"--dual-stack") { 2 * (5 + 1) } else { 5 + 1 };
                assert_eq!(report["pairs"], 6 * per_pod, "{what}");
                drop(lab);
                assert_gone(&name);
            }
        }
    }
}

#[test]
fn a_vnet_lab_gives_pods_their_node_s_secondaries_reached_by_the_vnet_host() {
    for store in ["local", "etcd"] {
        let name = lab_name(&format!("v{store}"));
        let lab = Lab::up(&name, &["--mode", "vnet", "--store", store]);
        let st = lab.status();
        assert_eq!(st["mode"], "vnet");
        assert_eq!(st["dataplane"], "routed");
        let host = st["vnetHost"]["ip"].as_str().unwrap().to_string();
        assert_eq!(host, "10.240.0.5");
        for p in st["pods"].as_array().unwrap() {
            // node-<i>'s NIC carries 10.240.<i>.1 and up.
            let i = p["node"].as_str().unwrap().trim_start_matches("node-").to_string();
            let ip = p["ips"][0].as_str().unwrap();
            assert!(ip.starts_with(&format!("10.240.{i}.")), "{p}");
            // The VNet host reaches every pod by its own address, with no route of its own.
            assert!(pings(st["vnetHost"]["netns"].as_str().unwrap(), ip), "VNet host -> {ip}");
        }
        assert_full_mesh(&st);
        let (code, report) = lab.ping();
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["pairs"], 6 * (5 + 2), "pods, the external host and the VNet host");
        drop(lab);
        assert_gone(&name);
    }
}

#[test]
fn lab_ping_catches_a_pod_whose_interface_is_down() {
    let name = lab_name("pd");
    let lab = Lab::up(&name, &[]);
    let st = lab.status();
    let victim = st["pods"][2]["netns"].as_str().unwrap().to_string();
    let down = Command::new("ip").args(["-n", &victim, "link", "set", "eth0", "down"]).output().unwrap();
    assert!(down.status.success());
    let (code, report) = lab.ping();
    assert_eq!(code, 1, "{report}");
    let failed = report["failed"].as_array().unwrap();
    // From it to the 5 others and the external host, and from the 5 others to it.
    assert_eq!(failed.len(), 6 + 5, "{report}");
    assert!(failed.iter().all(|f| f["from"] == "node-2-p1" || f["to"] == "node-2-p1"), "{report}");
    // The table says which, and exits 1 too.
    let out = ctl(&["lab", "ping", "--name", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("node-2-p1 -> external"), "{}", text(&out));
}

#[test]
fn two_labs_run_side_by_side_and_a_second_up_of_one_name_is_refused() {
    let (a, b) = (lab_name("sa"), lab_name("sb"));
    let la = Lab::up(&a, &[]);
    let lb = Lab::up(&b, &["--store", "etcd", "--encap", "vxlan", "--nodes", "2"]);
    let again = ctl(&["lab", "up", "--name", &a]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("exists already"), "{}", text(&again));
    // Both still work, and taking one down leaves the other.
    assert_eq!(la.ping().0, 0);
    assert_eq!(lb.ping().0, 0);
    drop(la);
    assert_gone(&a);
    let (code, report) = lb.ping();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["pairs"], 4 * 4);
    // Down twice is fine.
    let out = ctl(&["lab", "down", "--name", &a]);
    assert!(out.status.success() && text(&out).contains("nothing to remove"), "{}", text(&out));
}

#[test]
fn down_leaves_nothing_after_an_up_that_failed_half_way_or_was_killed() {
    // podnetd that exits at once: up fails after the namespaces, etcd and conflists are made,
    // and removes them itself.
    let bin = tempfile::tempdir().unwrap();
    let real = Path::new(PODNETD).parent().unwrap();
    for b in ["podnet", "podnet-ipam"] {
        std::os::unix::fs::symlink(real.join(b), bin.path().join(b)).unwrap();
    }
    std::os::unix::fs::symlink("/bin/false", bin.path().join("podnetd")).unwrap();
    let name = lab_name("hf");
    let _guard = Lab(name.clone());
    let out = ctl(&["lab", "up", "--name", &name, "--store", "etcd", "--bin-dir", bin.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("podnetd on node-1 did not come up"), "{}", text(&out));
    assert_gone(&name);

    // `up` killed at several moments of its work: `down` removes whatever it had made.
    for delay_ms in [50, 200, 400, 800] {
        let name = lab_name(&format!("k{delay_ms}"));
        let _guard = Lab(name.clone());
        let mut child = Command::new(PODNETCTL)
            .args(["lab", "up", "--name", &name, "--nodes", "4", "--pods-per-node", "5", "--store", "etcd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = ctl(&["lab", "down", "--name", &name]);
        assert!(out.status.success(), "{}", text(&out));
        assert_gone(&name);
        let out = ctl(&["lab", "down", "--name", &name]);
        assert!(text(&out).contains("nothing to remove"), "{}", text(&out));
    }
}

#[test]
fn bad_input_is_refused_before_anything_is_built() {
    let name = lab_name("bad");
    let _guard = Lab(name.clone());
    let empty = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--mode", "mesh"], "invalid value 'mesh' for '--mode"),
        (vec!["--nodes", "0"], "--nodes 0 is out of range"),
        (vec!["--pods-per-node", "100000"], "use a larger pod CIDR"),
        (vec!["--pod-cidr", "10.0.0.0/24", "--nodes", "3", "--pods-per-node", "200"], "and 10.0.0.0/24 has 4"),
        (vec!["--mode", "vnet", "--dataplane", "bridge"], "--mode vnet needs --dataplane routed"),
        (vec!["--mode", "vnet", "--subnets", "2"], "leave out --subnets"),
        (vec!["--encap", "gre"], "invalid value 'gre' for '--encap"),
        (vec!["--pod-cidr", "192.168.0.0/16"], "overlaps the lab's fabric"),
        (vec!["--bin-dir", empty.path().to_str().unwrap()], "podnet is missing"),
    ];
    for (extra, want) in cases {
        let mut args = vec!["lab", "up", "--name", &name];
        args.extend(extra.iter());
        let out = ctl(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{extra:?} should say {want:?}: {}", text(&out));
        assert_gone(&name);
    }
    // No etcd on PATH.
    let out = Command::new(PODNETCTL)
        .args(["lab", "up", "--name", &name, "--store", "etcd"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--store etcd needs etcd on PATH"), "{}", text(&out));
    assert_gone(&name);
    // Not root.
    let out = std::os::unix::process::CommandExt::uid(
        Command::new(PODNETCTL).args(["lab", "up", "--name", &name]).current_dir("/"),
        65534,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("podnetctl lab needs root"), "{}", text(&out));
    assert_gone(&name);
    // A bad name, and a lab that is not there.
    let out = ctl(&["lab", "up", "--name", "../x"]);
    assert!(out.status.code() == Some(2) && text(&out).contains("bad lab name"), "{}", text(&out));
    let out = ctl(&["lab", "status", "--name", &name]);
    assert!(out.status.code() == Some(2) && text(&out).contains("no lab named"), "{}", text(&out));
    let out = ctl(&["lab", "ping", "--name", &name]);
    assert_eq!(out.status.code(), Some(2));
}

/// A program that exits without unwinding (the benches' `die`) or is killed leaves namespaces
/// named after its PID: they go by that name, and only those of processes no longer running.
#[test]
fn namespaces_of_a_dead_process_are_swept_by_the_pid_in_their_names() {
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let made = [format!("pnsweep{dead}-a"), format!("pnsweep{dead}-b"), format!("pnsweep{me}-c")];
    // Dropped at the end, also when an assertion fails (removing a namespace already gone is fine).
    let _guards: Vec<podnet_lab::Netns> = made.iter().map(|n| podnet_lab::Netns::create(n).unwrap()).collect();
    let left = |n: &str| std::path::Path::new("/run/netns").join(n).exists();
    assert_eq!(podnet_lab::Netns::remove_stale("pnsweep"), 2);
    assert!(!left(&made[0]) && !left(&made[1]) && left(&made[2]), "the live process's stays");
    assert_eq!(podnet_lab::Netns::remove_of_process("pnsweep", me), 1);
    assert!(!left(&made[2]));
}
