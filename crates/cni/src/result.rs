//! The ADD result. One model (spec 1.1.0's); [`CniResult::to_json`] writes it in the shape of
//! whichever version the config asked for, and [`CniResult::from_value`] reads any version's shape.

use crate::version::CniVersion;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Empty for host-side interfaces; the netns path for the pod's interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with the prefix length configured on the interface.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; chained plugins (portmap, bandwidth) find the pod interface by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Read a result of any supported version (prevResult, or a delegated IPAM plugin's output).
    /// Fields of other versions (`ips[].version`, `cniVersion`) are accepted and dropped.
    pub fn from_value(v: &Value) -> Result<CniResult, String> {
        let mut v = v.clone();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("cniVersion");
            if let Some(Value::Array(ips)) = obj.get_mut("ips") {
                for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                    ip.remove("version");
                }
            }
            if obj.get("dns").is_some_and(Value::is_null) {
                obj.remove("dns");
            }
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The result in `version`'s shape: 0.3.x/0.4.0 add `ips[].version` and know no 1.1.0
    /// interface fields; 1.0.0 knows neither; 1.1.0 carries everything.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifaces: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    if version < CniVersion::V1_1_0 {
                        (i.mtu, i.socket_path, i.pci_id) = (None, String::new(), String::new());
                    }
                    serde_json::to_value(i).expect("interface serializes")
                })
                .collect();
            out.insert("interfaces".into(), Value::Array(ifaces));
        }
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = serde_json::to_value(ip).expect("ip serializes");
                if version.ip_has_version_field() {
                    let family = if ip.address.addr().is_ipv4() { "4" } else { "6" };
                    v["version"] = json!(family);
                }
                v
            })
            .collect();
        out.insert("ips".into(), Value::Array(ips));
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if version < CniVersion::V1_1_0 {
                        (r.mtu, r.advmss, r.priority, r.table, r.scope) = (None, None, None, None, None);
                    }
                    serde_json::to_value(r).expect("route serializes")
                })
                .collect();
            out.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), serde_json::to_value(&self.dns).expect("dns serializes"));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface { name: "podnet0".into(), mac: "aa:bb:cc:dd:ee:ff".into(), ..Default::default() },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:f4:00:05".into(),
                    mtu: Some(1500),
                    sandbox: "/run/netns/p".into(),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.0.5/24".parse().unwrap(),
                    gateway: Some("10.244.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig { address: "fd00::5/120".parse().unwrap(), gateway: None, interface: Some(1) },
            ],
            routes: vec![Route {
                mtu: Some(1400),
                ..Route::new("0.0.0.0/0".parse().unwrap(), Some("10.244.0.1".parse().unwrap()))
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn each_version_has_its_shape() {
        let r = sample();
        let v11 = r.to_json(CniVersion::V1_1_0);
        assert_eq!(v11["cniVersion"], "1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["mtu"], 1400);
        assert!(v11["ips"][0].get("version").is_none());
        assert!(v11.get("dns").is_none());

        let v10 = r.to_json(CniVersion::V1_0_0);
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert!(v10["routes"][0].get("mtu").is_none());
        assert!(v10["ips"][0].get("version").is_none());
        assert_eq!(v10["ips"][0]["interface"], 1);

        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let j = r.to_json(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
            assert_eq!(j["interfaces"][1]["sandbox"], "/run/netns/p");
        }
    }

    #[test]
    fn round_trips_through_every_version() {
        let r = sample();
        for v in CniVersion::ALL {
            let back = CniResult::from_value(&r.to_json(v)).unwrap();
            assert_eq!(back.ips, r.ips, "{v}");
            assert_eq!(back.interfaces.len(), 2);
        }
        assert_eq!(CniResult::from_value(&r.to_json(CniVersion::V1_1_0)).unwrap(), r);
        assert!(CniResult::from_value(&json!({"ips":[{"address":"nope"}]})).is_err());
        assert!(CniResult::from_value(&json!({"ips":[], "dns": null})).is_ok());
    }
}
