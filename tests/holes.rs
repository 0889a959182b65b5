//! Holes found from outside (issue 23): an exec'd IPAM plugin that never answers, config
//! conflicts the kernel would report as its own failure, an exec'd IPAM's unusable answer,
//! read-only commands that must create nothing, and an uninstall that takes only what podnet made.
mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An IPAM plugin of the test's own in `dir`, a shell script (tests may run tools).
fn fake_ipam(dir: &Path, name: &str, script: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

/// CNI_PATH with the test's plugins first.
fn cni_path(dir: &Path) -> String {
    format!("{}:{}:{REFERENCE_PLUGINS}", dir.display(), Path::new(PODNET).parent().unwrap().display())
}

fn processes_named(pattern: &str) -> usize {
    // Reading /proc, not killing anything: only counts what a test left running.
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(pattern))
        })
        .count()
}

#[test]
fn an_exec_d_ipam_that_never_answers_is_stopped_and_every_verb_gets_code_11() {
    let node = Node::new();
    let plugins = node.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    // `exec` so the plugin's PID is the sleep's: stopping it stops the sleep.
    let marker = format!("{}", 600 + std::process::id() % 300);
    fake_ipam(&plugins, "hangipam", &format!("exec sleep {marker}"));
    let mut conf = node.podnet_conf(json!({"ipamTimeoutMs": 500, "ipam": null}));
    conf["ipam"] = json!({"type": "hangipam"});
    conf["cniVersion"] = json!("1.1.0");
    let pod = Netns::new("p");
    let path = cni_path(&plugins);
    let env = [("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", path.as_str())];
    let started = Instant::now();
    let add = node.call_env(PODNET, "ADD", &env, Some(&pod.path()), &conf);
    // ADD waits the bound, then the undo (its DEL) waits it too.
    assert!(started.elapsed() < Duration::from_secs(10), "bounded: {:?}", started.elapsed());
    assert_eq!(add.code(), 11, "{}", add.raw);
    assert!(add.json["msg"].as_str().unwrap().contains("ipamTimeoutMs"), "{}", add.raw);
    assert!(node.host_veths().is_empty(), "the veth is undone");
    assert!(!pod.links().contains(&"eth0".to_string()));
    assert!(node.endpoints(&conf).is_empty());
    for verb in ["DEL", "STATUS"] {
        let netns = (verb == "DEL").then(|| pod.path());
        let out = node.call_env(PODNET, verb, &env, netns.as_deref(), &conf);
        assert_eq!(out.code(), 11, "{verb}: {}", out.raw);
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = node.call_env(PODNET, "GC", &env, None, &gc);
    assert!(out.json["msg"].as_str().is_some_and(|m| m.contains("ipamTimeoutMs")), "GC: {}", out.raw);
    assert_eq!(processes_named(&format!("sleep {marker}")), 0, "every stuck plugin was stopped");
}

#[test]
fn config_conflicts_are_code_7_before_anything_is_made() {
    let node = Node::new();
    let pod = Netns::new("p");
    // An MTU IPv6 cannot use, with an IPv6 pool.
    let conf = node.podnet_conf(json!({"mtu": 576, "ipam": {"pools": [
        {"name": "v4", "cidr": "10.80.0.0/24", "blockSize": 26},
        {"name": "v6", "cidr": "fd00:80::/64", "blockSize": 120}]}}));
    let e = node.add("c1", &pod, &conf);
    assert_eq!(e.code(), 7, "{}", e.raw);
    let msg = e.json["msg"].as_str().unwrap();
    assert!(msg.contains("mtu 576") && msg.contains("1280") && msg.contains("v6"), "{msg}");
    assert!(node.allocations().is_empty() && node.host_veths().is_empty());
    // The same MTU with IPv4 only is fine.
    let v4 = node.podnet_conf(json!({"mtu": 576}));
    node.add("c2", &pod, &v4).must();
    assert!(node.del("c2", Some(&pod), &v4).ok);
    // A bridge name that belongs to another kind of link (the node's uplink).
    let taken = node.podnet_conf(json!({"bridge": "up0"}));
    let pod2 = Netns::new("q");
    let e = node.add("c3", &pod2, &taken);
    assert_eq!(e.code(), 7, "{}", e.raw);
    assert!(e.json["msg"].as_str().unwrap().contains("not a bridge"), "{}", e.raw);
    assert!(node.host_veths().is_empty());
    assert!(!pod2.links().contains(&"eth0".to_string()));
}

#[test]
fn an_exec_d_ipam_answer_no_pod_can_use_is_code_107_and_undone() {
    let node = Node::new();
    let plugins = node.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let dels = node.dir.path().join("dels");
    let answer = |name: &str, ips: serde_json::Value| {
        let result = json!({"cniVersion": "1.0.0", "ips": ips}).to_string();
        let script = format!(
            "cat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{result}'; else echo $CNI_COMMAND >> {}; fi",
            dels.display()
        );
        fake_ipam(&plugins, name, &script);
    };
    answer("netaddr", json!([{"address": "10.81.0.0/24", "gateway": "10.81.0.1"}]));
    answer("broadcast", json!([{"address": "10.81.0.255/24", "gateway": "10.81.0.1"}]));
    answer("selfgw", json!([{"address": "10.81.0.5/24", "gateway": "10.81.0.5"}]));
    let path = cni_path(&plugins);
    let pod = Netns::new("p");
    for (i, kind) in ["netaddr", "broadcast", "selfgw"].iter().enumerate() {
        let mut conf = node.podnet_conf(json!({"ipam": null}));
        conf["ipam"] = json!({"type": kind});
        let cid = format!("c{i}");
        let env = [("CNI_CONTAINERID", cid.as_str()), ("CNI_IFNAME", "eth0"), ("CNI_PATH", path.as_str())];
        let e = node.call_env(PODNET, "ADD", &env, Some(&pod.path()), &conf);
        assert_eq!(e.code(), 107, "{kind}: {}", e.raw);
        assert!(node.host_veths().is_empty(), "{kind}");
        assert!(!pod.links().contains(&"eth0".to_string()), "{kind}");
        assert!(node.endpoints(&conf).is_empty(), "{kind}");
    }
    let undone = std::fs::read_to_string(&dels).unwrap_or_default();
    assert_eq!(undone.lines().filter(|l| *l == "DEL").count(), 3, "each ADD is undone with the plugin's DEL");
}

#[test]
fn read_only_commands_create_nothing_and_say_there_is_no_state() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({"dataDir": node.dir.path().join("never")}));
    let list = node.dir.path().join("net.conflist");
    write_conflist(&list, &conf);
    for args in [&["inspect"][..], &["ipam", "show"], &["ipam", "check"], &["-o", "json", "ipam", "check"]] {
        let (code, out) = podnetctl(&node, &list, args);
        assert_eq!(code, 0, "{args:?}: {out}");
        if !args.contains(&"json") {
            assert!(out.contains("no state"), "{args:?}: {out}");
        }
    }
    assert!(!node.dir.path().join("never").exists(), "nothing was created");
}

#[test]
fn uninstall_takes_only_what_podnet_made() {
    let node = Node::new();
    let d = node.dir.path();
    let (bin, confd, data) = (d.join("bin"), d.join("net.d"), d.join("state"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&confd).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let src = Path::new(PODNET).parent().unwrap();
    // A bridge someone else made (no podnet MAC), which the conflist names.
    node.ns.exec(&["ip", "link", "add", "shared0", "type", "bridge"]);
    let install = [
        "install",
        "--bin-dir",
        &s(&bin),
        "--conf-dir",
        &s(&confd),
        "--source-dir",
        &s(src),
        "--cidr",
        "10.82.0.0/16",
        "--node",
        "n1",
        "--data-dir",
        &s(&data),
        "--bridge",
        "shared0",
    ];
    let out = run_in_node(&node, PODNETCTL, &install);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // State podnet made, and a file of someone else's in the network's directory.
    let pod = Netns::new("p");
    let list = confd.join("10-podnet.conflist");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
    let mut plugin = v["plugins"][0].clone();
    plugin["name"] = v["name"].clone();
    plugin["cniVersion"] = v["cniVersion"].clone();
    node.add("c1", &pod, &plugin).must();
    assert!(node.del("c1", Some(&pod), &plugin).ok);
    std::fs::write(data.join("podnet/notes.txt"), "mine").unwrap();
    let (sbin, units) = (s(&node.dir.path().join("sbin")), s(&node.dir.path().join("units")));
    let uninstall =
        ["uninstall", "--bin-dir", &s(&bin), "--conf-dir", &s(&confd), "--agent-bin-dir", &sbin, "--unit-dir", &units];
    let out = run_in_node(&node, PODNETCTL, &uninstall);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(node.ns.links().contains(&"shared0".to_string()), "a bridge podnet did not make stays: {text}");
    assert!(text.contains("left bridge shared0"), "{text}");
    assert!(data.join("podnet/notes.txt").exists(), "a file podnet did not make stays");
    assert!(!data.join("podnet/ipam").exists(), "podnet's own state goes: {text}");
    // With --force the bridge goes too (it has no ports left).
    assert!(run_in_node(&node, PODNETCTL, &install).status.success());
    let out = run_in_node(&node, PODNETCTL, &[&uninstall[..], &["--force"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!node.ns.links().contains(&"shared0".to_string()), "{}", String::from_utf8_lossy(&out.stdout));
}
