//! Hand-computed designs, and properties: max nodes grows with every CIDR and the route limit,
//! and `fits` agrees with it.

use podnet_ipam::Dataplane;
use podnet_plan::{design, plan, Limit, Mode, ModePlan, Plan};
use proptest::prelude::*;

fn row(p: &Plan, m: Mode) -> &ModePlan {
    p.modes.iter().find(|r| r.mode == m).unwrap()
}

#[test]
fn four_hundred_nodes_of_110_pods_in_a_16_vnet_with_a_16_pod_cidr_and_24_blocks() {
    let p = plan(&design("10.240.0.0/16".parse().unwrap(), 400, 110));
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // U = 65,536 - 5 = 65,531.
    let v = row(&p, Mode::Vnet);
    assert_eq!((v.vnet_addresses, v.pod_addresses, v.cloud_routes, v.host_routes_per_node), (44_400, 44_000, 0, 0));
    assert_eq!((v.max_nodes, v.fits, v.limited_by, v.blocks_per_node), (590, true, Limit::VnetAddresses, None));
    // A /24 block keeps 3 on a bridge: 253 pods, one block per node; 256 blocks.
    let o = row(&p, Mode::Overlay);
    assert_eq!((o.vnet_addresses, o.blocks_per_node, o.host_routes_per_node), (400, Some(1), 399));
    assert_eq!((o.max_nodes, o.fits, o.limited_by), (256, false, Limit::PodCidr));
    let r = row(&p, Mode::Range);
    assert_eq!((r.cloud_routes, r.host_routes_per_node, r.blocks_per_node), (400, 399, Some(1)));
    assert_eq!((r.max_nodes, r.fits, r.limited_by), (256, false, Limit::PodCidr));
    assert!(p.warnings.iter().any(|w| w.contains("256 blocks") && w.contains("borrow")), "{:?}", p.warnings);
    assert_eq!(p.best(), Some(Mode::Vnet));
}

#[test]
fn the_same_dual_stack_halves_the_route_table_for_range() {
    let mut d = design("10.240.0.0/16".parse().unwrap(), 400, 110);
    d.dual_stack = true;
    let p = plan(&d);
    let r = row(&p, Mode::Range);
    assert_eq!((r.cloud_routes, r.max_nodes, r.limited_by), (800, 200, Limit::RouteLimit));
    // vnet and overlay rows count IPv4.
    assert_eq!(row(&p, Mode::Vnet).vnet_addresses, 44_400);
    assert_eq!(row(&p, Mode::Overlay).max_nodes, 256);
}

#[test]
fn six_nodes_on_a_24_pod_cidr_with_26_blocks_warn() {
    let mut d = design("10.240.0.0/16".parse().unwrap(), 6, 30);
    d.pod_cidr = "10.244.0.0/24".parse().unwrap();
    d.block_size = 26;
    let p = plan(&d);
    let o = row(&p, Mode::Overlay);
    assert_eq!((o.blocks_per_node, o.max_nodes, o.fits), (Some(1), 4, false));
    assert!(
        p.warnings.iter().any(|w| w.contains("4 blocks of /26") && w.contains("6 nodes need 6")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn a_22_vnet_with_250_pods_per_node() {
    let p = plan(&design("10.240.0.0/22".parse().unwrap(), 10, 250));
    // U = 1,024 - 5 = 1,019; 251 addresses per node.
    let v = row(&p, Mode::Vnet);
    assert_eq!((v.max_nodes, v.fits, v.vnet_addresses), (4, false, 2_510));
    // 250 pods fit a /24 on a bridge (253) in one block.
    assert_eq!(row(&p, Mode::Overlay).blocks_per_node, Some(1));
}

#[test]
fn route_limits_400_and_600() {
    for (limit, want) in [(400u64, 400u128), (600, 600)] {
        let mut d = design("10.240.0.0/16".parse().unwrap(), 500, 50);
        d.pod_cidr = "10.128.0.0/14".parse().unwrap(); // 1,024 node CIDRs of /24
        d.route_limit = limit;
        let r = row(&plan(&d), Mode::Range).clone();
        assert_eq!((r.max_nodes, r.limited_by, r.fits), (want, Limit::RouteLimit, want >= 500), "limit {limit}");
    }
}

#[test]
fn routed_blocks_hold_every_address_bridge_blocks_keep_three() {
    let mut d = design("10.240.0.0/16".parse().unwrap(), 10, 64);
    d.block_size = 26;
    assert_eq!(row(&plan(&d), Mode::Overlay).blocks_per_node, Some(2), "bridge: 61 per /26");
    d.dataplane = Dataplane::Routed;
    assert_eq!(row(&plan(&d), Mode::Overlay).blocks_per_node, Some(1), "routed: 64 per /26");
}

#[test]
fn max_pods_over_a_node_cidr_leaves_range_no_node() {
    let mut d = design("10.240.0.0/16".parse().unwrap(), 10, 300);
    d.node_cidr_size = 24;
    let p = plan(&d);
    let r = row(&p, Mode::Range);
    assert_eq!((r.max_nodes, r.limited_by, r.fits), (0, Limit::NodeCidr, false));
    assert!(p.warnings.iter().any(|w| w.contains("does not fit a /24 node CIDR")));
}

#[test]
fn ipv6_pod_cidrs() {
    let mut d = design("10.240.0.0/16".parse().unwrap(), 1000, 110);
    d.pod_cidr = "fd00:10:244::/56".parse().unwrap();
    d.block_size = 120;
    d.node_cidr_size = 64;
    d.dataplane = Dataplane::Routed;
    let p = plan(&d);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let o = row(&p, Mode::Overlay);
    // 65,536 blocks of /120, but the nodes need VNet addresses too: 65,531.
    assert_eq!((o.blocks_per_node, o.max_nodes, o.limited_by), (Some(1), 65_531, Limit::VnetAddresses));
    let r = row(&p, Mode::Range);
    assert_eq!((r.max_nodes, r.limited_by), (256, Limit::PodCidr));
}

#[test]
fn every_error_names_what_to_fix() {
    let base = || design("10.240.0.0/16".parse().unwrap(), 10, 30);
    type Change = Box<dyn Fn(&mut podnet_plan::Design)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|d| d.service_cidr = "10.244.128.0/17".parse().unwrap()),
            "--pod-cidr 10.244.0.0/16 overlaps --service-cidr",
        ),
        (Box::new(|d| d.pod_cidr = "172.16.0.0/12".parse().unwrap()), "overlaps Docker's bridge 172.17.0.0/16"),
        (Box::new(|d| d.vnet_cidr = "10.244.0.0/20".parse().unwrap()), "overlaps --vnet-cidr"),
        (Box::new(|d| d.nodes = 0), "--nodes must be at least 1"),
        (Box::new(|d| d.max_pods = 0), "--max-pods must be at least 1"),
        (Box::new(|d| d.block_size = 12), "--block-size 12 does not fit"),
        (Box::new(|d| d.node_cidr_size = 31), "--node-cidr-size 31 does not fit"),
        (
            Box::new(|d| {
                d.vnet_cidr = "10.240.0.0/30".parse().unwrap();
            }),
            "not even one node fits",
        ),
        (Box::new(|d| d.route_limit = 0), "--route-limit"),
    ];
    for (change, want) in cases {
        let mut d = base();
        change(&mut d);
        let p = plan(&d);
        assert!(p.modes.is_empty(), "{want}");
        assert!(p.errors.iter().any(|e| e.contains(want)), "{:?} should say {want:?}", p.errors);
    }
}

proptest! {
    #[test]
    fn max_nodes_grows_with_the_cidrs_and_the_route_limit(
        vnet in 16u8..28, pod in 10u8..20, block in 20u8..27, node_cidr in 21u8..26,
        nodes in 1u64..2000, pods in 1u64..250, limit in 1u64..1000, dual in any::<bool>(),
    ) {
        let mut d = design(format!("10.240.0.0/{vnet}").parse().unwrap(), nodes, pods);
        d.pod_cidr = format!("10.0.0.0/{pod}").parse::<ipnet::IpNet>().unwrap().trunc();
        d.service_cidr = "192.168.0.0/16".parse().unwrap();
        d.vnet_cidr = format!("100.64.0.0/{vnet}").parse::<ipnet::IpNet>().unwrap().trunc();
        d.block_size = block.max(pod);
        d.node_cidr_size = node_cidr.max(pod);
        d.route_limit = limit;
        d.dual_stack = dual;
        let p = plan(&d);
        prop_assume!(p.errors.is_empty());
        for r in &p.modes {
            prop_assert_eq!(r.fits, u128::from(nodes) <= r.max_nodes);
        }
        // A CIDR one bit larger, or a larger route limit, never lowers any mode's max.
        let mut wider = d.clone();
        wider.vnet_cidr = ipnet::IpNet::new(d.vnet_cidr.network(), vnet - 1).unwrap().trunc();
        wider.pod_cidr = ipnet::IpNet::new(d.pod_cidr.network(), pod.saturating_sub(1).max(8)).unwrap().trunc();
        wider.route_limit = limit + 100;
        let q = plan(&wider);
        prop_assume!(q.errors.is_empty());
        for (a, b) in p.modes.iter().zip(&q.modes) {
            prop_assert!(b.max_nodes >= a.max_nodes, "{:?} -> {:?}", a, b);
        }
    }
}
