//! `podnet-ipam` as a standalone CNI IPAM plugin, for other plugins (e.g. the reference `bridge`)
//! to exec. It reserves a gateway per block, as such plugins put the gateway on their bridge.

use podnet_cni::{CniError, CniResult, Env, IpConfig, NetConf};
use podnet_ipam::{Dataplane, Handle, Ipam, IpamConfig, PodInfo};
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

pub struct IpamPlugin;

/// One operation at a time per attachment, as the podnet plugin keeps it (see `attachment`).
fn attachment_lock(conf: &NetConf, ipam: &Ipam, env: &Env) -> Result<crate::attachment::AttachmentLock, CniError> {
    crate::attachment::AttachmentLock::acquire(&ipam.config().data_dir, &conf.name, &handle(env))
}

fn open(conf: &NetConf) -> Result<Ipam, CniError> {
    let ipam = conf.raw.get("ipam").cloned().unwrap_or(Value::Null);
    // The calling plugin's dataDir (if it has one) is the default, as for the in-process IPAM.
    let plugin_dir = conf.raw.get("dataDir").and_then(Value::as_str).map(PathBuf::from);
    let cfg = IpamConfig::parse(&ipam, plugin_dir.as_deref())?;
    // Plugins that exec an IPAM put its gateways on their bridge: the bridge's reservation.
    Ok(crate::open_ipam(cfg, &conf.name, Dataplane::Bridge))
}

fn handle(env: &Env) -> Handle {
    Handle::new(env.container_id(), env.ifname())
}

impl podnet_cni::skel::Plugin for IpamPlugin {
    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
        let pod = PodInfo {
            namespace: env.args.namespace.clone(),
            name: env.args.name.clone(),
            uid: env.args.uid.clone(),
            infra_container_id: env.args.infra_container_id.clone(),
        };
        let ipam = open(conf)?;
        let _attachment = attachment_lock(conf, &ipam, env)?;
        let got = ipam.allocate(&handle(env), &pod)?;
        let ips = got
            .allocations
            .iter()
            .map(|a| IpConfig { address: a.address, gateway: a.gateway, interface: None })
            .collect();
        Ok(CniResult { ips, ..Default::default() })
    }
    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let ipam = open(conf)?;
        let attachment = attachment_lock(conf, &ipam, env)?;
        ipam.release(&handle(env))?;
        attachment.remove();
        Ok(())
    }
    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let held = open(conf)?.addresses_of(&handle(env))?;
        if held.is_empty() {
            return Err(CniError::new(
                podnet_cni::ErrorCode::EndpointDrift,
                format!("{} holds no address", handle(env).key()),
            ));
        }
        Ok(())
    }
    fn status(&self, _env: &Env, conf: &NetConf) -> Result<(), CniError> {
        open(conf)?.status().map_err(|e| CniError::new(podnet_cni::ErrorCode::NotAvailable, e.to_string()))
    }
    fn gc(&self, _env: &Env, conf: &NetConf) -> Result<(), CniError> {
        let keep: HashSet<Handle> =
            conf.valid_attachments()?.into_iter().map(|a| Handle::new(&a.container_id, &a.ifname)).collect();
        let ipam = open(conf)?;
        ipam.gc(&keep)?;
        ipam.release_empty_blocks()?;
        Ok(())
    }
}
