//! The `podnet` plugin's own keys (design.md, "Plugin keys"), validated.

use podnet_cni::{CniError, NetConf};
use podnet_dataplane::Mode;
use serde_json::Value;
use std::path::PathBuf;

pub const PLUGIN_KEYS: &[&str] =
    &["dataplane", "bridge", "mtu", "hairpinMode", "dataDir", "logFile", "logLevel", "ipamTimeoutMs"];
/// How long an exec'd IPAM plugin may take per call, by default: well above a healthy plugin's
/// milliseconds, well below a runtime's own timeouts.
pub const DEFAULT_IPAM_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_BRIDGE: &str = "podnet0";
pub const DEFAULT_LOG_FILE: &str = "/var/log/podnet/podnet.log";

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub mode: Mode,
    pub mtu: Option<u32>,
    pub data_dir: PathBuf,
    pub ipam: Value,
    /// `ipam.type == "podnet-ipam"`: allocate in-process instead of exec'ing a plugin.
    pub ipam_in_process: bool,
    /// `ipamTimeoutMs`: the bound on each call of an exec'd IPAM plugin.
    pub ipam_timeout: std::time::Duration,
}

impl PluginConfig {
    /// The dataplane as the IPAM sees it (which addresses of a block it keeps).
    pub fn dataplane(&self) -> podnet_ipam::Dataplane {
        match self.mode {
            Mode::Bridge { .. } => podnet_ipam::Dataplane::Bridge,
            Mode::Routed => podnet_ipam::Dataplane::Routed,
        }
    }

    /// `ipam.type`: a plugin name (validated: no path).
    pub fn ipam_type(&self) -> &str {
        self.ipam["type"].as_str().unwrap_or_default()
    }
}

fn get_str<'a>(conf: &'a NetConf, key: &str) -> Result<Option<&'a str>, CniError> {
    match conf.raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(CniError::invalid_config(format!("{key} must be a string, not {v}"))),
    }
}

impl PluginConfig {
    pub fn parse(conf: &NetConf) -> Result<PluginConfig, CniError> {
        conf.deny_unknown_keys(PLUGIN_KEYS)?;
        let hairpin = match conf.raw.get("hairpinMode") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(CniError::invalid_config(format!("hairpinMode must be true or false, not {v}"))),
        };
        let bridge = get_str(conf, "bridge")?.unwrap_or(DEFAULT_BRIDGE);
        podnet_cni::env::validate_ifname(bridge).map_err(|e| CniError::invalid_config(format!("bridge {e}")))?;
        let mode = match get_str(conf, "dataplane")?.unwrap_or("bridge") {
            "bridge" => Mode::Bridge { bridge: bridge.to_string(), hairpin },
            "routed" => {
                if hairpin {
                    return Err(CniError::invalid_config("hairpinMode applies to the bridge dataplane only"));
                }
                Mode::Routed
            }
            other => {
                return Err(CniError::invalid_config(format!(
                    "dataplane {other:?} is unknown; use \"bridge\" or \"routed\""
                )))
            }
        };
        let mtu = match conf.raw.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(m) if (576..=65535).contains(&m) => Some(m as u32),
                _ => return Err(CniError::invalid_config(format!("mtu {v} must be a whole number from 576 to 65535"))),
            },
        };
        let data_dir = PathBuf::from(get_str(conf, "dataDir")?.unwrap_or(podnet_ipam::config::DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(CniError::invalid_config(format!("dataDir {} must be an absolute path", data_dir.display())));
        }
        let ipam = conf.raw.get("ipam").cloned().unwrap_or(Value::Null);
        let ipam_type = ipam.get("type").and_then(Value::as_str).unwrap_or_default();
        if ipam_type.is_empty() {
            return Err(CniError::invalid_config(
                "ipam.type is missing; use \"podnet-ipam\" or another IPAM plugin such as \"host-local\"",
            ));
        }
        if ipam_type.contains('/') || ipam_type.starts_with('.') {
            return Err(CniError::invalid_config(format!("ipam.type {ipam_type:?} must be a plugin name, not a path")));
        }
        let ipam_timeout_ms = match conf.raw.get("ipamTimeoutMs") {
            None | Some(Value::Null) => DEFAULT_IPAM_TIMEOUT_MS,
            Some(v) => match v.as_u64() {
                Some(ms) if (100..=120_000).contains(&ms) => ms,
                _ => {
                    return Err(CniError::invalid_config(format!(
                        "ipamTimeoutMs {v} must be a whole number from 100 to 120000"
                    )))
                }
            },
        };
        Ok(PluginConfig {
            mode,
            mtu,
            data_dir,
            ipam_in_process: ipam_type == "podnet-ipam",
            ipam,
            ipam_timeout: std::time::Duration::from_millis(ipam_timeout_ms),
        })
    }

    pub fn dataplane_name(&self) -> &'static str {
        match self.mode {
            Mode::Bridge { .. } => "bridge",
            Mode::Routed => "routed",
        }
    }
}

/// Log settings, read before anything else so even config errors are logged.
pub fn log_settings(conf: &NetConf) -> (PathBuf, String) {
    let file = conf.raw.get("logFile").and_then(Value::as_str).unwrap_or(DEFAULT_LOG_FILE);
    let level = conf.raw.get("logLevel").and_then(Value::as_str).unwrap_or("info");
    (PathBuf::from(file), level.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(extra: Value) -> Result<PluginConfig, CniError> {
        let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "podnet", "ipam": {"type": "podnet-ipam"}});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        PluginConfig::parse(&NetConf::parse(&serde_json::to_vec(&v).unwrap()).unwrap())
    }

    #[test]
    fn defaults() {
        let c = parse(json!({})).unwrap();
        assert_eq!(c.mode, Mode::Bridge { bridge: "podnet0".into(), hairpin: false });
        assert_eq!((c.mtu, c.ipam_in_process), (None, true));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/podnet"));
        let r = parse(json!({"dataplane": "routed", "mtu": 9000, "ipam": {"type": "host-local"}})).unwrap();
        assert_eq!((r.mode, r.mtu, r.ipam_in_process), (Mode::Routed, Some(9000), false));
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (extra, code, needle) in [
            (json!({"dataplane": "vxlan"}), 7, "dataplane"),
            (json!({"dataplane": "routed", "hairpinMode": true}), 7, "hairpinMode"),
            (json!({"hairpinMode": "yes"}), 7, "hairpinMode"),
            (json!({"mtu": 70000}), 7, "mtu"),
            (json!({"bridge": "averyveryverylongbridge"}), 7, "bridge"),
            (json!({"ipam": {"type": "../evil"}}), 7, "ipam.type"),
            (json!({"ipam": {}}), 7, "ipam.type"),
            (json!({"colour": 1}), 2, "colour"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert_eq!(e.code, code, "{extra}: {e}");
            assert!(e.msg.contains(needle), "{extra}: {e}");
        }
    }
}
