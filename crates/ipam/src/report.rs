//! What `podnetctl ipam show | check` report: pool usage, and problems found by cross-checking
//! the node store, the block leases and the live endpoints. Read-only: nothing here changes state.

use crate::addr::to_u128;
use crate::error::IpamError;
use crate::model::{Claim, Handle};
use crate::node::AddrEntry;
use crate::Ipam;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    pub name: String,
    pub cidr: IpNet,
    pub source: String,
    pub block_size: u8,
    /// Addresses the pool can hand out, reserved ones excluded.
    pub capacity: u64,
    /// Leased blocks per node (overlay).
    pub blocks_by_node: BTreeMap<String, usize>,
    pub free_blocks: u64,
    /// This node's blocks in the pool.
    pub node_blocks: Vec<IpNet>,
    /// Addresses this node holds in the pool.
    pub used: usize,
    /// Addresses still free in this node's blocks (range: in the range).
    pub free: u64,
    /// Addresses of the pool held by a node other than their block's owner (cluster-wide).
    pub borrowed: usize,
    pub disabled: bool,
}

/// Per pool: size, blocks leased per node, addresses used and free on this node.
pub fn show(ipam: &Ipam) -> Result<Vec<PoolReport>, IpamError> {
    let leases = ipam.cluster.leases(&ipam.deadline)?;
    let borrowed = borrowed_anywhere(ipam, &leases)?;
    usage(ipam, &leases, &borrowed)
}

/// [`show`] from leases the caller already has (podnetd's view of the cluster): no cluster-store
/// request. Borrowed counts are left at zero.
pub fn show_with_leases(ipam: &Ipam, leases: &[crate::BlockLease]) -> Result<Vec<PoolReport>, IpamError> {
    usage(ipam, leases, &[])
}

fn usage(ipam: &Ipam, leases: &[crate::BlockLease], borrowed: &[Claim]) -> Result<Vec<PoolReport>, IpamError> {
    let allocations = ipam.allocations()?;
    let node_blocks: Vec<IpNet> = if ipam.node.exists() { ipam.node.lock()?.blocks()? } else { Vec::new() };
    let mut out = Vec::new();
    for source in &ipam.sources {
        let pool = source.pool();
        let used = allocations.iter().filter(|a| a.pool == pool.name()).count();
        let usage = source.usage(leases, &node_blocks, used);
        let mut by_node = BTreeMap::new();
        for l in leases.iter().filter(|l| pool.cidr().contains(&l.block)) {
            *by_node.entry(l.node.clone()).or_insert(0) += 1;
        }
        out.push(PoolReport {
            name: pool.name().to_string(),
            cidr: pool.cidr(),
            source: pool.source.as_str().to_string(),
            block_size: pool.block_len,
            capacity: saturate(usage.capacity),
            blocks_by_node: by_node,
            free_blocks: saturate(usage.free_blocks),
            node_blocks: usage.node_blocks,
            used,
            free: saturate(usage.free),
            borrowed: borrowed.iter().filter(|c| pool.cidr().contains(&c.ip)).count(),
            disabled: pool.cfg.disabled,
        });
    }
    Ok(out)
}

/// Claims held by a node other than their block's owner (or in a block no node leases), read
/// only where borrowing can happen.
fn borrowed_anywhere(ipam: &Ipam, leases: &[crate::BlockLease]) -> Result<Vec<Claim>, IpamError> {
    if !ipam.may_claim() {
        return Ok(Vec::new());
    }
    let owner: HashMap<IpNet, &str> = leases.iter().map(|l| (l.block, l.node.as_str())).collect();
    Ok(ipam
        .cluster
        .claims(&ipam.deadline)?
        .into_iter()
        .filter(|c| owner.get(&c.block) != Some(&c.node.as_str()))
        .collect())
}

/// An address one node borrows from another node's block.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BorrowedAddress {
    pub ip: IpAddr,
    pub block: IpNet,
    /// The node leasing the block (none: the block was handed back while lent).
    pub owner: Option<String>,
    pub borrower: String,
    pub handle: Handle,
}

/// Addresses this node borrows, and addresses borrowed from its blocks: allowed in pools with
/// `allowBorrowing`, and reported because each one is a /32 route of its own.
pub fn borrowed(ipam: &Ipam) -> Result<Vec<BorrowedAddress>, IpamError> {
    let leases = ipam.cluster.leases(&ipam.deadline)?;
    let me = ipam.cfg.node.as_str();
    let mut out: Vec<BorrowedAddress> = borrowed_anywhere(ipam, &leases)?
        .into_iter()
        .map(|c| BorrowedAddress {
            ip: c.ip,
            block: c.block,
            owner: leases.iter().find(|l| l.block == c.block).map(|l| l.node.clone()),
            borrower: c.node,
            handle: c.handle,
        })
        .filter(|b| b.borrower == me || b.owner.as_deref() == Some(me))
        .collect();
    out.sort_by_key(|b| to_u128(b.ip));
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    /// An address whose attachment has no live endpoint: GC or `ipam release IP` frees it.
    Leaked,
    /// One address held by two handles.
    Duplicate,
    /// An address outside this node's blocks (overlay) or outside its range, where borrowing
    /// is not allowed (or without the claim borrowing needs).
    Borrowed,
    /// An address of a lending block with no claim in the cluster store: another node could
    /// borrow it.
    Unclaimed,
    /// A block the node store records but the cluster store does not lease to this node.
    OrphanedBlock,
    /// A block the cluster store leases to this node that its node store does not record.
    UnrecordedLease,
    /// A state file that fails its checksum or does not decode.
    Corrupt,
    /// An address a pod holds that its source took back (vnet: the cloud removed it from the
    /// NIC): the pod keeps it until it goes; it is never handed out again.
    Withdrawn,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
}

/// Cross-check the node store, the block leases and the live endpoints (`live` says whether an
/// attachment's endpoint exists on this node).
pub fn check(ipam: &Ipam, live: &dyn Fn(&Handle) -> bool) -> Result<Vec<Problem>, IpamError> {
    let mut problems = Vec::new();
    let mut push = |kind, detail: String| problems.push(Problem { kind, detail });
    let node = &ipam.node;
    let (entries, node_blocks): (Vec<AddrEntry>, Vec<IpNet>) = if node.exists() {
        let guard = node.lock()?;
        (guard.entries()?, guard.blocks()?)
    } else {
        // A node with no store still sees the leases the cluster store holds for it.
        (Vec::new(), Vec::new())
    };
    let me = &ipam.cfg.node;
    let mine: Vec<IpNet> =
        ipam.cluster.leases(&ipam.deadline)?.into_iter().filter(|l| &l.node == me).map(|l| l.block).collect();
    let claims: HashSet<Claim> = if ipam.may_claim() {
        ipam.cluster.claims(&ipam.deadline)?.into_iter().filter(|c| &c.node == me).collect()
    } else {
        HashSet::new()
    };
    let mut by_ip: HashMap<IpAddr, Vec<&Handle>> = HashMap::new();
    for e in &entries {
        by_ip.entry(e.ip).or_default().push(&e.handle);
    }
    let mut dups: Vec<(&IpAddr, &Vec<&Handle>)> = by_ip.iter().filter(|(_, hs)| hs.len() > 1).collect();
    dups.sort_by_key(|(ip, _)| to_u128(**ip));
    for (ip, hs) in dups {
        let keys: Vec<String> = hs.iter().map(|h| h.key()).collect();
        push(ProblemKind::Duplicate, format!("{ip} is held by {}", keys.join(" and ")));
    }
    let mut reported_leak = HashSet::new();
    for e in &entries {
        let a = match node.read(e) {
            Ok(a) => a,
            Err(err) => {
                push(ProblemKind::Corrupt, err.to_string());
                continue;
            }
        };
        if !live(&e.handle) && reported_leak.insert(e.handle.clone()) {
            push(
                ProblemKind::Leaked,
                format!("{} is held by {} but no endpoint of it exists on this node", e.ip, e.handle.key()),
            );
        }
        let Some(source) = ipam.source(&a.pool) else {
            push(ProblemKind::Borrowed, format!("{} belongs to pool {}, which the config no longer has", e.ip, a.pool));
            continue;
        };
        let pool = source.pool();
        if source.withdrawn(e.ip) {
            push(ProblemKind::Withdrawn, format!(
                "{} ({}) is no longer one of the NIC's addresses in pool {} (the cloud took it back): its pod should be moved; the address is never handed out again",
                e.ip,
                e.handle.key(),
                pool.name()
            ));
            continue;
        }
        let inside = source.holds(e.ip, &node_blocks);
        let claimed = claims.iter().any(|c| c.ip == e.ip && c.handle == e.handle);
        let lending =
            node_blocks.iter().find(|b| b.contains(&e.ip)).map(|b| node.lending(*b)).transpose()?.flatten().is_some();
        if !(inside || pool.cfg.allow_borrowing && claimed) {
            let why = if pool.cfg.allow_borrowing {
                "and holds no claim in the cluster store"
            } else {
                "which does not allow borrowing"
            };
            push(
                ProblemKind::Borrowed,
                format!("{} ({}) lies outside this node's blocks in pool {}, {why}", e.ip, e.handle.key(), pool.name()),
            );
        } else if inside && lending && !claimed {
            push(ProblemKind::Unclaimed, format!(
                "{} ({}) lies in a lending block but holds no claim in the cluster store, so another node could borrow it; delete and re-create the pod",
                e.ip,
                e.handle.key()
            ));
        }
    }
    let held: HashSet<(IpAddr, &Handle)> = entries.iter().map(|e| (e.ip, &e.handle)).collect();
    let mut stale: Vec<&Claim> = claims.iter().filter(|c| !held.contains(&(c.ip, &c.handle))).collect();
    stale.sort_by_key(|c| to_u128(c.ip));
    for c in stale {
        push(ProblemKind::Leaked, format!("{} is claimed in the cluster store by {} but no address record of this node holds it; GC gives it back", c.ip, c.handle.key()));
    }
    for b in &node_blocks {
        if !mine.contains(b) {
            push(
                ProblemKind::OrphanedBlock,
                format!("block {b} is recorded on this node but not leased to {} in the cluster store", ipam.cfg.node),
            );
        }
    }
    for b in &mine {
        if !node_blocks.contains(b) {
            push(
                ProblemKind::UnrecordedLease,
                format!(
                    "block {b} is leased to {} but not recorded on the node (ADD adopts it when it needs a block)",
                    ipam.cfg.node
                ),
            );
        }
    }
    if node.exists() {
        if let Err(e) = node.block_leases() {
            push(ProblemKind::Corrupt, e.to_string());
        }
    }
    Ok(problems)
}
