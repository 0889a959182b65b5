//! podnet under a real container runtime: podman 4.3 with its CNI backend and runc, driven inside a
//! node namespace the test owns, with private containers.conf, storage and network config (the
//! machine's own podman configuration is neither read nor changed). The image is Debian's
//! busybox-static imported from a rootfs tarball; nothing is pulled.
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const IMAGE: &str = "localhost/podnet-test-busybox:latest";

/// The podman tests run one at a time: each checks that podman left no network namespace behind,
/// which only holds while no other podman test is creating some.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Podman {
    node: Node,
    tag: String,
}

impl Podman {
    fn new(dataplane: &str, subnet: u8) -> Podman {
        assert!(std::path::Path::new("/usr/bin/podman").exists(), "podman is not installed (scripts/deps installs it)");
        let node = Node::new();
        let d = node.dir.path();
        let tag = format!("pnt{}x{subnet}", std::process::id());
        for sub in ["net.d", "rootfs/bin", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let bin_dir = PathBuf::from(PODNET).parent().unwrap().to_path_buf();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n\
                 runtime = \"runc\"\ntmp_dir = \"{d}/tmp\"\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\", \"{REFERENCE_PLUGINS}\"]\nnetwork_config_dir = \"{d}/net.d\"\n",
                d = d.display(),
                bin = bin_dir.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("storage.conf"),
            format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/run\"\ngraphroot = \"{d}/root\"\n", d = d.display()),
        )
        .unwrap();
        // Exactly three addresses, so addresses freed by `podman rm` must be the ones handed out next.
        let plugin = node.podnet_conf(json!({"dataplane": dataplane, "ipam": {"node": "podman-node", "pools": [{
            "name": "podman", "cidr": format!("10.88.{subnet}.0/24"), "source": "range",
            "rangeStart": format!("10.88.{subnet}.10"), "rangeEnd": format!("10.88.{subnet}.12")}]}}));
        let mut plugin = plugin.as_object().unwrap().clone();
        plugin.remove("cniVersion");
        plugin.remove("name");
        // podman 4.3 accepts results up to 1.0.0 and loads only *.conflist files.
        let list = json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [plugin]});
        std::fs::write(d.join("net.d/podnet.conflist"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        std::fs::copy("/usr/bin/busybox", d.join("rootfs/bin/busybox")).expect("busybox-static is not installed");
        for applet in ["sh", "ip", "ping", "sleep"] {
            std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet)).unwrap();
        }
        let pm = Podman { node, tag };
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(pm.node.dir.path().join("rootfs"))
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = pm.command(&["import", "-", IMAGE]).stdin(tar.stdout.take().unwrap()).output().unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the rootfs failed");
        assert!(out.status.success(), "podman import: {}", String::from_utf8_lossy(&out.stderr));
        pm
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = self.node.dir.path();
        let mut c = Command::new("nsenter");
        // Only the network namespace is entered, so podman's netns bind mounts stay visible to later calls.
        c.arg(format!("--net={}", self.node.ns.path().display()))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"));
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn name(&self, n: usize) -> String {
        format!("{}-c{n}", self.tag)
    }

    fn start(&self, n: usize) -> String {
        let name = self.name(n);
        self.run(&[
            "run",
            "-d",
            "--pull=never",
            "--name",
            &name,
            "--network",
            "podnet",
            "--cap-add",
            "NET_RAW",
            IMAGE,
            "sleep",
            "600",
        ])
    }

    fn ip(&self, n: usize) -> String {
        self.run(&["inspect", &self.name(n), "--format", "{{.NetworkSettings.Networks.podnet.IPAddress}}"])
    }

    fn inspect_endpoints(&self) -> Vec<Value> {
        let path = self.node.dir.path().join("net.d/podnet.conflist");
        let out = Command::new(PODNETCTL).arg("--config").arg(&path).args(["-o", "json", "inspect"]).output().unwrap();
        assert!(out.status.success(), "podnetctl: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["endpoints"].as_array().unwrap().clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers (their DELs run podnet), then the image; the storage goes with the temp dir and
        // the node namespace (with any bridge and sysctl podnet set in it) with `node`.
        let _ = self.command(&["rm", "-af", "-t", "0"]).output();
        let _ = self.command(&["rmi", "-af"]).output();
    }
}

fn lifecycle(dataplane: &str, subnet: u8) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before: BTreeSet<String> = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let pm = Podman::new(dataplane, subnet);
    let ids: Vec<String> = (1..=3).map(|n| pm.start(n)).collect();
    let ips: Vec<String> = (1..=3).map(|n| pm.ip(n)).collect();
    let set: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(set.len(), 3, "{dataplane}: three distinct addresses {ips:?}");
    for (n, ip) in ips.iter().enumerate() {
        assert!(
            ip.starts_with(&format!("10.88.{subnet}.1")),
            "{dataplane}: podman inspect shows podnet's address: {ip}"
        );
        let inside = pm.run(&["exec", &pm.name(n + 1), "ip", "-4", "addr", "show", "eth0"]);
        assert!(inside.contains(&format!("inet {ip}/")), "{dataplane}: the container holds {ip}: {inside}");
    }
    for a in 1..=3 {
        for (b, ip) in ips.iter().enumerate() {
            if a != b + 1 {
                let out = pm.command(&["exec", &pm.name(a), "ping", "-c", "1", "-W", "2", ip]).output().unwrap();
                assert!(
                    out.status.success(),
                    "{dataplane}: c{a} cannot reach {ip}: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
    // podnetctl sees the three endpoints under podman's container IDs and names.
    let eps = pm.inspect_endpoints();
    let seen: BTreeSet<(String, String)> = eps
        .iter()
        .map(|e| (e["containerId"].as_str().unwrap().to_string(), e["pod"]["name"].as_str().unwrap_or("").to_string()))
        .collect();
    let want: BTreeSet<(String, String)> = ids.iter().enumerate().map(|(i, id)| (id.clone(), pm.name(i + 1))).collect();
    assert_eq!(seen, want, "{dataplane}");
    // `podman rm -f` drives DEL: the endpoints leave podnet's own state...
    pm.run(&["rm", "-f", "-t", "0", &pm.name(1), &pm.name(2), &pm.name(3)]);
    assert!(pm.inspect_endpoints().is_empty(), "{dataplane}: endpoints left after rm");
    assert!(pm.node.allocations().is_empty(), "{dataplane}: allocations left after rm: {:?}", pm.node.allocations());
    // ...and the pool's only three addresses are handed out again.
    for n in 4..=6 {
        pm.start(n);
    }
    let again: BTreeSet<String> = (4..=6).map(|n| pm.ip(n)).collect();
    assert_eq!(again, ips.iter().cloned().collect::<BTreeSet<_>>(), "{dataplane}");
    pm.run(&["rm", "-f", "-t", "0", &pm.name(4), &pm.name(5), &pm.name(6)]);
    assert!(pm.node.allocations().is_empty());
    drop(pm);
    let after: BTreeSet<String> = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let left: Vec<&String> =
        after.difference(&before).filter(|n| n.starts_with("netns-") || n.starts_with("cni-")).collect();
    assert!(left.is_empty(), "podman left network namespaces: {left:?}");
}

#[test]
fn podman_containers_on_the_bridge_dataplane() {
    lifecycle("bridge", 61);
}

#[test]
fn podman_containers_on_the_routed_dataplane() {
    lifecycle("routed", 62);
}
