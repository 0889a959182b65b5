//! `/metrics` (Prometheus text format) and `/healthz` on `--metrics-addr`, served by a small HTTP
//! server on a thread of its own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub network: String,
    pub pool: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric the contract names.
pub struct Metrics {
    registry: Registry,
    pub node_addresses: Family<PoolLabels, Gauge>,
    pub pool_blocks: Family<PoolLabels, Gauge>,
    pub routes: Family<KindLabels, Gauge>,
    pub nodes: Family<StateLabels, Gauge>,
    pub unreachable_nodes: Gauge,
    pub reconcile_total: Family<ResultLabels, Counter>,
    pub gc_released_total: Counter,
    pub route_programming_seconds: Histogram,
    /// vnet pools: the NIC's secondary addresses (`available`), and those a pod holds that the
    /// cloud took back (`withdrawn`).
    pub vnet_addresses: Family<PoolLabels, Gauge>,
    /// Unix milliseconds of the last successful reconcile (0: none yet).
    last_ok_ms: AtomicU64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let node_addresses = Family::<PoolLabels, Gauge>::default();
        let pool_blocks = Family::<PoolLabels, Gauge>::default();
        let routes = Family::<KindLabels, Gauge>::default();
        let nodes = Family::<StateLabels, Gauge>::default();
        let unreachable_nodes = Gauge::default();
        let reconcile_total = Family::<ResultLabels, Counter>::default();
        let gc_released_total = Counter::default();
        // 0.5 ms to about 16 s.
        let route_programming_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "podnet_node_addresses",
            "Addresses in this node's blocks, used or free",
            node_addresses.clone(),
        );
        registry.register(
            "podnet_pool_blocks",
            "Blocks of each pool, leased or free, cluster-wide",
            pool_blocks.clone(),
        );
        registry.register("podnet_routes", "Routes podnetd keeps, by kind", routes.clone());
        registry.register("podnet_nodes", "Nodes by liveness, this node included", nodes.clone());
        registry.register(
            "podnet_unreachable_nodes",
            "Live nodes this node's --encap cannot reach",
            unreachable_nodes.clone(),
        );
        registry.register(
            "podnet_reconcile",
            "Reconciles of the kernel with the cluster, by result",
            reconcile_total.clone(),
        );
        registry.register("podnet_gc_released", "Addresses GC freed", gc_released_total.clone());
        registry.register(
            "podnet_route_programming_seconds",
            "From a lease seen to its route in the kernel",
            route_programming_seconds.clone(),
        );
        let vnet_addresses = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "podnet_vnet_addresses",
            "vnet pools: the NIC's secondary addresses (available), and addresses pods hold that the NIC lost (withdrawn)",
            vnet_addresses.clone(),
        );
        Metrics {
            vnet_addresses,
            registry,
            node_addresses,
            pool_blocks,
            routes,
            nodes,
            unreachable_nodes,
            reconcile_total,
            gc_released_total,
            route_programming_seconds,
            last_ok_ms: AtomicU64::new(0),
        }
    }

    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconcile_total.get_or_create(&ResultLabels { result: result.into() }).inc();
        if ok {
            self.last_ok_ms.store(unix_ms(SystemTime::now()), Ordering::Relaxed);
        }
    }

    /// Healthy: the last reconcile that succeeded is at most `window` old.
    pub fn healthy(&self, window: Duration) -> bool {
        let last = self.last_ok_ms.load(Ordering::Relaxed);
        last > 0 && unix_ms(SystemTime::now()).saturating_sub(last) <= window.as_millis() as u64
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve `/metrics` and `/healthz` from `server` until the process ends.
pub fn serve(server: tiny_http::Server, metrics: Arc<Metrics>, health_window: Duration) {
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, body, kind) = match request.url() {
                "/metrics" => (200, metrics.text(), "text/plain; version=0.0.4"),
                "/healthz" if metrics.healthy(health_window) => (200, "ok\n".to_string(), "text/plain"),
                "/healthz" => (503, "no reconcile succeeded lately\n".to_string(), "text/plain"),
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], kind.as_bytes()).expect("a valid header");
            let _ =
                request.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
        }
    });
}
