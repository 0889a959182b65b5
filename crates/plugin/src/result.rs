//! The ADD result, built from the endpoint record and what the kernel made: pure, so every shape
//! is unit-tested.

use crate::records::EndpointRecord;
use podnet_cni::{CniResult, Interface, IpConfig, NetConf, Route};
use podnet_dataplane::Endpoint;
use std::net::IpAddr;

/// The ADD result: bridge (if any), host veth (no sandbox), pod interface (sandbox = netns), with
/// `ips[].interface` pointing at the pod interface so portmap and bandwidth can chain after podnet.
pub fn build_result(conf: &NetConf, rec: &EndpointRecord, ep: &Endpoint) -> CniResult {
    let mut result = conf.prev_result.clone().unwrap_or_default();
    if let Some((name, mac)) = &ep.bridge {
        result.interfaces.push(Interface { name: name.clone(), mac: mac.clone(), ..Default::default() });
    }
    result.interfaces.push(Interface { name: ep.host_veth.clone(), mac: ep.host_mac.clone(), ..Default::default() });
    result.interfaces.push(Interface {
        name: rec.ifname.clone(),
        mac: ep.pod_mac.clone(),
        mtu: Some(rec.mtu),
        sandbox: rec.netns.clone(),
        ..Default::default()
    });
    let pod_index = result.interfaces.len() - 1;
    for (ip, gw) in rec.ips.iter().zip(gateway_per_ip(rec)) {
        result.ips.push(IpConfig { address: *ip, gateway: gw, interface: Some(pod_index) });
    }
    for r in &rec.routes {
        result.routes.push(Route::new(r.dst, Some(r.gw)));
    }
    if result.dns.is_empty() {
        if let Some(dns) = conf.raw.get("dns").and_then(|d| serde_json::from_value(d.clone()).ok()) {
            result.dns = dns;
        }
    }
    result
}

fn gateway_per_ip(rec: &EndpointRecord) -> Vec<Option<IpAddr>> {
    rec.ips.iter().map(|ip| rec.gateways.iter().find(|g| g.is_ipv4() == ip.addr().is_ipv4()).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RouteRecord;
    use serde_json::json;

    fn record(ips: &[&str], gateways: &[&str]) -> EndpointRecord {
        EndpointRecord {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/p".into(),
            pod: Default::default(),
            dataplane: "bridge".into(),
            bridge: Some("podnet0".into()),
            host_veth: "pn0123456789ab".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: 1450,
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            gateways: gateways.iter().map(|s| s.parse().unwrap()).collect(),
            routes: gateways
                .iter()
                .map(|g| {
                    let gw: IpAddr = g.parse().unwrap();
                    let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                    RouteRecord { dst: dst.parse().unwrap(), gw }
                })
                .collect(),
            created_at: "2026-11-30T00:00:00Z".into(),
        }
    }

    fn endpoint(bridge: bool) -> Endpoint {
        Endpoint {
            host_veth: "pn0123456789ab".into(),
            host_mac: "ee:ee:ee:ee:ee:ee".into(),
            pod_mac: "02:00:00:00:00:01".into(),
            bridge: bridge.then(|| ("podnet0".to_string(), "02:aa:bb:cc:dd:ee".to_string())),
            pod_routes: Vec::new(),
            gateways: Vec::new(),
        }
    }

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut v = json!({"cniVersion": "1.0.0", "name": "n", "type": "podnet"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        NetConf::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn bridge_dual_stack_lists_bridge_veth_and_pod_with_each_familys_gateway() {
        let r = build_result(
            &conf(json!({"dns": {"nameservers": ["10.0.0.10"]}})),
            &record(&["10.1.0.5/24", "fd00::5/120"], &["10.1.0.1", "fd00::1"]),
            &endpoint(true),
        );
        let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["podnet0", "pn0123456789ab", "eth0"]);
        assert_eq!((r.interfaces[1].sandbox.as_str(), r.interfaces[2].sandbox.as_str()), ("", "/run/netns/p"));
        assert_eq!(r.interfaces[2].mtu, Some(1450));
        assert!(r.ips.iter().all(|ip| ip.interface == Some(2)), "ips point at the pod interface");
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.dns.nameservers, ["10.0.0.10"]);
    }

    #[test]
    fn routed_has_no_bridge_and_chained_results_keep_what_came_before() {
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "other"}], "ips": [], "dns": {"nameservers": ["1.1.1.1"]}});
        let r = build_result(
            &conf(json!({"prevResult": prev, "dns": {"nameservers": ["10.0.0.10"]}})),
            &record(&["10.1.0.5/32"], &["169.254.1.1"]),
            &endpoint(false),
        );
        let names: Vec<&str> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["other", "pn0123456789ab", "eth0"]);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.dns.nameservers, ["1.1.1.1"], "a chained plugin's DNS is kept");
    }
}
