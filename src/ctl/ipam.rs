//! `podnetctl ipam show | check | rebuild | release`.

use super::render::{emit, table, Output, Render};
use super::CtlError;
use clap::Subcommand;
use podnet_ipam::rebuild::Repair;
use podnet_ipam::report::{BorrowedAddress, PoolReport, Problem};
use podnet_node::{EndpointRepair, Network};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum IpamCmd {
    /// Per pool: size, blocks leased per node, addresses used and free on this node.
    Show,
    /// Cross-check the node store, block leases and live endpoints on this node.
    Check,
    /// Recover from corrupt state files (code 103): rebuild the records of this node's live
    /// endpoints from the kernel, free addresses no live endpoint carries, and keep every corrupt
    /// file in the store's quarantine directory. Run it on the node, in its network namespace.
    Rebuild {
        /// Go on even though no recorded attachment has an endpoint here (every pod is gone).
        #[arg(long)]
        force: bool,
    },
    /// Free one address (refused while its endpoint is live, unless --force), or hand a dead
    /// node's blocks back with --node.
    Release {
        /// The address to free.
        ip: Option<std::net::IpAddr>,
        /// Release every block leased to this node (a node that is gone: a live node would go on
        /// allocating from them). Refused for this node's own name unless --force.
        #[arg(long, conflicts_with = "ip")]
        node: Option<String>,
        /// Hand back this node's blocks that have been empty for the grace time.
        #[arg(long, conflicts_with_all = ["ip", "node"])]
        empty_blocks: bool,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Serialize)]
pub struct Show {
    network: String,
    node: String,
    pools: Vec<PoolReport>,
    #[serde(skip)]
    state: bool,
}

impl Render for Show {
    fn table(&self) -> String {
        let note = if self.state {
            String::new()
        } else {
            format!(
                "network {}: no state on node {} yet; the pools as the cluster store sees them:\n",
                self.network, self.node
            )
        };
        let rows: Vec<Vec<String>> = self
            .pools
            .iter()
            .map(|p| {
                let by_node: Vec<String> = p.blocks_by_node.iter().map(|(n, c)| format!("{n}:{c}")).collect();
                vec![
                    p.name.clone(),
                    p.cidr.to_string(),
                    p.source.clone(),
                    if p.source == "range" { "-".into() } else { format!("/{}", p.block_size) },
                    p.capacity.to_string(),
                    if by_node.is_empty() { "-".into() } else { by_node.join(",") },
                    p.free_blocks.to_string(),
                    p.used.to_string(),
                    p.free.to_string(),
                    p.borrowed.to_string(),
                ]
            })
            .collect();
        let header = [
            "POOL",
            "CIDR",
            "SOURCE",
            "BLOCK",
            "CAPACITY",
            "BLOCKS BY NODE",
            "FREE BLOCKS",
            "USED HERE",
            "FREE HERE",
            "BORROWED",
        ];
        note + &table(&header, &rows)
    }
}

#[derive(Serialize)]
pub struct Check {
    network: String,
    node: String,
    problems: Vec<Problem>,
    borrowed: Vec<BorrowedAddress>,
    #[serde(skip)]
    state: bool,
}

impl Render for Check {
    fn table(&self) -> String {
        let mut out = String::new();
        if !self.state && self.problems.is_empty() {
            out.push_str(&format!(
                "ipam check: no state for network {} on node {}; nothing to check\n",
                self.network, self.node
            ));
        } else if self.problems.is_empty() {
            out.push_str(&format!("ipam check: no problems on node {}\n", self.node));
        } else {
            let rows: Vec<Vec<String>> =
                self.problems.iter().map(|p| vec![format!("{:?}", p.kind).to_lowercase(), p.detail.clone()]).collect();
            out.push_str(&table(&["PROBLEM", "DETAIL"], &rows));
        }
        if !self.borrowed.is_empty() {
            out.push_str("borrowed addresses (allowBorrowing; each is a /32 or /128 route of its own):\n");
            let rows: Vec<Vec<String>> = self
                .borrowed
                .iter()
                .map(|b| {
                    let owner = b.owner.clone().unwrap_or_else(|| "-".into());
                    vec![b.ip.to_string(), b.block.to_string(), owner, b.borrower.clone(), b.handle.key()]
                })
                .collect();
            out.push_str(&table(&["ADDRESS", "BLOCK", "OWNER", "BORROWER", "HANDLE"], &rows));
        }
        out
    }
}

/// One thing rebuild did, in either store.
#[derive(Serialize)]
#[serde(untagged)]
enum AnyRepair {
    Ipam(Repair),
    Endpoint(EndpointRepair),
}

#[derive(Serialize)]
pub struct Rebuilt {
    network: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    repairs: Vec<AnyRepair>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<PathBuf>,
}

impl Render for Rebuilt {
    fn table(&self) -> String {
        if self.repairs.is_empty() {
            return match &self.node {
                Some(node) => format!("ipam rebuild: every record of node {node} reads back; nothing to do\n"),
                None => "ipam rebuild: every endpoint record reads back; nothing to do\n".into(),
            };
        }
        // Endpoint records first, then the node store.
        let (endpoints, ipam): (Vec<&AnyRepair>, Vec<&AnyRepair>) =
            self.repairs.iter().partition(|r| matches!(r, AnyRepair::Endpoint(_)));
        let rows: Vec<Vec<String>> = endpoints.into_iter().chain(ipam).map(repair_row).collect();
        let mut out = table(&["ACTION", "WHAT", "WHY"], &rows);
        if let Some(q) = &self.quarantine {
            out.push_str(&format!("corrupt files kept in {}\n", q.display()));
        }
        out
    }
}

fn repair_row(r: &AnyRepair) -> Vec<String> {
    let row = |a: &str, w: String, why: String| vec![a.to_string(), w, why];
    match r {
        AnyRepair::Endpoint(EndpointRepair::EndpointRestored { handle }) => {
            row("restored", "-".into(), format!("endpoint record of {}: its veth is live", handle.key()))
        }
        AnyRepair::Endpoint(EndpointRepair::EndpointDropped { file }) => {
            row("dropped", "-".into(), format!("endpoint record {file}: no endpoint on this node"))
        }
        AnyRepair::Ipam(r) => match r {
            Repair::Restored { ip, handle } => row("restored", ip.to_string(), format!("{} has a live endpoint", handle.key())),
            Repair::Unleased { ip, handle, block } => row(
                "restored",
                ip.to_string(),
                format!(
                    "{} is live, but block {block} is not leased to this node and no claim covers the address: delete and re-create the pod",
                    handle.key()
                ),
            ),
            Repair::Contested { ip, handle, holder } => row(
                "restored",
                ip.to_string(),
                format!("{} is live, but the address's claim is held by {holder}: re-create one of the two pods", handle.key()),
            ),
            Repair::Freed { ip, handle } => row("freed", ip.to_string(), format!("{} has no endpoint on this node", handle.key())),
            Repair::Unplaced { ip, handle } => {
                row("left", ip.to_string(), format!("{} is live but the address is in no pool of the config", handle.key()))
            }
            Repair::BlockRestored { block } => {
                row("restored", block.to_string(), "block lease, from the cluster store".into())
            }
            Repair::BlockDropped { block } => {
                row("dropped", block.to_string(), "block lease the cluster store does not confirm".into())
            }
            Repair::Unnamed { file } => {
                row("quarantined", "-".into(), format!("{file}: its name holds no address and handle"))
            }
        },
    }
}

pub fn run(cmd: &IpamCmd, net: &Network, output: Output) -> Result<i32, CtlError> {
    if let IpamCmd::Rebuild { force } = cmd {
        let r = net.rebuild(*force)?;
        let needs_action = r.ipam.as_ref().is_some_and(|i| i.repairs.iter().any(Repair::needs_action));
        let (ipam_repairs, quarantine) = match r.ipam {
            Some(report) => (report.repairs, Some(report.quarantine)),
            None => (Vec::new(), None),
        };
        let mut repairs: Vec<AnyRepair> = ipam_repairs.into_iter().map(AnyRepair::Ipam).collect();
        repairs.extend(r.endpoints.into_iter().map(AnyRepair::Endpoint));
        emit(output, &Rebuilt { network: net.name.clone(), node: r.node, repairs, quarantine });
        return Ok(if needs_action { 1 } else { 0 });
    }
    let ipam = net.open_ipam()?;
    let node = ipam.config().node.clone();
    match cmd {
        IpamCmd::Show => {
            let pools = podnet_ipam::report::show(&ipam)?;
            emit(output, &Show { network: net.name.clone(), node, pools, state: net.has_state() });
            Ok(0)
        }
        IpamCmd::Check => {
            let live = podnet_node::live_endpoints()?;
            let problems = podnet_ipam::report::check(&ipam, &live)?;
            // Borrowing a pool allows is no problem, but each borrowed address is a route of its own.
            let borrowed = podnet_ipam::report::borrowed(&ipam)?;
            let clean = problems.is_empty();
            emit(output, &Check { network: net.name.clone(), node, problems, borrowed, state: net.has_state() });
            Ok(if clean { 0 } else { 1 })
        }
        IpamCmd::Rebuild { .. } => unreachable!("handled above"),
        IpamCmd::Release { ip: Some(ip), force, .. } => {
            let live = podnet_node::live_endpoints()?;
            match ipam.release_address(*ip, *force, &live)? {
                Ok(handles) if handles.is_empty() => println!("{ip} was not allocated"),
                Ok(handles) => {
                    let by: Vec<String> = handles.iter().map(|h| h.key()).collect();
                    println!("released {ip} (held by {})", by.join(", "))
                }
                Err(holder) => {
                    eprintln!(
                        "podnetctl: {ip} is in use by the live endpoint {}; DEL it, or pass --force",
                        holder.key()
                    );
                    return Ok(1);
                }
            }
            Ok(0)
        }
        IpamCmd::Release { node: Some(dead), force, .. } => {
            if dead == &node && !force {
                eprintln!("podnetctl: {dead} is this node; releasing its blocks while it runs would let two nodes hand out the same addresses (pass --force if it is really gone)");
                return Ok(1);
            }
            let r = ipam.release_node(dead)?;
            if r.released.is_empty() && r.changed.is_empty() {
                println!("node {dead} leases no block");
            }
            for b in &r.released {
                println!("released block {b} of node {dead}");
            }
            for b in &r.changed {
                println!("left block {b}: its lease changed while releasing (run again to see the current state)");
            }
            Ok(if r.changed.is_empty() { 0 } else { 1 })
        }
        IpamCmd::Release { empty_blocks: true, .. } => {
            let blocks = ipam.release_empty_blocks()?;
            if blocks.is_empty() {
                println!("no block has been empty for the grace time");
            }
            for b in blocks {
                println!("handed back empty block {b}");
            }
            Ok(0)
        }
        IpamCmd::Release { .. } => {
            Err(CtlError::Usage("name an address to release, --node NAME or --empty-blocks".into()))
        }
    }
}
