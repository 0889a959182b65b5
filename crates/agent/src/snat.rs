//! SNAT for pools with `natOutgoing`: the nftables table `inet podnet`, which podnetd owns whole
//! (it touches no other table). Traffic from those pools to anywhere outside every pool of the
//! network and outside `--non-masquerade-cidr` is masqueraded to the node's address (Azure's
//! ip-masq-agent, Calico's natOutgoing). The pools and the exceptions are sets, and every change
//! is one nftables transaction that flushes and refills them with the rules: an update never
//! leaves a moment with no rule.
//!
//! The document is plain nftables JSON (libnftables-json), applied by the `nftables` crate, which
//! runs `nft -j -f -` for it: one program, no shell. Sets, chains and rules are generic so that
//! NetworkPolicy tables can join later.

use ipnet::IpNet;
use serde_json::{json, Value};

pub const TABLE: &str = "podnet";

/// What the table expresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnatPolicy {
    /// Every pool of the network: traffic to them is never masqueraded.
    pub pools: Vec<IpNet>,
    /// Pools with `natOutgoing`.
    pub masquerade: Vec<IpNet>,
    /// `--non-masquerade-cidr`.
    pub exceptions: Vec<IpNet>,
}

fn family_nets(nets: &[IpNet], v4: bool) -> Vec<Value> {
    nets.iter()
        .filter(|n| n.addr().is_ipv4() == v4)
        .map(|n| json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}}))
        .collect()
}

fn set(name: &str, v4: bool) -> Value {
    json!({"family": "inet", "table": TABLE, "name": name, "type": if v4 { "ipv4_addr" } else { "ipv6_addr" }, "flags": ["interval"]})
}

/// The sets of the table: (name, family is IPv4, elements).
fn sets(policy: &SnatPolicy) -> Vec<(String, bool, Vec<Value>)> {
    let mut out = Vec::new();
    for (v4, suffix) in [(true, "4"), (false, "6")] {
        out.push((format!("pools{suffix}"), v4, family_nets(&policy.pools, v4)));
        out.push((format!("masquerade{suffix}"), v4, family_nets(&policy.masquerade, v4)));
        out.push((format!("exceptions{suffix}"), v4, family_nets(&policy.exceptions, v4)));
    }
    out
}

/// The whole transaction that makes the table say `policy` (pure: tested without nft).
pub fn transaction(policy: &SnatPolicy) -> Value {
    let mut cmds = vec![json!({"add": {"table": {"family": "inet", "name": TABLE}}})];
    for (name, v4, _) in sets(policy) {
        cmds.push(json!({"add": {"set": set(&name, v4)}}));
    }
    let chain = json!({"family": "inet", "table": TABLE, "name": "postrouting"});
    cmds.push(json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": "postrouting",
        "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}}));
    cmds.push(json!({"flush": {"chain": chain}}));
    for (name, _, elems) in sets(policy) {
        cmds.push(json!({"flush": {"set": {"family": "inet", "table": TABLE, "name": name}}}));
        if !elems.is_empty() {
            cmds.push(json!({"add": {"element": {"family": "inet", "table": TABLE, "name": name, "elem": elems}}}));
        }
    }
    for (proto, suffix) in [("ip", "4"), ("ip6", "6")] {
        let field = |f: &str| json!({"payload": {"protocol": proto, "field": f}});
        let expr = json!([
            {"match": {"op": "==", "left": field("saddr"), "right": format!("@masquerade{suffix}")}},
            {"match": {"op": "!=", "left": field("daddr"), "right": format!("@pools{suffix}")}},
            {"match": {"op": "!=", "left": field("daddr"), "right": format!("@exceptions{suffix}")}},
            {"masquerade": null}
        ]);
        cmds.push(json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": "postrouting", "expr": expr}}}));
    }
    json!({"nftables": cmds})
}

/// Apply the transaction (one `nft` run: all of it or none of it).
pub fn apply(policy: &SnatPolicy) -> Result<(), String> {
    let doc = transaction(policy).to_string();
    nftables::helper::apply_ruleset_raw(&doc, nftables::helper::DEFAULT_NFT, nftables::helper::DEFAULT_ARGS)
        .map(|_| ())
        .map_err(|e| format!("applying the nftables table inet {TABLE}: {}", nft_error(e)))
}

/// What a drift check compares: the sets' elements by set name, and the masquerade rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub sets: Vec<(String, Vec<String>)>,
    pub masquerade_rules: usize,
}

/// What the kernel's table holds now (none when the table is missing).
pub fn current() -> Result<Option<TableState>, String> {
    let args = ["list", "table", "inet", TABLE];
    let raw = match nftables::helper::get_current_ruleset_raw(nftables::helper::DEFAULT_NFT, &args) {
        Ok(raw) => raw,
        // No such table yet.
        Err(nftables::helper::NftablesError::NftFailed { stderr, .. }) if stderr.contains("No such file") => {
            return Ok(None)
        }
        Err(nftables::helper::NftablesError::NftFailed { stderr, .. }) => {
            return Err(format!("listing the nftables table inet {TABLE}: {}", stderr.trim()))
        }
        Err(e) => return Err(format!("listing the nftables table inet {TABLE}: {e}")),
    };
    let v: Value = serde_json::from_str(&raw).map_err(|e| format!("nft's listing does not decode: {e}"))?;
    let mut sets = Vec::new();
    let mut rules = 0;
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(s) = item.get("set") {
            let elems = s["elem"].as_array().map(|e| e.iter().map(elem_text).collect()).unwrap_or_default();
            sets.push((s["name"].as_str().unwrap_or_default().to_string(), elems));
        }
        if item.get("rule").is_some_and(|r| r.to_string().contains("masquerade")) {
            rules += 1;
        }
    }
    sets.sort();
    Ok(Some(TableState { sets, masquerade_rules: rules }))
}

/// An element as text: `10.0.0.0/8`, whatever form nft listed it in.
fn elem_text(e: &Value) -> String {
    match (e.get("prefix"), e.as_str()) {
        (Some(p), _) => format!("{}/{}", p["addr"].as_str().unwrap_or_default(), p["len"]),
        (None, Some(s)) => s.to_string(),
        _ => e.to_string(),
    }
}

/// What [`current`] should find for `policy`.
pub fn expected(policy: &SnatPolicy) -> TableState {
    let mut sets: Vec<(String, Vec<String>)> =
        sets(policy).into_iter().map(|(name, _, elems)| (name, elems.iter().map(elem_text).collect())).collect();
    sets.sort();
    TableState { sets, masquerade_rules: 2 }
}

/// Whether the `nft` program is there (the nftables package): podnetd needs it for the table.
/// Looked up on PATH as the crate will run it, without starting anything.
pub fn nft_installed() -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join("nft")).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Remove the table (uninstall). A table already gone is fine.
pub fn remove() -> Result<(), String> {
    if current()?.is_none() {
        return Ok(());
    }
    let doc = json!({"nftables": [{"delete": {"table": {"family": "inet", "name": TABLE}}}]}).to_string();
    nftables::helper::apply_ruleset_raw(&doc, nftables::helper::DEFAULT_NFT, nftables::helper::DEFAULT_ARGS)
        .map(|_| ())
        .map_err(|e| format!("deleting the nftables table inet {TABLE}: {}", nft_error(e)))
}

/// nft's own words when it fails (the crate's message leaves them out).
fn nft_error(e: nftables::helper::NftablesError) -> String {
    match e {
        nftables::helper::NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_transaction_declares_flushes_and_refills_with_a_rule_per_family() {
        let policy = SnatPolicy {
            pools: vec!["10.244.0.0/16".parse().unwrap(), "fd00:244::/56".parse().unwrap()],
            masquerade: vec!["10.244.0.0/16".parse().unwrap()],
            exceptions: vec!["192.168.0.0/16".parse().unwrap()],
        };
        let doc = transaction(&policy);
        let cmds = doc["nftables"].as_array().unwrap();
        let verbs: Vec<&str> = cmds.iter().map(|c| c.as_object().unwrap().keys().next().unwrap().as_str()).collect();
        // Declarations first, then flushes and refills, the rules last: nothing in between.
        let first_flush = verbs.iter().position(|v| *v == "flush").unwrap();
        assert!(verbs[..first_flush].iter().all(|v| *v == "add"));
        assert_eq!(cmds.iter().filter(|c| c.to_string().contains("masquerade\":null")).count(), 2);
        let TableState { sets, masquerade_rules } = expected(&policy);
        assert_eq!(masquerade_rules, 2);
        assert!(sets.contains(&("masquerade4".to_string(), vec!["10.244.0.0/16".to_string()])));
        assert!(sets.contains(&("masquerade6".to_string(), vec![])));
        assert!(sets.contains(&("exceptions4".to_string(), vec!["192.168.0.0/16".to_string()])));
    }
}
