//! Endpoint records: what ADD built for an attachment, for `podnetctl inspect` and GC. With the
//! in-process IPAM a record rides inside the attachment's allocation file (one durable write per
//! ADD); with an exec'd IPAM plugin it is a file of its own under `<dataDir>/<network>/endpoints/`.
//! Either way one file per attachment, never one shared file rewritten on every ADD.

use crate::config::PluginConfig;
use podnet_dataplane::{endpoint, host_veth_name, netlink::format_mac, pod_mac, Mode, PodAddress};
use podnet_fsio::{atomic_write, encode_record, ensure_dir, list, read_record, remove, sync_dir};
use podnet_ipam::{Handle, IpamError, PodInfo};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRecord {
    pub dst: ipnet::IpNet,
    pub gw: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRecord {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    #[serde(default)]
    pub pod: PodInfo,
    pub dataplane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    pub host_veth: String,
    pub mac: String,
    pub mtu: u32,
    pub ips: Vec<ipnet::IpNet>,
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<RouteRecord>,
    pub created_at: String,
}

impl EndpointRecord {
    pub fn handle(&self) -> Handle {
        Handle::new(&self.container_id, &self.ifname)
    }
}

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

/// The address as configured on the pod's interface (routed pods get host prefixes).
fn pod_ip(mode: &Mode, a: &PodAddress) -> ipnet::IpNet {
    match mode {
        Mode::Bridge { .. } => a.address,
        Mode::Routed => ipnet::IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix"),
    }
}

/// A record file's name, the handle the name gives, and what the file holds.
pub type RecordFile = (String, Option<Handle>, Result<EndpointRecord, IpamError>);

pub struct EndpointStore {
    dir: PathBuf,
}

impl EndpointStore {
    pub fn new(data_dir: &Path, network: &str) -> EndpointStore {
        EndpointStore { dir: data_dir.join(network).join("endpoints") }
    }

    pub fn write(&self, rec: &EndpointRecord) -> Result<(), IpamError> {
        ensure_dir(&self.dir)?;
        Ok(atomic_write(&self.dir, &rec.handle().key(), &encode_record(rec))?)
    }

    pub fn remove(&self, handle: &Handle) -> Result<(), IpamError> {
        if remove(&self.dir, &handle.key())? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Every record; a corrupt one is an error naming its file.
    pub fn list(&self) -> Result<Vec<EndpointRecord>, IpamError> {
        let mut out: Vec<EndpointRecord> =
            list(&self.dir)?.iter().map(|n| read_record(&self.dir.join(n))).collect::<Result<_, _>>()?;

        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.container_id.cmp(&b.container_id)));
        Ok(out)
    }

    /// Every record file: its handle (from the name, when it decodes) and its content (an error
    /// when corrupt).
    pub fn files(&self) -> Result<Vec<RecordFile>, IpamError> {
        Ok(list(&self.dir)?
            .into_iter()
            .map(|n| (n.clone(), Handle::from_key(&n), read_record(&self.dir.join(&n)).map_err(IpamError::from)))
            .collect())
    }

    /// Move a record file aside into `<dataDir>/<network>/quarantine/` (kept, never deleted).
    pub fn quarantine(&self, file: &str) -> Result<PathBuf, IpamError> {
        let quarantine = self.dir.parent().expect("under the network dir").join("quarantine");
        Ok(podnet_fsio::quarantine(&self.dir, file, &quarantine, false)?)
    }

    /// Handles with a record, from file names alone.
    pub fn handles(&self) -> Result<Vec<Handle>, IpamError> {
        Ok(list(&self.dir)?.iter().filter_map(|n| Handle::from_key(n)).collect())
    }
}
