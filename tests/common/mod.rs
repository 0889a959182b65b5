//! Test harness: namespaces the test owns (removed on drop, also when the test fails), a "node"
//! namespace the plugin runs in, and a small runtime that runs plugins and conflists as libcni does.
//! The namespace, process, etcd and plugin-call parts are the shared `podnet-lab` crate.
#![allow(dead_code, unused_imports)]

pub use podnet_lab::cni::finish;
pub use podnet_lab::process::Process as KillOnDrop;
pub use podnet_lab::{die_with_parent, in_netns, Etcd, Netns, Outcome};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
pub const PODNET_IPAM: &str = env!("CARGO_BIN_EXE_podnet-ipam");
pub const PODNETCTL: &str = env!("CARGO_BIN_EXE_podnetctl");
pub const PODNETD: &str = env!("CARGO_BIN_EXE_podnetd");
/// Debian's containernetworking-plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Make `cmd`'s child enter the network namespace `fd` before it execs (the fd must stay open
/// until the child is spawned).
pub fn enter_on_exec(cmd: &mut Command, fd: std::os::fd::RawFd) {
    podnet_lab::enter_netns_on_exec(cmd, fd);
}

/// Test namespaces: `pnt<pid>-<n>-<tag>`, unique per test process, panicking on failure, with
/// conveniences for running tools inside.
pub trait NetnsExt {
    fn new(tag: &str) -> Self;
    /// Run a command inside; returns (success, stdout+stderr).
    fn try_exec(&self, args: &[&str]) -> (bool, String);
    fn exec(&self, args: &[&str]) -> String;
    /// Ping with a few tries (the first packet may wait on ARP).
    fn ping(&self, ip: &str) -> bool;
}

impl NetnsExt for Netns {
    fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pnt{}-{n}-{tag}", std::process::id());
        Netns::create(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"))
    }
    fn try_exec(&self, args: &[&str]) -> (bool, String) {
        let (program, rest) = args.split_first().expect("a program");
        match self.command(program).args(rest).output() {
            Ok(out) => (
                out.status.success(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            ),
            Err(e) => (false, format!("running {program}: {e}")),
        }
    }
    fn exec(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_exec(args);
        assert!(ok, "in {}: {args:?}: {text}", self.name);
        text
    }
    fn ping(&self, ip: &str) -> bool {
        (0..3).any(|_| self.try_exec(&["ping", "-c", "1", "-W", "2", ip]).0)
    }
}

/// The test harness's etcd calls: panicking, and named for the namespace they run in.
pub trait EtcdExt: Sized {
    fn start_in(ns: &Netns) -> Self;
    fn start_tls_in(ns: &Netns, pki: &TestPki) -> Self;
    fn restart_in(&mut self, ns: &Netns);
}

impl EtcdExt for Etcd {
    fn start_in(ns: &Netns) -> Etcd {
        Etcd::start(ns).unwrap_or_else(|e| panic!("{e}"))
    }
    fn start_tls_in(ns: &Netns, pki: &TestPki) -> Etcd {
        Etcd::start_tls(ns, pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"))
            .unwrap_or_else(|e| panic!("{e}"))
    }
    fn restart_in(&mut self, ns: &Netns) {
        self.restart(ns).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Write the podnet plugin object `plugin` as a one-plugin conflist at `path` (as podnetctl and
/// runtimes read it from net.d).
pub fn write_conflist(path: &Path, plugin: &Value) {
    let mut entry = plugin.clone();
    let obj = entry.as_object_mut().unwrap();
    obj.remove("name");
    obj.remove("cniVersion");
    let list = json!({"cniVersion": "1.0.0", "name": plugin["name"], "plugins": [entry]});
    std::fs::write(path, serde_json::to_vec(&list).unwrap()).unwrap();
}

/// `podnetctl --config LIST args...` in the node: (exit code, stdout and stderr).
pub fn podnetctl(node: &Node, list: &Path, args: &[&str]) -> (i32, String) {
    let mut full = vec!["--config", list.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = run_in_node(node, PODNETCTL, &full);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// A simulated node: its own network namespace with an uplink address, and a temp state dir.
pub struct Node {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    /// The node's own address (on its uplink), which pods must reach.
    pub ip: String,
    /// A mount namespace plugin calls enter too (see [`MountNs`]), e.g. to give the state dir a
    /// read-only or full filesystem without touching the host's mounts.
    pub mounts: std::sync::Mutex<Option<PathBuf>>,
}

impl Node {
    pub fn new() -> Node {
        let ns = Netns::new("node");
        // A veth pair with both ends in the node stands in for the uplink: an address to reach and a
        // default route, as on a real node (nothing leaves the namespace).
        let setup = || -> std::io::Result<()> {
            podnet_lab::link::veth(&ns, "up0", None, &ns, "up0p", 1500)?;
            podnet_lab::link::set_up(&ns, "up0")?;
            podnet_lab::link::add_address(&ns, "up0", "198.18.0.1/24".parse().unwrap())?;
            podnet_lab::link::add_route(&ns, "0.0.0.0/0".parse().unwrap(), Some("198.18.0.2".parse().unwrap()), "up0")
        };
        setup().unwrap_or_else(|e| panic!("setting up the node's uplink: {e}"));
        Node {
            ns,
            dir: tempfile::tempdir().expect("tempdir"),
            ip: "198.18.0.1".into(),
            mounts: std::sync::Mutex::new(None),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A podnet plugin object for this node; `extra` keys are merged over the defaults.
    pub fn podnet_conf(&self, extra: Value) -> Value {
        let mut v = json!({
            "cniVersion": "1.0.0",
            "name": "podnet",
            "type": "podnet",
            "dataDir": self.data_dir(),
            "logFile": self.dir.path().join("podnet.log"),
            "logLevel": "debug",
            "ipam": {
                "type": "podnet-ipam",
                "node": "node-1",
                "pools": [{"name": "pods-v4", "cidr": "10.244.0.0/16", "blockSize": 24}]
            }
        });
        merge(&mut v, extra);
        sequential_blocks(&mut v);
        v
    }

    /// Run one plugin binary in the node namespace with CNI env and `conf` on stdin.
    pub fn call(
        &self,
        bin: &str,
        command: &str,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        conf: &Value,
    ) -> Outcome {
        self.call_env(bin, command, &[("CNI_CONTAINERID", container_id), ("CNI_IFNAME", ifname)], netns, conf)
    }

    pub fn call_env(
        &self,
        bin: &str,
        command: &str,
        env: &[(&str, &str)],
        netns: Option<&Path>,
        conf: &Value,
    ) -> Outcome {
        self.call_raw(bin, command, env, netns, serde_json::to_vec(conf).unwrap().as_slice())
    }

    pub fn call_raw(
        &self,
        bin: &str,
        command: &str,
        env: &[(&str, &str)],
        netns: Option<&Path>,
        stdin: &[u8],
    ) -> Outcome {
        finish(self.spawn_raw(bin, command, env, netns, stdin))
    }

    /// Start one plugin call in the node namespace, stdin written and closed; [`finish`] waits for it.
    pub fn spawn_raw(
        &self,
        bin: &str,
        command: &str,
        env: &[(&str, &str)],
        netns: Option<&Path>,
        stdin: &[u8],
    ) -> std::process::Child {
        let cni_path = format!("{}:{REFERENCE_PLUGINS}", Path::new(PODNET).parent().unwrap().display());
        let call = podnet_lab::Invocation {
            plugin: Path::new(bin),
            command,
            node_netns: &self.ns.path(),
            pod_netns: netns,
            env,
            cni_path: &cni_path,
            stdin,
            mount_ns: self.mounts.lock().unwrap().clone(),
        };
        call.spawn().unwrap_or_else(|e| panic!("spawning {bin}: {e}"))
    }

    pub fn add(&self, cid: &str, pod: &Netns, conf: &Value) -> Outcome {
        self.call(PODNET, "ADD", cid, Some(&pod.path()), "eth0", conf)
    }
    pub fn del(&self, cid: &str, pod: Option<&Netns>, conf: &Value) -> Outcome {
        self.call(PODNET, "DEL", cid, pod.map(|p| p.path()).as_deref(), "eth0", conf)
    }

    /// Address files in the node store of network `podnet`.
    pub fn allocations(&self) -> Vec<String> {
        list_dir(&self.data_dir().join("podnet/ipam/addrs"))
    }
    /// Endpoints podnet knows for the network of `conf`, as `containerID:ifname`, read the way a
    /// user does: `podnetctl -o json inspect`.
    pub fn endpoints(&self, conf: &Value) -> Vec<String> {
        let path = self.dir.path().join("inspect.conflist");
        let list = json!({"cniVersion": conf["cniVersion"], "name": conf["name"], "plugins": [conf]});
        std::fs::write(&path, serde_json::to_vec(&list).unwrap()).unwrap();
        let out = Command::new(PODNETCTL)
            .arg("--config")
            .arg(&path)
            .args(["-o", "json", "inspect"])
            .output()
            .expect("podnetctl");
        assert!(out.status.success(), "podnetctl inspect: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
        let mut eps: Vec<String> = v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}:{}", e["containerId"].as_str().unwrap(), e["ifname"].as_str().unwrap()))
            .collect();
        eps.sort();
        eps
    }
    /// Host veths podnet made in the node.
    pub fn host_veths(&self) -> Vec<String> {
        self.ns.links().into_iter().filter(|l| l.starts_with("pn")).collect()
    }
    /// Wait until `n` host veths are left: the kernel dismantles a deleted pod namespace (and the
    /// veth pair with it) asynchronously.
    pub fn wait_for_host_veths(&self, n: usize) {
        let done = (0..3000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            self.host_veths().len() == n
        });
        assert!(done, "still {:?}, waiting for {n}", self.host_veths());
    }

    /// Run a conflist as libcni does: ADD in order passing prevResult, DEL in reverse with the
    /// cached result. Returns the final result (ADD) or the first failure.
    pub fn run_conflist(
        &self,
        command: &str,
        list: &Value,
        cid: &str,
        pod: Option<&Netns>,
        cached: Option<&Value>,
        runtime_config: &Value,
    ) -> Outcome {
        let plugins = list["plugins"].as_array().expect("plugins").clone();
        let order: Vec<&Value> =
            if command == "DEL" { plugins.iter().rev().collect() } else { plugins.iter().collect() };
        let mut prev: Option<Value> = cached.cloned();
        let mut last = Outcome { ok: true, killed: false, json: Value::Null, raw: String::new() };
        for p in order {
            let mut conf = p.clone();
            conf["name"] = list["name"].clone();
            conf["cniVersion"] = list["cniVersion"].clone();
            if let Some(caps) = p.get("capabilities").and_then(Value::as_object) {
                let mut rc = serde_json::Map::new();
                for (cap, on) in caps {
                    if on.as_bool() == Some(true) {
                        if let Some(v) = runtime_config.get(cap) {
                            rc.insert(cap.clone(), v.clone());
                        }
                    }
                }
                if !rc.is_empty() {
                    conf["runtimeConfig"] = Value::Object(rc);
                }
            }
            if let Some(pr) = &prev {
                conf["prevResult"] = pr.clone();
            }
            let bin = plugin_path(p["type"].as_str().unwrap());
            let out = self.call(&bin, command, cid, pod.map(|p| p.path()).as_deref(), "eth0", &conf);
            if !out.ok {
                return out;
            }
            if command == "ADD" {
                prev = Some(out.json.clone());
            }
            last = out;
        }
        if command == "ADD" {
            last
        } else {
            Outcome { ok: true, killed: false, json: Value::Null, raw: String::new() }
        }
    }
}

/// The suites name the blocks and addresses they expect, as leased from the pool's start: their
/// overlay pools lease in order unless a test asks for another order (the default, `spread`,
/// has tests of its own).
pub fn sequential_blocks(conf: &mut Value) {
    for p in conf["ipam"]["pools"].as_array_mut().into_iter().flatten() {
        if p.get("source").is_none_or(|s| s == "overlay") && p.get("blockOrder").is_none() {
            p["blockOrder"] = json!("sequential");
        }
    }
}

pub fn plugin_path(kind: &str) -> String {
    match kind {
        "podnet" => PODNET.to_string(),
        "podnet-ipam" => PODNET_IPAM.to_string(),
        other => format!("{REFERENCE_PLUGINS}/{other}"),
    }
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every path under `root` (not `root` itself), with its metadata; symlinks are not followed.
pub fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), meta));
        }
    }
    out
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else if v.is_object() && b.get(&k).is_some_and(Value::is_object) {
                merge(b.get_mut(&k).unwrap(), v);
            } else {
                b.insert(k, v);
            }
        }
    }
}

/// The pod's first IPv4 address in an ADD result.
pub fn result_ip(result: &Value) -> String {
    result["ips"]
        .as_array()
        .and_then(|ips| ips.iter().find_map(|i| i["address"].as_str().filter(|a| a.contains('.'))))
        .map(|a| a.split('/').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no IPv4 address in {result}"))
}

/// Run a program (e.g. podnetctl) inside the node's network namespace.
pub fn run_in_node(node: &Node, bin: &str, args: &[&str]) -> std::process::Output {
    node.ns.command(bin).args(args).output().expect("running in the node")
}

/// A throwaway CA with a server certificate for 127.0.0.1 and a client certificate (openssl CLI).
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let pki = TestPki { dir: tempfile::tempdir().unwrap() };
        let d = pki.dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").current_dir(d).args(args).output().expect("openssl is not installed");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=podnet-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
            .unwrap();
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &format!("{who}.pem"),
            ]);
        }
        pki
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A mount namespace of the test's own (a `sleep` started by `unshare`, killed by PID on drop),
/// receiving the host's mounts but never sending any back: mounts made in it (a tiny or read-only
/// tmpfs over a state dir) vanish with it.
pub struct MountNs {
    child: std::process::Child,
}

impl MountNs {
    pub fn new() -> MountNs {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "slave", "sleep", "600"]);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("unshare (util-linux)");
        let m = MountNs { child };
        // Ready once the sleep runs in a mount namespace other than ours.
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        for _ in 0..200 {
            if std::fs::read_link(m.path()).is_ok_and(|l| l != ours)
                && std::fs::read_to_string(format!("/proc/{}/comm", m.child.id())).is_ok_and(|c| c.trim() == "sleep")
            {
                return m;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare did not start");
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.child.id()))
    }
    /// Run a command inside (nsenter), asserting success.
    pub fn exec(&self, args: &[&str]) -> String {
        let pid = self.child.id().to_string();
        let mut full = vec!["-t", &pid, "-m", "--"];
        full.extend_from_slice(args);
        let out = Command::new("nsenter").args(&full).output().expect("nsenter (util-linux)");
        assert!(out.status.success(), "nsenter {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// `path` as seen inside.
    pub fn inside(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(path.strip_prefix("/").unwrap_or(path))
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sets the flag when dropped: a sampler thread stops even when the test panics (a scoped
/// thread that never stops would keep the failed test waiting forever).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What one pod's eth0 shows: its ifindex (new for every ADD) and addresses.
pub type Seen = Option<(u32, Vec<ipnet::IpNet>)>;

fn look(nl: &mut podnet_dataplane::Netlink) -> Seen {
    let link = nl.link_by_name("eth0").ok()??;
    let addrs = nl.addresses(link.index).ok()?;
    (!addrs.is_empty()).then_some((link.index, addrs))
}

/// Watches every pod's real interface until `stop`: two passes over all pods, and an address
/// seen on two pods whose interfaces were the same in both passes was on both at one moment
/// (pass one ends before pass two starts). Returns (rounds, duplicates found).
pub fn sample_for_duplicates(pods: &[Netns], stop: &std::sync::atomic::AtomicBool) -> (usize, Vec<String>) {
    let mut socks: Vec<podnet_dataplane::Netlink> =
        pods.iter().map(|p| in_netns(p, || podnet_dataplane::Netlink::open().unwrap())).collect();
    let (mut rounds, mut dups) = (0, Vec::new());
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let first: Vec<Seen> = socks.iter_mut().map(look).collect();
        let second: Vec<Seen> = socks.iter_mut().map(look).collect();
        let stable: Vec<(usize, &Vec<ipnet::IpNet>)> = (0..pods.len())
            .filter_map(|i| match (&first[i], &second[i]) {
                (Some(a), Some(b)) if a == b => Some((i, &a.1)),
                _ => None,
            })
            .collect();
        let mut owner = std::collections::HashMap::new();
        for (i, addrs) in stable {
            for a in addrs {
                if let Some(j) = owner.insert(a.addr(), i) {
                    dups.push(format!("{} on pods {j} and {i}", a.addr()));
                }
            }
        }
        rounds += 1;
    }
    (rounds, dups)
}

/// A TCP listener at `ip:port` inside `ns` that answers every connection with the peer's
/// address: what a host outside the pods sees them as (SNAT or not).
pub fn echo_peer(ns: &Netns, ip: &str, port: u16) -> std::thread::JoinHandle<()> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let listener = ns.run(move || std::net::TcpListener::bind(addr)).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let peer = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
            let _ = std::io::Write::write_all(&mut s, peer.as_bytes());
        }
    })
}

/// Connect from inside `from` to an [`echo_peer`] at `ip:port`: the address it saw (None when
/// nothing came back).
pub fn seen_by(from: &Netns, ip: &str, port: u16) -> Option<String> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    from.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(3))).ok()?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).ok()?;
        Some(out)
    })
    .unwrap()
}
