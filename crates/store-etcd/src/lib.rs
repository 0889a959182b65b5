//! The cluster store on etcd v3. Block leases live at `<prefix>/<network>/blocks/<cidr>` (the CIDR
//! with `/` written `_`), each value a JSON [`BlockLease`]. A lease is created only if the key does
//! not exist (compare create_revision = 0) and deleted only at the revision its owner read, so two
//! nodes can never both hold a block. No consensus of our own: etcd's transactions decide.
//! Pools that allow borrowing add address claims at `<prefix>/<network>/claims/<cidr>/<ip>`
//! (a JSON [`Claim`]), created only if absent while the block's lease exists; a borrower only while
//! the block is marked lending at `<prefix>/<network>/lending/<cidr>`.
//!
//! The plugin is synchronous; this store starts a single-threaded runtime and connects only when
//! first used (a block must be leased or listed), so ADDs inside the node's blocks and every DEL
//! never touch etcd. Every call gets the caller's [`Deadline`] (for the plugin, `timeoutMs` for
//! the whole invocation). The store is `Send + Sync`: a long-running agent shares one, and a
//! broken connection is rebuilt on the next call. A watch gets a connection of its own.

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use ipnet::IpNet;
use podnet_ipam::addr::{net_from_file_name, net_to_file_name};
use podnet_ipam::config::{EtcdConfig, Pool};
use podnet_ipam::model::NodeRecord;
use podnet_ipam::model::{now_rfc3339, BlockLease, BlockRelease, Claim, ClaimAs, ClaimOutcome};
use podnet_ipam::{
    ClusterSnapshot, ClusterStore, ClusterWatch, Deadline, IpamError, LeaseAttempt, LeaseSnapshot, NodeLease,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

mod audit;
mod conn;
mod nodes;
mod watch;

use conn::{classify, connect, Conn, Failure};
use watch::EtcdWatch;

pub struct EtcdStore {
    cfg: EtcdConfig,
    /// A note shared by the node's processes: "etcd did not answer until <unix ms>". While it
    /// holds, calls fail at once with code 11 instead of each waiting `timeoutMs` (some under the
    /// node lock, which DEL also needs).
    outage_note: Option<std::path::PathBuf>,
    /// `<prefix>/<network>/`: everything of the network, which a watch follows.
    network_prefix: String,
    blocks_prefix: String,
    claims_prefix: String,
    lending_prefix: String,
    nodes_prefix: String,
    conn: Mutex<Option<Conn>>,
    requests: AtomicUsize,
}

impl EtcdStore {
    pub fn new(cfg: EtcdConfig, network: &str, outage_note: Option<std::path::PathBuf>) -> EtcdStore {
        let base = format!("{}/{network}", cfg.prefix.trim_end_matches('/'));
        EtcdStore {
            cfg,
            outage_note,
            network_prefix: format!("{base}/"),
            blocks_prefix: format!("{base}/blocks/"),
            claims_prefix: format!("{base}/claims/"),
            lending_prefix: format!("{base}/lending/"),
            nodes_prefix: format!("{base}/nodes/"),
            conn: Mutex::new(None),
            requests: AtomicUsize::new(0),
        }
    }

    /// etcd requests made so far (0 for an ADD inside the node's own blocks).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> IpamError {
        IpamError::Unavailable(format!(
            "etcd at {} did not answer within timeoutMs {}: {why}; try again later",
            self.cfg.endpoints.join(","),
            self.cfg.timeout.as_millis()
        ))
    }

    /// Time left of the caller's budget.
    fn remaining(&self, deadline: &Deadline) -> Result<Duration, IpamError> {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(self.unavailable("the time budget is spent"));
        }
        Ok(left)
    }

    /// Run one etcd call within the remaining budget, connecting first if needed. Failures (etcd
    /// down, no leader yet) are retried until the budget is spent; then the caller gets code 11.
    fn call<T, F, Fut>(&self, deadline: &Deadline, f: F) -> Result<T, IpamError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        if let Some(note) = &self.outage_note {
            let until = std::fs::read_to_string(note).ok().and_then(|t| t.trim().parse::<u64>().ok());
            if let Some(left) = until.and_then(|u| u.checked_sub(now_ms())).filter(|l| *l > 0) {
                return Err(self.unavailable(format!(
                    "it did not answer another call on this node moments ago ({left} ms before the next try)"
                )));
            }
        }
        let result = self.call_inner(deadline, f);
        if let Some(note) = &self.outage_note {
            match &result {
                // One failed call's wait is enough for every call for a while.
                Err(IpamError::Unavailable(_)) => {
                    let until = now_ms() + self.cfg.timeout.as_millis() as u64;
                    let _ = podnet_fsio::write_hint(note, until.to_string().as_bytes());
                }
                Ok(_) => {
                    if note.exists() {
                        let _ = std::fs::remove_file(note);
                    }
                }
                Err(_) => {}
            }
        }
        result
    }

    fn call_inner<T, F, Fut>(&self, deadline: &Deadline, f: F) -> Result<T, IpamError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        loop {
            let left = self.remaining(deadline)?;
            match self.attempt(&f, left, deadline) {
                Ok(v) => return Ok(v),
                // A missing password file or an unreadable certificate does not heal by waiting.
                Err(Failure::Config(why)) => return Err(IpamError::Config(format!("ipam.store: {why}"))),
                Err(Failure::Transient(why)) => {
                    let pause = Duration::from_millis(50);
                    if self.remaining(deadline).map(|l| l <= pause).unwrap_or(true) {
                        return Err(self.unavailable(why));
                    }
                    // A broken connection is rebuilt on the next attempt.
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn attempt<T, F, Fut>(&self, f: &F, left: Duration, deadline: &Deadline) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        // One call at a time over the connection: the plugin makes one anyway, and an agent's
        // calls are few and short.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_none() {
            *conn = Some(connect(&self.cfg, left)?);
        }
        // Connecting (and authenticating) spent part of the budget: the request gets what is left.
        let left = self.remaining(deadline).map_err(|e| Failure::Transient(e.to_string()))?;
        let (rt, client) = conn.as_ref().expect("connected above");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fut = f(client.clone());
        rt.block_on(async { tokio::time::timeout(left, fut).await })
            .map_err(|_| Failure::Transient("the request timed out".into()))?
            .map_err(|e| classify(&e))
    }

    fn txn(&self, txn: Txn, deadline: &Deadline) -> Result<TxnResponse, IpamError> {
        self.call(deadline, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
    }

    fn lease_key(&self, block: IpNet) -> String {
        format!("{}{}", self.blocks_prefix, net_to_file_name(block))
    }
    fn lending_key(&self, block: IpNet) -> String {
        format!("{}{}", self.lending_prefix, net_to_file_name(block))
    }
    fn block_claims_prefix(&self, block: IpNet) -> String {
        format!("{}{}/", self.claims_prefix, net_to_file_name(block))
    }

    /// One transaction that leases the first of `leases` whose block is free: create-if-absent
    /// and no claims, else (nested) the next. Each level's else branch reads its lease key and
    /// one of its claim keys, so the answer tells what stood in the way.
    fn lease_attempt(&self, leases: &[BlockLease]) -> Txn {
        let (lease, rest) = leases.split_first().expect("at least one candidate");
        let key = self.lease_key(lease.block);
        let claims = self.block_claims_prefix(lease.block);
        let value = serde_json::to_vec(lease).expect("leases serialize");
        let mut otherwise = vec![
            TxnOp::get(key.clone(), None),
            TxnOp::get(claims.clone(), Some(GetOptions::new().with_prefix().with_keys_only().with_limit(1))),
        ];
        if !rest.is_empty() {
            otherwise.push(TxnOp::txn(self.lease_attempt(rest)));
        }
        Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(claims, CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then([TxnOp::put(key, value, None)])
            .or_else(otherwise)
    }

    fn decode_claim(&self, kv: &KeyValue) -> Result<Claim, IpamError> {
        let key = kv.key_str().unwrap_or_default().to_string();
        let claim: Claim = serde_json::from_slice(kv.value()).map_err(|e| IpamError::Corrupt {
            path: key.clone().into(),
            why: format!("etcd value does not decode: {e}"),
        })?;
        if key != format!("{}{}", self.block_claims_prefix(claim.block), claim.ip) || !claim.block.contains(&claim.ip) {
            return Err(IpamError::Corrupt {
                path: key.into(),
                why: format!("holds the claim of {} under another key", claim.ip),
            });
        }
        Ok(claim)
    }

    /// A lease as etcd holds it, refused when it does not decode or sits under another block's key.
    fn decode_lease(&self, kv: &KeyValue) -> Result<BlockLease, IpamError> {
        let key = kv.key_str().unwrap_or_default().to_string();
        let lease: BlockLease = serde_json::from_slice(kv.value()).map_err(|e| IpamError::Corrupt {
            path: key.clone().into(),
            why: format!("etcd value does not decode: {e}"),
        })?;
        if net_from_file_name(key.trim_start_matches(&self.blocks_prefix)) != Some(lease.block) {
            return Err(IpamError::Corrupt {
                path: key.into(),
                why: format!("holds block {} under another key", lease.block),
            });
        }
        Ok(lease)
    }

    /// The key-values each get of a transaction's answer read, in order.
    fn gets(resp: &TxnResponse) -> Vec<Vec<KeyValue>> {
        resp.op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Every lease with its mod revision, and the revision of the read.
    fn read_all(&self, deadline: &Deadline) -> Result<(Vec<(BlockLease, i64)>, i64), IpamError> {
        let prefix = self.blocks_prefix.clone();
        let resp = self.call(deadline, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        let out = resp
            .kvs()
            .iter()
            .map(|kv| Ok((self.decode_lease(kv)?, kv.mod_revision())))
            .collect::<Result<_, IpamError>>()?;
        Ok((out, resp.header().map(|h| h.revision()).unwrap_or(0)))
    }
}

impl ClusterStore for EtcdStore {
    fn lease_one_of(
        &self,
        pool: &Pool,
        node: &str,
        candidates: &[IpNet],
        deadline: &Deadline,
    ) -> Result<LeaseAttempt, IpamError> {
        let leased_at = now_rfc3339();
        let leases: Vec<BlockLease> = candidates
            .iter()
            .map(|&block| BlockLease {
                block,
                pool: pool.name().to_string(),
                node: node.to_string(),
                leased_at: leased_at.clone(),
            })
            .collect();
        if leases.is_empty() {
            return Ok(LeaseAttempt::Taken { claimed: Vec::new() });
        }
        let resp = self.txn(self.lease_attempt(&leases), deadline)?;
        // Walk the nested answers: the level that leased, blocks that hold claims, and a block
        // already ours (this very request retried after its reply was lost: it was applied).
        let (mut leased, mut ours, mut claimed) = (None, None, Vec::new());
        let mut level = Some(resp);
        for lease in &leases {
            let Some(resp) = level.take() else { break };
            if resp.succeeded() {
                leased = Some(lease.clone());
                break;
            }
            for op in resp.op_responses() {
                match op {
                    TxnOpResponse::Get(g)
                        if g.kvs().first().is_some_and(|kv| kv.key() == self.lease_key(lease.block).as_bytes()) =>
                    {
                        let holder =
                            g.kvs().first().and_then(|kv| serde_json::from_slice::<BlockLease>(kv.value()).ok());
                        if ours.is_none() && holder.as_ref().is_some_and(|h| h.node == node && h.block == lease.block) {
                            ours = holder;
                        }
                    }
                    TxnOpResponse::Get(g) if !g.kvs().is_empty() => {
                        // The claims read: only looked at when the lease key is absent.
                        claimed.push(lease.block);
                    }
                    TxnOpResponse::Txn(next) => level = Some(next),
                    _ => {}
                }
            }
        }
        match (ours, leased) {
            (Some(ours), Some(extra)) => {
                // Both: hand the extra one back at once rather than hold two blocks.
                let key = self.lease_key(extra.block);
                let value = serde_json::to_vec(&extra).expect("leases serialize");
                let undo = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, value)])
                    .and_then([TxnOp::delete(key, None)]);
                if let Err(e) = self.txn(undo, deadline) {
                    tracing::warn!(block = %extra.block, error = %e, "a second lease of one request stays; GC hands it back");
                }
                Ok(LeaseAttempt::Leased(ours))
            }
            (Some(ours), None) => Ok(LeaseAttempt::Leased(ours)),
            (None, Some(lease)) => Ok(LeaseAttempt::Leased(lease)),
            (None, None) => Ok(LeaseAttempt::Taken { claimed }),
        }
    }

    fn release_block(
        &self,
        block: IpNet,
        node: &str,
        even_if_claimed: bool,
        deadline: &Deadline,
    ) -> Result<BlockRelease, IpamError> {
        let Some((_, revision)) =
            self.read_all(deadline)?.0.into_iter().find(|(l, _)| l.block == block && l.node == node)
        else {
            return Ok(BlockRelease::NotHeld);
        };
        let key = self.lease_key(block);
        // Delete only the lease as its owner read it, and (unless forced) only while no address of
        // the block is claimed: a range compare over the claims, so a borrower's claim and this
        // release cannot both succeed.
        let mut when = vec![Compare::mod_revision(key.clone(), CompareOp::Equal, revision)];
        if !even_if_claimed {
            when.push(Compare::create_revision(self.block_claims_prefix(block), CompareOp::Equal, 0).with_prefix());
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(self.lending_key(block), None), TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn, deadline)?;
        if resp.succeeded() {
            return Ok(BlockRelease::Released);
        }
        let still_mine = resp.op_responses().into_iter().any(
            |r| matches!(r, TxnOpResponse::Get(g) if g.kvs().first().is_some_and(|kv| kv.mod_revision() == revision)),
        );
        Ok(if still_mine { BlockRelease::Claimed } else { BlockRelease::NotHeld })
    }

    fn lease_snapshot(&self, deadline: &Deadline) -> Result<LeaseSnapshot, IpamError> {
        let (all, revision) = self.read_all(deadline)?;
        Ok(LeaseSnapshot { leases: all.into_iter().map(|(l, _)| l).collect(), revision })
    }

    fn cluster_snapshot(&self, deadline: &Deadline) -> Result<ClusterSnapshot, IpamError> {
        // Leases and node records in one transaction: one revision for both.
        let (blocks, nodes) = (self.blocks_prefix.clone(), self.nodes_prefix.clone());
        let txn = Txn::new().and_then([
            TxnOp::get(blocks, Some(GetOptions::new().with_prefix())),
            TxnOp::get(nodes, Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self.txn(txn, deadline)?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let gets = Self::gets(&resp);
        let [leases, nodes] = gets.as_slice() else {
            return Err(self.unavailable("etcd answered the snapshot with an unexpected shape"));
        };
        Ok(ClusterSnapshot {
            leases: leases.iter().map(|kv| self.decode_lease(kv)).collect::<Result<_, _>>()?,
            nodes: self.decode_nodes(nodes),
            revision,
        })
    }

    fn watch(
        &self,
        snapshot: &ClusterSnapshot,
        _poll: Duration,
        _node_ttl: Duration,
    ) -> Result<Box<dyn ClusterWatch>, IpamError> {
        let conn = connect(&self.cfg, self.cfg.timeout).map_err(|f| match f {
            Failure::Config(why) => IpamError::Config(format!("ipam.store: {why}")),
            Failure::Transient(why) => self.unavailable(why),
        })?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(snapshot.revision + 1);
        let (rt, client) = &conn;
        let mut client = client.clone();
        let prefix = self.network_prefix.clone();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let stream = rt
            .block_on(async { tokio::time::timeout(self.cfg.timeout, client.watch(prefix, Some(opts))).await })
            .map_err(|_| self.unavailable("starting the watch timed out"))?
            .map_err(|e| self.unavailable(e))?;
        let (blocks_prefix, nodes_prefix) = (self.blocks_prefix.clone(), self.nodes_prefix.clone());
        Ok(Box::new(EtcdWatch { conn, stream, blocks_prefix, nodes_prefix }))
    }

    fn put_node(&self, record: &NodeRecord, ttl: Duration, deadline: &Deadline) -> Result<NodeLease, IpamError> {
        self.grant_and_put(record, ttl, deadline)
    }

    fn renew_node(
        &self,
        lease: NodeLease,
        record: &NodeRecord,
        ttl: Duration,
        deadline: &Deadline,
    ) -> Result<NodeLease, IpamError> {
        let id = lease.0;
        let left = self.call(deadline, |mut c| async move {
            let renewed = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
            };
            match renewed.await {
                // etcd no longer knows the lease: it expired.
                Err(etcd_client::Error::LeaseKeepAliveError(why)) if why.contains("not found") => Ok(0),
                other => other,
            }
        })?;
        if left > 0 {
            return Ok(lease);
        }
        // Expired (etcd was away longer than the TTL, or restarted without it): the record went
        // with the lease, so both are made again.
        self.grant_and_put(record, ttl, deadline)
    }

    fn remove_node(&self, node: &str, deadline: &Deadline) -> Result<(), IpamError> {
        let key = self.node_key(node);
        self.call(deadline, |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .map(|_| ())
    }

    fn claim(&self, claim: &Claim, how: ClaimAs, deadline: &Deadline) -> Result<ClaimOutcome, IpamError> {
        let key = format!("{}{}", self.block_claims_prefix(claim.block), claim.ip);
        let gate = match how {
            ClaimAs::Owner { .. } => self.lease_key(claim.block),
            ClaimAs::Borrower => self.lending_key(claim.block),
        };
        let value = serde_json::to_vec(claim).expect("claims serialize");
        let mut puts = vec![TxnOp::put(key.clone(), value.clone(), None)];
        if how == (ClaimAs::Owner { announce: true }) {
            puts.push(TxnOp::put(self.lending_key(claim.block), claim.node.clone(), None));
        }
        // Else-branch reads tell a lost race (and every claim of the block, to skip them all in
        // one go), a retried request that had already succeeded, and a block no longer leased.
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(gate.clone(), CompareOp::Greater, 0),
            ])
            .and_then(puts)
            .or_else([
                TxnOp::get(gate, None),
                TxnOp::get(key, None),
                TxnOp::get(self.block_claims_prefix(claim.block), Some(GetOptions::new().with_prefix())),
            ]);
        let resp = self.txn(txn, deadline)?;
        if resp.succeeded() {
            return Ok(ClaimOutcome::Claimed);
        }
        let gets = Self::gets(&resp);
        let [lease, held, block_claims] = gets.as_slice() else {
            return Err(self.unavailable("etcd answered the claim transaction with an unexpected shape"));
        };
        if lease.is_empty() {
            return Ok(ClaimOutcome::BlockGone);
        }
        if held.first().is_some_and(|kv| kv.value() == value.as_slice()) {
            if how == (ClaimAs::Owner { announce: true }) {
                // The retried claim was applied with its lending mark; put the mark again anyway.
                let txn = Txn::new()
                    .when([Compare::create_revision(self.lease_key(claim.block), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(self.lending_key(claim.block), claim.node.clone(), None)]);
                self.txn(txn, deadline)?;
            }
            return Ok(ClaimOutcome::Claimed);
        }
        Ok(ClaimOutcome::Taken(block_claims.iter().map(|kv| self.decode_claim(kv)).collect::<Result<_, _>>()?))
    }

    fn unclaim(&self, claim: &Claim, deadline: &Deadline) -> Result<bool, IpamError> {
        let key = format!("{}{}", self.block_claims_prefix(claim.block), claim.ip);
        let value = serde_json::to_vec(claim).expect("claims serialize");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, value)])
            .and_then([TxnOp::delete(key, None)]);
        Ok(self.txn(txn, deadline)?.succeeded())
    }

    fn lending_blocks(&self, deadline: &Deadline) -> Result<Vec<IpNet>, IpamError> {
        let prefix = self.lending_prefix.clone();
        let resp = self.call(deadline, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await }
        })?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| net_from_file_name(kv.key_str().ok()?.trim_start_matches(&self.lending_prefix)))
            .collect())
    }

    fn claims(&self, deadline: &Deadline) -> Result<Vec<Claim>, IpamError> {
        let prefix = self.claims_prefix.clone();
        let resp = self.call(deadline, |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        resp.kvs().iter().map(|kv| self.decode_claim(kv)).collect()
    }

    fn put_audit_batch(&self, node: &str, seq: u64, body: &[u8], deadline: &Deadline) -> Result<(), IpamError> {
        self.put_audit(node, seq, body, deadline)
    }

    fn audit_batches(&self, deadline: &Deadline) -> Result<Vec<podnet_ipam::store::AuditBatch>, IpamError> {
        self.list_audit(deadline)
    }

    fn drop_audit_batches(&self, node: &str, below: u64, deadline: &Deadline) -> Result<(), IpamError> {
        self.drop_audit(node, below, deadline)
    }

    fn requests(&self) -> usize {
        EtcdStore::requests(self)
    }
}
