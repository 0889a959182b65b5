//! `podnetctl ipam rebuild`: a network's node store (podnet-ipam) and endpoint records, rebuilt
//! from this node's live endpoints. An attachment is live when its host veth exists here; a veth
//! that exists keeps its addresses whatever else is missing (a flushed route, a deleted bridge):
//! the pod still carries them.

use crate::{Network, NodeError};
use podnet_dataplane::{host_veth_name, Mode, Netlink, PodAddress};
use podnet_ipam::rebuild::RebuildReport;
use podnet_ipam::{Allocation, Handle, IpamError, PodInfo};
use podnet_plugin::config::PluginConfig;
use podnet_plugin::records::{endpoint_record, EndpointStore};
use serde::Serialize;

/// What `podnetctl ipam rebuild` did with one endpoint record (networks that exec another IPAM
/// plugin keep one file per attachment under `<dataDir>/<network>/endpoints/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum EndpointRepair {
    /// The veth is live: the record is made again from the handle, the config and the kernel
    /// (routed: the host routes to the veth give the addresses; bridge: they stay unknown).
    EndpointRestored { handle: Handle },
    /// No endpoint: the record goes (the IPAM plugin's GC frees its addresses).
    EndpointDropped { file: String },
}

/// Everything a rebuild did: the endpoint records, and the node store of a podnet-ipam network.
pub struct Rebuild {
    pub endpoints: Vec<EndpointRepair>,
    /// `None` when the network execs another IPAM plugin.
    pub ipam: Option<RebuildReport>,
    /// The node's name (podnet-ipam networks).
    pub node: Option<String>,
}

fn kernel(e: impl std::fmt::Display) -> NodeError {
    NodeError::Kernel(e.to_string())
}

impl Network {
    /// Rebuild the network's endpoint records and (podnet-ipam) its node store.
    pub fn rebuild(&self, force: bool) -> Result<Rebuild, NodeError> {
        let cfg = self.plugin_config()?;
        let endpoints = rebuild_endpoints(&cfg, &self.name, force)?;
        if !cfg.ipam_in_process {
            return Ok(Rebuild { endpoints, ipam: None, node: None });
        }
        let ipam = self.open_ipam()?;
        let nl = std::cell::RefCell::new(Netlink::open().map_err(|e| kernel(format!("opening netlink: {e}")))?);
        let veth = |h: &Handle| nl.borrow_mut().link_by_name(&host_veth_name(&h.container_id, &h.ifname));
        let live = |h: &Handle| -> Result<bool, IpamError> {
            veth(h)
                .map(|l| l.is_some())
                .map_err(|e| IpamError::io("reading the node's links", std::io::Error::other(e.to_string())))
        };
        let attachment = |h: &Handle, allocations: &[Allocation]| {
            let mtu = veth(h).ok().flatten().map(|l| l.mtu).unwrap_or(1500);
            let addresses: Vec<PodAddress> =
                allocations.iter().map(|a| PodAddress { address: a.address, gateway: a.gateway }).collect();
            // The pod's namespace path is not in the kernel's view of the node: left empty.
            let rec = endpoint_record(&cfg, h, "", allocations[0].pod.clone(), mtu, &addresses);
            Some(serde_json::to_value(rec).expect("records serialize"))
        };
        let report = podnet_ipam::rebuild::rebuild(&ipam, &live, &attachment, force)?;
        Ok(Rebuild { endpoints, ipam: Some(report), node: Some(ipam.config().node.clone()) })
    }
}

/// Rebuild corrupt endpoint records (see [`EndpointRepair`]); every corrupt file is kept in the
/// network's quarantine directory.
fn rebuild_endpoints(cfg: &PluginConfig, network: &str, force: bool) -> Result<Vec<EndpointRepair>, NodeError> {
    let store = EndpointStore::new(&cfg.data_dir, network);
    let mut nl = Netlink::open().map_err(|e| kernel(format!("opening netlink: {e}")))?;
    let mut files = Vec::new();
    for (file, handle, content) in store.files()? {
        let link = match &handle {
            Some(h) => nl.link_by_name(&host_veth_name(&h.container_id, &h.ifname)).map_err(kernel)?,
            None => None,
        };
        files.push((file, handle, content, link));
    }
    // As for the node store: no live endpoint at all is what the wrong namespace looks like.
    let corrupt = files.iter().any(|(_, _, c, _)| matches!(c, Err(IpamError::Corrupt { .. })));
    if corrupt && !force && !files.iter().any(|(_, _, _, l)| l.is_some()) {
        return Err(NodeError::Ipam(IpamError::NoLiveEndpoint(format!(
            "none of the {} endpoint records of network {network} has a veth in this network namespace; run podnetctl in the node's network namespace, or pass --force if every pod is really gone",
            files.len()
        ))));
    }
    let mut out = Vec::new();
    for (file, handle, content, link) in files {
        if !matches!(content, Err(IpamError::Corrupt { .. })) {
            continue;
        }
        store.quarantine(&file)?;
        let (Some(h), Some(link)) = (handle, link) else {
            out.push(EndpointRepair::EndpointDropped { file });
            continue;
        };
        let mut addresses = Vec::new();
        if cfg.mode == Mode::Routed {
            for v4 in [true, false] {
                for r in nl.routes(v4).map_err(kernel)? {
                    if r.oif == Some(link.index) && r.dst.prefix_len() == r.dst.max_prefix_len() {
                        addresses.push(PodAddress { address: r.dst, gateway: None });
                    }
                }
            }
        }
        let rec = endpoint_record(cfg, &h, "", PodInfo::default(), link.mtu, &addresses);
        store.write(&rec)?;
        out.push(EndpointRepair::EndpointRestored { handle: h });
    }
    Ok(out)
}
