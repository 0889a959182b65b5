//! Conflists and the networks they describe.

use crate::NodeError;
use podnet_cni::NetConf;
use podnet_ipam::{Ipam, IpamConfig};
use podnet_plugin::config::PluginConfig;
use podnet_plugin::records::{EndpointRecord, EndpointStore};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

/// A conflist's podnet plugin and its network name.
#[derive(Debug, Clone)]
pub struct Network {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// The conflist's `podnet` plugin object, as written.
    pub plugin: Value,
}

/// A conflist's podnet plugin as a runtime hands it over (network name and cniVersion injected),
/// validated the way the plugin validates it.
pub fn plugin_view(name: &str, cni_version: &str, plugin: &Value) -> Result<(NetConf, PluginConfig), NodeError> {
    let mut conf = plugin.clone();
    conf["name"] = Value::from(name);
    conf["cniVersion"] = Value::from(cni_version);
    let conf = NetConf::parse(&serde_json::to_vec(&conf).expect("json")).map_err(|e| NodeError::Config(e.msg))?;
    let cfg = PluginConfig::parse(&conf).map_err(|e| NodeError::Config(e.msg))?;
    Ok((conf, cfg))
}

/// The first conflist in `dir` that holds a podnet plugin (in file name order, as runtimes pick).
pub fn default_config(dir: &Path) -> Result<PathBuf, NodeError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| NodeError::Conflist(format!("reading {}: {e}; pass --config", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist" || x == "conf"))
        .collect();
    files.sort();
    files.into_iter().find(|p| Network::load(p).is_ok()).ok_or_else(|| {
        NodeError::Conflist(format!("no conflist with a podnet plugin in {}; pass --config", dir.display()))
    })
}

impl Network {
    pub fn load(path: &Path) -> Result<Network, NodeError> {
        let bad = |m: String| NodeError::Conflist(m);
        let text = std::fs::read(path).map_err(|e| bad(format!("reading {}: {e}", path.display())))?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{} has no network name", path.display())))?;
        let cni_version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("1.0.0").to_string();
        podnet_cni::config::validate_network_name(name).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let plugins: Vec<&Value> = match v.get("plugins").and_then(Value::as_array) {
            Some(list) => list.iter().collect(),
            None => vec![&v], // a single-plugin .conf
        };
        let plugin = plugins
            .into_iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("podnet"))
            .ok_or_else(|| bad(format!("{} has no plugin of type podnet", path.display())))?;
        Ok(Network { path: path.to_path_buf(), name: name.to_string(), cni_version, plugin: plugin.clone() })
    }

    /// Whether this node holds any state of the network (its plugin or IPAM data directory):
    /// read-only commands then report "no state" and create nothing.
    pub fn has_state(&self) -> bool {
        let Ok(cfg) = self.plugin_config() else { return false };
        let ipam_dir = self.ipam_config().ok().map(|c| c.data_dir.join(&self.name));
        cfg.data_dir.join(&self.name).exists() || ipam_dir.is_some_and(|d| d.exists())
    }

    /// The plugin config as the plugin reads it.
    pub fn plugin_config(&self) -> Result<PluginConfig, NodeError> {
        plugin_view(&self.name, &self.cni_version, &self.plugin).map(|(_, cfg)| cfg)
    }

    /// The network's podnet-ipam config (an error when it execs another IPAM plugin).
    pub fn ipam_config(&self) -> Result<IpamConfig, NodeError> {
        let cfg = self.plugin_config()?;
        if !cfg.ipam_in_process {
            return Err(NodeError::NotPodnetIpam(format!(
                "network {} uses the IPAM plugin {}, not podnet-ipam",
                self.name, cfg.ipam["type"]
            )));
        }
        IpamConfig::parse(&cfg.ipam, Some(&cfg.data_dir)).map_err(|e| NodeError::Config(e.to_string()))
    }

    /// The network's IPAM as the plugin opens it (same dataplane reservation, same stores).
    pub fn open_ipam(&self) -> Result<Ipam, NodeError> {
        let cfg = self.plugin_config()?;
        Ok(podnet_plugin::open_ipam(self.ipam_config()?, &self.name, cfg.dataplane()))
    }

    /// Every endpoint of the network, for `podnetctl inspect`: those recorded with their
    /// allocation (in-process IPAM) and those in endpoint files (exec'd IPAM). A corrupt record
    /// is an error naming its file.
    pub fn endpoints(&self) -> Result<Vec<EndpointRecord>, NodeError> {
        let data_dir = self
            .plugin
            .get("dataDir")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(podnet_ipam::config::DEFAULT_DATA_DIR));
        let mut out = EndpointStore::new(&data_dir, &self.name).list()?;
        let ipam = self.plugin.get("ipam").cloned().unwrap_or_default();
        if ipam.get("type").and_then(Value::as_str) == Some("podnet-ipam") {
            let cfg = IpamConfig::parse(&ipam, Some(&data_dir)).map_err(|e| NodeError::Config(e.to_string()))?;
            let mut seen = HashSet::new();
            // Reading records needs no cluster store: the local one is never touched here.
            let reader = Ipam::local(cfg, &self.name, podnet_ipam::Reservation::None);
            for a in reader.allocations()? {
                if let Some(att) = a.attachment {
                    if seen.insert(a.handle.clone()) {
                        out.push(serde_json::from_value(att).map_err(|e| {
                            NodeError::Ipam(podnet_ipam::IpamError::Corrupt {
                                path: data_dir.join(&self.name).join("ipam/addrs"),
                                why: format!("the endpoint of {} does not decode: {e}", a.handle.key()),
                            })
                        })?);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.container_id.cmp(&b.container_id)));
        Ok(out)
    }
}
