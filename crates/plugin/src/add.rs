//! ADD as a pipeline: the veth pair is built on a second thread while IPAM picks and records the
//! addresses; the pod is configured once they are safe to carry. Each step that makes something
//! registers its undo in a [`Rollback`], and a failure runs exactly that list: only what this ADD
//! made, the interface before its addresses (so no other pod is ever handed an address a pod
//! still carries).

use crate::attachment::AttachmentLock;
use crate::backend::IpamBackend;
use crate::config::PluginConfig;
use crate::records::{endpoint_record, EndpointRecord, EndpointStore};
use crate::{dataplane_error, netns_error, pod_info};
use podnet_cni::{CniError, Env, ErrorCode};
use podnet_dataplane::{
    endpoint, host_veth_name, pod_mac, DataplaneError, Endpoint, EndpointSpec, Mode, NetNs, NetNsError, Netlink,
    PodAddress,
};
use podnet_fsio::Blank;
use podnet_ipam::Handle;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

/// One thing a failed ADD takes back.
enum Undo {
    /// The veth pair this ADD created (the pod end goes with it).
    Veth(String),
    /// The endpoint record this ADD wrote (exec'd IPAM: a file of its own).
    Record(Handle),
    /// Addresses the IPAM allocated for this ADD (an exec'd plugin: its DEL).
    Release { handle: Handle, exec: bool },
}

impl Undo {
    /// Interfaces first, then records, then addresses.
    fn order(&self) -> u8 {
        match self {
            Undo::Veth(_) => 0,
            Undo::Record(_) => 1,
            Undo::Release { .. } => 2,
        }
    }
}

/// What a failed ADD must undo.
#[derive(Default)]
struct Rollback(Vec<Undo>);

impl Rollback {
    fn push(&mut self, undo: Undo) {
        self.0.push(undo);
    }

    /// The veth pair belongs to a live earlier ADD of this attachment: so do an exec'd plugin's
    /// addresses and the record (the in-process IPAM knows whether it allocated anew).
    fn keep_exec_allocation(&mut self) {
        self.0.retain(|u| !matches!(u, Undo::Release { exec: true, .. } | Undo::Record(_)));
    }

    fn run(mut self, nl: &mut Netlink, backend: &IpamBackend, store: &EndpointStore) {
        self.0.sort_by_key(Undo::order);
        for undo in self.0 {
            match undo {
                Undo::Veth(name) => {
                    if let Err(e) = endpoint::teardown(nl, &name) {
                        tracing::error!("removing {name} after a failed ADD: {e}");
                    }
                }
                Undo::Record(h) => {
                    if let Err(e) = store.remove(&h) {
                        tracing::error!("removing the endpoint record of {} after a failed ADD: {e}", h.key());
                    }
                }
                Undo::Release { handle, .. } => {
                    if let Err(e) = backend.release(&handle) {
                        tracing::error!("releasing {} after a failed ADD: {e}", handle.key());
                    }
                }
            }
        }
    }
}

/// Why the kernel side stopped.
enum KernelFailure {
    /// CNI_NETNS is not a pod's network namespace.
    Netns(NetNsError),
    Dataplane(DataplaneError),
    /// The IPAM side failed first; its error is the one reported.
    IpamFailed,
    /// The ADD could not open its backend or lock: that error is the one reported.
    NotOpened,
    Panicked,
}

/// What the kernel thread did: whether it made the veth pair, and how it ended.
struct KernelSide {
    created: bool,
    /// The endpoint, and when (µs into the ADD) the MTU was known, the veth pair built and the pod
    /// configured.
    result: Result<(Endpoint, [u64; 3]), KernelFailure>,
}

/// Why the IPAM side stopped.
enum IpamStop {
    Failed(CniError),
    /// The kernel side failed before the addresses were needed: nothing was written.
    Aborted,
}

/// What the IPAM side did: the endpoint record (with the addresses), or why it stopped.
struct IpamSide {
    record: Option<EndpointRecord>,
    result: Result<(), IpamStop>,
}

pub(crate) struct AddPipeline<'a> {
    pub cfg: &'a PluginConfig,
    pub env: &'a Env,
    /// CNI_NETNS, opened (and refused if it is no pod's namespace) on the kernel side.
    pub netns_path: &'a Path,
    pub handle: Handle,
    pub started: Instant,
}

/// What ADD opens before it may change anything: the IPAM backend, the endpoint records, and the
/// attachment's lock (held until the ADD's result is built).
pub(crate) struct Opened {
    pub backend: IpamBackend,
    pub store: EndpointStore,
    pub _attachment: AttachmentLock,
}

/// What the kernel side needs, owned: it runs on a thread of its own (see [`crate::spread`]).
struct KernelJob {
    netns_path: PathBuf,
    mode: Mode,
    mtu: Option<u32>,
    handle: Handle,
    started: Instant,
}

impl KernelJob {
    /// Open the pod's namespace, learn the MTU, build the veth pair (no address needed), then
    /// configure the pod as soon as IPAM says its addresses are recorded. The IPAM side runs
    /// meanwhile; it needs the MTU only for the endpoint record, after it has picked.
    fn run(
        self,
        mtu_tx: mpsc::Sender<u32>,
        locked: mpsc::Receiver<()>,
        picked: mpsc::Receiver<Vec<PodAddress>>,
    ) -> KernelSide {
        let failed = |f: KernelFailure| KernelSide { created: false, result: Err(f) };
        let netns = match NetNs::open_pod(&self.netns_path) {
            Ok(ns) => ns,
            Err(e) => return failed(KernelFailure::Netns(e)),
        };
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => return failed(KernelFailure::Dataplane(DataplaneError::Socket(e))),
        };
        let mtu = match self.mtu {
            Some(m) => m,
            None => match endpoint::pod_mtu(&mut nl) {
                Ok(m) => m,
                Err(e) => return failed(KernelFailure::Dataplane(e)),
            },
        };
        let _ = mtu_tx.send(mtu);
        let mtu_us = micros_since(self.started);
        // Nothing is made before the attachment is ours.
        if locked.recv().is_err() {
            return failed(KernelFailure::NotOpened);
        }
        let h = &self.handle;
        let spec = EndpointSpec {
            mode: self.mode.clone(),
            host_veth: host_veth_name(&h.container_id, &h.ifname),
            ifname: h.ifname.clone(),
            mtu,
            pod_mac: Some(pod_mac(&h.container_id, &h.ifname)),
            addresses: Vec::new(),
        };
        let links = match endpoint::create_links(&mut nl, &netns, &spec) {
            Ok(links) => links,
            Err(e) => return KernelSide { created: false, result: Err(KernelFailure::Dataplane(e)) },
        };
        podnet_fault::crash_point("add-after-veth");
        let links_us = micros_since(self.started);
        let Ok(addresses) = picked.recv() else {
            return KernelSide { created: true, result: Err(KernelFailure::IpamFailed) };
        };
        let spec = EndpointSpec { addresses, ..spec };
        let result = endpoint::configure(&mut nl, &spec, links)
            .map(|ep| (ep, [mtu_us, links_us, micros_since(self.started)]))
            .map_err(KernelFailure::Dataplane);
        KernelSide { created: true, result }
    }
}

impl AddPipeline<'_> {
    /// Run the ADD. The kernel side starts at once, opening the pod's namespace and learning the
    /// MTU (reads only) while `open` takes the attachment's lock; it makes nothing until the lock
    /// is held. On a machine of few cores this takes the MTU lookup off the path to the fsync.
    pub fn run(
        self,
        open: impl FnOnce() -> Result<Opened, CniError>,
    ) -> Result<(EndpointRecord, Endpoint, Opened), CniError> {
        let (picked_tx, picked_rx) = mpsc::channel::<Vec<PodAddress>>();
        let (mtu_tx, mtu_rx) = mpsc::channel::<u32>();
        let (locked_tx, locked_rx) = mpsc::channel::<()>();
        let mut rollback = Rollback::default();
        let host_veth = host_veth_name(&self.handle.container_id, &self.handle.ifname);
        let job = KernelJob {
            netns_path: self.netns_path.to_path_buf(),
            mode: self.cfg.mode.clone(),
            mtu: self.cfg.mtu,
            handle: self.handle.clone(),
            started: self.started,
        };
        let kernel = crate::spread::spawn_elsewhere(move || job.run(mtu_tx, locked_rx, picked_rx));
        let opened = open();
        let ipam = match &opened {
            Ok(o) => {
                let _ = locked_tx.send(());
                Some(self.ipam_side(&o.backend, &o.store, mtu_rx, picked_tx, &mut rollback))
            }
            // The kernel side sees the lock's sender dropped and stops, having made nothing.
            Err(_) => None,
        };
        drop(locked_tx);
        let kernel = kernel.join().unwrap_or(KernelSide { created: false, result: Err(KernelFailure::Panicked) });
        let opened = opened?;
        let ipam = ipam.expect("the IPAM side ran once the ADD was opened");
        let (backend, store) = (&opened.backend, &opened.store);
        if kernel.created {
            rollback.push(Undo::Veth(host_veth));
        }
        let h = &self.handle;
        match (kernel.result, ipam.result) {
            (Ok((ep, [mtu_us, links_us, configured_us])), Ok(())) => {
                let record = ipam.record.expect("recorded with its addresses");
                let vnet_cidrs = crate::vnet::vnet_cidrs(backend);
                if !vnet_cidrs.is_empty() {
                    let mut nl = netlink()?;
                    let ips: Vec<IpAddr> = record.ips.iter().map(|n| n.addr()).collect();
                    if let Err(e) = crate::vnet::announce(&mut nl, &vnet_cidrs, &ips) {
                        rollback.run(&mut nl, backend, store);
                        return Err(CniError::kernel(e));
                    }
                }
                tracing::debug!(mtu_us, links_us, configured_us, "ADD: MTU known, veth pair built, pod configured");
                tracing::info!(container = %h.container_id, ifname = %h.ifname, ips = ?record.ips,
                    elapsed_us = micros_since(self.started), "ADD");
                Ok((record, ep, opened))
            }
            (_, Err(IpamStop::Failed(e))) => {
                let mut nl = netlink()?;
                rollback.run(&mut nl, backend, store);
                Err(e)
            }
            (Ok(_), Err(IpamStop::Aborted)) => unreachable!("the IPAM side aborts only when the kernel side failed"),
            (Err(k), Ok(()) | Err(IpamStop::Aborted)) => {
                let mut nl = netlink()?;
                let error = match k {
                    KernelFailure::Netns(e) => netns_error(e),
                    KernelFailure::Dataplane(d) => {
                        // Links an earlier ADD of this attachment made: its addresses are that
                        // attachment's too, unless the in-process IPAM just allocated them.
                        if d.is_existing_attachment() {
                            rollback.keep_exec_allocation();
                        }
                        dataplane_error(d)
                    }
                    KernelFailure::IpamFailed | KernelFailure::NotOpened => unreachable!("the IPAM side succeeded"),
                    KernelFailure::Panicked => {
                        CniError::new(ErrorCode::Internal, "internal error: the kernel thread panicked")
                    }
                };
                rollback.run(&mut nl, backend, store);
                Err(error)
            }
        }
    }

    /// Allocate, hand the addresses to the kernel side as soon as they are safe to carry, and
    /// record the endpoint: with the in-process IPAM inside the allocation itself (one durable
    /// write), else in an endpoint file.
    fn ipam_side(
        &self,
        backend: &IpamBackend,
        store: &EndpointStore,
        mtu: mpsc::Receiver<u32>,
        picked: mpsc::Sender<Vec<PodAddress>>,
        rollback: &mut Rollback,
    ) -> IpamSide {
        let h = &self.handle;
        let netns = self.netns_path.display().to_string();
        let make_record = |mtu: u32, addresses: &[PodAddress]| {
            endpoint_record(self.cfg, h, &netns, pod_info(self.env), mtu, addresses)
        };
        let mut side = IpamSide { record: None, result: Ok(()) };
        match backend {
            IpamBackend::Exec(exec) => {
                // Another plugin is only exec'd once the pod's namespace checks out.
                let Ok(mtu) = mtu.recv() else {
                    side.result = Err(IpamStop::Aborted);
                    return side;
                };
                let got = exec.add().and_then(|result| {
                    rollback.push(Undo::Release { handle: h.clone(), exec: true });
                    let list = result
                        .ips
                        .iter()
                        .map(|ip| {
                            usable_delegated_address(ip.address)?;
                            Ok(PodAddress {
                                address: ip.address,
                                gateway: delegated_gateway(&self.cfg.mode, ip.address, ip.gateway)?,
                            })
                        })
                        .collect::<Result<Vec<_>, CniError>>()?;
                    if list.is_empty() {
                        return Err(CniError::new(
                            ErrorCode::DelegateFailed,
                            format!("IPAM plugin {} returned no address", exec.plugin.display()),
                        ));
                    }
                    if list.iter().any(|a| a.address.addr().is_ipv6()) {
                        crate::backend::check_ipv6_mtu(mtu, "an address the IPAM plugin returned")?;
                    }
                    Ok(list)
                });
                let list = match got {
                    Ok(list) => list,
                    Err(e) => {
                        side.result = Err(IpamStop::Failed(e));
                        return side;
                    }
                };
                let _ = picked.send(list.clone());
                let record = make_record(mtu, &list);
                rollback.push(Undo::Record(h.clone()));
                side.result = store.write(&record).map_err(|e| IpamStop::Failed(e.into()));
                side.record = Some(record);
            }
            IpamBackend::InProcess(ipam) => {
                // The record's file is made on a thread of its own while the addresses are picked
                // (see podnet_fsio::Blank: creating an inode can cost more than the fsync).
                let dir = ipam.address_dir();
                let blank = std::thread::spawn(move || Blank::create(&dir));
                let mut pending = match ipam.reserve(h, &pod_info(self.env)) {
                    Ok(p) => p,
                    Err(e) => {
                        side.result = Err(IpamStop::Failed(e.into()));
                        return side;
                    }
                };
                let reserved_us = micros_since(self.started);
                // Picked under the lock; nothing is written until the kernel side has the pod's
                // namespace and the MTU (a bad namespace drops `pending`: nothing to undo).
                let Ok(mtu) = mtu.recv() else {
                    side.result = Err(IpamStop::Aborted);
                    return side;
                };
                let mtu_wait_us = micros_since(self.started);
                if let Ok(Some(b)) = blank.join() {
                    pending.provide(b);
                }
                let blank_us = micros_since(self.started);
                let list: Vec<PodAddress> =
                    pending.allocations.iter().map(|a| PodAddress { address: a.address, gateway: a.gateway }).collect();
                let record = make_record(mtu, &list);
                // The endpoint record rides in the allocation's own file: one durable write (each
                // fsync costs a device flush here, so the count of fsyncs is the ADD's cost).
                pending.attach(serde_json::to_value(&record).expect("records serialize"));
                podnet_fault::crash_point("add-after-reserve");
                let published = match pending.publish() {
                    Ok(p) => p,
                    Err(e) => {
                        side.result = Err(IpamStop::Failed(e.into()));
                        return side;
                    }
                };
                // The addresses are now recorded where every process sees them, so the pod may
                // carry them (configuring it earlier would let a kill -9 free an address a pod
                // already has). Only the directory fsync still overlaps the kernel work; the ADD
                // succeeds only if it succeeds too.
                let published_us = micros_since(self.started);
                if !published.existing {
                    rollback.push(Undo::Release { handle: h.clone(), exec: false });
                }
                let _ = picked.send(list.clone());
                let finished = published.finish();
                podnet_fault::crash_point("add-after-record");
                tracing::debug!(
                    cluster_requests = ipam.cluster_requests(),
                    reserved_us,
                    mtu_wait_us,
                    blank_us,
                    published_us,
                    ipam_us = micros_since(self.started),
                    "ADD: addresses committed and endpoint recorded (cluster store round trips: 0 inside the node's blocks)"
                );
                side.result = finished.map(|_| ()).map_err(|e| IpamStop::Failed(e.into()));
                side.record = Some(record);
            }
        }
        side
    }
}

/// Microseconds since `started` (the ADD's debug timings).
fn micros_since(started: Instant) -> u64 {
    started.elapsed().as_micros() as u64
}

fn netlink() -> Result<Netlink, CniError> {
    Netlink::open().map_err(|e| CniError::kernel(format!("opening a netlink socket: {e}")))
}

/// An address an exec'd IPAM plugin returned must be one a pod can carry: not its subnet's
/// network address, nor (IPv4) its broadcast address.
fn usable_delegated_address(address: ipnet::IpNet) -> Result<(), CniError> {
    let bad = |what: &str| {
        Err(CniError::new(
            ErrorCode::DelegateFailed,
            format!("the IPAM plugin returned {address}, the {what} of its subnet, which no pod can carry"),
        ))
    };
    let room = address.max_prefix_len() - address.prefix_len();
    if room >= 2 && address.addr() == address.network() {
        return bad("network address");
    }
    if room >= 2 && address.addr().is_ipv4() && address.addr() == address.broadcast() {
        return bad("broadcast address");
    }
    Ok(())
}

/// The gateway for an address an exec'd IPAM plugin returned: its own if it is usable (same
/// family, inside the subnet, not the network address, not the pod's own address), else, on the
/// bridge, the subnet's first address as the reference bridge plugin does.
pub(crate) fn delegated_gateway(
    mode: &Mode,
    address: ipnet::IpNet,
    gateway: Option<IpAddr>,
) -> Result<Option<IpAddr>, CniError> {
    let subnet = address.trunc();
    if let Some(gw) = gateway {
        if gw.is_ipv4() != address.addr().is_ipv4()
            || !subnet.contains(&gw)
            || gw == subnet.network()
            || gw == address.addr()
        {
            return Err(CniError::new(
                ErrorCode::DelegateFailed,
                format!("the IPAM plugin's gateway {gw} is not usable for {address}"),
            ));
        }
        return Ok(Some(gw));
    }
    if !matches!(mode, Mode::Bridge { .. }) {
        return Ok(None);
    }
    use podnet_ipam::addr::{from_u128, to_u128};
    let first = from_u128(to_u128(subnet.network()) + 1, subnet.addr().is_ipv4());
    Ok(Some(first).filter(|g| subnet.contains(g) && *g != address.addr()))
}
