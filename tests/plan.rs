//! `podnetctl plan` as a user runs it: the JSON shape, the table, exit codes, errors, and
//! `--from-config` on a conflist. The arithmetic itself: `crates/plan/tests/cases.rs`.
mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(PODNETCTL).arg("plan").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_json_has_a_row_per_mode_and_the_contract_s_fields() {
    let (code, out, err) = plan(&["--nodes", "400", "--max-pods", "110", "--vnet-cidr", "10.240.0.0/16", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let modes = v["modes"].as_array().unwrap();
    assert_eq!(modes.iter().map(|m| m["mode"].as_str().unwrap()).collect::<Vec<_>>(), ["vnet", "overlay", "range"]);
    for m in modes {
        for k in [
            "vnetAddresses",
            "podAddresses",
            "cloudRoutes",
            "hostRoutesPerNode",
            "blocksPerNode",
            "maxNodes",
            "fits",
            "limitedBy",
        ] {
            assert!(m.get(k).is_some(), "{k} in {m}");
        }
    }
    assert_eq!(modes[0]["blocksPerNode"], Value::Null);
    assert_eq!(modes[2]["limitedBy"], "pod-cidr");
    assert!(v["warnings"].as_array().unwrap().len() == 1 && v["errors"].as_array().unwrap().is_empty());
    // Not fitting is still a plan: exit 0.
    let (code, out, _) = plan(&["--nodes", "100000", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16"]);
    assert_eq!(code, 0);
    assert!(out.contains("no mode fits"), "{out}");
    let (_, out, _) = plan(&["--nodes", "10", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16"]);
    assert!(out.contains("* vnet: fits with the most room") && out.contains("LIMITED BY"), "{out}");
}

#[test]
fn bad_input_exits_2_naming_the_fix() {
    for (args, want) in [
        (vec!["--nodes", "10", "--max-pods", "30"], "--vnet-cidr is required"),
        (vec!["--nodes", "10", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/33"], "invalid value"),
        (vec!["--nodes", "-1", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16"], "unexpected argument"),
        (vec!["--nodes", "0", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16"], "--nodes must be at least 1"),
        (vec!["--nodes", "5", "--max-pods", "30", "--vnet-cidr", "10.0.0.0/8"], "overlaps --vnet-cidr 10.0.0.0/8"),
        (
            vec!["--nodes", "5", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16", "--block-size", "40"],
            "--block-size 40",
        ),
    ] {
        let (code, out, err) = plan(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?} should say {want:?}: {err}");
    }
    // -o json carries the errors too, with exit 2.
    let (code, out, _) = plan(&["--nodes", "0", "--max-pods", "30", "--vnet-cidr", "10.240.0.0/16", "-o", "json"]);
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["modes"].as_array().unwrap().is_empty() && !v["errors"].as_array().unwrap().is_empty());
}

#[test]
fn from_config_checks_the_running_design() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("10-podnet.conflist");
    write_conflist(
        &list,
        &json!({"name": "podnet", "type": "podnet", "dataplane": "routed", "dataDir": dir.path().join("data"), "ipam": {"type": "podnet-ipam", "node": "n1",
            "pools": [{"name": "v4", "cidr": "10.244.0.0/22", "blockSize": 26}, {"name": "v6", "cidr": "fd00:10:244::/56", "blockSize": 122},
                      {"name": "vnet", "cidr": "10.240.0.0/16", "source": "vnet"}]}}),
    );
    let out = Command::new(PODNETCTL)
        .args([
            "--config",
            list.to_str().unwrap(),
            "-o",
            "json",
            "plan",
            "--from-config",
            "--nodes",
            "20",
            "--max-pods",
            "64",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let overlay = &v["modes"][1];
    // /22 of /26 blocks: 16 blocks; routed: 64 per block, one per node.
    assert_eq!((overlay["blocksPerNode"].as_u64(), overlay["maxNodes"].as_u64()), (Some(1), Some(16)), "{v}");
    assert_eq!(overlay["fits"], false);
    // Dual-stack from the pools: range counts two routes per node.
    assert_eq!(v["modes"][2]["cloudRoutes"], 40);
}
