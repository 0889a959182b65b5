//! A real etcd (Debian's etcd-server) on the loopback of a namespace, with a temp data dir,
//! stopped by its PID.

use crate::process::Stdio;
use crate::{in_netns, Netns, Process};
use std::fs::File;
use std::path::PathBuf;

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
        let (c, p) = (self.url(), "http://127.0.0.1:2380".to_string());
        let mut cmd = ns.command("etcd");
        cmd.args(["--name", "podnet-lab", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c, "--listen-peer-urls", &p])
            .args(["--initial-advertise-peer-urls", &p, "--initial-cluster", &format!("podnet-lab={p}")])
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.path().join("etcd.log"))?);
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
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("starting etcd: {e} (is etcd-server installed? scripts/deps installs it)"),
            )
        })?;
        self.child = Some(Process(child));
        // Ready once the client port accepts connections (requests retry within timeoutMs anyway).
        let ready = in_netns(ns, || {
            (0..400).any(|_| {
                let up = std::net::TcpStream::connect((self.listen, CLIENT_PORT)).is_ok();
                if !up {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                up
            })
        });
        if !ready {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            self.stop();
            return Err(std::io::Error::other(format!("etcd did not start: {log}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
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
