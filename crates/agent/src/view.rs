//! The agent's picture of the cluster: every block lease and node record, built from a snapshot
//! and kept current by the watch's events (pure: no I/O). Routes are computed from it alone, so a
//! restarted agent that reads the same cluster computes the same routes.

use crate::desired::{desired, Desired, Me};
use ipnet::IpNet;
use podnet_ipam::{BlockLease, ClusterEvent, ClusterSnapshot, NodeRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    pub leases: BTreeMap<IpNet, BlockLease>,
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl ClusterView {
    /// The view of a snapshot: node records not renewed within `ttl` (local store) count as gone;
    /// from then on the watch says which nodes come and go.
    pub fn from_snapshot(s: &ClusterSnapshot, now: SystemTime, ttl: Duration) -> ClusterView {
        ClusterView {
            leases: s.leases.iter().map(|l| (l.block, l.clone())).collect(),
            nodes: s.nodes.iter().filter(|n| n.is_live(now, ttl)).map(|n| (n.node.clone(), n.clone())).collect(),
        }
    }

    /// Take in a watch's events. Returns the blocks newly leased (or moved to another node):
    /// those whose route is now due, for the route programming latency.
    pub fn apply(&mut self, events: Vec<ClusterEvent>) -> Vec<IpNet> {
        let mut fresh = Vec::new();
        for e in events {
            match e {
                ClusterEvent::Leased(lease) => {
                    if self.leases.get(&lease.block).is_none_or(|old| old.node != lease.node) {
                        fresh.push(lease.block);
                    }
                    self.leases.insert(lease.block, lease);
                }
                ClusterEvent::Released(block) => {
                    self.leases.remove(&block);
                }
                ClusterEvent::NodeUp(record) => {
                    // A node coming (back) up makes its blocks' routes due.
                    if !self.nodes.contains_key(&record.node) {
                        fresh.extend(self.leases.values().filter(|l| l.node == record.node).map(|l| l.block));
                    }
                    self.nodes.insert(record.node.clone(), record);
                }
                ClusterEvent::NodeGone(node) => {
                    self.nodes.remove(&node);
                }
            }
        }
        fresh
    }

    /// Live nodes: those whose record stands (etcd's expire with their lease; the local store's
    /// watch reports a record not renewed within the TTL as gone).
    pub fn live(&self) -> Vec<NodeRecord> {
        self.nodes.values().cloned().collect()
    }

    /// Nodes holding leases whose record is gone: dead (their blocks get no route).
    pub fn dead(&self) -> BTreeSet<String> {
        self.leases.values().map(|l| l.node.clone()).filter(|n| !self.nodes.contains_key(n)).collect()
    }

    pub fn desired(&self, me: &Me) -> Desired {
        let leases: Vec<BlockLease> = self.leases.values().cloned().collect();
        desired(me, &leases, &self.live())
    }

    /// Leased blocks per pool.
    pub fn leased_by_pool(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for l in self.leases.values() {
            *out.entry(l.pool.clone()).or_insert(0) += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(block: &str, node: &str) -> BlockLease {
        BlockLease { block: block.parse().unwrap(), pool: "p".into(), node: node.into(), leased_at: String::new() }
    }

    fn node(name: &str, heartbeat: Option<SystemTime>) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            ip: "192.168.10.2".parse().unwrap(),
            ipv6: None,
            encap: "none".into(),
            vtep_mac: None,
            vtep_ip: None,
            started_at: String::new(),
            heartbeat_at: heartbeat.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        }
    }

    #[test]
    fn events_keep_the_view_and_name_the_routes_due() {
        let snapshot =
            ClusterSnapshot { leases: vec![lease("10.0.0.0/24", "b")], nodes: vec![node("b", None)], revision: 7 };
        let mut v = ClusterView::from_snapshot(&snapshot, SystemTime::now(), Duration::from_secs(20));
        let fresh = v.apply(vec![
            ClusterEvent::Leased(lease("10.0.1.0/24", "c")),
            ClusterEvent::Leased(lease("10.0.0.0/24", "b")), // rewritten, same owner: not due again
            ClusterEvent::NodeUp(node("c", None)),
        ]);
        assert_eq!(fresh, ["10.0.1.0/24".parse::<IpNet>().unwrap(), "10.0.1.0/24".parse().unwrap()]);
        assert_eq!(v.apply(vec![ClusterEvent::Released("10.0.1.0/24".parse().unwrap())]), []);
        assert_eq!(v.leases.len(), 1);
        v.apply(vec![ClusterEvent::NodeGone("b".into())]);
        assert_eq!(v.dead().into_iter().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_snapshot_s_local_record_not_renewed_within_the_ttl_is_dead() {
        let now = SystemTime::now();
        let snapshot = ClusterSnapshot {
            leases: vec![lease("10.0.0.0/24", "old"), lease("10.0.1.0/24", "new")],
            nodes: vec![
                node("old", Some(now - Duration::from_secs(30))),
                node("new", Some(now - Duration::from_secs(5))),
            ],
            revision: 0,
        };
        let v = ClusterView::from_snapshot(&snapshot, now, Duration::from_secs(20));
        assert_eq!(v.live().iter().map(|n| n.node.as_str()).collect::<Vec<_>>(), ["new"]);
        assert_eq!(v.dead().into_iter().collect::<Vec<_>>(), ["old"]);
        assert_eq!(v.leased_by_pool().get("p"), Some(&2));
    }
}
