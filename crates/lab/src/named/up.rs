//! `lab up`: check everything, then build the fabric, the nodes, the store, podnetd on each node
//! and the pods; on any failure, take down what was made.

use super::look::{health, routes_of};
use super::*;
use crate::cni::Invocation;
use crate::fabric::Fabric;
use crate::process::Stdio;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What must be on the machine before anything is built.
fn check_machine(spec: &LabSpec) -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(err("podnetctl lab needs root: it creates network namespaces (run it with sudo)"));
    }
    // vnet mode: podnetctl serves each node's host agent.
    let bins: &[&str] = if spec.mode == Mode::Vnet {
        &["podnet", "podnet-ipam", "podnetd", "podnetctl"]
    } else {
        &["podnet", "podnet-ipam", "podnetd"]
    };
    for bin in bins {
        let p = spec.bin_dir.join(bin);
        if !p.is_file() {
            return Err(err(format!(
                "{} is missing: build podnet (bash scripts/build-release) or pass --bin-dir",
                p.display()
            )));
        }
    }
    if spec.store == Store::Etcd && !on_path("etcd") {
        return Err(err("--store etcd needs etcd on PATH: install etcd-server (scripts/deps), or use --store local"));
    }
    if !on_path("nft") {
        return Err(err("podnetd needs nft for its SNAT table: install nftables (scripts/deps)"));
    }
    Ok(())
}

/// Build the lab. Refused before anything is made when the spec, the machine or an existing lab
/// of that name says no; when a step fails, everything made so far is removed again.
pub fn up(spec: &LabSpec) -> Result<LabState, LabError> {
    validate(spec)?;
    check_machine(spec)?;
    if exists(&spec.name) {
        return Err(err(format!(
            "a lab named {:?} exists already: podnetctl lab down --name {0} first, or pick another --name",
            spec.name
        )));
    }
    match build(spec) {
        Ok(state) => Ok(state),
        Err(e) => {
            let _ = down(&spec.name);
            Err(e)
        }
    }
}

/// The `podnet` plugin object of a node (before its per-node keys).
fn plugin_conf(spec: &LabSpec, node: usize, dir: &Path, store: &Value) -> Value {
    let mut pools = Vec::new();
    if spec.mode == Mode::Vnet {
        // The host agent's default URL (Azure's wireserver address, served inside the node).
        pools.push(json!({"name": "vnet", "cidr": VNET_SUBNET, "source": "vnet"}));
        return json!({
            "type": "podnet",
            "dataplane": spec.dataplane.as_str(),
            "dataDir": dir.join("data"),
            "logFile": dir.join("podnet.log"),
            "ipam": {"type": "podnet-ipam", "node": format!("node-{}", node + 1), "store": store, "pools": pools},
        });
    }
    let families: Vec<(IpNet, u8)> = if spec.dual_stack {
        vec![(spec.pod_cidr, spec.block_size), (spec.pod_cidr6, spec.block_size6())]
    } else {
        vec![(spec.pod_cidr, spec.block_size)]
    };
    // Pods reach the external host through the node's address (natOutgoing), in both families.
    for (cidr, len) in families {
        let name = if cidr.addr().is_ipv4() { "pods-v4" } else { "pods-v6" };
        pools.push(match spec.mode {
            Mode::Range => {
                let node_cidr = addr::nth_block(cidr, len, node as u128);
                json!({"name": name, "cidr": node_cidr, "source": "range", "natOutgoing": true})
            }
            _ => json!({"name": name, "cidr": cidr, "blockSize": len, "source": "overlay", "natOutgoing": true}),
        });
    }
    json!({
        "type": "podnet",
        "dataplane": spec.dataplane.as_str(),
        "dataDir": dir.join("data"),
        "logFile": dir.join("podnet.log"),
        "ipam": {"type": "podnet-ipam", "node": format!("node-{}", node + 1), "store": store, "pools": pools},
    })
}

/// What `up` has made so far. The namespaces stay when these drop: `down` removes them by name.
struct Parts {
    fabric: Fabric,
    nodes: Vec<NodeState>,
    node_ns: Vec<Netns>,
    external: HostState,
    pods: Vec<PodState>,
    pod_ns: Vec<Netns>,
    vnet_host: Option<HostState>,
}

fn build(spec: &LabSpec) -> Result<LabState, LabError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let dir = lab_dir(&spec.name);
    std::fs::create_dir_all(Path::new(ROOT)).map_err(io_err(&format!("creating {ROOT}")))?;
    std::fs::create_dir(&dir).map_err(io_err(&format!("creating {}", dir.display())))?;

    let t = Instant::now();
    let mut parts = make_namespaces(spec, &dir)?;
    timings.namespaces_ms = ms(t);

    let t = Instant::now();
    let (store, etcd_pid) = start_store(spec, &parts.fabric, &dir)?;
    timings.store_ms = ms(t);

    let confs = write_conflists(spec, &dir, &parts.nodes, &store)?;
    match spec.mode {
        Mode::Range => route_node_cidrs(spec, &parts)?,
        Mode::Vnet => start_host_agents(spec, &dir, &parts)?,
        Mode::Overlay => {}
    }

    let t = Instant::now();
    start_agents(spec, &mut parts.nodes, &parts.node_ns)?;
    timings.agents_ms = ms(t);

    let t = Instant::now();
    add_pods(spec, &mut parts, &confs)?;
    timings.pods_ms = ms(t);

    let t = Instant::now();
    if spec.mode == Mode::Overlay {
        wait_for_routes(spec, &parts)?;
    }
    timings.routes_ms = ms(t);
    timings.total_ms = ms(started);

    let state = LabState {
        spec: spec.clone(),
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        fabric_netns: parts.fabric.ns.name.clone(),
        nodes: parts.nodes,
        pods: parts.pods,
        external: parts.external,
        vnet_host: parts.vnet_host,
        etcd_pid,
        timings,
    };
    write_json(&dir.join("lab.json"), &state)?;
    Ok(state)
}

/// The fabric, the nodes on it, the external host, and the pods' namespaces (in parallel).
fn make_namespaces(spec: &LabSpec, dir: &Path) -> Result<Parts, LabError> {
    let mut fabric =
        Fabric::create_dual(&ns_name(&spec.name, "fabric"), &segments(spec)).map_err(io_err("creating the fabric"))?;
    fabric.ns.keep();
    let mut node_ns = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..spec.nodes {
        let name = format!("node-{}", i + 1);
        let mut ns = Netns::create(&ns_name(&spec.name, &name)).map_err(io_err(&format!("creating {name}")))?;
        ns.keep();
        let subnet = i % spec.subnets;
        let uplink = fabric
            .attach(&ns, "eth0", subnet, (FIRST_HOST + i / spec.subnets) as u128)
            .map_err(io_err(&format!("attaching {name} to the fabric")))?;
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(node_dir.join("net.d")).map_err(io_err("creating the node's directory"))?;
        nodes.push(NodeState {
            name,
            netns: ns.name.clone(),
            ip: uplink.ip(),
            ip6: uplink.address6.map(|a| a.addr()),
            subnet,
            conflist: node_dir.join(CONFLIST),
            agent_pid: 0,
            agent_log: node_dir.join("podnetd.log"),
        });
        node_ns.push(ns);
    }
    let mut ext_ns = Netns::create(&ns_name(&spec.name, "ext")).map_err(io_err("creating the external host"))?;
    ext_ns.keep();
    let ext = fabric
        .attach(&ext_ns, "eth0", spec.subnets, FIRST_HOST as u128)
        .map_err(io_err("attaching the external host"))?;
    let external = HostState { netns: ext_ns.name.clone(), ip: ext.ip(), ip6: ext.address6.map(|a| a.addr()) };
    let pods: Vec<PodState> = nodes
        .iter()
        .flat_map(|node| {
            (1..=spec.pods_per_node).map(move |j| {
                let name = format!("{}-p{j}", node.name);
                PodState {
                    netns: ns_name(&spec.name, &name),
                    container_id: format!("pnlab-{}-{name}", spec.name),
                    name,
                    node: node.name.clone(),
                    ips: Vec::new(),
                }
            })
        })
        .collect();
    let pod_ns = parallel(pods.len(), |i| {
        let mut ns = Netns::create(&pods[i].netns).map_err(io_err(&format!("creating {}", pods[i].netns)))?;
        ns.keep();
        Ok(ns)
    })?;
    let vnet_host = if spec.mode == Mode::Vnet {
        let mut ns = Netns::create(&ns_name(&spec.name, "vnethost")).map_err(io_err("creating the VNet host"))?;
        ns.keep();
        let up = fabric.attach(&ns, "eth0", 0, VNET_HOST_INDEX).map_err(io_err("attaching the VNet host"))?;
        Some(HostState { netns: ns.name.clone(), ip: up.ip(), ip6: None })
    } else {
        None
    };
    Ok(Parts { fabric, nodes, node_ns, external, pods, pod_ns, vnet_host })
}

/// The cluster store every node's conflist names, and etcd's PID when the lab runs one.
fn start_store(spec: &LabSpec, fabric: &Fabric, dir: &Path) -> Result<(Value, Option<u32>), LabError> {
    match spec.store {
        Store::Etcd => {
            let listen = fabric.subnets[0].gateway;
            let pid = crate::etcd::start_detached(&fabric.ns, listen, dir, (TAG, &spec.name))
                .map_err(io_err("starting etcd"))?;
            Ok((json!({"type": "etcd", "endpoints": [crate::etcd::url_on(listen)]}), Some(pid)))
        }
        Store::Local => Ok((json!({"type": "local", "path": dir.join("cluster-store")}), None)),
    }
}

/// Each node's conflist; returns the plugin config a runtime hands the plugin, per node.
fn write_conflists(spec: &LabSpec, dir: &Path, nodes: &[NodeState], store: &Value) -> Result<Vec<Value>, LabError> {
    let mut confs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let plugin = plugin_conf(spec, i, &dir.join(&node.name), store);
        let list = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin.clone()]});
        std::fs::write(&node.conflist, serde_json::to_vec_pretty(&list).map_err(|e| err(e.to_string()))?)
            .map_err(io_err("writing a conflist"))?;
        let mut conf = plugin;
        conf["name"] = json!(NETWORK);
        conf["cniVersion"] = json!("1.0.0");
        confs.push(conf);
    }
    Ok(confs)
}

/// Where a node's host agent answers: Azure's wireserver address, on the node's loopback.
pub const HOST_AGENT_ADDR: &str = "168.63.129.16:80";

/// vnet mode: each node's host agent (`podnetctl lab host-agent`, detached, in the node) serving
/// the node's NIC document: its own address and its secondaries on the VNet subnet.
fn start_host_agents(spec: &LabSpec, dir: &Path, parts: &Parts) -> Result<(), LabError> {
    let listen: std::net::SocketAddr = HOST_AGENT_ADDR.parse().expect("literal");
    for (i, (node, ns)) in parts.nodes.iter().zip(&parts.node_ns).enumerate() {
        let mut addrs = vec![(node.ip.to_string(), true)];
        addrs.extend(vnet_secondaries(i, spec.pods_per_node).iter().map(|a| (a.to_string(), false)));
        let mac = format!("00:0d:3a:00:{:02x}:{:02x}", i / 256, i % 256);
        let doc = crate::hostagent::document(&[(&mac, true, VNET_SUBNET, addrs)]);
        let file = dir.join(&node.name).join("interfaces.xml");
        std::fs::write(&file, doc).map_err(io_err("writing a host agent's document"))?;
        crate::link::add_address(ns, "lo", IpNet::new(listen.ip(), 32).expect("a host prefix"))
            .map_err(io_err("giving the node the host agent's address"))?;
        let log = File::create(dir.join(&node.name).join("host-agent.log")).map_err(io_err("opening a log"))?;
        let mut cmd = ns.command(spec.bin_dir.join("podnetctl"));
        cmd.args(["lab", "host-agent", "--listen", HOST_AGENT_ADDR, "--document"]).arg(&file);
        cmd.env(TAG, &spec.name).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        crate::process::detach(&mut cmd);
        cmd.spawn().map_err(io_err("starting a host agent"))?;
        let up = ns
            .run(|| {
                (0..200).any(|_| {
                    let ok = std::net::TcpStream::connect(listen).is_ok();
                    if !ok {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    ok
                })
            })
            .unwrap_or(false);
        if !up {
            return Err(err(format!("the host agent of {} did not come up: see its host-agent.log", node.name)));
        }
    }
    Ok(())
}

/// Range mode: the fabric routes each node's CIDR to the node, as a cloud route table does.
fn route_node_cidrs(spec: &LabSpec, parts: &Parts) -> Result<(), LabError> {
    for (i, node) in parts.nodes.iter().enumerate() {
        let cidr = addr::nth_block(spec.pod_cidr, spec.block_size, i as u128);
        parts.fabric.add_route(cidr, node.ip).map_err(io_err("routing a node CIDR in the fabric"))?;
        if let Some(ip6) = node.ip6 {
            let cidr6 = addr::nth_block(spec.pod_cidr6, spec.block_size6(), i as u128);
            parts.fabric.add_route(cidr6, ip6).map_err(io_err("routing a node CIDR in the fabric"))?;
        }
    }
    Ok(())
}

/// podnetd on every node, detached from this process (it outlives `up`), then healthy.
fn start_agents(spec: &LabSpec, nodes: &mut [NodeState], node_ns: &[Netns]) -> Result<(), LabError> {
    for (node, ns) in nodes.iter_mut().zip(node_ns) {
        let log =
            File::options().create(true).append(true).open(&node.agent_log).map_err(io_err("opening podnetd's log"))?;
        let mut cmd = ns.command(spec.bin_dir.join("podnetd"));
        cmd.arg("--config").arg(&node.conflist).args(["--encap", spec.encap.as_str(), "--metrics-addr", METRICS_ADDR]);
        if spec.store == Store::Local {
            cmd.args(["--poll-seconds", "1"]);
        }
        cmd.env(TAG, &spec.name).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        crate::process::detach(&mut cmd);
        let child = cmd.spawn().map_err(io_err("starting podnetd"))?;
        node.agent_pid = child.id();
    }
    for node in nodes.iter() {
        let healthy = wait_until(Duration::from_secs(20), || {
            !running(node.agent_pid) || health(&node.netns, Duration::from_millis(500)) == Some(200)
        });
        if !healthy || !running(node.agent_pid) {
            let log = std::fs::read_to_string(&node.agent_log).unwrap_or_default();
            return Err(err(format!("podnetd on {} did not come up; its log:\n{}", node.name, log.trim_end())));
        }
    }
    Ok(())
}

/// Every pod's ADD, in parallel, through the real plugin as a runtime calls it.
fn add_pods(spec: &LabSpec, parts: &mut Parts, confs: &[Value]) -> Result<(), LabError> {
    let cni_path = spec.bin_dir.display().to_string();
    let node_index: BTreeMap<&str, usize> = parts.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let (pods, node_ns, pod_ns) = (&parts.pods, &parts.node_ns, &parts.pod_ns);
    let ips: Vec<Vec<IpAddr>> = parallel(pods.len(), |i| {
        let pod = &pods[i];
        let n = node_index[pod.node.as_str()];
        let stdin = serde_json::to_vec(&confs[n]).map_err(|e| err(e.to_string()))?;
        let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={}", pod.name);
        let out = Invocation {
            plugin: &spec.bin_dir.join("podnet"),
            command: "ADD",
            node_netns: &node_ns[n].path(),
            pod_netns: Some(&pod_ns[i].path()),
            env: &[("CNI_CONTAINERID", &pod.container_id), ("CNI_IFNAME", "eth0"), ("CNI_ARGS", &args)],
            cni_path: &cni_path,
            stdin: &stdin,
            mount_ns: None,
        }
        .run()
        .map_err(io_err(&format!("running podnet ADD for {}", pod.name)))?;
        if !out.ok {
            return Err(err(format!("ADD of {} on {} failed: {}", pod.name, pod.node, out.raw.trim())));
        }
        Ok(out.json["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str()?.parse::<IpNet>().ok().map(|n| n.addr()))
            .collect())
    })?;
    for (pod, ips) in parts.pods.iter_mut().zip(ips) {
        pod.ips = ips;
    }
    Ok(())
}

/// Wait until every node routes every block it can reach.
fn wait_for_routes(spec: &LabSpec, parts: &Parts) -> Result<(), LabError> {
    let expected = expected_routes(spec, &parts.nodes, &parts.pods);
    let converged = wait_until(Duration::from_secs(20), || {
        parts.nodes.iter().all(|n| {
            let have: BTreeSet<IpNet> = routes_of(&n.netns).iter().filter_map(|r| r.dst.parse().ok()).collect();
            expected[&n.name].is_subset(&have)
        })
    });
    if converged {
        Ok(())
    } else {
        Err(err("the nodes did not route every remote block within 20 s: see podnetd.log of each node"))
    }
}

/// Per node, the blocks of other nodes it must route: every one with VXLAN; with `none`, those of
/// nodes on its own subnet (others are unreachable by design, and podnetd counts them).
fn expected_routes(spec: &LabSpec, nodes: &[NodeState], pods: &[PodState]) -> BTreeMap<String, BTreeSet<IpNet>> {
    let subnet: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.name.as_str(), n.subnet)).collect();
    let mut out = BTreeMap::new();
    for n in nodes {
        let mut want = BTreeSet::new();
        for p in pods.iter().filter(|p| p.node != n.name) {
            if spec.encap == Encap::None && subnet[p.node.as_str()] != n.subnet {
                continue;
            }
            for ip in &p.ips {
                let len = if ip.is_ipv4() { spec.block_size } else { spec.block_size6() };
                want.insert(IpNet::new(*ip, len).expect("prefix fits").trunc());
            }
        }
        out.insert(n.name.clone(), want);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::named::{LabSpec, NodeState};
    use std::path::PathBuf;

    #[test]
    fn expected_routes_skip_other_subnets_without_encapsulation() {
        let mut s = LabSpec::new("t", PathBuf::from("/nonexistent"));
        s.subnets = 2;
        let node = |n: &str, subnet| NodeState {
            name: n.into(),
            netns: String::new(),
            ip: "192.168.1.10".parse().unwrap(),
            ip6: None,
            subnet,
            conflist: PathBuf::new(),
            agent_pid: 0,
            agent_log: PathBuf::new(),
        };
        let pod = |n: &str, ip: &str| PodState {
            name: format!("{n}-p1"),
            node: n.into(),
            netns: String::new(),
            container_id: String::new(),
            ips: vec![ip.parse().unwrap()],
        };
        let nodes = [node("node-1", 0), node("node-2", 1), node("node-3", 0)];
        let pods = [pod("node-1", "10.244.0.5"), pod("node-2", "10.244.1.70"), pod("node-3", "10.244.2.130")];
        let e = expected_routes(&s, &nodes, &pods);
        assert_eq!(e["node-1"], BTreeSet::from(["10.244.2.128/26".parse().unwrap()]));
        assert!(e["node-2"].is_empty());
        s.encap = Encap::Auto;
        let e = expected_routes(&s, &nodes, &pods);
        assert_eq!(e["node-2"].len(), 2);
    }
}
