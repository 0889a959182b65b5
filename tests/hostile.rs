//! Hostile input: bad IDs, ifnames, namespaces, stdin and configs; a read-only or full state dir;
//! corrupt store files; a stale lock. Each gets a clear CNI error (or a documented recovery), never
//! a panic, and nothing is written outside the state directory.
mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A refusal with `code` whose message contains `needle`: CNI error JSON on stdout, no panic.
fn refused(out: &Outcome, code: u64, needle: &str, what: &str) {
    assert!(!out.ok, "{what}: accepted: {}", out.raw);
    assert_eq!(out.code(), code, "{what}: {}", out.raw);
    let msg = out.json["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "{what}: message {msg:?} should name {needle:?}");
    assert!(!out.raw.contains("panicked"), "{what}: panicked: {}", out.raw);
}

/// The node's files outside the state dir and the log: none may appear.
fn written_outside(node: &Node, state: &Path) -> Vec<PathBuf> {
    let state = state.strip_prefix(node.dir.path()).unwrap();
    let mut paths: Vec<PathBuf> = walk(node.dir.path())
        .into_iter()
        .map(|(p, _)| p.strip_prefix(node.dir.path()).unwrap().to_path_buf())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| !(p.starts_with(state) || state.starts_with(p) || p == Path::new("podnet.log")))
        .collect()
}

#[test]
fn hostile_ids_ifnames_and_namespaces_are_refused_before_anything_is_touched() {
    let node = Node::new();
    // The state dir sits two levels down, so a file written beside it would show.
    let state = node.dir.path().join("deep/state");
    let conf = node.podnet_conf(json!({"dataDir": state}));
    let pod = Netns::new("p");
    let long = "a".repeat(1024);
    let ids = ["a/b", "..", "../../../tmp/podnet-escape", ".hidden", "a b", "a\tb", "-rf", "a:b", "é", long.as_str()];
    let ifnames = ["abcdefghijklmnop", "a/b", "a:b", "a b", "eth0\n", ".", "..", "../eth0"];
    for bin in [PODNET, PODNET_IPAM] {
        for cmd in ["ADD", "CHECK", "DEL"] {
            for id in ids {
                let out = node.call(bin, cmd, id, Some(&pod.path()), "eth0", &conf);
                refused(&out, 4, "CNI_CONTAINERID", &format!("{bin} {cmd} id {id:?}"));
            }
            for ifname in ifnames {
                let out = node.call(bin, cmd, "c1", Some(&pod.path()), ifname, &conf);
                refused(&out, 4, "CNI_IFNAME", &format!("{bin} {cmd} ifname {ifname:?}"));
            }
        }
    }
    // A NUL cannot pass through the environment (execve ends the string there), but it can
    // through GC's attachment list on stdin.
    for (id, ifname) in [("a\0b", "eth0"), ("../x", "eth0"), ("c1", "a/b"), ("c1", "eth0\0")] {
        let mut gc = conf.clone();
        gc["cniVersion"] = json!("1.1.0");
        gc["cni.dev/valid-attachments"] = json!([{"containerID": id, "ifname": ifname}]);
        let out = node.call_env(PODNET, "GC", &[], None, &gc);
        refused(&out, 7, "valid attachment", &format!("GC keeping {id:?}/{ifname:?}"));
    }
    // Namespaces: the node's own (the pod's interface would land on the node), a directory, a
    // regular file, a pid namespace, a symlink into the state dir.
    std::fs::create_dir_all(&state).unwrap();
    let file = node.dir.path().join("deep/not-a-netns");
    std::fs::write(&file, "x").unwrap();
    let link = node.dir.path().join("deep/link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let cases = [
        (node.ns.path(), "node's own"),
        (node.dir.path().join("deep"), "not a network namespace"),
        (file, "not a network namespace"),
        (PathBuf::from("/proc/self/ns/pid"), "not a network namespace"),
        (link, "not a network namespace"),
        (PathBuf::from("relative/ns"), "absolute path"),
    ];
    for (path, needle) in cases {
        let out = node.call(PODNET, "ADD", "c1", Some(&path), "eth0", &conf);
        refused(&out, 4, needle, &format!("ADD with CNI_NETNS {}", path.display()));
    }
    assert!(node.host_veths().is_empty(), "no veth: {:?}", node.host_veths());
    assert_eq!(pod.links(), vec!["lo".to_string()]);
    assert!(
        node.ns.links().iter().all(|l| !l.starts_with("pn") && l != "eth0"),
        "nothing in the node: {:?}",
        node.ns.links()
    );
    assert!(!Path::new("/tmp/podnet-escape").exists());
    let outside = written_outside(&node, &state);
    assert!(
        outside == [PathBuf::from("deep/link"), PathBuf::from("deep/not-a-netns")],
        "written outside the state dir: {outside:?}"
    );
    assert!(list_dir(&state.join("podnet/ipam/addrs")).is_empty(), "no address taken");
}

#[test]
fn oversized_garbled_and_unknown_input_gets_decode_or_config_errors() {
    let node = Node::new();
    let pod = Netns::new("p");
    let conf = node.podnet_conf(json!({}));
    let env = [("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")];
    let add_raw = |stdin: &[u8]| node.call_raw(PODNET, "ADD", &env, Some(&pod.path()), stdin);

    // Over 1 MiB: refused without being parsed (a valid config padded with spaces).
    let mut big = serde_json::to_vec(&conf).unwrap();
    big.extend(std::iter::repeat_n(b' ', (1 << 20) + 1 - big.len()));
    refused(&add_raw(&big), 6, "bytes", "stdin over 1 MiB");
    // Just under the cap it is only a config.
    big.truncate(1 << 20);
    let ok = add_raw(&big);
    assert!(ok.ok, "a 1 MiB config: {}", ok.raw);
    node.del("c1", Some(&pod), &conf).must();

    let deep = "[".repeat(100_000);
    let garbage: [(&[u8], &str); 6] = [
        (b"", "empty stdin"),
        (b"\0\0\0\0", "NUL bytes"),
        (b"{\"cniVersion\": \"1.0.0\", \"name\": \xff}", "invalid UTF-8"),
        (deep.as_bytes(), "100,000 nested arrays"),
        (b"{\"cniVersion\": \"1.0.0\"", "truncated JSON"),
        (b"[1,2,3]", "not an object"),
    ];
    for (stdin, what) in garbage {
        let out = add_raw(stdin);
        assert!(!out.ok && [6, 7].contains(&out.code()), "{what}: {}", out.raw);
        assert!(!out.raw.contains("panicked"), "{what}: {}", out.raw);
    }

    // Unknown keys are typos until proven otherwise: refused, named.
    let mut pool_typo = conf.clone();
    pool_typo["ipam"]["pools"][0]["blocksize"] = json!(26);
    let cases: [(Value, u64, &str); 8] = [
        (merged(&conf, json!({"bogus": 1})), 2, "bogus"),
        (merged(&conf, json!({"ipam": {"bogus": 1}})), 7, "bogus"),
        (pool_typo, 7, "blocksize"),
        (merged(&conf, json!({"cniVersion": "9.9.9"})), 1, "9.9.9"),
        (merged(&conf, json!({"cniVersion": "1.0.0; rm -rf /"})), 1, "rm -rf"),
        (merged(&conf, json!({"cniVersion": 1})), 7, "cniVersion"),
        (without(&conf, "cniVersion"), 7, "cniVersion"),
        (merged(&conf, json!({"ipam": {"type": "../../../bin/true"}})), 7, "ipam.type"),
    ];
    for (c, code, needle) in cases {
        refused(&node.add("c2", &pod, &c), code, needle, &c.to_string());
    }
    assert!(node.host_veths().is_empty());
    assert!(node.allocations().is_empty());
    assert_eq!(pod.links(), vec!["lo".to_string()]);
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut v = base.clone();
    merge(&mut v, extra);
    v
}

fn without(base: &Value, key: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn a_read_only_or_full_state_dir_fails_add_with_code_5_and_leaves_nothing() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let data = node.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    // The state dir gets a 1 MiB tmpfs in a mount namespace of the test's own.
    let mnt = MountNs::new();
    mnt.exec(&["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "podnet-test", data.to_str().unwrap()]);
    *node.mounts.lock().unwrap() = Some(mnt.path());
    let addrs = mnt.inside(&data.join("podnet/ipam/addrs"));
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    node.add("c-a", &a, &conf).must();
    assert_eq!(list_dir(&addrs).len(), 1);

    mnt.exec(&["mount", "-o", "remount,ro", data.to_str().unwrap()]);
    refused(&node.add("c-b", &b, &conf), 5, "Read-only", "ADD on a read-only state dir");
    assert_eq!(b.links(), vec!["lo".to_string()], "no interface in the refused pod");
    assert_eq!(node.host_veths().len(), 1, "only the first pod's veth");
    // DEL cannot record the release: it says so, and the runtime retries once the dir is writable.
    refused(&node.del("c-a", Some(&a), &conf), 5, "Read-only", "DEL on a read-only state dir");
    mnt.exec(&["mount", "-o", "remount,rw", data.to_str().unwrap()]);
    node.del("c-a", Some(&a), &conf).must();
    assert!(list_dir(&addrs).is_empty());

    // Full: fill the tmpfs, then ADD.
    let fill = data.join("fill");
    let fill_cmd = format!("cat /dev/zero > {} 2>/dev/null; true", fill.display());
    mnt.exec(&["sh", "-c", &fill_cmd]);
    refused(&node.add("c-c", &c, &conf), 5, "No space left", "ADD on a full state dir");
    assert_eq!(c.links(), vec!["lo".to_string()]);
    assert!(node.host_veths().is_empty());
    let all = std::fs::read_dir(&addrs).unwrap().count();
    assert_eq!(all, 0, "no address file and no temp file left");
    mnt.exec(&["rm", fill.to_str().unwrap()]);
    node.add("c-c", &c, &conf).must();
    node.del("c-c", Some(&c), &conf).must();
    assert!(list_dir(&addrs).is_empty());
    *node.mounts.lock().unwrap() = None;
}

/// An address file of the node store (the file name starts with the address).
fn addr_file(node: &Node, ip: &str) -> PathBuf {
    let dir = node.data_dir().join("podnet/ipam/addrs");
    let name = list_dir(&dir)
        .into_iter()
        .find(|n| n.starts_with(&format!("{ip}_")))
        .unwrap_or_else(|| panic!("no record for {ip}"));
    dir.join(name)
}

fn corrupt_records_are_refused_with_103_and_rebuilt_from_the_kernel(dataplane: &str) {
    let node = Node::new();
    let conf = node.podnet_conf(json!({"dataplane": dataplane}));
    let list = node.dir.path().join("net.conflist");
    write_conflist(&list, &conf);
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("p{i}"))).collect();
    let ips: Vec<String> =
        pods.iter().enumerate().map(|(i, p)| result_ip(&node.add(&format!("c{i}"), p, &conf).must())).collect();
    // Pod 2 dies without a DEL: its namespace, and so its veth, is gone.
    let mut pods = pods;
    drop(pods.pop());
    node.wait_for_host_veths(2);

    // Truncated, NUL-filled, checksum-failing.
    let files: Vec<PathBuf> = ips.iter().map(|ip| addr_file(&node, ip)).collect();
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(&files[1], vec![0u8; bytes.len()]).unwrap();
    let flipped = String::from_utf8(std::fs::read(&files[2]).unwrap()).unwrap().replacen("\"pool\"", "\"poo1\"", 1);
    std::fs::write(&files[2], flipped).unwrap();
    let block_dir = node.data_dir().join("podnet/ipam/blocks");
    let block_file = block_dir.join(&list_dir(&block_dir)[0]);
    std::fs::write(&block_file, b"").unwrap();

    // Refused with 103 and the way out, wherever a record must be read.
    let again = node.add("c1", &pods[1], &conf);
    refused(&again, 103, "podnetctl ipam rebuild", "a repeated ADD of a corrupt record");
    let (code, out) = podnetctl(&node, &list, &["inspect"]);
    assert!(code != 0 && out.contains("podnetctl ipam rebuild"), "inspect: {out}");
    let (code, out) = podnetctl(&node, &list, &["ipam", "check"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("corrupt")).count(), 4, "three records and a block lease: {out}");
    // Never read as "no state": a new pod gets none of the three addresses, even with the
    // round-robin cursor gone (allocation then starts at the block's first address).
    let cursor = node.data_dir().join("podnet/ipam/cursor/pods-v4");
    std::fs::remove_file(&cursor).unwrap();
    let fresh = Netns::new("fresh");
    let ip3 = result_ip(&node.add("c3", &fresh, &conf).must());
    assert!(!ips.contains(&ip3), "{ip3} was still recorded");

    // The recovery: live endpoints keep their addresses, the dead pod's is freed, nothing is lost.
    let (code, out) = podnetctl(&node, &list, &["-o", "json", "ipam", "rebuild"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<(String, String)> = report["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["action"].as_str().unwrap().to_string(), r["ip"].as_str().or(r["block"].as_str()).unwrap().to_string())
        })
        .collect();
    for (i, want) in ["restored", "restored", "freed"].iter().enumerate() {
        assert!(actions.contains(&(want.to_string(), ips[i].clone())), "{} should be {want}: {actions:?}", ips[i]);
    }
    // The audit history tells the release rebuild made (the record it freed was unreadable).
    let (code, out) = podnetctl(&node, &list, &["audit", "export"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.contains(&format!("\"ip\":\"{}\"", ips[2]))
            && l.contains("\"containerId\":\"c2\"")
            && l.contains("released")),
        "{out}"
    );
    assert!(actions.iter().any(|(a, _)| a == "blockRestored"), "{actions:?}");
    let quarantine = PathBuf::from(report["quarantine"].as_str().unwrap());
    assert_eq!(list_dir(&quarantine).len(), 4, "every corrupt file is kept");
    let (code, out) = podnetctl(&node, &list, &["ipam", "check"]);
    assert_eq!(code, 0, "clean after rebuild: {out}");
    let eps = node.endpoints(&conf);
    assert_eq!(eps, vec!["c0:eth0".to_string(), "c1:eth0".to_string(), "c3:eth0".to_string()]);
    let (_, out) = podnetctl(&node, &list, &["-o", "json", "inspect"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    for (i, pod) in pods.iter().enumerate() {
        let ep = v["endpoints"].as_array().unwrap().iter().find(|e| e["containerId"] == format!("c{i}")).unwrap();
        assert!(ep["ips"][0].as_str().unwrap().starts_with(&format!("{}/", ips[i])), "{ep}");
        assert_eq!(pod.addrs4("eth0"), vec![ep["ips"][0].as_str().unwrap().split('/').next().unwrap().to_string()]);
    }
    // The dead pod's address is free again and the live pods' are not: from the block's start,
    // the next pod gets exactly the freed one.
    std::fs::remove_file(&cursor).unwrap();
    let again = Netns::new("again");
    let ip4 = result_ip(&node.add("c4", &again, &conf).must());
    assert_eq!(ip4, ips[2], "the freed address, and neither live pod's");
    // And the rebuilt records release as any other.
    node.del("c0", Some(&pods[0]), &conf).must();
    for (cid, pod) in [("c1", &pods[1]), ("c3", &fresh), ("c4", &again)] {
        node.del(cid, Some(pod), &conf).must();
    }
    assert!(node.allocations().is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
fn corrupt_records_are_refused_with_103_and_rebuilt_from_the_kernel_bridge() {
    corrupt_records_are_refused_with_103_and_rebuilt_from_the_kernel("bridge");
}

#[test]
fn corrupt_records_are_refused_with_103_and_rebuilt_from_the_kernel_routed() {
    corrupt_records_are_refused_with_103_and_rebuilt_from_the_kernel("routed");
}

#[test]
fn a_lock_left_by_a_dead_process_or_garbled_costs_nothing_and_a_bad_lock_path_is_code_5() {
    let node = Node::new();
    let conf = node.podnet_conf(json!({}));
    let (a, b, c) = (Netns::new("a"), Netns::new("b"), Netns::new("c"));
    node.add("c-a", &a, &conf).must();
    let lock = node.data_dir().join("podnet/ipam/lock");
    // A process takes the store lock and dies holding it (kill -9 by its PID).
    // The shell locks fd 9 with flock(1), then becomes the sleep that keeps the fd: one PID.
    let script = format!("exec 9>>'{}' && flock 9 && exec sleep 600", lock.display());
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &script]);
    die_with_parent(&mut cmd);
    let mut holder = KillOnDrop(cmd.spawn().expect("sh"));
    let held = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        !std::process::Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().unwrap().success()
    });
    assert!(held, "flock did not take the lock");
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    std::fs::write(&lock, b"garbage left behind\0\0").unwrap();
    node.add("c-b", &b, &conf).must();
    // A lock path that cannot be a lock: a clear error, nothing done.
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    refused(&node.add("c-c", &c, &conf), 5, "lock", "ADD with a directory as the lock");
    assert_eq!(c.links(), vec!["lo".to_string()]);
    assert_eq!(node.host_veths().len(), 2);
    std::fs::remove_dir(&lock).unwrap();
    node.add("c-c", &c, &conf).must();
    for (cid, pod) in [("c-a", &a), ("c-b", &b), ("c-c", &c)] {
        node.del(cid, Some(pod), &conf).must();
    }
    assert!(node.allocations().is_empty());
}

#[test]
fn corrupt_endpoint_records_of_an_execd_ipam_are_rebuilt_or_dropped() {
    let node = Node::new();
    let conf = node
        .podnet_conf(json!({"dataplane": "routed", "ipam": {"type": "host-local", "node": null, "pools": null,
        "ranges": [[{"subnet": "10.81.0.0/24"}]], "dataDir": node.dir.path().join("host-local")}}));
    let list = node.dir.path().join("net.conflist");
    write_conflist(&list, &conf);
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let ip_a = result_ip(&node.add("a", &a, &conf).must());
    node.add("b", &b, &conf).must();
    drop(b);
    node.wait_for_host_veths(1);
    let dir = node.data_dir().join("podnet/endpoints");
    for f in list_dir(&dir) {
        std::fs::write(dir.join(f), [0u8; 64]).unwrap();
    }
    let (code, out) = podnetctl(&node, &list, &["inspect"]);
    assert!(code != 0 && out.contains("podnetctl ipam rebuild"), "inspect: {out}");
    let (code, out) = podnetctl(&node, &list, &["-o", "json", "ipam", "rebuild"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let repairs = v["repairs"].as_array().unwrap();
    assert!(
        repairs.contains(&json!({"action": "endpointRestored", "handle": {"containerId": "a", "ifname": "eth0"}})),
        "{out}"
    );
    assert!(repairs.contains(&json!({"action": "endpointDropped", "file": "b:eth0"})), "{out}");
    let (_, out) = podnetctl(&node, &list, &["-o", "json", "inspect"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(
        v["endpoints"][0]["ips"],
        json!([format!("{ip_a}/32")]),
        "the routed pod's address, from its host route"
    );
    assert_eq!(list_dir(&node.data_dir().join("podnet/quarantine")).len(), 2);
    node.del("a", Some(&a), &conf).must();
    node.del("b", None, &conf).must();
    assert!(list_dir(&dir).is_empty());
}
