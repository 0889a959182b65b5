//! Garbage collection on the node, every `--gc-interval-seconds`, with the plugin's guarantee:
//! never free an address a live pod carries. An address is freed only when its attachment's host
//! veth (the pod's interface's other end) has been gone for the grace time, and only under the
//! attachment's lock, checked again there (an ADD or DEL running on it finishes first). Host veths
//! named `pn…` that no record names are removed after the grace time too; then empty blocks go
//! back to their pools and stale claims are given back.

use podnet_dataplane::{host_veth_name, Netlink};
use podnet_ipam::journal::ReleaseCause;
use podnet_ipam::{Handle, Ipam};
use podnet_plugin::attachment::AttachmentLock;
use podnet_plugin::records::EndpointStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub released: usize,
    pub veths_removed: usize,
    pub blocks_returned: usize,
    pub claims_returned: usize,
    pub errors: Vec<String>,
}

/// What GC has seen missing, and since when (in memory: a restarted agent waits the grace
/// time again, never less).
#[derive(Default)]
pub struct Gc {
    gone_since: HashMap<Handle, Instant>,
    stray_since: HashMap<String, Instant>,
}

impl Gc {
    pub fn pass(&mut self, ipam: &Ipam, data_dir: &Path, nl: &mut Netlink, grace: Duration) -> GcReport {
        let mut report = GcReport::default();
        let now = Instant::now();
        let links: HashSet<String> = match nl.links() {
            Ok(links) => links.into_iter().map(|l| l.name).collect(),
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let handles = match ipam.handles() {
            Ok(h) => h,
            Err(e) => {
                report.errors.push(e.to_string());
                return report;
            }
        };
        let recorded: HashSet<String> = handles.iter().map(|h| host_veth_name(&h.container_id, &h.ifname)).collect();
        self.gone_since.retain(|h, _| handles.contains(h));
        for h in &handles {
            if links.contains(&host_veth_name(&h.container_id, &h.ifname)) {
                self.gone_since.remove(h);
                continue;
            }
            let since = *self.gone_since.entry(h.clone()).or_insert(now);
            if now.duration_since(since) < grace {
                continue;
            }
            match self.release_gone(ipam, data_dir, nl, h) {
                Ok(true) => {
                    report.released += 1;
                    self.gone_since.remove(h);
                }
                Ok(false) => {}
                Err(e) => report.errors.push(e),
            }
        }
        // Host veths no record names: left by a pod whose records went (or an ADD killed between
        // the veth and the record); removed once they have stayed so for the grace time.
        let strays: Vec<&String> =
            links.iter().filter(|n| n.starts_with("pn") && n.len() == 14 && !recorded.contains(*n)).collect();
        self.stray_since.retain(|n, _| strays.contains(&n));
        for name in strays {
            let since = *self.stray_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                match nl.delete_link(name) {
                    Ok(_) => report.veths_removed += 1,
                    Err(e) => report.errors.push(e.to_string()),
                }
                self.stray_since.remove(name);
            }
        }
        match ipam.release_empty_blocks() {
            Ok(b) => report.blocks_returned = b.len(),
            Err(e) => report.errors.push(e.to_string()),
        }
        match ipam.release_stale_claims_now() {
            Ok(c) => report.claims_returned = c.len(),
            Err(e) => report.errors.push(e.to_string()),
        }
        report
    }

    /// Free `h`'s addresses if its veth is still gone under the attachment's lock.
    fn release_gone(&self, ipam: &Ipam, data_dir: &Path, nl: &mut Netlink, h: &Handle) -> Result<bool, String> {
        let lock = AttachmentLock::acquire(data_dir, ipam.network(), h).map_err(|e| e.msg)?;
        if nl.link_by_name(&host_veth_name(&h.container_id, &h.ifname)).map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        let freed = ipam.release_as(h, ReleaseCause::Gc).map_err(|e| e.to_string())?;
        EndpointStore::new(data_dir, ipam.network()).remove(h).map_err(|e| e.to_string())?;
        tracing::info!(handle = %h.key(), addresses = ?freed, "GC: freed the addresses of an attachment whose veth is gone");
        lock.remove();
        Ok(!freed.is_empty())
    }
}
