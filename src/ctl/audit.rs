//! `podnetctl audit who|history|export`: who had an address, and when, from this node's log.

use super::render::{print_json, table, Output};
use super::CtlError;
use clap::{Subcommand, ValueEnum};
use podnet_audit::{AuditEvent, Filter, Interval};
use podnet_node::Network;
use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::time::SystemTime;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Who held IP at TIME (default now): the holder's pod, attachment and interval.
    Who {
        ip: String,
        /// RFC 3339, e.g. 2026-11-30T14:05:00Z.
        #[arg(long)]
        at: Option<String>,
    },
    /// Intervals of address use, oldest first; filters combine.
    History {
        #[arg(long)]
        ip: Option<String>,
        /// NAMESPACE/NAME.
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        container: Option<String>,
        /// Keep intervals that overlap [since, until).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
    /// Every event, one per line, for a SIEM.
    Export {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

fn time(s: &Option<String>, what: &str) -> Result<Option<SystemTime>, CtlError> {
    s.as_deref().map(|s| podnet_audit::parse_time(s).map_err(|e| CtlError::Usage(format!("{what}: {e}")))).transpose()
}

fn window(
    since: &Option<String>,
    until: &Option<String>,
) -> Result<(Option<SystemTime>, Option<SystemTime>), CtlError> {
    let (s, u) = (time(since, "--since")?, time(until, "--until")?);
    if let (Some(a), Some(b)) = (s, u) {
        if a > b {
            return Err(CtlError::Usage(format!(
                "--since {} is after --until {}: swap them",
                since.as_deref().unwrap_or_default(),
                until.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok((s, u))
}

fn ip(s: &str) -> Result<IpAddr, CtlError> {
    s.trim().parse().map_err(|_| CtlError::Usage(format!("{s:?} is not an IP address")))
}

/// This node's log (of one address, through its index, when `ip` is given), brought up to date
/// first, and every other node's events shipped to the cluster store.
fn events(net: &Network, ip: Option<IpAddr>) -> Result<Vec<AuditEvent>, CtlError> {
    let ipam = net.open_ipam()?;
    if net.has_state() {
        if let Err(e) = podnet_audit::collect(&ipam) {
            eprintln!("podnetctl: the log could not be brought up to date ({e}); answering from it as it is");
        }
    }
    let mut all = match ip {
        Some(ip) => podnet_audit::events_of(&ipam, ip)?,
        None => podnet_audit::events(&ipam)?,
    };
    match podnet_audit::cluster_events(&ipam) {
        Ok((others, newest)) => {
            all.extend(others.into_iter().filter(|e| ip.is_none_or(|ip| ip == e.ip)));
            for (node, t) in newest {
                eprintln!(
                    "podnetctl: {node}: events shipped through {t} (podnetd ships every few seconds; each node stamps events with its own clock)"
                );
            }
        }
        Err(e) => eprintln!("podnetctl: other nodes' events are not included: the cluster store did not answer ({e})"),
    }
    Ok(all)
}

#[derive(Serialize)]
struct Holder<'a> {
    node: &'a str,
    pool: &'a str,
    #[serde(rename = "containerId")]
    container_id: &'a str,
    ifname: &'a str,
    #[serde(rename = "podNamespace")]
    pod_namespace: &'a Option<String>,
    #[serde(rename = "podName")]
    pod_name: &'a Option<String>,
    #[serde(rename = "podUid")]
    pod_uid: &'a Option<String>,
    from: &'a str,
    until: &'a Option<String>,
}

#[derive(Serialize)]
struct Who<'a> {
    ip: IpAddr,
    at: String,
    holder: Option<Holder<'a>>,
}

fn pod_of(i: &Interval) -> String {
    match (&i.pod_namespace, &i.pod_name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => "-".into(),
    }
}

pub fn run(cmd: &AuditCmd, net: &Network, output: Output) -> Result<i32, CtlError> {
    match cmd {
        AuditCmd::Who { ip: raw, at } => {
            let addr = ip(raw)?;
            let at = time(at, "--at")?.unwrap_or_else(SystemTime::now);
            let iv = podnet_audit::intervals(&events(net, Some(addr))?);
            let h = podnet_audit::who(&iv, addr, at);
            let w = Who {
                ip: addr,
                at: humantime::format_rfc3339_micros(at).to_string(),
                holder: h.map(|i| Holder {
                    node: &i.node,
                    pool: &i.pool,
                    container_id: &i.container_id,
                    ifname: &i.ifname,
                    pod_namespace: &i.pod_namespace,
                    pod_name: &i.pod_name,
                    pod_uid: &i.pod_uid,
                    from: &i.from,
                    until: &i.until,
                }),
            };
            match (output, h) {
                (Output::Json, _) => print_json(&w),
                (Output::Table, None) => println!("{addr} was held by no pod at {}", w.at),
                (Output::Table, Some(i)) => println!(
                    "{addr} at {}: pod {} (container {}, {}) on node {}, pool {}, from {} until {}",
                    w.at,
                    pod_of(i),
                    i.container_id,
                    i.ifname,
                    i.node,
                    i.pool,
                    i.from,
                    i.until.as_deref().unwrap_or("now")
                ),
            }
            Ok(0)
        }
        AuditCmd::History { ip: ip_arg, pod: pod_arg, node, container, since, until } => {
            let (since, until) = window(since, until)?;
            let pod = pod_arg
                .as_deref()
                .map(|p| {
                    p.split_once('/')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| CtlError::Usage(format!("--pod {p:?}: give NAMESPACE/NAME")))
                })
                .transpose()?;
            let filter = Filter {
                ip: ip_arg.as_deref().map(ip).transpose()?,
                pod,
                node: node.clone(),
                container: container.clone(),
                since,
                until,
            };
            let iv: Vec<Interval> =
                podnet_audit::intervals(&events(net, filter.ip)?).into_iter().filter(|i| filter.matches(i)).collect();
            match output {
                Output::Json => print_json(&iv),
                Output::Table => {
                    let rows: Vec<Vec<String>> = iv
                        .iter()
                        .map(|i| {
                            vec![
                                i.ip.to_string(),
                                pod_of(i),
                                i.container_id.chars().take(12).collect(),
                                i.node.clone(),
                                i.from.clone(),
                                i.until.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print!("{}", table(&["IP", "POD", "CONTAINER", "NODE", "FROM", "UNTIL"], &rows));
                }
            }
            Ok(0)
        }
        AuditCmd::Export { since, until, format } => {
            let (since, until) = window(since, until)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let keys = [
                "time",
                "node",
                "network",
                "pool",
                "ip",
                "containerId",
                "ifname",
                "podNamespace",
                "podName",
                "podUid",
                "event",
            ];
            if let Format::Csv = format {
                let _ = writeln!(out, "{}", keys.join(","));
            }
            // The log is in the order events were collected; a SIEM wants them in time order.
            let mut all: Vec<(SystemTime, AuditEvent)> = events(net, None)?
                .into_iter()
                .map(|e| (podnet_audit::parse_time(&e.time).unwrap_or(SystemTime::UNIX_EPOCH), e))
                .collect();
            all.sort_by_key(|(t, _)| *t);
            for (t, e) in all {
                if since.is_some_and(|s| t < s) || until.is_some_and(|u| t >= u) {
                    continue;
                }
                let v = serde_json::to_value(&e).expect("events serialize");
                let line = match format {
                    Format::Jsonl => v.to_string(),
                    Format::Csv => keys
                        .iter()
                        .map(|k| match &v[*k] {
                            serde_json::Value::Null => String::new(),
                            serde_json::Value::String(s) => csv_field(s),
                            other => csv_field(&other.to_string()),
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                };
                if writeln!(out, "{line}").is_err() {
                    break; // the reader went away (a closed pipe)
                }
            }
            let _ = out.flush();
            Ok(0)
        }
    }
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
