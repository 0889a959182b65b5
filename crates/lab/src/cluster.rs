//! A cluster of podnet nodes on one machine: a fabric namespace (the nodes' subnets and the
//! router between them), a namespace per node with its uplink on one of the subnets, the node's
//! conflist and state under a temp dir, the cluster store (etcd in the fabric, or one local
//! store directory shared by every node), podnetd per node, and pods made by the real plugin.
//! Everything is removed on drop: agents killed by PID, then the namespaces.

use crate::cni::{Invocation, Outcome};
use crate::fabric::{Fabric, Uplink};
use crate::process::{Process, Stdio};
use crate::{Etcd, Netns};
use ipnet::IpNet;
use serde_json::{json, Value};
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the nodes lease their blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One directory every node shares (the local store, polled by podnetd).
    Local,
    /// A real etcd in the fabric namespace, on the first subnet's gateway address.
    Etcd,
}

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Prefix of every namespace the cluster makes (unique per cluster on the machine).
    pub prefix: String,
    /// The fabric's subnets.
    pub subnets: Vec<IpNet>,
    /// Per node: the index of its subnet (node `i` is named `node-{i+1}`).
    pub placement: Vec<usize>,
    pub store: StoreKind,
    /// The network's name.
    pub network: String,
    /// The `podnet` plugin object; `dataDir`, `logFile`, `ipam.node`, `ipam.dataDir` and
    /// `ipam.store` are filled in per node.
    pub plugin: Value,
    /// Where `podnet`, `podnet-ipam` and `podnetd` are.
    pub bin_dir: PathBuf,
}

pub struct ClusterNode {
    /// Dropped first: the agent dies before its namespace goes.
    pub agent: Option<Process>,
    pub name: String,
    pub ns: Netns,
    pub uplink: Uplink,
    /// The node's state, conflist and logs.
    pub dir: PathBuf,
    pub conflist: PathBuf,
    /// The plugin object as a runtime hands it to the plugin (`name`, `cniVersion` in).
    pub conf: Value,
    bin_dir: PathBuf,
    agent_runs: usize,
}

pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    pub etcd: Option<Etcd>,
    pub fabric: Fabric,
    pub dir: tempfile::TempDir,
}

fn other(m: String) -> std::io::Error {
    std::io::Error::other(m)
}

impl Cluster {
    pub fn create(spec: &ClusterSpec) -> std::io::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut fabric = Fabric::create(&format!("{}-fabric", spec.prefix), &spec.subnets)?;
        let etcd = match spec.store {
            StoreKind::Etcd => Some(Etcd::start_on(&fabric.ns, fabric.subnets[0].gateway)?),
            StoreKind::Local => None,
        };
        let store = match &etcd {
            Some(e) => json!({"type": "etcd", "endpoints": [e.url()]}),
            None => json!({"type": "local", "path": dir.path().join("cluster-store")}),
        };
        let mut nodes = Vec::new();
        for (i, subnet) in spec.placement.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let ns = Netns::create(&format!("{}-{name}", spec.prefix))?;
            // Host numbers 10, 11, ... on every subnet: the node's position, so addresses are
            // predictable (node-1 is .10 on its subnet).
            let uplink = fabric.attach(&ns, "eth0", *subnet, 10 + i as u128)?;
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(node_dir.join("net.d"))?;
            let mut plugin = spec.plugin.clone();
            plugin["dataDir"] = json!(node_dir.join("data"));
            plugin["logFile"] = json!(node_dir.join("podnet.log"));
            plugin["ipam"]["node"] = json!(name);
            plugin["ipam"]["store"] = store.clone();
            let conflist = node_dir.join("net.d/10-podnet.conflist");
            let list = json!({"cniVersion": "1.0.0", "name": spec.network, "plugins": [plugin]});
            std::fs::write(&conflist, serde_json::to_vec_pretty(&list).map_err(|e| other(e.to_string()))?)?;
            let mut conf = plugin;
            conf["name"] = json!(spec.network);
            conf["cniVersion"] = json!("1.0.0");
            nodes.push(ClusterNode {
                agent: None,
                name,
                ns,
                uplink,
                dir: node_dir,
                conflist,
                conf,
                bin_dir: spec.bin_dir.clone(),
                agent_runs: 0,
            });
        }
        Ok(Cluster { nodes, etcd, fabric, dir })
    }
}

impl ClusterNode {
    /// One plugin call in this node, as a runtime makes it.
    pub fn cni(&self, command: &str, container_id: &str, pod: Option<&Netns>) -> std::io::Result<Outcome> {
        let stdin = serde_json::to_vec(&self.conf).map_err(|e| other(e.to_string()))?;
        let cni_path = self.bin_dir.display().to_string();
        let pod_path = pod.map(Netns::path);
        Invocation {
            plugin: &self.bin_dir.join("podnet"),
            command,
            node_netns: &self.ns.path(),
            pod_netns: pod_path.as_deref(),
            env: &[("CNI_CONTAINERID", container_id), ("CNI_IFNAME", "eth0")],
            cni_path: &cni_path,
            stdin: &stdin,
            mount_ns: None,
        }
        .run()
    }

    /// ADD a pod in `pod`; its first address.
    pub fn add_pod(&self, container_id: &str, pod: &Netns) -> std::io::Result<std::net::IpAddr> {
        let out = self.cni("ADD", container_id, Some(pod))?;
        if !out.ok {
            return Err(other(format!("ADD {container_id} on {}: {}", self.name, out.raw)));
        }
        out.json["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.parse::<IpNet>().ok())
            .map(|n| n.addr())
            .ok_or_else(|| other(format!("ADD {container_id} on {} returned no address: {}", self.name, out.raw)))
    }

    /// Start podnetd with `args` after `--config`; its log goes to `podnetd.log` (appended, so a
    /// restart keeps the earlier run's).
    pub fn start_agent(&mut self, args: &[&str]) -> std::io::Result<()> {
        self.agent_runs += 1;
        let log = File::options().create(true).append(true).open(self.agent_log_path())?;
        let mut cmd = self.ns.command(self.bin_dir.join("podnetd"));
        cmd.arg("--config").arg(&self.conflist).args(args).stdout(Stdio::null()).stderr(log);
        crate::die_with_parent(&mut cmd);
        self.agent = Some(Process(cmd.spawn()?));
        Ok(())
    }

    /// Run podnetd to its end (`--once`, or a start that fails): exit code and log.
    pub fn run_agent(&self, args: &[&str]) -> std::io::Result<(i32, String)> {
        let out =
            self.ns.command(self.bin_dir.join("podnetd")).arg("--config").arg(&self.conflist).args(args).output()?;
        Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string()))
    }

    /// SIGTERM the agent and wait for it; its exit status.
    pub fn stop_agent(&mut self) -> Option<std::process::ExitStatus> {
        let mut p = self.agent.take()?;
        // Dropping it after: std does not signal a child it has reaped.
        p.terminate().ok()
    }

    /// SIGKILL the agent (a crash, or a node dying).
    pub fn kill_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill();
        }
    }

    pub fn agent_log_path(&self) -> PathBuf {
        self.dir.join("podnetd.log")
    }
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.agent_log_path()).unwrap_or_default()
    }

    /// GET `path` from the agent's metrics server at `addr` inside the node: (status, body).
    pub fn http_get(&self, addr: &str, path: &str) -> std::io::Result<(u16, String)> {
        let url = format!("http://{addr}{path}");
        self.ns.run(move || {
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .http_status_as_error(false)
                .build()
                .new_agent();
            let mut resp = agent.get(&url).call().map_err(|e| other(format!("GET {url}: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp.body_mut().read_to_string().map_err(|e| other(format!("GET {url}: {e}")))?;
            Ok((status, body))
        })?
    }

    /// Wait until `cond` holds, checking every 50 ms, for at most `limit`; whether it held.
    pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's state directory for the network (`dataDir/<network>`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// The value of one Prometheus sample (`name{labels}` exactly as exposed) in `text`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}
