//! The CNI verbs end to end: VERSION, results per spec version, CHECK gating, STATUS, GC, inspect.
mod common;

use common::*;
use serde_json::json;

#[test]
fn version_reports_every_supported_version_even_with_placeholder_env() {
    let node = Node::new();
    let env = [("CNI_NETNS", "dummy"), ("CNI_IFNAME", "dummy"), ("CNI_CONTAINERID", "")];
    let v = node.call_raw(PODNET, "VERSION", &env, None, br#"{"cniVersion":"1.0.0"}"#).must();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    let v = node.call_raw(PODNET_IPAM, "VERSION", &env, None, b"").must();
    assert_eq!(v["supportedVersions"][4], "1.1.0");
}

#[test]
fn each_cni_version_gets_its_result_format() {
    let node = Node::new();
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let pod = Netns::new("p");
        let conf = node.podnet_conf(json!({"cniVersion": version}));
        let cid = format!("c{i}");
        let r = node.add(&cid, &pod, &conf).must();
        assert_eq!(r["cniVersion"], *version);
        let ip = &r["ips"][0];
        let pod_if = r["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "eth0").unwrap().clone();
        if version.starts_with('0') {
            assert_eq!(ip["version"], "4", "{version}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{version}: {r}");
        }
        assert_eq!(pod_if.get("mtu").is_some(), *version == "1.1.0", "{version}: interface mtu only in 1.1.0");
        // CHECK exists from 0.4.0 on; older configs get code 1.
        let mut c = conf.clone();
        c["prevResult"] = r.clone();
        let check = node.call(PODNET, "CHECK", &cid, Some(&pod.path()), "eth0", &c);
        if *version < "0.4.0" {
            assert_eq!(check.code(), 1, "{version}");
        } else {
            assert!(check.ok, "{version}: {}", check.raw);
        }
        assert!(node.del(&cid, Some(&pod), &c).ok);
    }
    assert!(node.allocations().is_empty());
}

#[test]
fn status_and_gc() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({"cniVersion": "1.1.0"}));
    let env: [(&str, &str); 0] = [];
    assert!(node.call_env(PODNET, "STATUS", &env, None, &conf).ok);
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("g{i}"))).collect();
    for (i, p) in pods.iter().enumerate() {
        node.add(&format!("gc-{i}"), p, &conf).must();
    }
    assert_eq!(node.allocations().len(), 3);
    // GC without the key is refused rather than read as "keep nothing".
    let e = node.call_env(PODNET, "GC", &env, None, &conf);
    assert_eq!(e.code(), 7, "{}", e.raw);
    assert_eq!(node.allocations().len(), 3);
    // GC keeps only the listed attachments; the older key name works too.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-0", "ifname": "eth0"}]);
    assert!(node.call_env(PODNET, "GC", &[("CNI_CONTAINERID", ""), ("CNI_IFNAME", "")], None, &gc).ok);
    assert_eq!(node.allocations().len(), 1);
    assert!(node.allocations()[0].ends_with("gc-0:eth0"));
    assert_eq!(node.host_veths().len(), 1, "GC removed the stale veths");
    assert_eq!(node.endpoints(&conf), vec!["gc-0:eth0".to_string()]);
    let mut gc_old = conf.clone();
    gc_old["cni.dev/attachments"] = json!([]);
    assert!(node.call_env(PODNET, "GC", &env, None, &gc_old).ok);
    assert!(node.allocations().is_empty());
    // STATUS reports a corrupt store with code 50 instead of pretending all is well.
    let pod = Netns::new("s");
    node.add("s1", &pod, &conf).must();
    let f = node.data_dir().join("podnet/ipam/addrs").join(&node.allocations()[0]);
    std::fs::write(&f, [0u8; 32]).unwrap();
    let s = node.call_env(PODNET, "STATUS", &env, None, &conf);
    assert_eq!(s.code(), 50, "{}", s.raw);
    // GC and STATUS need cniVersion 1.1.0.
    assert_eq!(node.call_env(PODNET, "GC", &env, None, &node.podnet_conf(json!({}))).code(), 1);
}

#[test]
fn inspect_lists_endpoints_as_table_and_json() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let pod = Netns::new("i");
    let r = node.add("inspect-me", &pod, &conf).must();
    let list = json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [conf]});
    let path = node.dir.path().join("10-podnet.conflist");
    std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
    let out = std::process::Command::new(PODNETCTL)
        .arg("--config")
        .arg(&path)
        .args(["-o", "json", "inspect"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ep = &v["endpoints"][0];
    assert_eq!(ep["containerId"], "inspect-me");
    assert_eq!(ep["ifname"], "eth0");
    assert_eq!(ep["ips"][0], r["ips"][0]["address"]);
    assert_eq!(ep["hostVeth"], r["interfaces"][1]["name"]);
    assert_eq!(ep["mac"], r["interfaces"][2]["mac"]);
    assert_eq!(ep["gateways"][0], "10.244.0.1");
    assert!(ep["createdAt"].as_str().unwrap().ends_with('Z'));
    let table = std::process::Command::new(PODNETCTL).arg("--config").arg(&path).arg("inspect").output().unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("CONTAINER"), "{text}");
    assert!(text.contains("inspect-me") && text.contains(&result_ip(&r)), "{text}");
}

/// The plugins skip Rust's runtime start-up (src/bin/podnet.rs); what a plugin needs of it
/// still holds. A runtime that stops reading gets an exit code, not a plugin killed by SIGPIPE;
/// a plugin started with stdout closed never writes its answer into a file it opened itself.
#[test]
fn plugins_keep_their_answer_out_of_their_files_and_outlive_a_reader_that_left() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, Stdio};
    let node = Node::new();
    let node_ns = std::fs::File::open(node.ns.path()).unwrap();
    for bin in [PODNET, PODNET_IPAM] {
        let mut cmd = Command::new(bin);
        enter_on_exec(&mut cmd, node_ns.as_raw_fd());
        cmd.env_clear().env("CNI_COMMAND", "VERSION").stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.stderr(Stdio::null()).spawn().unwrap();
        drop(child.stdout.take());
        child.stdin.take().unwrap().write_all(br#"{"cniVersion":"1.0.0"}"#).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), None, "{bin} was killed when the runtime stopped reading: {status}");
    }

    // An ADD that fails (no such pod namespace) answers with error JSON; stdout is closed, so the
    // first file the plugin opens (its log) would take fd 1 and the answer with it.
    let conf = node.podnet_conf(json!({}));
    let log = node.dir.path().join("podnet.log");
    let mut cmd = Command::new(PODNET);
    enter_on_exec(&mut cmd, node_ns.as_raw_fd());
    cmd.env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "closed-stdout")
        .env("CNI_NETNS", node.dir.path().join("no-such-netns"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: close is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&conf).unwrap()).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the ADD must fail with its error answer: {status}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("no-such-netns"), "the failure is logged:\n{logged}");
    assert!(!logged.contains(r#""code":"#), "the error JSON went into the log file:\n{logged}");
}
