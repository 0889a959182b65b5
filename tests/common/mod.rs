//! Test harness: namespaces the test owns (removed on drop, also when the test fails), a "node"
//! namespace the plugin runs in, and a small runtime that runs plugins and conflists as libcni does.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const PODNET: &str = env!("CARGO_BIN_EXE_podnet");
pub const PODNET_IPAM: &str = env!("CARGO_BIN_EXE_podnet-ipam");
pub const PODNETCTL: &str = env!("CARGO_BIN_EXE_podnetctl");
/// Debian's containernetworking-plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Make `cmd`'s child enter the network namespace `fd` before it execs (the fd must stay open
/// until the child is spawned).
pub fn enter_on_exec(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: setns is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

fn sh(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// A network namespace created by this test, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pnt{}-{n}-{tag}", std::process::id());
        let out = sh("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
    /// Run a command inside; returns (success, stdout+stderr).
    pub fn try_exec(&self, args: &[&str]) -> (bool, String) {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        let out = sh("ip", &full);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
    pub fn exec(&self, args: &[&str]) -> String {
        let (ok, text) = self.try_exec(args);
        assert!(ok, "in {}: {args:?}: {text}", self.name);
        text
    }
    /// Ping with a few tries (the first packet may wait on ARP).
    pub fn ping(&self, ip: &str) -> bool {
        (0..3).any(|_| self.try_exec(&["ping", "-c", "1", "-W", "2", ip]).0)
    }
    pub fn links(&self) -> Vec<String> {
        self.exec(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
    /// IPv4 addresses of `dev` in this namespace, without prefix.
    pub fn addrs4(&self, dev: &str) -> Vec<String> {
        let (ok, text) = self.try_exec(&["ip", "-4", "-o", "addr", "show", "dev", dev]);
        if !ok {
            return Vec::new();
        }
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .map(|a| a.split('/').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// What a plugin call printed.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    /// Ended by a signal (a crash test's kill), whatever it printed.
    pub killed: bool,
    pub json: Value,
    pub raw: String,
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

/// Wait for a plugin call started by [`Node::spawn_raw`].
pub fn finish(child: std::process::Child) -> Outcome {
    let out = child.wait_with_output().expect("plugin output");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(raw.trim()).unwrap_or(Value::Null);
    let killed = std::os::unix::process::ExitStatusExt::signal(&out.status).is_some();
    Outcome { ok: out.status.success(), killed, json, raw: format!("{raw}{}", String::from_utf8_lossy(&out.stderr)) }
}

impl Outcome {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn must(self) -> Value {
        assert!(self.ok, "plugin failed: {}", self.raw);
        self.json
    }
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
        ns.exec(&["ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
        ns.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "up0"]);
        ns.exec(&["ip", "link", "set", "up0", "up"]);
        ns.exec(&["ip", "link", "set", "up0p", "up"]);
        ns.exec(&["ip", "route", "add", "default", "via", "198.18.0.2"]);
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
        let node_ns = File::open(self.ns.path()).expect("node netns");
        let fd = node_ns.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", format!("{}:{REFERENCE_PLUGINS}", Path::new(PODNET).parent().unwrap().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", ns);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        enter_on_exec(&mut cmd, fd);
        let mounts = self.mounts.lock().unwrap().as_ref().map(|p| File::open(p).expect("mount namespace"));
        if let Some(m) = &mounts {
            let mfd = m.as_raw_fd();
            // SAFETY: setns is async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(mfd, libc::CLONE_NEWNS) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
        drop(mounts);
        child.stdin.take().unwrap().write_all(stdin).ok();
        child
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
    let ns = File::open(node.ns.path()).expect("node netns");
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.args(args);
    enter_on_exec(&mut cmd, fd);
    let out = cmd.output().expect("running in the node");
    drop(ns);
    out
}

/// Run `f` on a thread inside `ns` (for work that must see the node's loopback, e.g. etcd).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let file = File::open(ns.path()).expect("netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this dedicated thread only.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .unwrap()
    })
}

/// A real etcd (Debian's etcd-server) on the loopback of a node namespace the test owns, with a
/// temp data dir, stopped by its PID.
pub struct Etcd {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    netns: PathBuf,
    /// Serve TLS with client-certificate auth (server cert, key, CA), see [`TestPki`].
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
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

const ETCD_CLIENT_PORT: u16 = 2379;

impl Etcd {
    pub fn start_in(ns: &Netns) -> Etcd {
        let mut e = Etcd { child: None, dir: tempfile::tempdir().unwrap(), netns: ns.path(), tls: None };
        e.restart_in(ns);
        e
    }
    /// etcd serving TLS and requiring client certificates signed by the test CA.
    pub fn start_tls_in(ns: &Netns, pki: &TestPki) -> Etcd {
        let tls = Some((pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem")));
        let mut e = Etcd { child: None, dir: tempfile::tempdir().unwrap(), netns: ns.path(), tls };
        e.restart_in(ns);
        e
    }
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{ETCD_CLIENT_PORT}")
    }
    /// Start (again, on the same data).
    pub fn restart_in(&mut self, ns: &Netns) {
        assert!(self.child.is_none() && ns.path() == self.netns);
        let (c, p) = (self.url(), "http://127.0.0.1:2380".to_string());
        let file = File::open(&self.netns).expect("netns");
        let fd = file.as_raw_fd();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "podnet-test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c, "--listen-peer-urls", &p])
            .args(["--initial-advertise-peer-urls", &p, "--initial-cluster", &format!("podnet-test={p}")])
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.path().join("etcd.log")).unwrap());
        if let Some((cert, key, ca)) = &self.tls {
            cmd.arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--client-cert-auth");
        }
        enter_on_exec(&mut cmd, fd);
        self.child = Some(cmd.spawn().expect("etcd is not installed (scripts/deps installs etcd-server)"));
        // Ready once the client port accepts connections (requests retry within timeoutMs anyway).
        let ready = in_netns(ns, || {
            (0..400).any(|_| {
                let up = std::net::TcpStream::connect(("127.0.0.1", ETCD_CLIENT_PORT)).is_ok();
                if !up {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                up
            })
        });
        assert!(
            ready,
            "etcd did not start: {}",
            std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Have `cmd`'s child killed if the test process dies first (a helper must never outlive its test).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// A child process killed (by its PID) when this drops, also when a test fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        let out = sh("nsenter", &full);
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
