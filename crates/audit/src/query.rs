//! Intervals from events, and the filters `audit who` and `audit history` apply (pure).

use crate::event::{AuditEvent, EventKind, Interval};
use std::net::IpAddr;
use std::time::SystemTime;

/// An RFC 3339 time (`2026-11-30T14:05:00Z`, fractions and offsets allowed).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s.trim())
        .or_else(|_| {
            // humantime reads only UTC `Z`: an offset is applied by hand.
            let (base, sign, off) = match s.trim().rfind(['+', '-']) {
                Some(i) if i > 10 => (&s.trim()[..i], &s.trim()[i..i + 1], &s.trim()[i + 1..]),
                _ => return Err(()),
            };
            let (h, m) = off.split_once(':').ok_or(())?;
            let secs = h.parse::<u64>().map_err(|_| ())? * 3600 + m.parse::<u64>().map_err(|_| ())? * 60;
            let t = humantime::parse_rfc3339_weak(base).map_err(|_| ())?;
            let d = std::time::Duration::from_secs(secs);
            Ok(if sign == "+" { t - d } else { t + d })
        })
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-30T14:05:00Z)"))
}

fn t(s: &str) -> SystemTime {
    parse_time(s).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The intervals the events make, oldest first: an allocation opens one, its release closes it.
pub fn intervals(events: &[AuditEvent]) -> Vec<Interval> {
    let mut out: Vec<Interval> = Vec::new();
    for e in events {
        match e.event {
            EventKind::Allocated => out.push(Interval {
                ip: e.ip,
                node: e.node.clone(),
                pool: e.pool.clone(),
                container_id: e.container_id.clone(),
                ifname: e.ifname.clone(),
                pod_namespace: e.pod_namespace.clone(),
                pod_name: e.pod_name.clone(),
                pod_uid: e.pod_uid.clone(),
                from: e.time.clone(),
                until: None,
            }),
            EventKind::Released => {
                if let Some(i) = out.iter_mut().rev().find(|i| {
                    i.until.is_none() && i.ip == e.ip && i.container_id == e.container_id && i.ifname == e.ifname
                }) {
                    i.until = Some(e.time.clone());
                }
            }
        }
    }
    out.sort_by_cached_key(|i| t(&i.from));
    out
}

/// What `audit history` keeps; every field set must match (AND).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub ip: Option<IpAddr>,
    /// `NAMESPACE/NAME`.
    pub pod: Option<(String, String)>,
    pub node: Option<String>,
    pub container: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn matches(&self, i: &Interval) -> bool {
        let from = t(&i.from);
        let until = i.until.as_deref().map(t);
        self.ip.is_none_or(|ip| ip == i.ip)
            && self.pod.as_ref().is_none_or(|(ns, n)| {
                i.pod_namespace.as_deref() == Some(ns.as_str()) && i.pod_name.as_deref() == Some(n.as_str())
            })
            && self.node.as_ref().is_none_or(|n| n == &i.node)
            && self.container.as_ref().is_none_or(|c| c == &i.container_id)
            // Overlapping the window: it starts before the window ends and ends after it starts.
            && self.until.is_none_or(|u| from < u)
            && self.since.is_none_or(|s| until.is_none_or(|u| u > s))
    }
}

/// The interval holding `ip` at `at` (`from` included, `until` excluded).
pub fn who(intervals: &[Interval], ip: IpAddr, at: SystemTime) -> Option<&Interval> {
    intervals
        .iter()
        .filter(|i| i.ip == ip && t(&i.from) <= at && i.until.as_deref().is_none_or(|u| at < t(u)))
        .max_by_key(|i| t(&i.from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time: &str, ip: &str, cid: &str, kind: EventKind) -> AuditEvent {
        AuditEvent {
            time: time.into(),
            node: "n1".into(),
            network: "net".into(),
            pool: "p".into(),
            ip: ip.parse().unwrap(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            pod_namespace: Some("ns".into()),
            pod_name: Some(cid.into()),
            pod_uid: None,
            event: kind,
        }
    }

    #[test]
    fn who_at_before_after_and_at_the_edges_of_an_interval_and_a_reuse() {
        use EventKind::*;
        let events = [
            ev("2026-11-30T14:00:00.000000Z", "10.0.0.5", "a", Allocated),
            ev("2026-11-30T14:10:00.000000Z", "10.0.0.5", "a", Released),
            ev("2026-11-30T14:10:00.000000Z", "10.0.0.5", "b", Allocated),
        ];
        let iv = intervals(&events);
        let ip = "10.0.0.5".parse().unwrap();
        let at = |s: &str| who(&iv, ip, parse_time(s).unwrap()).map(|i| i.container_id.clone());
        assert_eq!(at("2026-11-30T13:59:59Z"), None);
        assert_eq!(at("2026-11-30T14:00:00Z").as_deref(), Some("a"), "from is included");
        assert_eq!(at("2026-11-30T14:05:00Z").as_deref(), Some("a"));
        assert_eq!(at("2026-11-30T14:09:59.999999Z").as_deref(), Some("a"));
        assert_eq!(at("2026-11-30T14:10:00Z").as_deref(), Some("b"), "until is excluded");
        assert_eq!(at("2026-12-01T00:00:00Z").as_deref(), Some("b"), "still held");
        assert_eq!(at("2026-11-30T15:05:00+01:00").as_deref(), Some("a"), "an offset");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn history_filters_combine() {
        use EventKind::*;
        let events = [
            ev("2026-11-30T14:00:00Z", "10.0.0.5", "a", Allocated),
            ev("2026-11-30T14:10:00Z", "10.0.0.5", "a", Released),
            ev("2026-11-30T14:20:00Z", "10.0.0.6", "b", Allocated),
        ];
        let iv = intervals(&events);
        let f = |f: Filter| iv.iter().filter(|i| f.matches(i)).map(|i| i.container_id.clone()).collect::<Vec<_>>();
        assert_eq!(f(Filter::default()), ["a", "b"]);
        assert_eq!(f(Filter { ip: Some("10.0.0.6".parse().unwrap()), ..Default::default() }), ["b"]);
        assert_eq!(f(Filter { pod: Some(("ns".into(), "a".into())), ..Default::default() }), ["a"]);
        let since = parse_time("2026-11-30T14:10:00Z").ok();
        assert_eq!(f(Filter { since, ..Default::default() }), ["b"], "a ended exactly at since");
        let until = parse_time("2026-11-30T14:20:00Z").ok();
        assert_eq!(f(Filter { until, ..Default::default() }), ["a"], "b starts exactly at until");
        assert_eq!(
            f(Filter { container: Some("b".into()), node: Some("n2".into()), ..Default::default() }),
            Vec::<String>::new()
        );
    }
}
