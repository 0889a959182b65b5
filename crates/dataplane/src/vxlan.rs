//! The VXLAN device `podnet.vxlan`: the overlay between nodes that share no subnet.

use crate::netlink::{link_of, Link, Netlink, NlError, NlResult};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::Ipv4Addr;

/// podnet's VXLAN device (podnetd makes it; the plugin takes its MTU for pods).
pub const VXLAN_DEVICE: &str = "podnet.vxlan";

/// What the device must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// The node's address: the outer source of encapsulated frames.
    pub local: Ipv4Addr,
    /// The uplink the outer packets leave by.
    pub uplink: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// The device as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub link: Link,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    pub uplink: Option<u32>,
}

impl VxlanLink {
    /// Whether the device already matches `spec` (its MTU aside, which can change in place).
    pub fn matches(&self, spec: &VxlanSpec) -> bool {
        self.vni == Some(spec.vni)
            && self.port == Some(spec.port)
            && self.local == Some(spec.local)
            && self.uplink == Some(spec.uplink)
            && self.link.mac == Some(spec.mac)
    }
}

impl Netlink {
    /// The VXLAN device called `name`, if there is one (a link of another kind is an error).
    pub fn vxlan_by_name(&mut self, name: &str) -> NlResult<Option<VxlanLink>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = match self.request(|| format!("looking up link {name}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        for m in replies {
            let RouteNetlinkMessage::NewLink(l) = &m else { continue };
            let mut out = VxlanLink {
                link: link_of(m.clone()).expect("a link"),
                vni: None,
                port: None,
                local: None,
                uplink: None,
            };
            if out.link.kind.as_deref() != Some("vxlan") {
                return Err(NlError { op: format!("{name} exists and is not a VXLAN device"), errno: libc::EEXIST });
            }
            for a in &l.attributes {
                let LinkAttribute::LinkInfo(infos) = a else { continue };
                for i in infos {
                    let LinkInfo::Data(InfoData::Vxlan(v)) = i else { continue };
                    for x in v {
                        match x {
                            InfoVxlan::Id(id) => out.vni = Some(*id),
                            InfoVxlan::Port(p) => out.port = Some(*p),
                            InfoVxlan::Local(ip) => out.local = Some(*ip),
                            InfoVxlan::Link(i) => out.uplink = Some(*i),
                            _ => {}
                        }
                    }
                }
            }
            return Ok(Some(out));
        }
        Ok(None)
    }

    /// Create the device, up, with learning off (every peer is programmed) and the given MAC.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(spec.name.clone()));
        msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
        msg.attributes.push(LinkAttribute::Address(spec.mac.to_vec()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(spec.vni),
                InfoVxlan::Local(spec.local),
                InfoVxlan::Link(spec.uplink),
                InfoVxlan::Port(spec.port),
                InfoVxlan::Learning(false),
            ])),
        ]));
        let op = || format!("creating VXLAN device {}", spec.name);
        self.request(op, RouteNetlinkMessage::NewLink(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(|_| ())
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(|| format!("setting the MTU of link {index}"), RouteNetlinkMessage::SetLink(msg), 0)
    }
}
