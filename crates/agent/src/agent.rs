//! The agent's life. Start checks everything it was given (flags, conflist, the metrics address,
//! the node's uplink) before it changes anything on the node. Then: announce the node, read the
//! cluster at one revision, bring the kernel to what that implies, and follow the changes (etcd:
//! a watch from that revision; local store: polling), reconciling on every change and every
//! `--poll-seconds` (which also repairs drift in the kernel). A broken watch (etcd restarted,
//! history compacted) is re-listed with backoff; nothing in the kernel changes meanwhile.
//! SIGTERM ends the process within a second and leaves routes, the VXLAN device and the SNAT
//! table in place, so pods keep talking while the agent restarts.

use crate::desired::{Me, RouteKind};
use crate::gc::Gc;
use crate::kernel::{self, Uplink, VXLAN_DEVICE, VXLAN_OVERHEAD};
use crate::metrics::{KindLabels, Metrics, PoolLabels, StateLabels};
use crate::snat::{self, SnatPolicy};
use crate::view::ClusterView;
use crate::{Args, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use ipnet::IpNet;
use podnet_dataplane::vxlan::VxlanSpec;
use podnet_dataplane::{sysctl, Netlink};
use podnet_ipam::store::{ClusterWatch, Deadline, NodeLease};
use podnet_ipam::{Ipam, NodeRecord};
use podnet_node::{default_config, Network, DEFAULT_CONF_DIR};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long one wait on the watch lasts: the loop checks for SIGTERM at least this often.
const TICK: Duration = Duration::from_millis(200);
/// Backoff between attempts to reach the cluster store.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The budget of one cluster-store operation of the agent.
const STORE_BUDGET: Duration = Duration::from_secs(5);

/// Why the agent would not start.
#[derive(Debug)]
pub enum StartError {
    /// Flags, conflist or an address in use: nothing was changed.
    BadInput(String),
    Failed(String),
}

pub fn run(args: Args) -> i32 {
    if let Err(e) = args.check() {
        tracing::error!("{e}");
        return EXIT_BAD_INPUT;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let agent = match Agent::start(args, stop.clone()) {
        Ok(a) => a,
        Err(StartError::BadInput(m)) => {
            tracing::error!("{m}");
            return EXIT_BAD_INPUT;
        }
        Err(StartError::Failed(m)) => {
            tracing::error!("{m}");
            return EXIT_FAILED;
        }
    };
    if !agent.args.once {
        if let Err(e) = exit_on_sigterm(stop) {
            tracing::error!("installing the SIGTERM handler: {e}");
            return EXIT_FAILED;
        }
    }
    agent.run()
}

/// On SIGTERM or SIGINT: ask the loop to stop, and end the process after 900 ms whatever it is
/// doing (a cluster-store call can wait longer). Everything podnetd keeps is crash-safe, and
/// what it put in the kernel stays.
fn exit_on_sigterm(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            tracing::info!("stopping; routes, the VXLAN device and the SNAT table stay");
            stop.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(900));
            std::process::exit(EXIT_OK);
        }
    });
    Ok(())
}

pub struct Agent {
    args: Args,
    network: Network,
    data_dir: PathBuf,
    ipam: Ipam,
    nl: Netlink,
    me: Me,
    uplink: Uplink,
    vxlan: Option<VxlanSpec>,
    record: NodeRecord,
    node_lease: Option<NodeLease>,
    view: ClusterView,
    /// Blocks whose route became due, and when the agent learnt of them.
    due: HashMap<IpNet, Instant>,
    snat: SnatPolicy,
    gc: Gc,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Peers and blocks already reported, so the log says it once.
    reported: BTreeSet<String>,
}

fn bad(m: impl std::fmt::Display) -> StartError {
    StartError::BadInput(m.to_string())
}

impl Agent {
    /// Check everything and prepare; the node is not changed here.
    pub fn start(args: Args, stop: Arc<AtomicBool>) -> Result<Agent, StartError> {
        let path = match &args.config {
            Some(p) => p.clone(),
            None => default_config(Path::new(DEFAULT_CONF_DIR)).map_err(bad)?,
        };
        let network = Network::load(&path).map_err(bad)?;
        let plugin = network.plugin_config().map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let ipam_cfg = network.ipam_config().map_err(|e| match e {
            podnet_node::NodeError::NotPodnetIpam(m) => {
                bad(format!("{m}: podnetd routes the blocks podnet-ipam leases, so the network must use podnet-ipam"))
            }
            e => bad(format!("{}: {e}", path.display())),
        })?;
        let server = tiny_http::Server::http(args.metrics_addr)
            .map_err(|e| bad(format!("--metrics-addr {}: {e} (pass a free address)", args.metrics_addr)))?;
        if !snat::nft_installed() {
            return Err(StartError::Failed(format!(
                "podnetd needs the nft program (package nftables) for its SNAT table inet {}",
                snat::TABLE
            )));
        }
        let mut nl = Netlink::open().map_err(|e| StartError::Failed(format!("opening netlink: {e}")))?;
        let uplink = kernel::uplink(&mut nl, args.node_ip).map_err(bad)?;
        let vxlan = match (args.encap.has_vxlan(), uplink.ip) {
            (false, _) => None,
            (true, IpAddr::V4(local)) => {
                let mtu = uplink.link.mtu.saturating_sub(VXLAN_OVERHEAD);
                if mtu < 576 {
                    return Err(bad(format!(
                        "the uplink {} has MTU {}: too small for VXLAN (it needs {} bytes of headers)",
                        uplink.link.name, uplink.link.mtu, VXLAN_OVERHEAD
                    )));
                }
                Some(VxlanSpec {
                    name: VXLAN_DEVICE.into(),
                    vni: args.vxlan_vni,
                    port: args.vxlan_port,
                    local,
                    uplink: uplink.link.index,
                    mtu,
                    mac: kernel::vtep_mac(&ipam_cfg.node),
                })
            }
            (true, ip) => {
                return Err(bad(format!(
                    "--encap {} needs an IPv4 node address for the VXLAN device, and the node's is {ip}: pass --node-ip or --encap none",
                    args.encap.as_str()
                )))
            }
        };
        let snat = SnatPolicy {
            pools: ipam_cfg.pools.iter().map(|p| p.cidr()).collect(),
            // vnet pods carry VNet addresses: the VNet reaches them as they are, never masqueraded.
            masquerade: ipam_cfg
                .pools
                .iter()
                .filter(|p| p.cfg.nat_outgoing && p.source != podnet_ipam::Source::Vnet)
                .map(|p| p.cidr())
                .collect(),
            exceptions: args.non_masquerade_cidr.iter().map(IpNet::trunc).collect(),
        };
        let me = Me {
            node: ipam_cfg.node.clone(),
            encap: args.encap,
            dataplane: plugin.dataplane(),
            connected: uplink.subnets.clone(),
            uplink: uplink.link.index,
            vxlan: None,
        };
        let record = NodeRecord {
            node: ipam_cfg.node.clone(),
            ip: uplink.ip,
            ipv6: uplink.ipv6,
            encap: args.encap.as_str().into(),
            vtep_mac: vxlan.as_ref().map(|v| format_mac(v.mac)),
            vtep_ip: vxlan.as_ref().map(|v| IpAddr::V4(v.local)),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            heartbeat_at: None,
        };
        let ipam = network.open_ipam().map_err(bad)?;
        let metrics = Arc::new(Metrics::new());
        crate::metrics::serve(server, metrics.clone(), Duration::from_secs(3 * args.poll_seconds));
        tracing::info!(
            network = %network.name, node = %me.node, ip = %uplink.ip, uplink = %uplink.link.name,
            encap = args.encap.as_str(), metrics = %args.metrics_addr, "podnetd starting"
        );
        Ok(Agent {
            data_dir: plugin.data_dir.clone(),
            args,
            network,
            ipam,
            nl,
            me,
            uplink,
            vxlan,
            record,
            node_lease: None,
            view: ClusterView::default(),
            due: HashMap::new(),
            snat,
            gc: Gc::default(),
            metrics,
            stop,
            reported: BTreeSet::new(),
        })
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.args.node_ttl_seconds)
    }
    fn poll(&self) -> Duration {
        Duration::from_secs(self.args.poll_seconds)
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleep up to `d`, waking for SIGTERM.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() && Instant::now() < end {
            std::thread::sleep(TICK.min(end.saturating_duration_since(Instant::now())));
        }
    }

    pub fn run(mut self) -> i32 {
        if let Err(e) = self.ensure_forwarding() {
            tracing::error!("{e}");
            return EXIT_FAILED;
        }
        let mut backoff = BACKOFF_MIN;
        let mut watch = loop {
            match self.sync() {
                Ok(w) => break w,
                Err(e) if self.args.once => {
                    tracing::error!("{e}");
                    return EXIT_FAILED;
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    self.metrics.reconciled(false);
                    self.pause(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if self.stopping() {
                        return EXIT_OK;
                    }
                }
            }
        };
        if self.args.once {
            return EXIT_OK;
        }
        let start = Instant::now();
        let mut next_poll = start + self.poll();
        let mut next_renew = start + self.ttl() / 3;
        let mut next_gc = start + Duration::from_secs(self.args.gc_interval_seconds);
        while !self.stopping() {
            match watch.next(TICK) {
                Ok(events) if !events.is_empty() => {
                    let seen = Instant::now();
                    for block in self.view.apply(events) {
                        self.due.entry(block).or_insert(seen);
                    }
                    let _ = self.reconcile();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("{e}; reading the cluster again");
                    let mut backoff = Duration::ZERO;
                    watch = loop {
                        self.pause(backoff);
                        if self.stopping() {
                            return EXIT_OK;
                        }
                        match self.sync() {
                            Ok(w) => break w,
                            Err(e) => {
                                backoff = (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                                tracing::warn!("{e}; retrying in {backoff:?}");
                                self.metrics.reconciled(false);
                            }
                        }
                    };
                }
            }
            let now = Instant::now();
            if now >= next_renew {
                self.renew();
                next_renew = now + self.ttl() / 3;
            }
            if now >= next_poll {
                let _ = self.reconcile();
                self.refresh_sources();
                self.refresh_usage();
                self.collect_audit();
                next_poll = now + self.poll();
            }
            if now >= next_gc {
                self.collect_garbage();
                next_gc = now + Duration::from_secs(self.args.gc_interval_seconds);
            }
        }
        EXIT_OK
    }

    /// Routing between pods and other nodes needs forwarding on in the node.
    fn ensure_forwarding(&self) -> Result<(), String> {
        let set = |key: &str| sysctl::ensure(key, "1").map_err(|e| format!("turning on {key}: {e}"));
        set("net/ipv4/ip_forward")?;
        if self.snat.pools.iter().any(|p| p.addr().is_ipv6()) {
            set("net/ipv6/conf/all/forwarding")?;
        }
        Ok(())
    }

    /// Announce the node, read the whole cluster, reconcile, and start following it.
    fn sync(&mut self) -> Result<Box<dyn ClusterWatch>, String> {
        // The device first: a peer that sees this record programs entries toward it.
        self.me.vxlan = kernel::ensure_vxlan(&mut self.nl, self.vxlan.as_ref()).map_err(|e| e.to_string())?;
        self.announce()?;
        let cluster = self.ipam.cluster_store().clone();
        let snapshot = cluster
            .cluster_snapshot(&Deadline::new(STORE_BUDGET))
            .map_err(|e| format!("reading the cluster's leases and nodes: {e}"))?;
        self.view = ClusterView::from_snapshot(&snapshot, SystemTime::now(), self.ttl());
        self.reconcile()?;
        self.refresh_usage();
        cluster.watch(&snapshot, self.poll(), self.ttl()).map_err(|e| format!("watching the cluster store: {e}"))
    }

    fn announce(&mut self) -> Result<(), String> {
        let cluster = self.ipam.cluster_store().clone();
        let deadline = Deadline::new(STORE_BUDGET);
        let lease = match self.node_lease {
            Some(lease) => cluster.renew_node(lease, &self.record, self.ttl(), &deadline),
            None => cluster.put_node(&self.record, self.ttl(), &deadline),
        };
        self.node_lease = Some(lease.map_err(|e| format!("announcing node {}: {e}", self.me.node))?);
        Ok(())
    }

    fn renew(&mut self) {
        if let Err(e) = self.announce() {
            tracing::warn!("{e}");
        }
    }

    /// Bring the kernel to what the view implies, then SNAT; count the result.
    fn reconcile(&mut self) -> Result<(), String> {
        let res = self.reconcile_routes().and_then(|_| self.reconcile_snat());
        if let Err(e) = &res {
            tracing::warn!("reconcile failed: {e}");
        }
        self.metrics.reconciled(res.is_ok());
        res
    }

    fn reconcile_routes(&mut self) -> Result<(), String> {
        let vxlan = kernel::ensure_vxlan(&mut self.nl, self.vxlan.as_ref()).map_err(|e| e.to_string())?;
        self.me.vxlan = vxlan;
        let desired = self.view.desired(&self.me);
        let applied = kernel::apply(&mut self.nl, &desired, vxlan).map_err(|e| e.to_string())?;
        let done = Instant::now();
        for (block, seen) in self.due.drain() {
            if desired.routes.iter().any(|(r, kind)| r.dst == block && *kind != RouteKind::Blackhole) {
                self.metrics.route_programming_seconds.observe(done.duration_since(seen).as_secs_f64());
            }
        }
        if applied.routes_added + applied.routes_removed + applied.entries_changed > 0 {
            tracing::info!(
                added = applied.routes_added,
                removed = applied.routes_removed,
                vxlan_entries = applied.entries_changed,
                "routes reconciled"
            );
        }
        for block in &applied.conflicts {
            if self.reported.insert(format!("conflict {block}")) {
                tracing::warn!(%block, "a route to this block exists that podnet did not make: left alone, no route programmed");
            }
        }
        for node in &desired.unreachable {
            if self.reported.insert(format!("unreachable {node}")) {
                tracing::warn!(
                    %node, encap = self.args.encap.as_str(),
                    "node is not on a subnet of this node (or has no VXLAN device): its blocks cannot be routed"
                );
            }
        }
        self.reported.retain(|r| !r.starts_with("unreachable ") || desired.unreachable.contains(&r[12..]));
        let mut kinds: BTreeMap<RouteKind, i64> = BTreeMap::new();
        for kind in desired.routes.values() {
            *kinds.entry(*kind).or_default() += 1;
        }
        for kind in [RouteKind::Direct, RouteKind::Vxlan, RouteKind::Blackhole] {
            let n = kinds.get(&kind).copied().unwrap_or(0);
            self.metrics.routes.get_or_create(&KindLabels { kind: kind.as_str().into() }).set(n);
        }
        self.metrics.unreachable_nodes.set(desired.unreachable.len() as i64);
        let live = self.view.live();
        let live_count = live.len() + usize::from(!live.iter().any(|n| n.node == self.me.node));
        let dead = self.view.dead().into_iter().filter(|n| *n != self.me.node).count();
        self.metrics.nodes.get_or_create(&StateLabels { state: "live".into() }).set(live_count as i64);
        self.metrics.nodes.get_or_create(&StateLabels { state: "dead".into() }).set(dead as i64);
        Ok(())
    }

    /// Write the SNAT table when it differs from the policy (missing, edited, or a first run).
    fn reconcile_snat(&mut self) -> Result<(), String> {
        if snat::current()? != Some(snat::expected(&self.snat)) {
            snat::apply(&self.snat)?;
            tracing::info!(table = snat::TABLE, "SNAT table written");
        }
        Ok(())
    }

    /// Ask the host agent for vnet pools' inventories when they are due, so ADDs find them fresh
    /// and rarely wait on it (a failure keeps the last good inventory; ADDs then try themselves).
    fn refresh_sources(&mut self) {
        let vnet: Vec<&podnet_ipam::Pool> =
            self.ipam.config().pools.iter().filter(|p| p.source == podnet_ipam::Source::Vnet).collect();
        if vnet.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Half the pool's refresh interval: ahead of the ADDs, which refresh at the full interval.
        let due = vnet.iter().any(|p| {
            let half = p.cfg.refresh_seconds.unwrap_or(10) * 500;
            self.ipam.vnet_inventory(p.name()).is_none_or(|inv| now.saturating_sub(inv.checked_at_ms) >= half)
        });
        if due {
            if let Err(e) = self.ipam.refresh_sources() {
                tracing::warn!("refreshing the vnet inventory: {e}");
            }
        }
        let network = self.network.name.clone();
        let withdrawn = self.ipam.withdrawn().unwrap_or_default();
        // The audit history ends the holding of an address the cloud took back.
        if let Err(e) = podnet_audit::note_withdrawn(&self.ipam, &withdrawn) {
            tracing::warn!("noting withdrawn vnet addresses in the audit history: {e}");
        }
        for p in vnet {
            let available = self.ipam.vnet_inventory(p.name()).map(|inv| inv.addresses.len()).unwrap_or(0);
            let lost = withdrawn.iter().filter(|(pool, _)| pool == p.name()).count();
            for (state, v) in [("available", available), ("withdrawn", lost)] {
                let labels = PoolLabels { network: network.clone(), pool: p.name().into(), state: state.into() };
                self.metrics.vnet_addresses.get_or_create(&labels).set(i64::try_from(v).unwrap_or(i64::MAX));
            }
        }
    }

    /// Move this node's allocations and releases into its audit log (ADD and DEL leave them in
    /// the node store, so they never wait on the log).
    fn collect_audit(&self) {
        if !self.ipam.node_store_exists() {
            return;
        }
        if let Err(e) = podnet_audit::collect(&self.ipam) {
            tracing::warn!("bringing the audit log up to date: {e}");
            return;
        }
        // To the cluster store, resuming from the cursor (an outage only delays it).
        if let Err(e) = podnet_audit::ship(&self.ipam.fresh()) {
            tracing::warn!("shipping audit events to the cluster store: {e}; will resume");
        }
    }

    /// Pool and address gauges, from the view and this node's store.
    fn refresh_usage(&mut self) {
        let leased = self.view.leased_by_pool();
        let network = self.network.name.clone();
        for pool in self.ipam.config().pools.iter().filter(|p| p.source == podnet_ipam::Source::Overlay) {
            let total = podnet_ipam::addr::block_count(pool.cidr(), pool.block_len);
            let n = leased.get(pool.name()).copied().unwrap_or(0);
            let set = |state: &str, v: u128| {
                let labels = PoolLabels { network: network.clone(), pool: pool.name().into(), state: state.into() };
                self.metrics.pool_blocks.get_or_create(&labels).set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set("leased", u128::from(n));
            set("free", total.saturating_sub(u128::from(n)));
        }
        let leases: Vec<_> = self.view.leases.values().cloned().collect();
        match podnet_ipam::report::show_with_leases(&self.ipam.fresh(), &leases) {
            Ok(pools) => {
                for p in pools {
                    for (state, v) in [("used", p.used as u64), ("free", p.free)] {
                        let labels = PoolLabels { network: network.clone(), pool: p.name.clone(), state: state.into() };
                        self.metrics.node_addresses.get_or_create(&labels).set(i64::try_from(v).unwrap_or(i64::MAX));
                    }
                }
            }
            Err(e) => tracing::warn!("reading this node's address usage: {e}"),
        }
    }

    fn collect_garbage(&mut self) {
        let grace = Duration::from_secs(self.args.gc_grace_seconds);
        let report = self.gc.pass(&self.ipam.fresh(), &self.data_dir, &mut self.nl, grace);
        self.metrics.gc_released_total.inc_by(report.released as u64);
        if report.released + report.veths_removed + report.blocks_returned + report.claims_returned > 0 {
            tracing::info!(
                released = report.released,
                veths = report.veths_removed,
                blocks = report.blocks_returned,
                claims = report.claims_returned,
                "GC"
            );
        }
        for e in report.errors {
            tracing::warn!("GC: {e}");
        }
    }

    /// The uplink podnetd found (for logs and tests).
    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
