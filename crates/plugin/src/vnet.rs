//! vnet pods on the routed dataplane: the pod's address is on the VNet subnet itself, routed to
//! its veth as a /32, so the node answers ARP (NDP) for it on its uplink, the link that holds the
//! node's own address on that subnet, with a proxy neighbour entry per pod address (Azure CNI's
//! transparent mode). Nothing else: no SNAT, no routes in the VNet.

use crate::backend::IpamBackend;
use ipnet::IpNet;
use podnet_dataplane::Netlink;
use podnet_ipam::{Handle, Source};
use std::net::IpAddr;

/// The node's link on the VNet subnet `cidr`: the one holding an address inside it (one dump).
fn uplink(nl: &mut Netlink, cidr: IpNet) -> Result<Option<(u32, String)>, String> {
    let found = nl.all_addresses().map_err(|e| e.to_string())?.into_iter().find(|(_, a)| cidr.contains(&a.addr()));
    let Some((index, _)) = found else { return Ok(None) };
    let name = nl.link_by_index(index).map_err(|e| e.to_string())?.map(|l| l.name).unwrap_or_default();
    Ok(Some((index, name)))
}

/// The vnet pools' CIDRs of the network (in-process IPAM only).
pub(crate) fn vnet_cidrs(backend: &IpamBackend) -> Vec<IpNet> {
    match backend {
        IpamBackend::InProcess(ipam) => {
            ipam.config().pools.iter().filter(|p| p.source == Source::Vnet).map(|p| p.cidr()).collect()
        }
        IpamBackend::Exec(_) => Vec::new(),
    }
}

/// Answer for `ips` that lie in one of the vnet pools' `cidrs` on the uplink of their subnet; the
/// entries made, so a failed ADD takes exactly those back.
pub(crate) fn announce(nl: &mut Netlink, cidrs: &[IpNet], ips: &[IpAddr]) -> Result<Vec<(u32, IpAddr)>, String> {
    let mut made = Vec::new();
    for ip in ips {
        let Some(cidr) = cidrs.iter().find(|c| c.contains(ip)) else { continue };
        let result = (|| {
            let (index, name) = uplink(nl, *cidr)?.ok_or_else(|| {
                format!("no link of this node holds an address in the vnet pool's subnet {cidr}: the pod {ip} would be unreachable")
            })?;
            if ip.is_ipv6() {
                podnet_dataplane::sysctl::ensure(&format!("net/ipv6/conf/{name}/proxy_ndp"), "1")
                    .map_err(|e| format!("enabling proxy_ndp on {name}: {e}"))?;
            }
            nl.add_proxy(index, *ip).map_err(|e| e.to_string())?;
            Ok::<_, String>(index)
        })();
        match result {
            Ok(index) => made.push((index, *ip)),
            Err(e) => {
                withdraw_entries(nl, &made);
                return Err(e);
            }
        }
    }
    Ok(made)
}

pub(crate) fn withdraw_entries(nl: &mut Netlink, made: &[(u32, IpAddr)]) {
    for (index, ip) in made {
        if let Err(e) = nl.delete_proxy(*index, *ip) {
            tracing::error!("removing the proxy neighbour entry of {ip}: {e}");
        }
    }
}

/// Stop answering for the vnet addresses `h` holds (DEL, GC), before they are released: a node
/// must never answer for an address it no longer has.
pub(crate) fn withdraw(nl: &mut Netlink, backend: &IpamBackend, h: &Handle) -> Result<(), String> {
    let cidrs = vnet_cidrs(backend);
    if cidrs.is_empty() {
        return Ok(());
    }
    let IpamBackend::InProcess(ipam) = backend else { return Ok(()) };
    let held = ipam.addresses_of(h).map_err(|e| e.to_string())?;
    for ip in held {
        let Some(cidr) = cidrs.iter().find(|c| c.contains(&ip)) else { continue };
        if let Some((index, _)) = uplink(nl, *cidr)? {
            nl.delete_proxy(index, ip).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
