//! The `podnet` CNI plugin: each verb parses and validates everything first, then acts through the
//! IPAM and dataplane crates, undoing its own work when a later step fails.

pub mod config;
pub mod delegate;
pub mod ipam_cni;
pub mod logging;
pub mod records;

use config::PluginConfig;
use podnet_cni::{CniError, CniResult, Env, ErrorCode, Interface, IpConfig, NetConf, Route};
use podnet_dataplane::netlink::format_mac;
use podnet_dataplane::{
    endpoint, host_veth_name, pod_mac, DataplaneError, EndpointSpec, Mode, NetNs, NetNsError, Netlink, PodAddress,
};
use podnet_ipam::{Handle, Ipam, IpamConfig, PodInfo, Reservation};
use records::{EndpointRecord, EndpointStore, RouteRecord};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

pub struct PodnetPlugin;

fn pod_info(env: &Env) -> PodInfo {
    PodInfo {
        namespace: env.args.namespace.clone(),
        name: env.args.name.clone(),
        uid: env.args.uid.clone(),
        infra_container_id: env.args.infra_container_id.clone(),
    }
}

fn handle(env: &Env) -> Handle {
    Handle::new(env.container_id(), env.ifname())
}

/// Which addresses of a block the dataplane keeps (README: "Reserved addresses").
pub fn reservation_for(mode: &Mode) -> Reservation {
    match mode {
        Mode::Bridge { .. } => Reservation::GatewayPerBlock,
        Mode::Routed => Reservation::None,
    }
}

fn open_ipam(cfg: &PluginConfig, conf: &NetConf) -> Result<Ipam, CniError> {
    let ipam_cfg = IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir))?;
    Ok(Ipam::new(ipam_cfg, &conf.name, reservation_for(&cfg.mode)))
}

fn netns_error(e: NetNsError) -> CniError {
    CniError::invalid_env(format!("CNI_NETNS: {e}"))
}

fn dataplane_error(e: DataplaneError) -> CniError {
    match e {
        DataplaneError::Netns(e) => netns_error(e),
        DataplaneError::IfnameTaken(_) | DataplaneError::HostVethExists(_) => CniError::invalid_env(e.to_string()),
        other => CniError::kernel(other.to_string()),
    }
}

fn netlink() -> Result<Netlink, CniError> {
    Netlink::open().map_err(|e| CniError::kernel(format!("opening a netlink socket: {e}")))
}

/// The IPAM part of ADD: in-process podnet-ipam, or an exec'd plugin. `undo` releases on failure;
/// it is `None` when the addresses were already held before this ADD (a repeated ADD).
struct Addresses {
    list: Vec<PodAddress>,
    undo: Option<Box<dyn FnOnce()>>,
}

impl Addresses {
    fn undo(self) {
        if let Some(undo) = self.undo {
            undo();
        }
    }
}

/// The gateway for an address an exec'd IPAM plugin returned: its own if it is usable (same
/// family, inside the subnet, not the network address), else, on the bridge, the subnet's first
/// address as the reference bridge plugin does.
fn delegated_gateway(
    mode: &Mode,
    address: ipnet::IpNet,
    gateway: Option<std::net::IpAddr>,
) -> Result<Option<std::net::IpAddr>, CniError> {
    let subnet = address.trunc();
    if let Some(gw) = gateway {
        if gw.is_ipv4() != address.addr().is_ipv4() || !subnet.contains(&gw) || gw == subnet.network() {
            return Err(CniError::new(
                ErrorCode::DelegateFailed,
                format!("the IPAM plugin's gateway {gw} is not usable for {address}"),
            ));
        }
        return Ok(Some(gw));
    }
    if !matches!(mode, Mode::Bridge { .. }) {
        return Ok(None);
    }
    use podnet_ipam::addr::{from_u128, to_u128};
    let first = from_u128(to_u128(subnet.network()) + 1, subnet.addr().is_ipv4());
    Ok(Some(first).filter(|g| subnet.contains(g) && *g != address.addr()))
}

/// ADD's IPAM half through an exec'd IPAM plugin.
fn delegate_allocate(cfg: &PluginConfig, env: &Env, conf: &NetConf) -> Result<Addresses, CniError> {
    let plugin = delegate::find_plugin(cfg.ipam["type"].as_str().unwrap_or_default(), &env.path)?;
    let stdin = serde_json::to_vec(&conf.raw).expect("config serializes");
    let result = delegate::add(&plugin, &stdin)?;
    let plugin_for_undo = plugin.clone();
    let undo: Option<Box<dyn FnOnce()>> = Some(Box::new(move || {
        let _ = delegate::exec(&plugin_for_undo, "DEL", &stdin);
    }));
    let list: Result<Vec<PodAddress>, CniError> = result
        .ips
        .iter()
        .map(|ip| {
            Ok(PodAddress { address: ip.address, gateway: delegated_gateway(&cfg.mode, ip.address, ip.gateway)? })
        })
        .collect();
    match list {
        Ok(list) if !list.is_empty() => Ok(Addresses { list, undo }),
        Ok(list) => {
            Addresses { list, undo }.undo();
            Err(CniError::new(
                ErrorCode::DelegateFailed,
                format!("IPAM plugin {} returned no address", plugin.display()),
            ))
        }
        Err(e) => {
            Addresses { list: Vec::new(), undo }.undo();
            Err(e)
        }
    }
}

/// An IPAM-half failure, with the addresses to release once the pod's interface is gone (when the
/// pod may already carry them).
type IpamFailure = (CniError, Option<Addresses>);

/// ADD's IPAM half: allocate, hand the addresses to `picked` as soon as they are safe to carry,
/// and record the endpoint: with the in-process IPAM inside the allocation itself, else in an
/// endpoint file.
fn allocate_and_record(
    cfg: &PluginConfig,
    env: &Env,
    conf: &NetConf,
    store: &EndpointStore,
    make_record: impl Fn(&[PodAddress]) -> EndpointRecord,
    picked: std::sync::mpsc::Sender<Vec<PodAddress>>,
) -> Result<(Addresses, EndpointRecord), IpamFailure> {
    let h = handle(env);
    if !cfg.ipam_in_process {
        let addresses = delegate_allocate(cfg, env, conf).map_err(|e| (e, None))?;
        let _ = picked.send(addresses.list.clone());
        let record = make_record(&addresses.list);
        return match store.write(&record) {
            Ok(()) => Ok((addresses, record)),
            Err(e) => Err((e.into(), Some(addresses))),
        };
    }
    let ipam = open_ipam(cfg, conf).map_err(|e| (e, None))?;
    let mut pending = ipam.reserve(&h, &pod_info(env)).map_err(|e| (e.into(), None))?;
    let list: Vec<PodAddress> =
        pending.allocations.iter().map(|a| PodAddress { address: a.address, gateway: a.gateway }).collect();
    let record = make_record(&list);
    // The endpoint record rides in the allocation's own file: one durable write (each fsync
    // costs a device flush here, so the count of fsyncs is the ADD's cost).
    pending.attach(serde_json::to_value(&record).expect("records serialize"));
    podnet_cni::fault::crash_point("add-after-reserve");
    let published = pending.publish().map_err(|e| (e.into(), None))?;
    // The addresses are now recorded where every process sees them, so the pod may carry them
    // (configuring it earlier would let a kill -9 free an address a pod already has). Only the
    // directory fsync still overlaps the kernel work; the ADD succeeds only if it succeeds too.
    let _ = picked.send(list.clone());
    let existing = published.existing;
    let finished = published.finish();
    podnet_cni::fault::crash_point("add-after-record");
    tracing::debug!(
        cluster_requests = ipam.cluster().requests(),
        "ADD: cluster store round trips (0 inside the node's blocks)"
    );
    let undo: Option<Box<dyn FnOnce()>> = if existing {
        None
    } else {
        Some(Box::new(move || {
            if let Err(e) = ipam.release(&h) {
                tracing::error!("releasing {} after a failed ADD: {e}", h.key());
            }
        }))
    };
    let addresses = Addresses { list, undo };
    match finished {
        Ok(_) => Ok((addresses, record)),
        Err(e) => Err((e.into(), Some(addresses))),
    }
}

impl podnet_cni::skel::Plugin for PodnetPlugin {
    fn start(&self, _env: &Env, conf: &NetConf) {
        let (file, level) = config::log_settings(conf);
        logging::init(&file, &level);
    }

    fn on_error(&self, command: Option<podnet_cni::Command>, err: &CniError) {
        tracing::warn!(command = command.map(|c| c.as_str()).unwrap_or("?"), "{err}");
    }

    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
        let started = Instant::now();
        let cfg = PluginConfig::parse(conf)?;
        let netns_path = env.netns.clone().expect("ADD requires CNI_NETNS");
        let netns = NetNs::open_pod(&netns_path).map_err(netns_error)?;
        let mut nl = netlink()?;
        let mtu = match cfg.mtu {
            Some(m) => m,
            None => endpoint::uplink_mtu(&mut nl).map_err(dataplane_error)?,
        };
        let h = handle(env);
        let spec = EndpointSpec {
            mode: cfg.mode.clone(),
            host_veth: host_veth_name(&h.container_id, &h.ifname),
            ifname: h.ifname.clone(),
            mtu,
            pod_mac: Some(pod_mac(&h.container_id, &h.ifname)),
            addresses: Vec::new(),
        };
        // Everything the endpoint record holds is known once the addresses are (the pod MAC is
        // derived from the handle), so it can be written before the interface is configured.
        let make_record = |addresses: &[PodAddress]| {
            endpoint_record(&cfg, &h, &netns_path.display().to_string(), pod_info(env), mtu, addresses)
        };
        let store = EndpointStore::new(&cfg.data_dir, &conf.name);
        // Kernel work and store work run side by side: a second thread builds the veth pair (it
        // needs no address), then configures the pod as soon as IPAM has picked the addresses,
        // while this thread makes the allocation and the endpoint record durable (their fsyncs
        // are most of an ADD). Either side failing undoes both.
        let (picked_tx, picked_rx) = std::sync::mpsc::channel::<Vec<PodAddress>>();
        let (kernel, allocated) = std::thread::scope(|s| {
            let (netns, spec) = (&netns, &spec);
            let kernel = s.spawn(move || {
                let mut nl =
                    Netlink::open().map_err(|e| DataplaneError::Invalid(format!("opening a netlink socket: {e}")))?;
                let links = endpoint::create_links(&mut nl, netns, spec)?;
                podnet_cni::fault::crash_point("add-after-veth");
                let links_us = started.elapsed().as_micros() as u64;
                let Ok(addresses) = picked_rx.recv() else {
                    // IPAM failed; its error is the one reported.
                    let _ = endpoint::teardown(&mut nl, &spec.host_veth);
                    return Err(DataplaneError::Invalid("IPAM allocation failed".into()));
                };
                let spec = EndpointSpec { addresses, ..spec.clone() };
                let ep = endpoint::configure(&mut nl, &spec, links).inspect_err(|_| {
                    let _ = endpoint::teardown(&mut nl, &spec.host_veth);
                })?;
                Ok((ep, links_us, started.elapsed().as_micros() as u64))
            });
            let allocated = allocate_and_record(&cfg, env, conf, &store, make_record, picked_tx);
            let ipam_us = started.elapsed().as_micros() as u64;
            let kernel = kernel
                .join()
                .unwrap_or_else(|_| Err(DataplaneError::Invalid("internal error: the kernel thread panicked".into())));
            (kernel, allocated.map(|a| (a, ipam_us)))
        });
        let allocated = allocated.map(|(a, ipam_us)| {
            tracing::debug!(ipam_us, "ADD: addresses committed and endpoint recorded");
            a
        });
        // Undo only what this ADD made, and take the interface down before its addresses are
        // released, so no other pod is ever handed an address a pod still carries.
        match (kernel, allocated) {
            (Ok((ep, links_us, configured_us)), Ok((_, record))) => {
                let result = build_result(conf, &record, &ep);
                tracing::debug!(links_us, configured_us, "ADD: veth pair built, pod configured");
                tracing::info!(container = %h.container_id, ifname = %h.ifname, ips = ?record.ips, elapsed_us = started.elapsed().as_micros() as u64, "ADD");
                Ok(result)
            }
            (kernel, Err((e, addresses))) => {
                // The kernel thread built links unless it found an earlier ADD's in place.
                if !matches!(&kernel, Err(k) if k.is_existing_attachment()) {
                    let _ = endpoint::teardown(&mut nl, &spec.host_veth);
                }
                if let Some(addresses) = addresses {
                    addresses.undo();
                }
                Err(e)
            }
            (Err(k), Ok((addresses, _))) => {
                // The kernel thread removed its own links. When they were an earlier ADD's, the
                // addresses are that attachment's too, unless the in-process IPAM says it just
                // allocated them.
                let fresh = cfg.ipam_in_process && addresses.undo.is_some();
                if !k.is_existing_attachment() || fresh {
                    if !cfg.ipam_in_process {
                        let _ = store.remove(&h);
                    }
                    addresses.undo();
                }
                Err(dataplane_error(k))
            }
        }
    }

    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let h = handle(env);
        // The netns may be gone (the kernel then removed the veth already); DEL never needs it.
        let mut nl = netlink()?;
        endpoint::teardown(&mut nl, &host_veth_name(&h.container_id, &h.ifname)).map_err(dataplane_error)?;
        podnet_cni::fault::crash_point("del-after-teardown");
        if cfg.ipam_in_process {
            let released = open_ipam(&cfg, conf)?.release(&h)?;
            tracing::info!(container = %h.container_id, ifname = %h.ifname, released = ?released, "DEL");
        } else {
            let plugin = delegate::find_plugin(cfg.ipam["type"].as_str().unwrap_or_default(), &env.path)?;
            delegate::exec(&plugin, "DEL", &serde_json::to_vec(&conf.raw).expect("config serializes"))?;
        }
        podnet_cni::fault::crash_point("del-after-release");
        EndpointStore::new(&cfg.data_dir, &conf.name).remove(&h)?;
        Ok(())
    }

    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult (the ADD result)"))?;
        let netns_path = env.netns.clone().expect("CHECK requires CNI_NETNS");
        let netns = NetNs::open_pod(&netns_path).map_err(netns_error)?;
        let h = handle(env);
        // Our addresses are those prevResult gives the pod interface (chained plugins may add others).
        let pod_iface = prev.interfaces.iter().position(|i| i.name == h.ifname && !i.sandbox.is_empty());
        let ips: Vec<&IpConfig> =
            prev.ips.iter().filter(|ip| ip.interface.is_none() || ip.interface == pod_iface).collect();
        if ips.is_empty() {
            return Err(CniError::new(
                ErrorCode::EndpointDrift,
                format!("prevResult holds no address for {}", h.ifname),
            ));
        }
        let mut drift = Vec::new();
        if cfg.ipam_in_process {
            let held = open_ipam(&cfg, conf)?.addresses_of(&h)?;
            for ip in &ips {
                if !held.contains(&ip.address.addr()) {
                    drift.push(format!(
                        "address {} is not allocated to {} in the IPAM store",
                        ip.address.addr(),
                        h.key()
                    ));
                }
            }
        } else {
            let plugin = delegate::find_plugin(cfg.ipam["type"].as_str().unwrap_or_default(), &env.path)?;
            delegate::exec(&plugin, "CHECK", &serde_json::to_vec(&conf.raw).expect("config serializes"))?;
        }
        let spec = EndpointSpec {
            mode: cfg.mode.clone(),
            host_veth: host_veth_name(&h.container_id, &h.ifname),
            ifname: h.ifname.clone(),
            mtu: 0,
            pod_mac: None,
            addresses: ips.iter().map(|ip| PodAddress { address: ip.address, gateway: ip.gateway }).collect(),
        };
        let mut nl = netlink()?;
        drift.extend(endpoint::check(&mut nl, &netns, &spec).map_err(dataplane_error)?);
        if drift.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::EndpointDrift,
                format!("endpoint {} differs from its ADD: {}", h.key(), drift.join("; ")),
            ))
        }
    }

    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        if cfg.ipam_in_process {
            open_ipam(&cfg, conf)?
                .status()
                .map_err(|e| CniError::new(ErrorCode::NotAvailable, format!("podnet cannot serve ADD: {e}")))
        } else {
            let plugin = delegate::find_plugin(cfg.ipam["type"].as_str().unwrap_or_default(), &env.path)?;
            delegate::exec(&plugin, "STATUS", &serde_json::to_vec(&conf.raw).expect("config serializes")).map(|_| ())
        }
    }

    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let keep: HashSet<Handle> =
            conf.valid_attachments()?.into_iter().map(|a| Handle::new(&a.container_id, &a.ifname)).collect();
        let mut errors = Vec::new();
        let store = EndpointStore::new(&cfg.data_dir, &conf.name);
        let ipam = if cfg.ipam_in_process { Some(open_ipam(&cfg, conf)?) } else { None };
        let mut stale: HashSet<Handle> = store.handles()?.into_iter().filter(|h| !keep.contains(h)).collect();
        if let Some(ipam) = &ipam {
            stale.extend(ipam.handles()?.into_iter().filter(|h| !keep.contains(h)));
        }
        // Dataplane first: an attachment's veth goes before its address can be handed out again.
        let mut nl = netlink()?;
        let mut torn_down = Vec::new();
        for h in &stale {
            if let Err(e) = endpoint::teardown(&mut nl, &host_veth_name(&h.container_id, &h.ifname)) {
                errors.push(e.to_string());
            } else if let Err(e) = store.remove(h) {
                errors.push(e.to_string());
            } else {
                torn_down.push(h.clone());
            }
        }
        match &ipam {
            // Exactly the handles whose interfaces are gone: one published meanwhile keeps its address.
            Some(ipam) => {
                for h in &torn_down {
                    if let Err(e) = ipam.release(h) {
                        errors.push(e.to_string());
                    }
                }
                tracing::info!(released = torn_down.len(), "GC");
                // Claims no record holds (a DEL while etcd was down, an ADD killed mid-way).
                match ipam.release_stale_claims_now() {
                    Ok(ips) if !ips.is_empty() => tracing::info!(claims = ?ips, "GC: stale claims given back"),
                    Ok(_) => {}
                    Err(e) => errors.push(e.to_string()),
                }
                // Blocks empty for the grace time go back to their pools (a cluster store call).
                match ipam.release_empty_blocks() {
                    Ok(blocks) if !blocks.is_empty() => {
                        tracing::info!(blocks = ?blocks, "GC: empty blocks handed back")
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            None => {
                let plugin = delegate::find_plugin(cfg.ipam["type"].as_str().unwrap_or_default(), &env.path)?;
                if let Err(e) =
                    delegate::exec(&plugin, "GC", &serde_json::to_vec(&conf.raw).expect("config serializes"))
                {
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(ErrorCode::Io, format!("GC left work undone: {}", errors.join("; "))))
        }
    }
}

/// The address as configured on the pod's interface (routed pods get host prefixes).
/// The endpoint record of an attachment (ADD writes it; `podnetctl ipam rebuild` makes it again
/// from the kernel). Everything in it follows from the handle, the config and the addresses.
pub fn endpoint_record(
    cfg: &PluginConfig,
    h: &Handle,
    netns: &str,
    pod: PodInfo,
    mtu: u32,
    addresses: &[PodAddress],
) -> EndpointRecord {
    let routes = endpoint::planned_routes(&cfg.mode, addresses);
    EndpointRecord {
        container_id: h.container_id.clone(),
        ifname: h.ifname.clone(),
        netns: netns.to_string(),
        pod,
        dataplane: cfg.dataplane_name().to_string(),
        bridge: match &cfg.mode {
            Mode::Bridge { bridge, .. } => Some(bridge.clone()),
            Mode::Routed => None,
        },
        host_veth: host_veth_name(&h.container_id, &h.ifname),
        mac: format_mac(&pod_mac(&h.container_id, &h.ifname)),
        mtu,
        ips: addresses.iter().map(|a| pod_ip(&cfg.mode, a)).collect(),
        gateways: routes.iter().map(|(_, gw)| *gw).collect(),
        routes: routes.iter().map(|(dst, gw)| RouteRecord { dst: *dst, gw: *gw }).collect(),
        created_at: podnet_ipam::model::now_rfc3339(),
    }
}

/// Rebuild the node store of a podnet-ipam network from this node's live endpoints (see
/// [`podnet_ipam::rebuild`]): an attachment is live when its host veth exists here. A veth that
/// exists keeps its addresses whatever else is missing (a flushed route, a deleted bridge): the
/// pod still carries them.
pub fn rebuild(cfg: &PluginConfig, ipam: &Ipam, force: bool) -> Result<podnet_ipam::rebuild::RebuildReport, String> {
    let nl = std::cell::RefCell::new(Netlink::open().map_err(|e| format!("opening netlink: {e}"))?);
    let veth = |h: &Handle| nl.borrow_mut().link_by_name(&host_veth_name(&h.container_id, &h.ifname));
    let live = |h: &Handle| -> Result<bool, podnet_ipam::IpamError> {
        veth(h)
            .map(|l| l.is_some())
            .map_err(|e| podnet_ipam::IpamError::io("reading the node's links", std::io::Error::other(e.to_string())))
    };
    let attachment = |h: &Handle, allocations: &[podnet_ipam::Allocation]| {
        let mtu = veth(h).ok().flatten().map(|l| l.mtu).unwrap_or(1500);
        let addresses: Vec<PodAddress> =
            allocations.iter().map(|a| PodAddress { address: a.address, gateway: a.gateway }).collect();
        // The pod's namespace path is not in the kernel's view of the node: left empty.
        let rec = endpoint_record(cfg, h, "", allocations[0].pod.clone(), mtu, &addresses);
        Some(serde_json::to_value(rec).expect("records serialize"))
    };
    podnet_ipam::rebuild::rebuild(ipam, &live, &attachment, force).map_err(|e| e.to_string())
}

/// What `podnetctl ipam rebuild` did with one endpoint record (networks that exec another IPAM
/// plugin keep one file per attachment under `<dataDir>/<network>/endpoints/`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum EndpointRepair {
    /// The veth is live: the record is made again from the handle, the config and the kernel
    /// (routed: the host routes to the veth give the addresses; bridge: they stay unknown).
    EndpointRestored { handle: Handle },
    /// No endpoint: the record goes (the IPAM plugin's GC frees its addresses).
    EndpointDropped { file: String },
}

/// Rebuild corrupt endpoint records (see [`EndpointRepair`]); every corrupt file is kept in the
/// network's quarantine directory.
pub fn rebuild_endpoints(cfg: &PluginConfig, network: &str, force: bool) -> Result<Vec<EndpointRepair>, String> {
    let store = EndpointStore::new(&cfg.data_dir, network);
    let mut nl = Netlink::open().map_err(|e| format!("opening netlink: {e}"))?;
    let mut files = Vec::new();
    for (file, handle, content) in store.files().map_err(|e| e.to_string())? {
        let link = match &handle {
            Some(h) => nl.link_by_name(&host_veth_name(&h.container_id, &h.ifname)).map_err(|e| e.to_string())?,
            None => None,
        };
        files.push((file, handle, content, link));
    }
    // As for the node store: no live endpoint at all is what the wrong namespace looks like.
    let corrupt = files.iter().any(|(_, _, c, _)| matches!(c, Err(podnet_ipam::IpamError::Corrupt { .. })));
    if corrupt && !force && !files.iter().any(|(_, _, _, l)| l.is_some()) {
        return Err(format!(
            "none of the {} endpoint records of network {network} has a veth in this network namespace; run podnetctl in the node's network namespace, or pass --force if every pod is really gone",
            files.len()
        ));
    }
    let mut out = Vec::new();
    for (file, handle, content, link) in files {
        if !matches!(content, Err(podnet_ipam::IpamError::Corrupt { .. })) {
            continue;
        }
        store.quarantine(&file).map_err(|e| e.to_string())?;
        let (Some(h), Some(link)) = (handle, link) else {
            out.push(EndpointRepair::EndpointDropped { file });
            continue;
        };
        let mut addresses = Vec::new();
        if cfg.mode == Mode::Routed {
            for v4 in [true, false] {
                for r in nl.routes(v4).map_err(|e| e.to_string())? {
                    if r.oif == Some(link.index) && r.dst.prefix_len() == r.dst.max_prefix_len() {
                        addresses.push(PodAddress { address: r.dst, gateway: None });
                    }
                }
            }
        }
        let rec = endpoint_record(cfg, &h, "", PodInfo::default(), link.mtu, &addresses);
        store.write(&rec).map_err(|e| e.to_string())?;
        out.push(EndpointRepair::EndpointRestored { handle: h });
    }
    Ok(out)
}

fn pod_ip(mode: &Mode, a: &PodAddress) -> ipnet::IpNet {
    match mode {
        Mode::Bridge { .. } => a.address,
        Mode::Routed => ipnet::IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix"),
    }
}

/// The ADD result: bridge (if any), host veth (no sandbox), pod interface (sandbox = netns), with
/// `ips[].interface` pointing at the pod interface so portmap and bandwidth can chain after podnet.
fn build_result(conf: &NetConf, rec: &EndpointRecord, ep: &podnet_dataplane::Endpoint) -> CniResult {
    let mut result = conf.prev_result.clone().unwrap_or_default();
    if let Some((name, mac)) = &ep.bridge {
        result.interfaces.push(Interface { name: name.clone(), mac: mac.clone(), ..Default::default() });
    }
    result.interfaces.push(Interface { name: ep.host_veth.clone(), mac: ep.host_mac.clone(), ..Default::default() });
    result.interfaces.push(Interface {
        name: rec.ifname.clone(),
        mac: ep.pod_mac.clone(),
        mtu: Some(rec.mtu),
        sandbox: rec.netns.clone(),
        ..Default::default()
    });
    let pod_index = result.interfaces.len() - 1;
    for (ip, gw) in rec.ips.iter().zip(gateway_per_ip(rec)) {
        result.ips.push(IpConfig { address: *ip, gateway: gw, interface: Some(pod_index) });
    }
    for r in &rec.routes {
        result.routes.push(Route::new(r.dst, Some(r.gw)));
    }
    if result.dns.is_empty() {
        if let Some(dns) = conf.raw.get("dns").and_then(|d| serde_json::from_value(d.clone()).ok()) {
            result.dns = dns;
        }
    }
    result
}

fn gateway_per_ip(rec: &EndpointRecord) -> Vec<Option<std::net::IpAddr>> {
    rec.ips.iter().map(|ip| rec.gateways.iter().find(|g| g.is_ipv4() == ip.addr().is_ipv4()).copied()).collect()
}

/// Every endpoint of a network, for `podnetctl inspect`: those recorded with their allocation
/// (in-process IPAM) and those in endpoint files (exec'd IPAM). `plugin` is the conflist's
/// podnet plugin object. A corrupt record is an error naming its file.
pub fn endpoints(plugin: &serde_json::Value, network: &str) -> Result<Vec<EndpointRecord>, String> {
    let data_dir =
        plugin.get("dataDir").and_then(serde_json::Value::as_str).map(PathBuf::from).unwrap_or_else(default_data_dir);
    let mut out = EndpointStore::new(&data_dir, network).list().map_err(|e| e.to_string())?;
    let ipam = plugin.get("ipam").cloned().unwrap_or_default();
    if ipam.get("type").and_then(serde_json::Value::as_str) == Some("podnet-ipam") {
        let cfg = IpamConfig::parse(&ipam, Some(&data_dir)).map_err(|e| e.to_string())?;
        let mut seen = HashSet::new();
        for a in Ipam::new(cfg, network, Reservation::None).allocations().map_err(|e| e.to_string())? {
            if let Some(att) = a.attachment {
                if seen.insert(a.handle.clone()) {
                    out.push(
                        serde_json::from_value(att)
                            .map_err(|e| format!("endpoint of {} does not decode: {e}", a.handle.key()))?,
                    );
                }
            }
        }
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.container_id.cmp(&b.container_id)));
    Ok(out)
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from(podnet_ipam::config::DEFAULT_DATA_DIR)
}
