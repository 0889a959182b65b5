//! `vnet`: the secondary addresses the cloud gave one of this node's NICs (Azure CNI's model).
//! The host agent's document is fetched at most every `refreshSeconds`, each fetch bounded to
//! [`FETCH_BOUND`], and the last good inventory is kept in the node store: a failing, hanging or
//! malformed answer leaves the pool as it was, and only a node that never had an inventory fails
//! an ADD for want of one (code 11). podnetd refreshes in the background, so ADDs rarely fetch.

use super::{PickContext, PoolSource, Usage};
use crate::allocate::{Picked, Step};
use crate::config::Pool;
use crate::error::IpamError;
use crate::inventory;
use crate::model::BlockLease;
use crate::span::{host, Addresses, Reservation, Span};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Azure's host agent (NMAgent) interface list, reached through the wireserver address.
pub const DEFAULT_INVENTORY_URL: &str = "http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1";
/// The longest an ADD waits on the host agent.
pub const FETCH_BOUND: Duration = Duration::from_secs(2);
const DEFAULT_REFRESH_SECONDS: u64 = 10;

/// The last good inventory of a pool, kept in the node store (`vnet/<pool>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VnetInventory {
    /// When the host agent last answered with a good document (ms since the epoch).
    pub fetched_at_ms: u64,
    /// When it was last asked, answered or not: failed asks also wait `refreshSeconds`.
    pub checked_at_ms: u64,
    /// The NIC (12 hex digits) and its subnet the addresses are on.
    pub mac: String,
    pub subnet: Option<IpNet>,
    /// The NIC's secondary addresses inside the pool's cidr, sorted.
    pub addresses: Vec<IpAddr>,
    /// Why the last ask failed, if it did (`ipam show`, logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub(crate) struct VnetSource {
    pub pool: Pool,
    pub reservation: Reservation,
    /// `<node store>/vnet/<pool>.json`.
    pub cache: PathBuf,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A vnet pool's kept inventory in the node store at `node_dir`.
pub(crate) fn load(pool: &Pool, node_dir: &std::path::Path) -> Option<VnetInventory> {
    let text = std::fs::read(cache_path(pool, node_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

pub(crate) fn cache_path(pool: &Pool, node_dir: &std::path::Path) -> PathBuf {
    node_dir.join("vnet").join(format!("{}.json", pool.name()))
}

impl VnetSource {
    fn refresh_ms(&self) -> u64 {
        self.pool.cfg.refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECONDS) * 1000
    }

    /// The kept inventory (None before the first good answer).
    pub(crate) fn load(&self) -> Option<VnetInventory> {
        let text = std::fs::read(&self.cache).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn store(&self, inv: &VnetInventory) -> Result<(), IpamError> {
        let dir = self.cache.parent().expect("the cache lives in a directory");
        podnet_fsio::ensure_dir(dir)?;
        let name = self.cache.file_name().expect("a file name").to_string_lossy().to_string();
        let body = serde_json::to_vec(inv).expect("an inventory serializes");
        Ok(podnet_fsio::atomic_write(dir, &name, &body)?)
    }

    /// The host agent's document: `inventoryFile`, else `inventoryUrl` (default Azure's), within
    /// [`FETCH_BOUND`].
    fn fetch(&self) -> Result<String, String> {
        if let Some(file) = &self.pool.cfg.inventory_file {
            return std::fs::read_to_string(file).map_err(|e| format!("reading inventoryFile {}: {e}", file.display()));
        }
        let url = self.pool.cfg.inventory_url.as_deref().unwrap_or(DEFAULT_INVENTORY_URL);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_BOUND))
            .http_status_as_error(true)
            .build()
            .new_agent();
        // The document is a few KiB; a bigger answer is not the host agent's.
        let mut resp = agent.get(url).call().map_err(|e| format!("asking the host agent at {url}: {e}"))?;
        resp.body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| format!("reading the host agent's answer from {url}: {e}"))
    }

    /// Ask the host agent now and keep what it says when it is good; the kept inventory after.
    pub(crate) fn refresh(&self) -> Result<VnetInventory, IpamError> {
        let old = self.load();
        let now = now_ms();
        let fetched = self.fetch().and_then(|doc| {
            let inv = inventory::parse(&doc)?;
            let nic = inv.nic(self.pool.cfg.interface_mac.as_deref())?;
            let s = inventory::secondaries(nic, self.pool.cidr());
            Ok(VnetInventory {
                fetched_at_ms: now,
                checked_at_ms: now,
                mac: nic.mac.clone(),
                subnet: s.subnet,
                addresses: s.addresses,
                last_error: None,
            })
        });
        match (fetched, old) {
            (Ok(new), _) => {
                self.store(&new)?;
                Ok(new)
            }
            (Err(why), Some(mut kept)) => {
                // Keep every address: a bad answer never shrinks the pool. Note the ask, so the
                // next ADDs do not each wait on a failing agent.
                tracing::warn!(pool = %self.pool.name(), error = %why, "host agent: keeping the last good inventory");
                kept.checked_at_ms = now;
                kept.last_error = Some(why);
                self.store(&kept)?;
                Ok(kept)
            }
            (Err(why), None) => Err(IpamError::Unavailable(format!(
                "pool {}: this node has no inventory of its NIC's addresses yet and the host agent gave none ({why}); \
                 check that the host agent answers, or set inventoryFile",
                self.pool.name()
            ))),
        }
    }

    /// The kept inventory, refreshed first when it is older than `refreshSeconds`.
    fn current(&self) -> Result<VnetInventory, IpamError> {
        match self.load() {
            Some(inv) if now_ms().saturating_sub(inv.checked_at_ms) < self.refresh_ms() => Ok(inv),
            _ => self.refresh(),
        }
    }

    fn span(&self, inv: &VnetInventory) -> Span {
        let subnet = inv.subnet.unwrap_or(self.pool.cidr());
        let v4 = self.pool.is_v4();
        // Pods sit on the VNet subnet itself; the routed dataplane gives them /32 (/128) and its
        // link-local gateway (bridge pools are refused: see config).
        let (pod_prefix_len, gateway) = match self.reservation {
            Reservation::None => (if v4 { 32 } else { 128 }, None),
            Reservation::GatewayPerBlock => (subnet.prefix_len(), Some(first_host(subnet))),
        };
        Span {
            subnet,
            addresses: Addresses::Set(inv.addresses.clone()),
            reserved: vec![host(subnet.network())],
            gateway,
            pod_prefix_len,
        }
    }
}

/// The subnet's first address: Azure's gateway of a VNet subnet.
fn first_host(subnet: IpNet) -> IpAddr {
    crate::addr::from_u128(crate::addr::to_u128(subnet.network()) + 1, subnet.addr().is_ipv4())
}

impl PoolSource for VnetSource {
    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn prepare(&self) -> Result<(), IpamError> {
        self.current().map(|_| ())
    }

    fn pick(&self, step: Step, cx: &mut PickContext<'_, '_>) -> Result<Option<Picked>, IpamError> {
        if step != Step::Own {
            return Ok(None);
        }
        let Some(inv) = self.load() else { return Ok(None) };
        let span = self.span(&inv);
        Ok(span.pick(cx.used, cx.guard.cursor(self.pool.name())).map(|ip| Picked { span, ip, claim: None }))
    }

    fn leases_blocks(&self) -> bool {
        false
    }

    fn span_of(&self, ip: IpAddr, _: &[IpNet]) -> Option<Span> {
        // Also for an address the cloud took back while a pod holds it: it is still released.
        if !self.pool.cidr().contains(&ip) {
            return None;
        }
        let inv = self.load().unwrap_or_else(|| VnetInventory {
            fetched_at_ms: 0,
            checked_at_ms: 0,
            mac: String::new(),
            subnet: None,
            addresses: Vec::new(),
            last_error: None,
        });
        let mut span = self.span(&inv);
        if let Addresses::Set(a) = &mut span.addresses {
            if !a.contains(&ip) {
                a.push(ip);
                a.sort();
            }
        }
        Some(span)
    }

    fn holds(&self, ip: IpAddr, _: &[IpNet]) -> bool {
        self.load().is_some_and(|inv| inv.addresses.contains(&ip))
    }

    fn usage(&self, _: &[BlockLease], _: &[IpNet], used: usize) -> Usage {
        let capacity = self.load().map(|inv| inv.addresses.len() as u128).unwrap_or(0);
        Usage { capacity, free_blocks: 0, node_blocks: Vec::new(), free: capacity.saturating_sub(used as u128) }
    }

    fn has_room(&self, used: usize) -> bool {
        self.load().is_some_and(|inv| inv.addresses.len() > used)
    }

    fn refresh(&self) -> Result<(), IpamError> {
        VnetSource::refresh(self).map(|_| ())
    }

    fn withdrawn(&self, ip: IpAddr) -> bool {
        self.load().is_some_and(|inv| !inv.addresses.contains(&ip))
    }

    fn when_full(&self) -> &'static str {
        "every secondary address of the node's NIC is in use; give the NIC more secondary IPs in the cloud"
    }
}
