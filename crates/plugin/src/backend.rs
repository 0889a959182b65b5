//! The IPAM a network uses, decided once per invocation: podnet-ipam in-process, or another IPAM
//! plugin exec'd per the CNI spec. Every verb calls the backend; none tests which one it is.

use crate::config::PluginConfig;
use crate::delegate;
use podnet_cni::{CniError, CniResult, NetConf};
use podnet_ipam::node::NodeStore;
use podnet_ipam::{ClusterStore, Dataplane, Handle, Ipam, IpamConfig, LocalStore, Reservation};
use podnet_store_etcd::EtcdStore;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Open a network's podnet-ipam with the cluster store its config names (local files or etcd).
pub fn open_ipam(cfg: IpamConfig, network: &str, dataplane: Dataplane) -> Ipam {
    let store: Arc<dyn ClusterStore> = match &cfg.etcd {
        Some(etcd) => {
            let note = NodeStore::new(&cfg.data_dir, network).outage_note();
            Arc::new(EtcdStore::new(etcd.clone(), network, note))
        }
        None => Arc::new(LocalStore::new(cfg.local_cluster_dir(), network)),
    };
    // Every allocation and release, whatever makes it, is audited (see podnet-audit).
    let journal = Arc::new(podnet_audit::AuditJournal::new(&cfg.data_dir, network, &cfg.node));
    Ipam::new(cfg, network, Reservation::for_dataplane(dataplane), store).with_journal(journal)
}

/// IPv6 needs links of at least 1280 bytes: a smaller `mtu` with IPv6 addresses is a config
/// conflict (the kernel would refuse the address with a bare "Invalid argument").
pub fn check_ipv6_mtu(mtu: u32, what: &str) -> Result<(), CniError> {
    if mtu < 1280 {
        return Err(CniError::invalid_config(format!(
            "mtu {mtu} is below 1280, the smallest MTU IPv6 allows, and {what} is IPv6: set mtu to at least 1280 or remove the IPv6 pool"
        )));
    }
    Ok(())
}

/// An IPAM plugin found in CNI_PATH, run with the network config on stdin.
pub struct ExecIpam {
    pub plugin: PathBuf,
    stdin: Vec<u8>,
    /// How long one call may take (`ipamTimeoutMs`).
    timeout: std::time::Duration,
}

impl ExecIpam {
    pub fn run(&self, command: &str) -> Result<Vec<u8>, CniError> {
        Ok(delegate::exec(&self.plugin, command, &self.stdin, self.timeout)?)
    }
    /// ADD; a result that does not decode, or an ADD stopped for taking too long, is undone with DEL.
    pub fn add(&self) -> Result<CniResult, CniError> {
        delegate::add(&self.plugin, &self.stdin, self.timeout)
    }
}

pub enum IpamBackend {
    InProcess(Box<Ipam>),
    Exec(ExecIpam),
}

impl IpamBackend {
    pub fn open(cfg: &PluginConfig, conf: &NetConf, cni_path: &[PathBuf]) -> Result<IpamBackend, CniError> {
        if cfg.ipam_in_process {
            let ipam_cfg = IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir))?;
            if let (Some(mtu), Some(v6)) = (cfg.mtu, ipam_cfg.pools.iter().find(|p| !p.is_v4())) {
                check_ipv6_mtu(mtu, &format!("pool {} ({})", v6.name(), v6.cidr()))?;
            }
            return Ok(IpamBackend::InProcess(Box::new(open_ipam(ipam_cfg, &conf.name, cfg.dataplane()))));
        }
        let plugin = delegate::find_plugin(cfg.ipam_type(), cni_path)?;
        let stdin = serde_json::to_vec(&conf.raw).expect("config serializes");
        Ok(IpamBackend::Exec(ExecIpam { plugin, stdin, timeout: cfg.ipam_timeout }))
    }

    /// DEL's IPAM half: release what the attachment holds (idempotent).
    pub fn release(&self, h: &Handle) -> Result<Vec<IpAddr>, CniError> {
        match self {
            IpamBackend::InProcess(ipam) => Ok(ipam.release(h)?),
            IpamBackend::Exec(exec) => exec.run("DEL").map(|_| Vec::new()),
        }
    }

    /// CHECK's IPAM half: lines of drift (in-process: an address of `ips` the store does not give
    /// `h`); an exec'd plugin answers CHECK itself.
    pub fn check(&self, h: &Handle, ips: &[IpAddr]) -> Result<Vec<String>, CniError> {
        match self {
            IpamBackend::InProcess(ipam) => {
                let held = ipam.addresses_of(h)?;
                Ok(ips
                    .iter()
                    .filter(|ip| !held.contains(ip))
                    .map(|ip| format!("address {ip} is not allocated to {} in the IPAM store", h.key()))
                    .collect())
            }
            IpamBackend::Exec(exec) => exec.run("CHECK").map(|_| Vec::new()),
        }
    }

    /// STATUS's IPAM half.
    pub fn status(&self) -> Result<(), CniError> {
        match self {
            IpamBackend::InProcess(ipam) => ipam.status().map_err(|e| {
                CniError::new(podnet_cni::ErrorCode::NotAvailable, format!("podnet cannot serve ADD: {e}"))
            }),
            IpamBackend::Exec(exec) => exec.run("STATUS").map(|_| ()),
        }
    }

    /// Handles the IPAM holds addresses for (exec'd plugins keep their own: none known here).
    pub fn handles(&self) -> Result<Vec<Handle>, CniError> {
        match self {
            IpamBackend::InProcess(ipam) => Ok(ipam.handles()?),
            IpamBackend::Exec(_) => Ok(Vec::new()),
        }
    }

    /// GC's IPAM half, after the dataplane: release exactly the handles whose interfaces are gone
    /// (one published meanwhile keeps its address), then stale claims and empty blocks; an exec'd
    /// plugin runs its own GC. Returns the failures, for one error listing all of them.
    pub fn gc(&self, torn_down: &[Handle], _keep: &HashSet<Handle>) -> Vec<String> {
        let mut errors = Vec::new();
        match self {
            IpamBackend::InProcess(ipam) => {
                for h in torn_down {
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
            IpamBackend::Exec(exec) => {
                if let Err(e) = exec.run("GC") {
                    errors.push(e.to_string());
                }
            }
        }
        errors
    }

    pub fn in_process(&self) -> Option<&Ipam> {
        match self {
            IpamBackend::InProcess(ipam) => Some(ipam),
            IpamBackend::Exec(_) => None,
        }
    }

    pub fn plugin_path(&self) -> Option<&Path> {
        match self {
            IpamBackend::InProcess(_) => None,
            IpamBackend::Exec(exec) => Some(&exec.plugin),
        }
    }
}
