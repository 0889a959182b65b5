//! A real etcd (Debian's etcd-server) on the loopback of a namespace, with a temp data dir,
//! stopped by its PID.

use crate::process::{Command, Stdio};
use crate::{in_netns, Netns, Process};
use std::fs::File;
use std::path::{Path, PathBuf};

const CLIENT_PORT: u16 = 2379;

pub struct Etcd {
    child: Option<Process>,
    pub dir: tempfile::TempDir,
    netns: PathBuf,
    /// The address etcd serves clients on (loopback, or the fabric for a cluster of nodes).
    listen: std::net::IpAddr,
    /// Serve TLS with client-certificate auth: (server cert, key, CA).
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Etcd {
    /// Start etcd in `ns`; an error when it is not installed or does not come up.
    pub fn start(ns: &Netns) -> std::io::Result<Etcd> {
        Self::start_with(ns, None, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Start etcd in `ns` serving clients on `listen` (an address of that namespace).
    pub fn start_on(ns: &Netns, listen: std::net::IpAddr) -> std::io::Result<Etcd> {
        Self::start_with(ns, None, listen)
    }

    /// etcd serving TLS and requiring client certificates signed by `ca`.
    pub fn start_tls(ns: &Netns, cert: PathBuf, key: PathBuf, ca: PathBuf) -> std::io::Result<Etcd> {
        Self::start_with(ns, Some((cert, key, ca)), std::net::Ipv4Addr::LOCALHOST.into())
    }

    fn start_with(
        ns: &Netns,
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
        listen: std::net::IpAddr,
    ) -> std::io::Result<Etcd> {
        let mut e = Etcd { child: None, dir: tempfile::tempdir()?, netns: ns.path(), listen, tls };
        e.restart(ns)?;
        Ok(e)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", std::net::SocketAddr::new(self.listen, CLIENT_PORT))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Process::id)
    }

    /// Start (again, on the same data).
    pub fn restart(&mut self, ns: &Netns) -> std::io::Result<()> {
        assert!(self.child.is_none() && ns.path() == self.netns, "etcd is running, or this is another namespace");
        let mut cmd = command(ns, &self.url(), &self.dir.path().join("data"), &self.dir.path().join("etcd.log"))?;
        if let Some((cert, key, ca)) = &self.tls {
            cmd.arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--client-cert-auth");
        }
        crate::die_with_parent(&mut cmd);
        self.child = Some(Process(cmd.spawn().map_err(not_installed)?));
        if let Err(e) = wait_ready(ns, self.listen, &self.dir.path().join("etcd.log")) {
            self.stop();
            return Err(e);
        }
        Ok(())
    }

    /// etcd's own count of KV requests served (Range and Txn), from its `/metrics`, read from
    /// inside `ns` (where it listens): what a benchmark counts requests per lease with.
    pub fn kv_requests(&self, ns: &Netns) -> std::io::Result<u64> {
        let url = format!("{}/metrics", self.url());
        let text = ns.run(move || -> std::io::Result<String> {
            let mut resp = ureq::get(&url).call().map_err(|e| std::io::Error::other(format!("GET {url}: {e}")))?;
            resp.body_mut().read_to_string().map_err(|e| std::io::Error::other(format!("GET {url}: {e}")))
        })??;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("grpc_server_started_total{") && l.contains("etcdserverpb.KV"))
            .filter(|l| l.contains("\"Range\"") || l.contains("\"Txn\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn not_installed(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("starting etcd: {e} (is etcd-server installed? scripts/deps installs it)"))
}

/// etcd serving clients at the URL `c` in `ns`, its data in `data`, its log in `log`.
fn command(ns: &Netns, c: &str, data: &Path, log: &Path) -> std::io::Result<Command> {
    let p = "http://127.0.0.1:2380".to_string();
    let mut cmd = ns.command("etcd");
    cmd.args(["--name", "podnet-lab", "--data-dir"])
        .arg(data)
        .args(["--listen-client-urls", c, "--advertise-client-urls", c, "--listen-peer-urls", &p])
        .args(["--initial-advertise-peer-urls", &p, "--initial-cluster", &format!("podnet-lab={p}")])
        .stdout(Stdio::null())
        .stderr(File::create(log)?);
    Ok(cmd)
}

/// Wait until etcd's client port accepts connections (requests retry within timeoutMs anyway).
fn wait_ready(ns: &Netns, listen: std::net::IpAddr, log: &Path) -> std::io::Result<()> {
    let ready = in_netns(ns, || {
        (0..400).any(|_| {
            let up = std::net::TcpStream::connect((listen, CLIENT_PORT)).is_ok();
            if !up {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            up
        })
    });
    if !ready {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        return Err(std::io::Error::other(format!("etcd did not start: {log}")));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(())
}

/// Start an etcd that outlives this process (a lab's): in `ns` on `listen`, data and log under
/// `dir`, `env` set on it (the lab's tag, by which `lab down` finds it). Its PID once it serves.
pub fn start_detached(ns: &Netns, listen: std::net::IpAddr, dir: &Path, env: (&str, &str)) -> std::io::Result<u32> {
    let mut cmd = command(ns, &url_on(listen), &dir.join("etcd-data"), &dir.join("etcd.log"))?;
    cmd.env(env.0, env.1);
    crate::process::detach(&mut cmd);
    let child = cmd.spawn().map_err(not_installed)?;
    let pid = child.id();
    wait_ready(ns, listen, &dir.join("etcd.log"))?;
    Ok(pid)
}

/// The URL of an etcd listening on `listen`.
pub fn url_on(listen: std::net::IpAddr) -> String {
    format!("http://{}", std::net::SocketAddr::new(listen, CLIENT_PORT))
}
