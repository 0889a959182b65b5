//! The node log over time: rotation into segments, retention by age and by size, and a damaged
//! log reported rather than read past.

use podnet_audit::{AuditEvent, EventKind};
use podnet_ipam::{Ipam, IpamConfig, Reservation};
use std::time::{Duration, SystemTime};

fn ipam(dir: &std::path::Path, max_bytes: u64) -> Ipam {
    let cfg = IpamConfig::parse(
        &serde_json::json!({"node": "n1", "pools": [{"name": "p", "cidr": "10.9.0.0/16", "source": "range"}],
            "audit": {"retentionDays": 30, "maxBytes": max_bytes}}),
        Some(dir),
    )
    .unwrap();
    Ipam::local(cfg, "net", Reservation::None)
}

fn event(i: usize, kind: EventKind) -> AuditEvent {
    let t = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_790_000_000 + i as u64 * 10 + (kind == EventKind::Released) as u64);
    AuditEvent {
        time: humantime::format_rfc3339_micros(t).to_string(),
        node: "n1".into(),
        network: "net".into(),
        pool: "p".into(),
        ip: std::net::IpAddr::from([10, 9, (i >> 8) as u8, i as u8]),
        container_id: format!("c{i}"),
        ifname: "eth0".into(),
        pod_namespace: Some("ns".into()),
        pod_name: Some(format!("pod-{i}")),
        pod_uid: None,
        event: kind,
    }
}

fn history(n: std::ops::Range<usize>) -> Vec<AuditEvent> {
    n.flat_map(|i| [event(i, EventKind::Allocated), event(i, EventKind::Released)]).collect()
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("net/audit/log")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn the_log_rotates_and_keeps_at_most_max_bytes() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), 1 << 20);
    // ~6 MiB of events in 128 KiB segments.
    for chunk in 0..10 {
        podnet_audit::append_events(&ipam, &history(chunk * 1000..(chunk + 1) * 1000)).unwrap();
    }
    assert!(segments(d.path()).len() > 8);
    let report = podnet_audit::collect(&ipam).unwrap();
    assert!(report.dropped > 0);
    let total: u64 = segments(d.path()).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(total <= 1 << 20, "{total} bytes kept");
    // The oldest events are gone, the newest answer, through the index too.
    let first = event(0, EventKind::Allocated);
    let last = event(9_999, EventKind::Allocated);
    assert!(podnet_audit::events_of(&ipam, first.ip).unwrap().iter().all(|e| e.container_id != "c0"));
    assert_eq!(
        podnet_audit::events_of(&ipam, last.ip).unwrap().iter().filter(|e| e.container_id == "c9999").count(),
        2
    );
}

#[test]
fn segments_older_than_retention_days_are_dropped() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), 1 << 20);
    podnet_audit::append_events(&ipam, &history(0..1000)).unwrap();
    podnet_audit::append_events(&ipam, &history(1000..2000)).unwrap();
    let segs = segments(d.path());
    assert!(segs.len() >= 2);
    // The oldest segment's last append was 40 days ago.
    let old = SystemTime::now() - Duration::from_secs(40 * 86_400);
    std::fs::File::options().write(true).open(&segs[0]).unwrap().set_modified(old).unwrap();
    let report = podnet_audit::collect(&ipam).unwrap();
    assert_eq!(report.dropped, 1);
    assert!(!segs[0].exists() && segs[1..].iter().all(|p| p.exists()));
}

#[test]
fn a_damaged_log_is_reported_never_read_past() {
    let d = tempfile::tempdir().unwrap();
    let ipam = ipam(d.path(), 1 << 20);
    podnet_audit::append_events(&ipam, &history(0..10)).unwrap();
    let seg = segments(d.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let e = podnet_audit::events(&ipam).unwrap_err();
    assert!(matches!(e, podnet_ipam::IpamError::Corrupt { .. }), "{e}");
    // A torn tail (a crash mid-append) too.
    std::fs::write(&seg, &bytes[..n - 3]).unwrap();
    assert!(matches!(podnet_audit::events(&ipam).unwrap_err(), podnet_ipam::IpamError::Corrupt { .. }));
}
