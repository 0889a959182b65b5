//! ADD's search for addresses: per family, the eligible pools' own addresses first, then a new
//! block, then (where allowed) a borrowed address; the result is a [`Pending`] commit.

use crate::commit::{Allocated, Pending};
use crate::error::IpamError;
use crate::model::{self, Allocation, Claim, Handle, PodInfo};
use crate::node::AddrEntry;
use crate::source::{PickContext, PoolSource};
use crate::span::{Reservation, Span};
use crate::Ipam;
use std::collections::HashSet;
use std::net::IpAddr;

/// Where an ADD looks for a free address, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// What the node already has (its blocks, its range): no cluster store unless the pool
    /// allows borrowing.
    Own,
    /// A block leased now.
    Lease,
    /// Another node's lending block (pools with `allowBorrowing`).
    Borrow,
}

/// A free address and where it came from.
pub struct Picked {
    pub span: Span,
    pub ip: IpAddr,
    pub claim: Option<Claim>,
}

impl Ipam {
    /// Give `handle` one address per family its namespace's pools offer, durably.
    pub fn allocate(&self, handle: &Handle, pod: &PodInfo) -> Result<Allocated, IpamError> {
        self.reserve(handle, pod)?.commit()
    }

    /// Pick `handle`'s addresses under the node store lock without writing them yet, so the
    /// caller can start work that needs the addresses while [`Pending::commit`] makes them durable.
    /// Dropping the [`Pending`] without committing leaves the store as it was.
    pub fn reserve(&self, handle: &Handle, pod: &PodInfo) -> Result<Pending<'_>, IpamError> {
        let sources: Vec<&dyn PoolSource> =
            self.eligible_sources(pod.namespace.as_deref()).into_iter().filter(|s| !s.pool().cfg.disabled).collect();
        if sources.is_empty() {
            return Err(IpamError::NoEligiblePool(format!(
                "no enabled pool of network {} serves namespace {:?}; add the namespace to a pool's namespaces or add a pool without a namespace list",
                self.network,
                pod.namespace.as_deref().unwrap_or("")
            )));
        }
        if self.reservation == Reservation::GatewayPerBlock {
            if let Some(s) = sources.iter().find(|s| s.pool().cfg.allow_borrowing) {
                return Err(IpamError::Config(format!(
                    "ipam.pools[{}].allowBorrowing needs the routed dataplane (\"mode\": \"routed\"): with a gateway per block, a borrowed address would need another node's gateway",
                    s.pool().name()
                )));
            }
        }
        if self.reservation == Reservation::GatewayPerBlock {
            if let Some(s) = sources.iter().find(|s| s.pool().source == crate::Source::Vnet) {
                return Err(IpamError::Config(format!(
                    "ipam.pools[{}] is a vnet pool, which needs the routed dataplane (\"dataplane\": \"routed\"): its pods sit on the VNet subnet as /32s that the node answers ARP for",
                    s.pool().name()
                )));
            }
        }
        // Outside the lock: a source may ask its host agent (bounded).
        for s in &sources {
            s.prepare()?;
        }
        let guard = self.node.lock()?;
        let entries = guard.entries()?;
        let mine: Vec<&AddrEntry> = entries.iter().filter(|e| &e.handle == handle).collect();
        if !mine.is_empty() {
            // A repeated ADD for the same attachment gets what it already holds.
            let mut allocations = mine.iter().map(|e| guard.read(e)).collect::<Result<Vec<_>, _>>()?;
            allocations.sort_by_key(|a| !a.address.addr().is_ipv4());
            return Ok(Pending {
                ipam: self,
                guard: Some(guard),
                allocations,
                existing: true,
                claims: Vec::new(),
                blanks: Vec::new(),
            });
        }
        let mut used: HashSet<IpAddr> = entries.iter().map(|e| e.ip).collect();
        // Built first so that an error below drops it and gives back claims already made.
        let mut pending = Pending {
            ipam: self,
            guard: None,
            allocations: Vec::new(),
            existing: false,
            claims: Vec::new(),
            blanks: Vec::new(),
        };
        for v4 in [true, false] {
            let family: Vec<&dyn PoolSource> = sources.iter().copied().filter(|s| s.pool().is_v4() == v4).collect();
            if family.is_empty() {
                continue;
            }
            // The node's own addresses in every eligible pool first; only then lease, so an
            // exhausted first pool never sends an ADD to the cluster store while a later pool has
            // room here. Borrowing, where allowed, comes last of all.
            let mut found = None;
            let mut cx = PickContext { ipam: self, guard: &guard, handle, entries: &entries, used: &mut used };
            'steps: for step in [Step::Own, Step::Lease, Step::Borrow] {
                for source in &family {
                    if let Some(picked) = source.pick(step, &mut cx)? {
                        found = Some((*source, picked));
                        break 'steps;
                    }
                }
            }
            let Some((source, Picked { span, ip, claim })) = found else {
                return Err(self.exhausted(&family));
            };
            used.insert(ip);
            let claim_id = claim.as_ref().map(|c| c.id.clone());
            pending.claims.extend(claim);
            pending.allocations.push(Allocation {
                address: ipnet::IpNet::new(ip, span.pod_prefix_len).expect("prefix fits"),
                gateway: span.gateway,
                pool: source.pool().name().to_string(),
                block: span.subnet,
                handle: handle.clone(),
                pod: pod.clone(),
                node: self.cfg.node.clone(),
                allocated_at: model::now_rfc3339_micros(),
                attachment: None,
                claim_id,
            });
        }
        pending.guard = Some(guard);
        Ok(pending)
    }

    fn exhausted(&self, sources: &[&dyn PoolSource]) -> IpamError {
        let names: Vec<String> = sources.iter().map(|s| format!("{} ({})", s.pool().name(), s.pool().cidr())).collect();
        let hints: Vec<&str> = sources.iter().map(|s| s.when_full()).collect();
        IpamError::Exhausted(format!(
            "no free address for node {} in pool(s) {}: {}, or free addresses (podnetctl ipam show; GC with the live pods)",
            self.cfg.node,
            names.join(", "),
            hints.join("; ")
        ))
    }
}
