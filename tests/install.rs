//! `podnetctl install` and `uninstall` on temp directories, and a pod brought up with what they install.
mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn ctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(PODNETCTL).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn install_is_atomic_idempotent_and_validated_and_uninstall_removes_only_podnet() {
    let node = Node::new();
    let d = node.dir.path();
    let (bin, conf) = (d.join("bin"), d.join("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    // Neighbours that are not podnet's must survive uninstall.
    std::fs::write(bin.join("bridge"), "not podnet").unwrap();
    std::fs::write(conf.join("99-other.conflist"), "{}").unwrap();
    let data = d.join("state");
    let src = Path::new(PODNET).parent().unwrap();
    let (sbin, units) = (d.join("sbin"), d.join("units"));
    // podnetd and its unit go to temp dirs too: a test never touches the host's.
    let agent_dirs = ["--agent-bin-dir", s(&sbin), "--unit-dir", s(&units)];
    let base =
        [&["install", "--bin-dir", s(&bin), "--conf-dir", s(&conf), "--source-dir", s(src)][..], &agent_dirs[..]]
            .concat();
    let flags = [
        "--cidr",
        "10.77.0.0/16",
        "--cidr",
        "fd00:77::/56",
        "--block-size",
        "24",
        "--block-size-v6",
        "120",
        "--node",
        "node-1",
        "--data-dir",
        s(&data),
        "--portmap",
        "--agent",
        "--agent-flags",
        "--encap vxlan",
    ];

    // --dry-run says what it would do and does nothing.
    let (ok, out) = ctl(&[&base[..], &flags[..], &["--dry-run"]].concat());
    assert!(ok, "{out}");
    assert!(
        out.contains("would have installed")
            && !bin.join("podnet").exists()
            && !conf.join("10-podnet.conflist").exists(),
        "{out}"
    );

    let (ok, out) = ctl(&[&base[..], &flags[..]].concat());
    assert!(ok, "{out}");
    assert_eq!(out.matches("installed").count(), 5, "{out}");
    assert_eq!(std::fs::read(bin.join("podnet")).unwrap(), std::fs::read(PODNET).unwrap());
    assert_eq!(std::fs::read(sbin.join("podnetd")).unwrap(), std::fs::read(PODNETD).unwrap());
    // The unit runs podnetd on the installed conflist with the given flags.
    let unit = std::fs::read_to_string(units.join("podnetd.service")).unwrap();
    let exec = format!(
        "ExecStart={} --config {} --encap vxlan\n",
        sbin.join("podnetd").display(),
        conf.join("10-podnet.conflist").display()
    );
    assert!(unit.contains(&exec) && unit.contains("Restart=always") && unit.contains("KillSignal=SIGTERM"), "{unit}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(bin.join("podnet-ipam")).unwrap().permissions().mode() & 0o777, 0o755);
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-podnet.conflist")).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["ipam"]["pools"][1]["cidr"], "fd00:77::/56");
    assert_eq!(list["plugins"][1]["type"], "portmap");
    assert!(list_dir(&bin).iter().all(|f| !f.contains("podnet-tmp")), "no temp files left");

    // A second run changes nothing.
    let mtime = std::fs::metadata(bin.join("podnet")).unwrap().modified().unwrap();
    let (ok, out) = ctl(&[&base[..], &flags[..]].concat());
    assert!(ok && out.matches("unchanged").count() == 5, "{out}");
    assert_eq!(std::fs::metadata(bin.join("podnet")).unwrap().modified().unwrap(), mtime);

    // Invalid configs are refused before anything is written, naming the field.
    let bad = d.join("bad.conflist");
    std::fs::write(&bad, serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "podnet", "dataplane": "vxlan", "ipam": {"type": "podnet-ipam", "pools": [{"name": "p", "cidr": "10.0.0.0/8"}]}}]})).unwrap()).unwrap();
    let (ok, out) = ctl(&[
        "--config",
        s(&bad),
        "install",
        "--bin-dir",
        s(&d.join("bin2")),
        "--conf-dir",
        s(&d.join("conf2")),
        "--source-dir",
        s(src),
        "--agent-bin-dir",
        s(&sbin),
        "--unit-dir",
        s(&units),
    ]);
    assert!(!ok && out.contains("dataplane"), "{out}");
    assert!(!d.join("bin2").exists());
    let (ok, out) = ctl(&[&base[..], &["--cidr", "10.0.0.1/8"]].concat());
    assert!(!ok && out.contains("cidr"), "{out}");

    // The installed plugin brings a pod up, exactly as a runtime would find it.
    let pod = Netns::new("inst");
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["logFile"] = json!(d.join("podnet.log"));
    let installed = bin.join("podnet");
    let r = node.call(s(&installed), "ADD", "inst-1", Some(&pod.path()), "eth0", &plugin).must();
    assert!(result_ip(&r).starts_with("10.77."));
    assert!(node.ns.links().contains(&"podnet0".to_string()));

    // Uninstall refuses while an endpoint is recorded, then removes podnet's files, bridge and state only.
    let un = [&["uninstall", "--bin-dir", s(&bin), "--conf-dir", s(&conf)][..], &agent_dirs[..]].concat();
    let out = run_in_node(&node, PODNETCTL, &un);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("still recorded"));
    assert!(node.del("inst-1", Some(&pod), &plugin).ok);
    let out = run_in_node(&node, PODNETCTL, &un);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("deleted bridge podnet0"), "{text}");
    assert!(!bin.join("podnet").exists() && !bin.join("podnet-ipam").exists());
    assert!(!sbin.join("podnetd").exists() && !units.join("podnetd.service").exists(), "{text}");
    assert!(!conf.join("10-podnet.conflist").exists());
    assert!(!data.join("podnet").exists(), "state removed");
    assert!(!node.ns.links().contains(&"podnet0".to_string()));
    assert_eq!(std::fs::read_to_string(bin.join("bridge")).unwrap(), "not podnet");
    assert!(conf.join("99-other.conflist").exists());
    let out = run_in_node(&node, PODNETCTL, &un);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

/// deploy/podnet.yaml's conflist is one `podnetctl install` accepts (the manifest itself is
/// untested against a live API server).
#[test]
fn the_daemonset_s_conflist_is_valid() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/podnet.yaml")).unwrap();
    let start =
        manifest.find("10-podnet.conflist: |\n").expect("the ConfigMap's conflist") + "10-podnet.conflist: |\n".len();
    let body: Vec<&str> = manifest[start..].lines().take_while(|l| l.starts_with("    ") || l.is_empty()).collect();
    let d = tempfile::tempdir().unwrap();
    let list = d.path().join("10-podnet.conflist");
    std::fs::write(&list, body.join("\n")).unwrap();
    let src = Path::new(PODNET).parent().unwrap();
    let (ok, out) = ctl(&[
        "--config",
        s(&list),
        "install",
        "--dry-run",
        "--source-dir",
        s(src),
        "--bin-dir",
        s(&d.path().join("bin")),
        "--conf-dir",
        s(&d.path().join("net.d")),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("would have installed"), "{out}");
}
