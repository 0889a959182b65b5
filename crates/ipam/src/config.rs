//! The `ipam` object of a network config, validated: every error names the field and what is allowed.

use crate::addr::{max_prefix, to_u128};
use crate::error::IpamError;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/podnet";
/// Long enough that a node churning pods keeps its blocks, short enough that a drained node
/// gives its blocks back within minutes.
pub const DEFAULT_EMPTY_BLOCK_GRACE_SECONDS: u64 = 600;

/// `pools[].source` as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceName {
    Overlay,
    Range,
    Vnet,
}

/// `pools[].blockOrder`: the order in which a node tries a pool's free blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockOrder {
    /// Each node its own order (start and stride from a hash of its name): nodes leasing at the
    /// same moment rarely want the same block. The default.
    Spread,
    /// From the pool's first block up, every node alike: predictable addresses, but nodes that
    /// lease at once all race for the same blocks.
    Sequential,
}

/// The address source of a validated pool: only sources this build offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Blocks leased to nodes from the cluster store.
    Overlay,
    /// The whole `cidr` is this node's (kubenet's podCIDR).
    Range,
    /// The secondary addresses of this node's NIC, from the host agent (Azure CNI's model).
    Vnet,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Overlay => "overlay",
            Source::Range => "range",
            Source::Vnet => "vnet",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    pub cidr: IpNet,
    #[serde(default)]
    pub block_size: Option<u8>,
    #[serde(default = "default_source")]
    pub source: SourceName,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub allow_borrowing: bool,
    #[serde(default)]
    pub block_order: Option<BlockOrder>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub inventory_url: Option<String>,
    #[serde(default)]
    pub inventory_file: Option<PathBuf>,
    #[serde(default)]
    pub interface_mac: Option<String>,
    #[serde(default)]
    pub refresh_seconds: Option<u64>,
}

fn default_source() -> SourceName {
    SourceName::Overlay
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(rename = "type", default = "default_store_type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
    // etcd keys are accepted so a config written for the cluster store parses; see `validate`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default, rename = "timeoutMs")]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, rename = "passwordFile")]
    pub password_file: Option<PathBuf>,
}

fn default_store_type() -> String {
    "local".into()
}

/// `ipam.store.tls`: PEM files, read when the store connects.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The etcd store's settings, validated.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// URLs; a bare `host:port` was taken as `http://host:port`.
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// Bounds all etcd work of one invocation, retries included.
    pub timeout: std::time::Duration,
    pub tls: Option<TlsFiles>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

pub const DEFAULT_ETCD_PREFIX: &str = "/podnet";
pub const DEFAULT_ETCD_TIMEOUT_MS: u64 = 2000;
pub const MAX_ETCD_TIMEOUT_MS: u64 = 10_000;

fn etcd_config(store: &StoreConfig) -> Result<EtcdConfig, IpamError> {
    let bad = |m: String| IpamError::Config(format!("ipam.store.{m}"));
    if store.endpoints.is_empty() {
        return Err(bad("endpoints is empty; list the etcd client URLs, e.g. [\"http://127.0.0.1:2379\"]".into()));
    }
    let mut endpoints = Vec::new();
    for e in &store.endpoints {
        let url = if e.contains("://") { e.clone() } else { format!("http://{e}") };
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad(format!("endpoints: {e:?} must be http:// or https:// (or a bare host:port)")))?;
        if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
            return Err(bad(format!("endpoints: {e:?} is not host:port")));
        }
        if url.starts_with("https://") && store.tls.as_ref().and_then(|t| t.ca.as_ref()).is_none() {
            return Err(bad(format!("tls.ca is needed for the https endpoint {e}")));
        }
        endpoints.push(url);
    }
    let prefix = store.prefix.clone().unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
    if !prefix.starts_with('/') {
        return Err(bad(format!("prefix {prefix:?} must start with '/'")));
    }
    let timeout_ms = store.timeout_ms.unwrap_or(DEFAULT_ETCD_TIMEOUT_MS);
    // Leasing a block runs under the node store lock, which others wait on for at most 20 s.
    if timeout_ms == 0 || timeout_ms > MAX_ETCD_TIMEOUT_MS {
        return Err(bad(format!("timeoutMs {timeout_ms} must be from 1 to {MAX_ETCD_TIMEOUT_MS}")));
    }
    if let Some(t) = &store.tls {
        if t.cert.is_some() != t.key.is_some() {
            return Err(bad("tls: cert and key go together".into()));
        }
    }
    if store.username.is_some() != store.password_file.is_some() {
        return Err(bad("username and passwordFile go together".into()));
    }
    Ok(EtcdConfig {
        endpoints,
        prefix,
        timeout: std::time::Duration::from_millis(timeout_ms),
        tls: store.tls.clone(),
        username: store.username.clone(),
        password_file: store.password_file.clone(),
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIpam {
    #[serde(rename = "type")]
    _kind: Option<String>,
    node: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    store: Option<StoreConfig>,
    #[serde(default)]
    pools: Option<Vec<PoolConfig>>,
    #[serde(default)]
    empty_block_grace_seconds: Option<u64>,
    #[serde(default)]
    audit: Option<AuditConfig>,
}

/// `ipam.audit`: how long and how much of the audit history a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    #[serde(default = "default_audit_max_bytes")]
    pub max_bytes: u64,
}

fn default_retention_days() -> u64 {
    90
}
fn default_audit_max_bytes() -> u64 {
    256 << 20
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig { retention_days: default_retention_days(), max_bytes: default_audit_max_bytes() }
    }
}

/// A pool after validation, with its block size and reserved addresses resolved.
#[derive(Debug, Clone)]
pub struct Pool {
    pub cfg: PoolConfig,
    pub source: Source,
    pub block_len: u8,
    /// `exclude[]` parsed (range source).
    pub exclude: Vec<IpNet>,
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn cidr(&self) -> IpNet {
        self.cfg.cidr
    }
    pub fn is_v4(&self) -> bool {
        self.cfg.cidr.addr().is_ipv4()
    }
    /// The blocks of the pool in the order node `node` tries them.
    pub fn blocks_for(&self, node: &str) -> Box<dyn Iterator<Item = IpNet> + '_> {
        match self.cfg.block_order.unwrap_or(BlockOrder::Spread) {
            BlockOrder::Spread => Box::new(crate::addr::block_order(self.cidr(), self.block_len, node)),
            BlockOrder::Sequential => {
                let count = crate::addr::block_count(self.cidr(), self.block_len);
                Box::new((0..count).map(|n| crate::addr::nth_block(self.cidr(), self.block_len, n)))
            }
        }
    }
    pub fn serves_namespace(&self, ns: Option<&str>) -> bool {
        self.cfg.namespaces.is_empty() || ns.is_some_and(|ns| self.cfg.namespaces.iter().any(|n| n == ns))
    }
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::new(ip, max_prefix(ip.is_ipv4())).expect("host prefix")
}

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub node: String,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    /// Set when `store.type` is `etcd`.
    pub etcd: Option<EtcdConfig>,
    /// How long a block must stay empty before GC hands it back to its pool.
    pub empty_block_grace: std::time::Duration,
    pub pools: Vec<Pool>,
    pub audit: AuditConfig,
}

impl IpamConfig {
    /// Parse the `ipam` object. `plugin_data_dir` is the calling plugin's `dataDir`, used when the
    /// object sets none; `ipam.node` defaults to this machine's host name.
    pub fn parse(ipam: &Value, plugin_data_dir: Option<&Path>) -> Result<IpamConfig, IpamError> {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
        Self::parse_for_host(ipam, plugin_data_dir, host.as_deref())
    }

    /// [`IpamConfig::parse`] with the host name given (pure: the planner and tests pass their own).
    pub fn parse_for_host(
        ipam: &Value,
        plugin_data_dir: Option<&Path>,
        host_name: Option<&str>,
    ) -> Result<IpamConfig, IpamError> {
        // serde_path_to_error names the offending key, e.g. "ipam.pools[0].cidr: invalid IP address syntax".
        let raw: RawIpam = serde_path_to_error::deserialize(ipam.clone()).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { format!(".{path}") };
            IpamError::Config(format!("ipam{at}: {}", e.inner()))
        })?;
        let node = match raw.node {
            Some(n) => n,
            None => host_name
                .map(str::to_string)
                .ok_or_else(|| IpamError::Config("ipam.node is not set and the host name cannot be read".into()))?,
        };
        if node.is_empty() || node.len() > 253 || node.contains(['/', '\0']) || node.starts_with('.') {
            return Err(IpamError::Config(format!(
                "ipam.node {node:?} must be a node name (no '/', at most 253 characters)"
            )));
        }
        let data_dir = raw
            .data_dir
            .or_else(|| plugin_data_dir.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if !data_dir.is_absolute() {
            return Err(IpamError::Config(format!("ipam.dataDir {} must be an absolute path", data_dir.display())));
        }
        let store = raw.store.unwrap_or_else(|| StoreConfig { kind: default_store_type(), ..Default::default() });
        match store.kind.as_str() {
            "local" => {
                if let Some(p) = &store.path {
                    if !p.is_absolute() {
                        return Err(IpamError::Config(format!(
                            "ipam.store.path {} must be an absolute path",
                            p.display()
                        )));
                    }
                }
            }
            "etcd" => {}
            other => {
                return Err(IpamError::Config(format!(
                    "ipam.store.type {other:?} is unknown; use \"local\" or \"etcd\""
                )))
            }
        }
        let pools_raw =
            raw.pools.ok_or_else(|| IpamError::Config("ipam.pools is missing; list at least one pool".into()))?;
        if pools_raw.is_empty() {
            return Err(IpamError::Config("ipam.pools is empty; list at least one pool".into()));
        }
        let mut pools = Vec::new();
        let mut names = HashSet::new();
        for p in pools_raw {
            let pool = validate_pool(p)?;
            if !names.insert(pool.cfg.name.clone()) {
                return Err(IpamError::Config(format!(
                    "ipam.pools: name {:?} is used twice; pool names are unique",
                    pool.cfg.name
                )));
            }
            if let Some(other) =
                pools.iter().find(|o: &&Pool| o.cidr().contains(&pool.cidr()) || pool.cidr().contains(&o.cidr()))
            {
                return Err(IpamError::Config(format!(
                    "ipam.pools: {} ({}) overlaps {} ({}); pools of one network must not overlap",
                    pool.name(),
                    pool.cidr(),
                    other.name(),
                    other.cidr()
                )));
            }
            pools.push(pool);
        }
        let etcd = if store.kind == "etcd" { Some(etcd_config(&store)?) } else { None };
        let empty_block_grace =
            std::time::Duration::from_secs(raw.empty_block_grace_seconds.unwrap_or(DEFAULT_EMPTY_BLOCK_GRACE_SECONDS));
        let audit = raw.audit.unwrap_or_default();
        if audit.retention_days == 0 || audit.max_bytes < 1 << 20 {
            return Err(IpamError::Config(
                "ipam.audit: retentionDays must be at least 1 and maxBytes at least 1048576 (1 MiB)".into(),
            ));
        }
        Ok(IpamConfig { node, data_dir, store, etcd, empty_block_grace, pools, audit })
    }

    /// The budget for one operation's cluster-store work (etcd: `timeoutMs`; the local store waits
    /// at most its lock's wait).
    pub fn cluster_timeout(&self) -> std::time::Duration {
        self.etcd.as_ref().map(|e| e.timeout).unwrap_or(podnet_fsio::LOCK_WAIT)
    }

    /// The cluster store directory for the local store. The default `_cluster` cannot collide with
    /// a network's own directory: network names start with a letter or digit.
    pub fn local_cluster_dir(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| self.data_dir.join("_cluster"))
    }

    /// Pools this namespace may use, in the order to try: restricted pools that list it, then open pools.
    pub fn eligible_pools(&self, namespace: Option<&str>) -> Vec<&Pool> {
        let listed = self.pools.iter().filter(|p| !p.cfg.namespaces.is_empty() && p.serves_namespace(namespace));
        let open = self.pools.iter().filter(|p| p.cfg.namespaces.is_empty());
        listed.chain(open).collect()
    }
}

fn validate_pool(p: PoolConfig) -> Result<Pool, IpamError> {
    let field = |f: &str, msg: String| IpamError::Config(format!("ipam.pools[{}].{f}: {msg}", p.name));
    if p.name.is_empty()
        || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || p.name.starts_with('.')
    {
        return Err(IpamError::Config(format!(
            "ipam.pools: name {:?} must be letters, digits, '-', '_' or '.'",
            p.name
        )));
    }
    let cidr = p.cidr;
    if cidr != cidr.trunc() {
        return Err(field("cidr", format!("{cidr} has host bits set; did you mean {}?", cidr.trunc())));
    }
    let v4 = cidr.addr().is_ipv4();
    let max = max_prefix(v4);
    let (source, block_len) = match p.source {
        SourceName::Vnet => {
            for (k, set) in [
                ("blockSize", p.block_size.is_some()),
                ("rangeStart", p.range_start.is_some()),
                ("rangeEnd", p.range_end.is_some()),
                ("gateway", p.gateway.is_some()),
                ("exclude", !p.exclude.is_empty()),
            ] {
                if set {
                    return Err(field(
                        k,
                        "does not apply to a vnet pool: its addresses are the NIC's secondaries".into(),
                    ));
                }
            }
            if p.inventory_url.is_some() && p.inventory_file.is_some() {
                return Err(field("inventoryFile", "give inventoryUrl or inventoryFile, not both".into()));
            }
            if let Some(u) = &p.inventory_url {
                if !u.starts_with("http://") && !u.starts_with("https://") {
                    return Err(field("inventoryUrl", format!("{u:?} is not an http:// or https:// URL")));
                }
            }
            if let Some(m) = &p.interface_mac {
                if crate::inventory::normalize_mac(m).is_none() {
                    return Err(field("interfaceMac", format!("{m:?} is not a MAC address")));
                }
            }
            (Source::Vnet, max)
        }
        SourceName::Range => {
            if p.block_size.is_some() {
                return Err(field("blockSize", "applies to overlay pools only; a range pool is one block".into()));
            }
            (Source::Range, cidr.prefix_len())
        }
        SourceName::Overlay => {
            for (k, set) in [
                ("rangeStart", p.range_start.is_some()),
                ("rangeEnd", p.range_end.is_some()),
                ("gateway", p.gateway.is_some()),
                ("exclude", !p.exclude.is_empty()),
            ] {
                if set {
                    return Err(field(k, "applies to range pools only".into()));
                }
            }
            let b = p.block_size.unwrap_or(if v4 { 26 } else { 122 });
            if b < cidr.prefix_len() || b > max - 2 {
                return Err(field(
                    "blockSize",
                    format!("{b} must lie between the pool's prefix length {} and {}", cidr.prefix_len(), max - 2),
                ));
            }
            (Source::Overlay, b)
        }
    };
    if source == Source::Range && cidr.prefix_len() > max - 2 {
        return Err(field("cidr", format!("{cidr} is too small; a range pool needs at least a /{}", max - 2)));
    }
    for (k, ip) in [("rangeStart", p.range_start), ("rangeEnd", p.range_end), ("gateway", p.gateway)] {
        if let Some(ip) = ip {
            if !cidr.contains(&ip) {
                return Err(field(k, format!("{ip} is outside {cidr}")));
            }
        }
    }
    if let (Some(a), Some(b)) = (p.range_start, p.range_end) {
        if to_u128(a) > to_u128(b) {
            return Err(field("rangeEnd", format!("{b} comes before rangeStart {a}")));
        }
    }
    let mut exclude = Vec::new();
    for e in &p.exclude {
        let net = e
            .parse::<IpNet>()
            .or_else(|_| e.parse::<IpAddr>().map(host))
            .map_err(|_| field("exclude", format!("{e:?} is neither an address nor a CIDR")))?;
        if !cidr.contains(&net.network()) {
            return Err(field("exclude", format!("{e} is outside {cidr}")));
        }
        exclude.push(net.trunc());
    }
    if p.block_order.is_some() && source != Source::Overlay {
        return Err(field("blockOrder", "applies to overlay pools only: a range pool is one block".into()));
    }
    if p.allow_borrowing && source != Source::Overlay {
        return Err(field(
            "allowBorrowing",
            "applies to overlay pools only: a range or vnet pool has no blocks to borrow from".into(),
        ));
    }
    if source != Source::Vnet {
        for (k, set) in [
            ("inventoryUrl", p.inventory_url.is_some()),
            ("inventoryFile", p.inventory_file.is_some()),
            ("interfaceMac", p.interface_mac.is_some()),
            ("refreshSeconds", p.refresh_seconds.is_some()),
        ] {
            if set {
                return Err(field(k, "applies to vnet pools only".into()));
            }
        }
    }
    if p.refresh_seconds == Some(0) {
        return Err(field("refreshSeconds", "must be at least 1".into()));
    }
    for ns in &p.namespaces {
        if ns.is_empty() {
            return Err(field("namespaces", "an empty namespace name matches nothing; remove it".into()));
        }
    }
    Ok(Pool { cfg: p, source, block_len, exclude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<IpamConfig, IpamError> {
        IpamConfig::parse(&v, Some(Path::new("/tmp/x")))
    }

    #[test]
    fn defaults_and_pool_order() {
        let c = parse(json!({"type":"podnet-ipam","node":"n1","pools":[
            {"name":"open","cidr":"10.1.0.0/16"},
            {"name":"team","cidr":"10.2.0.0/16","namespaces":["team-a"]},
            {"name":"v6","cidr":"fd00::/48"}]}))
        .unwrap();
        assert_eq!(c.pools[0].block_len, 26);
        assert_eq!(c.pools[2].block_len, 122);
        assert_eq!(c.data_dir, Path::new("/tmp/x"));
        assert_eq!(c.local_cluster_dir(), Path::new("/tmp/x/_cluster"));
        let names = |ns| c.eligible_pools(ns).iter().map(|p| p.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(Some("team-a")), ["team", "open", "v6"]);
        assert_eq!(names(Some("other")), ["open", "v6"]);
        assert_eq!(names(None), ["open", "v6"]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"node":"n"}), "ipam.pools"),
            (json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.1/16"}]}), "host bits"),
            (json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16","blockSize":8}]}), "blockSize"),
            (
                json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16","source":"range","rangeStart":"10.1.0.1"}]}),
                "rangeStart",
            ),
            (json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16","gateway":"10.0.0.1"}]}), "gateway"),
            (
                json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16"},{"name":"p","cidr":"10.1.0.0/16"}]}),
                "twice",
            ),
            (
                json!({"node":"n","pools":[{"name":"a","cidr":"10.0.0.0/8"},{"name":"b","cidr":"10.1.0.0/16"}]}),
                "overlaps",
            ),
            (json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16","colour":"red"}]}), "colour"),
            (json!({"node":"n","store":{"type":"zk"},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]}), "store.type"),
            (json!({"node":"n","store":{"type":"etcd"},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]}), "endpoints"),
            (
                json!({"node":"n","store":{"type":"etcd","endpoints":["https://e:2379"]},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]}),
                "tls.ca",
            ),
            (
                json!({"node":"n","store":{"type":"etcd","endpoints":["ftp://e"]},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]}),
                "endpoints",
            ),
            (
                json!({"node":"n","store":{"type":"etcd","endpoints":["e:1"],"username":"u"},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]}),
                "passwordFile",
            ),
            (
                json!({"node":"n","pools":[{"name":"p","cidr":"10.0.0.0/16","source":"range","exclude":["bogus"]}]}),
                "exclude",
            ),
            (json!({"node":"n","pools":[{"name":"p","cidr":"nope"}]}), "cidr"),
            (json!({"node":"a/b","pools":[{"name":"p","cidr":"10.0.0.0/16"}]}), "ipam.node"),
        ];
        for (v, needle) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.to_string().contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn etcd_settings() {
        let c = parse(json!({"node":"n","store":{"type":"etcd","endpoints":["127.0.0.1:2379","https://e:2379"],"tls":{"ca":"/ca.pem"},"timeoutMs":500},"pools":[{"name":"p","cidr":"10.0.0.0/16"}]})).unwrap();
        let e = c.etcd.unwrap();
        assert_eq!(e.endpoints, ["http://127.0.0.1:2379", "https://e:2379"]);
        assert_eq!((e.prefix.as_str(), e.timeout.as_millis()), ("/podnet", 500));
    }
}
