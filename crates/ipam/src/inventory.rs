//! The host agent's NIC inventory (Azure NMAgent's `getinterfaceinfov1`): which addresses the
//! cloud gave each of the node's NICs. Pure: parsing and choosing, no I/O.
//!
//! ```xml
//! <Interfaces>
//!   <Interface MacAddress="000D3A6E7F0B" IsPrimary="true">
//!     <IPSubnet Prefix="10.240.0.0/16">
//!       <IPAddress Address="10.240.0.4" IsPrimary="true"/>
//!       <IPAddress Address="10.240.0.5" IsPrimary="false"/>
//!     </IPSubnet>
//!   </Interface>
//! </Interfaces>
//! ```

use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// Every NIC of the node, as the host agent lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub interfaces: Vec<Nic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// 12 lowercase hex digits, no separators.
    pub mac: String,
    pub primary: bool,
    pub subnets: Vec<NicSubnet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSubnet {
    pub prefix: IpNet,
    pub addresses: Vec<NicAddress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NicAddress {
    pub ip: IpAddr,
    /// The NIC's own address (the node's); the others are secondaries, for pods.
    pub primary: bool,
}

#[derive(Deserialize)]
struct XmlInterfaces {
    #[serde(rename = "Interface", default)]
    interfaces: Vec<XmlInterface>,
}

#[derive(Deserialize)]
struct XmlInterface {
    #[serde(rename = "@MacAddress")]
    mac: String,
    #[serde(rename = "@IsPrimary", default)]
    primary: Option<String>,
    #[serde(rename = "IPSubnet", default)]
    subnets: Vec<XmlSubnet>,
}

#[derive(Deserialize)]
struct XmlSubnet {
    #[serde(rename = "@Prefix")]
    prefix: String,
    #[serde(rename = "IPAddress", default)]
    addresses: Vec<XmlAddress>,
}

#[derive(Deserialize)]
struct XmlAddress {
    #[serde(rename = "@Address")]
    address: String,
    #[serde(rename = "@IsPrimary", default)]
    primary: Option<String>,
}

/// A MAC address as 12 lowercase hex digits: `00:0D:3A:6E:7F:0B`, `00-0d-3a-6e-7f-0b` and
/// `000D3A6E7F0B` are one MAC. None when it is not a MAC.
pub fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect::<String>().to_ascii_lowercase();
    (hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn flag(v: &Option<String>, what: &str) -> Result<bool, String> {
    match v.as_deref().map(str::trim) {
        None => Ok(false),
        Some(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(s) => Err(format!("{what} IsPrimary={s:?} is neither true nor false")),
    }
}

/// Parse the document. Anything it cannot read exactly is an error: a half-read inventory must
/// never replace a good one.
pub fn parse(xml: &str) -> Result<Inventory, String> {
    let doc: XmlInterfaces =
        quick_xml::de::from_str(xml).map_err(|e| format!("the host agent's document is not an interface list: {e}"))?;
    let mut interfaces = Vec::new();
    for i in doc.interfaces {
        let mac =
            normalize_mac(&i.mac).ok_or_else(|| format!("Interface MacAddress={:?} is not a MAC address", i.mac))?;
        let mut subnets = Vec::new();
        for s in i.subnets {
            let prefix: IpNet =
                s.prefix.trim().parse().map_err(|_| format!("IPSubnet Prefix={:?} is not a CIDR", s.prefix))?;
            let mut addresses = Vec::new();
            for a in s.addresses {
                let ip: IpAddr =
                    a.address.trim().parse().map_err(|_| format!("IPAddress Address={:?} is not an IP", a.address))?;
                if !prefix.contains(&ip) {
                    return Err(format!("IPAddress {ip} lies outside its IPSubnet {prefix}"));
                }
                addresses.push(NicAddress { ip, primary: flag(&a.primary, "IPAddress")? });
            }
            subnets.push(NicSubnet { prefix, addresses });
        }
        interfaces.push(Nic { mac, primary: flag(&i.primary, "Interface")?, subnets });
    }
    Ok(Inventory { interfaces })
}

impl Inventory {
    /// The NIC `mac` names (any spelling), else the primary NIC.
    pub fn nic(&self, mac: Option<&str>) -> Result<&Nic, String> {
        match mac {
            Some(m) => {
                let want = normalize_mac(m).ok_or_else(|| format!("interfaceMac {m:?} is not a MAC address"))?;
                self.interfaces
                    .iter()
                    .find(|n| n.mac == want)
                    .ok_or_else(|| format!("the host agent lists no interface with MAC {m}"))
            }
            None => self
                .interfaces
                .iter()
                .find(|n| n.primary)
                .ok_or_else(|| "the host agent lists no primary interface (set interfaceMac)".to_string()),
        }
    }
}

/// What a pool takes from a NIC: its secondary addresses inside `cidr` (sorted), and the subnet
/// they are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secondaries {
    pub subnet: Option<IpNet>,
    pub addresses: Vec<IpAddr>,
}

pub fn secondaries(nic: &Nic, cidr: IpNet) -> Secondaries {
    let mut subnet = None;
    let mut addresses = Vec::new();
    for s in &nic.subnets {
        for a in s.addresses.iter().filter(|a| !a.primary && cidr.contains(&a.ip)) {
            subnet.get_or_insert(s.prefix);
            addresses.push(a.ip);
        }
    }
    addresses.sort();
    addresses.dedup();
    Secondaries { subnet, addresses }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NICS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<Interfaces>
  <Interface MacAddress="000D3A6E7F0B" IsPrimary="true">
    <IPSubnet Prefix="10.240.0.0/16">
      <IPAddress Address="10.240.0.4" IsPrimary="true"/>
      <IPAddress Address="10.240.0.6" IsPrimary="false"/>
      <IPAddress Address="10.240.0.5" IsPrimary="false"/>
    </IPSubnet>
  </Interface>
  <Interface MacAddress="000d3a6e7f0c" IsPrimary="false">
    <IPSubnet Prefix="10.241.0.0/24">
      <IPAddress Address="10.241.0.4" IsPrimary="true"/>
      <IPAddress Address="10.241.0.9" IsPrimary="false"/>
    </IPSubnet>
  </Interface>
</Interfaces>"#;

    #[test]
    fn the_primary_nic_s_secondaries_inside_the_pool() {
        let inv = parse(TWO_NICS).unwrap();
        assert_eq!(inv.interfaces.len(), 2);
        let nic = inv.nic(None).unwrap();
        assert_eq!(nic.mac, "000d3a6e7f0b");
        let s = secondaries(nic, "10.240.0.0/16".parse().unwrap());
        assert_eq!(s.subnet, Some("10.240.0.0/16".parse().unwrap()));
        assert_eq!(s.addresses, ["10.240.0.5".parse::<IpAddr>().unwrap(), "10.240.0.6".parse().unwrap()]);
        // Outside the pool's cidr: nothing.
        assert!(secondaries(nic, "10.99.0.0/16".parse().unwrap()).addresses.is_empty());
    }

    #[test]
    fn interface_mac_picks_a_nic_in_any_spelling() {
        let inv = parse(TWO_NICS).unwrap();
        for m in ["00:0D:3A:6E:7F:0C", "00-0d-3a-6e-7f-0c", "000D3A6E7F0C"] {
            let nic = inv.nic(Some(m)).unwrap();
            assert_eq!(secondaries(nic, "10.241.0.0/24".parse().unwrap()).addresses.len(), 1);
        }
        assert!(inv.nic(Some("00:00:00:00:00:01")).unwrap_err().contains("no interface with MAC"));
        assert!(inv.nic(Some("zz")).unwrap_err().contains("not a MAC"));
    }

    #[test]
    fn empty_and_ipv6_only_documents() {
        let inv = parse("<Interfaces></Interfaces>").unwrap();
        assert!(inv.interfaces.is_empty());
        assert!(inv.nic(None).is_err());
        let v6 = r#"<Interfaces><Interface MacAddress="0a0b0c0d0e0f" IsPrimary="true">
            <IPSubnet Prefix="fd00:240::/64"><IPAddress Address="fd00:240::4" IsPrimary="true"/>
            <IPAddress Address="fd00:240::10" IsPrimary="false"/></IPSubnet></Interface></Interfaces>"#;
        let inv = parse(v6).unwrap();
        let s = secondaries(inv.nic(None).unwrap(), "fd00:240::/64".parse().unwrap());
        assert_eq!(s.addresses, ["fd00:240::10".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn malformed_documents_are_errors_never_a_smaller_inventory() {
        for bad in [
            "",
            "not xml",
            "<Interfaces><Interface MacAddress=\"xyz\"/></Interfaces>",
            "<Interfaces><Interface MacAddress=\"000d3a6e7f0b\"><IPSubnet Prefix=\"10.0.0.0/33\"/></Interface></Interfaces>",
            "<Interfaces><Interface MacAddress=\"000d3a6e7f0b\"><IPSubnet Prefix=\"10.0.0.0/24\"><IPAddress Address=\"10.0.1.5\"/></IPSubnet></Interface></Interfaces>",
            "<Interfaces><Interface MacAddress=\"000d3a6e7f0b\" IsPrimary=\"maybe\"/></Interfaces>",
            "<Interfaces><Interface MacAddress=\"000d3a6e7f0b\"><IPSubnet Prefix=\"10.0.0.0/24\"><IPAddress Address=\"10.0.0.5\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
