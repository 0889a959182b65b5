//! The network configuration a runtime hands a plugin on stdin: the keys every plugin shares.
//! Plugin-specific keys are parsed by the plugin from [`NetConf::raw`].

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::CniVersion;
use serde_json::{Map, Value};

/// Keys the spec or libcni put into any plugin's config; plugins accept them beside their own.
pub const COMMON_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "ipam",
    "dns",
    "prevResult",
    "runtimeConfig",
    "capabilities",
    "args",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
    "disableCheck",
    "disableGC",
];

/// Largest stdin podnet reads; a real config is a few KiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// One attachment named in GC's valid list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub plugin_type: String,
    pub prev_result: Option<CniResult>,
    pub runtime_config: Map<String, Value>,
    /// The whole object as received, for plugin keys and for delegating to an IPAM plugin.
    pub raw: Map<String, Value>,
}

/// Network names become directory names: keep them to the spec's character set.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("network name {name:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ (at most 128 characters)"))
    }
}

impl NetConf {
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(CniError::decode(format!(
                "network config is {} bytes; at most {MAX_CONFIG_BYTES} are read",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("network config is not valid JSON: {e}")))?;
        let Value::Object(raw) = value else {
            return Err(CniError::decode("network config must be a JSON object"));
        };
        let str_field = |k: &str| -> Result<Option<String>, CniError> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(CniError::invalid_config(format!("{k} must be a string, not {other}"))),
            }
        };
        let version = str_field("cniVersion")?.ok_or_else(|| {
            CniError::invalid_config(format!("cniVersion is missing; set one of {}", CniVersion::supported_list()))
        })?;
        let cni_version = CniVersion::parse(&version)?;
        let name = str_field("name")?.ok_or_else(|| CniError::invalid_config("name (the network name) is missing"))?;
        validate_network_name(&name).map_err(CniError::invalid_config)?;
        let plugin_type = str_field("type")?.unwrap_or_default();
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(CniResult::from_value(v).map_err(|e| CniError::decode(format!("prevResult: {e}")))?),
        };
        let runtime_config = match raw.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(CniError::invalid_config("runtimeConfig must be an object")),
        };
        Ok(NetConf { cni_version, name, plugin_type, prev_result, runtime_config, raw })
    }

    /// Reject keys a plugin does not know, so a typo (`"dataPlane"`) is an error, not a silent default.
    pub fn deny_unknown_keys(&self, plugin_keys: &[&str]) -> Result<(), CniError> {
        for k in self.raw.keys() {
            if !COMMON_KEYS.contains(&k.as_str()) && !plugin_keys.contains(&k.as_str()) && !k.starts_with("cni.dev/") {
                return Err(CniError::new(
                    ErrorCode::UnsupportedField,
                    format!(
                        "unknown key {k:?} in the {} plugin config; known keys: {}",
                        self.plugin_type,
                        plugin_keys.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// GC's list of attachments to keep: `cni.dev/valid-attachments`, or the older `cni.dev/attachments`.
    /// The key must be there: read as "keep nothing", a forgotten key would free every live pod's address.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let list = self.raw.get("cni.dev/valid-attachments").or_else(|| self.raw.get("cni.dev/attachments"));
        let Some(list) = list else {
            return Err(CniError::invalid_config(
                "GC needs cni.dev/valid-attachments (the attachments to keep; [] removes every attachment of this network)",
            ));
        };
        let items = list.as_array().ok_or_else(|| CniError::decode("cni.dev/valid-attachments must be an array"))?;
        items
            .iter()
            .map(|item| {
                let get = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
                match (get("containerID"), get("ifname")) {
                    // Never matched against a path, but an attachment no ADD could have made
                    // means the runtime sent something else: say so rather than keep nothing.
                    (Some(container_id), Some(ifname)) => {
                        let bad = crate::env::validate_container_id(&container_id)
                            .map_err(|e| format!("containerID {e}"))
                            .and_then(|_| crate::env::validate_ifname(&ifname).map_err(|e| format!("ifname {e}")));
                        match bad {
                            Ok(()) => Ok(Attachment { container_id, ifname }),
                            Err(why) => Err(CniError::invalid_config(format!("valid attachment {item}: {why}"))),
                        }
                    }
                    _ => Err(CniError::decode(format!("valid attachment {item} needs containerID and ifname strings"))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_keys() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"podnet","type":"podnet","runtimeConfig":{"portMappings":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "podnet");
        assert!(c.runtime_config.contains_key("portMappings"));
    }

    #[test]
    fn bad_configs_get_codes_that_name_the_field() {
        assert_eq!(NetConf::parse(b"{").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code, 6);
        let e = NetConf::parse(br#"{"name":"x"}"#).unwrap_err();
        assert_eq!((e.code, e.msg.contains("cniVersion")), (7, true));
        assert_eq!(NetConf::parse(br#"{"cniVersion":"0.2.0","name":"x"}"#).unwrap_err().code, 1);
        assert_eq!(NetConf::parse(br#"{"cniVersion":1,"name":"x"}"#).unwrap_err().code, 7);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","name":"../etc"}"#).unwrap_err().code, 7);
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(NetConf::parse(&big).unwrap_err().code, 6);
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"podnet","dataPlane":"x"}"#).unwrap();
        let e = c.deny_unknown_keys(&["dataplane"]).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.msg.contains("dataPlane"));
    }

    #[test]
    fn gc_accepts_both_key_names() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let s = format!(r#"{{"cniVersion":"1.1.0","name":"n","{key}":[{{"containerID":"a","ifname":"eth0"}}]}}"#);
            let c = NetConf::parse(s.as_bytes()).unwrap();
            assert_eq!(
                c.valid_attachments().unwrap(),
                vec![Attachment { container_id: "a".into(), ifname: "eth0".into() }]
            );
        }
        let none = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert_eq!(none.valid_attachments().unwrap_err().code, 7);
    }
}
