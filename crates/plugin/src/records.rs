//! Endpoint records: one file per attachment under `<dataDir>/<network>/endpoints/`, written once
//! by ADD and removed by DEL (never one shared file rewritten on every ADD). `podnetctl inspect`
//! and GC read them.

use podnet_ipam::fsio::{encode_record, ensure_dir, list, read_record, remove, sync_dir, Batch};
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

pub struct EndpointStore {
    dir: PathBuf,
}

impl EndpointStore {
    pub fn new(data_dir: &Path, network: &str) -> EndpointStore {
        EndpointStore { dir: data_dir.join(network).join("endpoints") }
    }

    pub fn write(&self, rec: &EndpointRecord) -> Result<(), IpamError> {
        let mut batch = Batch::default();
        self.stage(rec, &mut batch)?;
        batch.commit()
    }

    /// Add the record to `batch` (e.g. IPAM's commit), so it becomes durable with it.
    pub fn stage(&self, rec: &EndpointRecord, batch: &mut Batch) -> Result<(), IpamError> {
        ensure_dir(&self.dir)?;
        batch.put(&self.dir, &rec.handle().key(), encode_record(rec));
        Ok(())
    }

    pub fn remove(&self, handle: &Handle) -> Result<(), IpamError> {
        if remove(&self.dir, &handle.key())? {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    pub fn get(&self, handle: &Handle) -> Result<Option<EndpointRecord>, IpamError> {
        let path = self.dir.join(handle.key());
        if !path.exists() {
            return Ok(None);
        }
        read_record(&path).map(Some)
    }

    /// Every record; a corrupt one is an error naming its file.
    pub fn list(&self) -> Result<Vec<EndpointRecord>, IpamError> {
        let mut out: Vec<EndpointRecord> = list(&self.dir)?.iter().map(|n| read_record(&self.dir.join(n))).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.container_id.cmp(&b.container_id)));
        Ok(out)
    }

    /// Handles with a record, from file names alone.
    pub fn handles(&self) -> Result<Vec<Handle>, IpamError> {
        Ok(list(&self.dir)?.iter().filter_map(|n| Handle::from_key(n)).collect())
    }
}
