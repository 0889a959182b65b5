//! Least privilege: state and logs are root-only (directories 0700, files 0600), secrets never
//! reach a log or an error, and no input ever becomes a shell command.
mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// (path, mode) of everything under `root`, `root` included.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut all = vec![(root.to_path_buf(), std::fs::metadata(root).unwrap())];
    all.extend(walk(root));
    all.into_iter().map(|(p, m)| (p, m.permissions().mode() & 0o7777)).collect()
}

#[test]
fn state_and_logs_are_root_only_and_hold_no_secret() {
    let node = Node::new();
    let pki = TestPki::new();
    let mut etcd = Etcd::start_tls_in(&node.ns, &pki);
    let tls = json!({"ca": pki.path("ca.pem"), "cert": pki.path("client.pem"), "key": pki.path("client.key")});
    let state = node.dir.path().join("state");
    let log = node.dir.path().join("logs/podnet/podnet.log");
    // Everything that writes state: leases, records, cursor, lending and claimant marks
    // (allowBorrowing), an empty-block mark, an outage note.
    let conf = node.podnet_conf(json!({
        "dataplane": "routed",
        "dataDir": state,
        "logFile": log,
        "ipam": {"store": {"type": "etcd", "endpoints": [etcd.url()], "tls": tls, "timeoutMs": 1500},
                 "pools": [{"name": "pods-v4", "cidr": "10.76.0.0/27", "blockSize": 28, "allowBorrowing": true}]}
    }));
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("p{i}"))).collect();
    let mut outputs = String::new();
    for (i, p) in pods.iter().enumerate() {
        let out = node.add(&format!("c{i}"), p, &conf);
        outputs.push_str(&out.raw);
        assert!(out.ok, "{}", out.raw);
    }
    // Emptied, the block gets an empty-block mark.
    for (i, p) in pods.iter().enumerate() {
        outputs.push_str(&node.del(&format!("c{i}"), Some(p), &conf).raw);
    }
    // etcd gone: an ADD in a lending block needs its claim, fails and notes the outage.
    etcd.stop();
    let late = Netns::new("late");
    let failed = node.add("late", &late, &conf);
    assert_eq!(failed.code(), 11, "{}", failed.raw);
    outputs.push_str(&failed.raw);
    let ipam = state.join("podnet/ipam");
    for name in ["cluster-unavailable", "claimant", "lending", "empty", "cursor", "blocks", "addrs", "lock"] {
        assert!(ipam.join(name).exists(), "the test should have made {name}");
    }

    for (path, mode) in modes(&state).into_iter().chain(modes(log.parent().unwrap())) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    // The key's body never shows: not in the log, not in any result or error.
    let key = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----") && l.len() > 20).collect();
    assert!(body.len() > 5);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.is_empty(), "the log is written");
    for line in body {
        assert!(!logged.contains(line) && !outputs.contains(line), "a line of the TLS key leaked");
    }
}

/// The only process the plugins start is an IPAM plugin named by `ipam.type` (a plain file name,
/// looked up in CNI_PATH, never a path or a shell). Every `Command::new` in the shipped code is
/// listed here, so a new one has to be justified: the other is the lab's one place for starting
/// programs (etcd, the CNI plugins, podnetd) inside a lab namespace, each by path, with no shell.
#[test]
fn no_shell_commands_are_built_from_input() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let sources = walk(&root.join("src")).into_iter().chain(walk(&root.join("crates"))).map(|(p, _)| p);
    // Integration tests and build output are not shipped.
    let shipped_files = sources.filter(|p| {
        p.extension().is_some_and(|x| x == "rs")
            && !p.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "target")
    });
    for p in shipped_files {
        let text = std::fs::read_to_string(&p).unwrap();
        // Unit tests (the `#[cfg(test)] mod tests` at a file's end) may run tools; shipped
        // code may not.
        let shipped = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for needle in [
            "Command::new",
            "process::Command",
            "std::process::{",
            "\"sh\"",
            "\"bash\"",
            "\"-c\"",
            "system(",
            "execv",
            "posix_spawn",
            "fork(",
        ] {
            if shipped.contains(needle) {
                found.push(format!("{} uses {needle}", p.strip_prefix(root).unwrap().display()));
            }
        }
    }
    found.sort();
    let want = [
        "crates/lab/src/process.rs uses Command::new",
        "crates/lab/src/process.rs uses process::Command",
        "crates/lab/src/process.rs uses std::process::{",
        "crates/plugin/src/delegate.rs uses Command::new",
        "crates/plugin/src/delegate.rs uses std::process::{",
    ];
    assert_eq!(found, want.map(String::from).to_vec());
    // ... and that one refuses a type that is a path.
    let node = Node::new();
    let pod = Netns::new("p");
    for evil in ["../../../bin/sh", "/bin/sh", "sh -c id", "x/../../bin/true", "..", ""] {
        let conf = node.podnet_conf(json!({"ipam": {"type": evil}}));
        let out = node.add("c1", &pod, &conf);
        assert_eq!(out.code(), 7, "ipam.type {evil:?}: {}", out.raw);
    }
    assert!(node.host_veths().is_empty());
}
