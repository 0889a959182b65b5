//! The `podnet` CNI plugin: each verb parses and validates everything first, then acts through the
//! IPAM backend and the dataplane, undoing its own work when a later step fails.
//!
//! Modules: `config` (the plugin's keys), `backend` (in-process podnet-ipam or an exec'd IPAM
//! plugin, decided once), `add` (ADD's pipeline and its rollback), `result` (the ADD result,
//! pure), `records` (endpoint records), `delegate` (exec'ing IPAM plugins), `ipam_cni`
//! (`podnet-ipam` as a standalone IPAM plugin), `logging`.

mod add;
pub mod attachment;
pub mod backend;
pub mod config;
pub mod delegate;
pub mod ipam_cni;
pub mod logging;
pub mod records;
pub mod result;
mod spread;
mod vnet;

use attachment::AttachmentLock;
pub use backend::{open_ipam, IpamBackend};
use config::PluginConfig;
use podnet_cni::{CniError, CniResult, Env, ErrorCode, IpConfig, NetConf};
use podnet_dataplane::{
    endpoint, host_veth_name, DataplaneError, EndpointSpec, NetNs, NetNsError, Netlink, PodAddress,
};
use podnet_ipam::{Handle, PodInfo};
use records::EndpointStore;
use std::collections::HashSet;
use std::time::Instant;

pub struct PodnetPlugin;

pub(crate) fn pod_info(env: &Env) -> PodInfo {
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

pub(crate) fn netns_error(e: NetNsError) -> CniError {
    CniError::invalid_env(format!("CNI_NETNS: {e}"))
}

/// Each kind of dataplane failure with its CNI code.
pub(crate) fn dataplane_error(e: DataplaneError) -> CniError {
    match e {
        DataplaneError::Netns(e) => netns_error(e),
        DataplaneError::IfnameTaken(_) | DataplaneError::HostVethExists(_) => CniError::invalid_env(e.to_string()),
        // The config names a link that is something else: the config must change.
        DataplaneError::NotABridge(_) => CniError::invalid_config(e.to_string()),
        DataplaneError::Netlink(_)
        | DataplaneError::Sysctl(..)
        | DataplaneError::Socket(_)
        | DataplaneError::EnterNetns { .. }
        | DataplaneError::Vanished(_)
        | DataplaneError::BadAddress(_) => CniError::kernel(e.to_string()),
    }
}

fn netlink() -> Result<Netlink, CniError> {
    Netlink::open().map_err(|e| CniError::kernel(format!("opening a netlink socket: {e}")))
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
        let netns_path = env.netns.as_deref().expect("ADD requires CNI_NETNS");
        let open = || {
            Ok(add::Opened {
                backend: IpamBackend::open(&cfg, conf, &env.path)?,
                _attachment: AttachmentLock::acquire(&cfg.data_dir, &conf.name, &handle(env))?,
                store: EndpointStore::new(&cfg.data_dir, &conf.name),
            })
        };
        let pipeline = add::AddPipeline { cfg: &cfg, env, netns_path, handle: handle(env), started };
        // The attachment stays locked until the result is built.
        let (record, ep, _opened) = pipeline.run(open)?;
        Ok(result::build_result(conf, &record, &ep))
    }

    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let h = handle(env);
        let backend = IpamBackend::open(&cfg, conf, &env.path)?;
        let attachment = AttachmentLock::acquire(&cfg.data_dir, &conf.name, &h)?;
        // The netns may be gone (the kernel then removed the veth already); DEL never needs it.
        let mut nl = netlink()?;
        endpoint::teardown(&mut nl, &host_veth_name(&h.container_id, &h.ifname)).map_err(dataplane_error)?;
        podnet_fault::crash_point("del-after-teardown");
        vnet::withdraw(&mut nl, &backend, &h).map_err(CniError::kernel)?;
        let released = backend.release(&h)?;
        tracing::info!(container = %h.container_id, ifname = %h.ifname, released = ?released, "DEL");
        podnet_fault::crash_point("del-after-release");
        EndpointStore::new(&cfg.data_dir, &conf.name).remove(&h)?;
        attachment.remove();
        Ok(())
    }

    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult (the ADD result)"))?;
        let netns = NetNs::open_pod(env.netns.as_deref().expect("CHECK requires CNI_NETNS")).map_err(netns_error)?;
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
        let backend = IpamBackend::open(&cfg, conf, &env.path)?;
        let _attachment = AttachmentLock::acquire(&cfg.data_dir, &conf.name, &h)?;
        let mut drift = backend.check(&h, &ips.iter().map(|ip| ip.address.addr()).collect::<Vec<_>>())?;
        let spec = EndpointSpec {
            mode: cfg.mode.clone(),
            host_veth: host_veth_name(&h.container_id, &h.ifname),
            ifname: h.ifname.clone(),
            mtu: 0,
            pod_mac: None,
            addresses: ips.iter().map(|ip| PodAddress { address: ip.address, gateway: ip.gateway }).collect(),
        };
        drift.extend(endpoint::check(&mut netlink()?, &netns, &spec).map_err(dataplane_error)?);
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
        IpamBackend::open(&cfg, conf, &env.path)?.status()
    }

    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let cfg = PluginConfig::parse(conf)?;
        let keep: HashSet<Handle> =
            conf.valid_attachments()?.into_iter().map(|a| Handle::new(&a.container_id, &a.ifname)).collect();
        let store = EndpointStore::new(&cfg.data_dir, &conf.name);
        let backend = IpamBackend::open(&cfg, conf, &env.path)?;
        let mut stale: Vec<Handle> = store.handles()?.into_iter().filter(|h| !keep.contains(h)).collect();
        stale.extend(backend.handles()?.into_iter().filter(|h| !keep.contains(h)));
        // One order for every GC, so two never wait on each other's attachment locks.
        stale.sort();
        stale.dedup();
        // Dataplane first: an attachment's veth goes before its address can be handed out again.
        let mut nl = netlink()?;
        let mut errors = Vec::new();
        let mut torn_down = Vec::new();
        let mut locks = Vec::new();
        for h in &stale {
            // An ADD or DEL of the attachment still running finishes first.
            match AttachmentLock::acquire(&cfg.data_dir, &conf.name, h) {
                Ok(lock) => locks.push(lock),
                Err(e) => {
                    errors.push(e.msg);
                    continue;
                }
            }
            if let Err(e) = endpoint::teardown(&mut nl, &host_veth_name(&h.container_id, &h.ifname)) {
                errors.push(e.to_string());
            } else if let Err(e) = vnet::withdraw(&mut nl, &backend, h) {
                errors.push(e);
            } else if let Err(e) = store.remove(h) {
                errors.push(e.to_string());
            } else {
                torn_down.push(h.clone());
            }
        }
        errors.extend(backend.gc(&torn_down, &keep));
        for lock in locks {
            lock.remove();
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(ErrorCode::Io, format!("GC left work undone: {}", errors.join("; "))))
        }
    }
}
