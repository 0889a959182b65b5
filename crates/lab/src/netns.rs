//! Named network namespaces under `/run/netns/` (as `ip netns` keeps them, so `ip netns exec`
//! finds them), made with unshare and a bind mount, removed on drop.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

const RUN_DIR: &str = "/run/netns";

/// A network namespace this process made, deleted when dropped (also when a test fails).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    file: File,
    /// Left in place when dropped (a lab that outlives the process that built it).
    kept: bool,
}

fn io(what: &str, e: impl Into<std::io::Error>) -> std::io::Error {
    let e: std::io::Error = e.into();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Make `/run/netns` a shared mount point, as iproute2 does, so a namespace's bind mount is seen
/// from every mount namespace (a runtime's, a test's own).
fn prepare_run_dir() -> std::io::Result<()> {
    std::fs::create_dir_all(RUN_DIR).map_err(|e| io("creating /run/netns", e))?;
    let shared =
        |path: &str| mount(None::<&str>, path, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared(RUN_DIR) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(Some(RUN_DIR), RUN_DIR, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| io("bind-mounting /run/netns", e))?;
            shared(RUN_DIR).map_err(|e| io("making /run/netns shared", e))
        }
        Err(e) => Err(io("making /run/netns shared", e)),
    }
}

impl Netns {
    /// Create the namespace `name` (refused if it exists) with its loopback up.
    pub fn create(name: &str) -> std::io::Result<Netns> {
        if name.is_empty() || name.contains('/') || name.len() > 64 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad namespace name {name:?}")));
        }
        prepare_run_dir()?;
        let path = Path::new(RUN_DIR).join(name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(&format!("creating {}", path.display()), e))?;
        // A thread of its own moves into a new namespace and pins it with a bind mount; the
        // rest of the process never leaves its namespace.
        let target = path.clone();
        let made = std::thread::spawn(move || -> std::io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io("unshare(CLONE_NEWNET)", e))?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| io("bind-mounting the new namespace", e))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = File::open(&path).map_err(|e| io(&format!("opening {}", path.display()), e))?;
        let ns = Netns { name: name.to_string(), file, kept: false };
        ns.run(|| -> std::io::Result<()> {
            let mut nl = podnet_dataplane::Netlink::open()?;
            let lo =
                nl.link_by_name("lo").map_err(|e| io("looking up lo", std::io::Error::from_raw_os_error(e.errno)))?;
            if let Some(lo) = lo {
                nl.set_link_up(lo.index)
                    .map_err(|e| io("setting lo up", std::io::Error::from_raw_os_error(e.errno)))?;
            }
            Ok(())
        })??;
        Ok(ns)
    }

    /// Whether a namespace of that name exists.
    pub fn exists(name: &str) -> bool {
        Path::new(RUN_DIR).join(name).exists()
    }

    /// Remove a namespace by name, whoever made it (`lab down` after a crash). Gone is fine.
    pub fn remove(name: &str) -> std::io::Result<()> {
        let path = Path::new(RUN_DIR).join(name);
        if !path.exists() {
            return Ok(());
        }
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(io(&format!("unmounting {}", path.display()), e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&format!("removing {}", path.display()), e)),
        }
    }

    /// Remove the namespaces named `<prefix><pid>-…` of process `pid`: what a program that exits
    /// without unwinding (`process::exit`, a panic under `panic = "abort"`) leaves behind.
    /// Returns how many went.
    pub fn remove_of_process(prefix: &str, pid: u32) -> usize {
        Netns::named_with_prefix(&format!("{prefix}{pid}-")).iter().filter(|n| Netns::remove(n).is_ok()).count()
    }

    /// Remove the namespaces named `<prefix><pid>-…` whose process no longer runs (a run killed
    /// before it could clean up), found by the PID in their names. Returns how many went.
    pub fn remove_stale(prefix: &str) -> usize {
        Netns::named_with_prefix(prefix)
            .iter()
            .filter(|n| {
                let pid = n[prefix.len()..].split('-').next().and_then(|p| p.parse::<u32>().ok());
                pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) && Netns::remove(n).is_ok()
            })
            .count()
    }

    /// Keep the namespace when this drops (`podnetctl lab up`; `lab down` removes it by name).
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// The names of every namespace starting with `prefix`.
    pub fn named_with_prefix(prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(RUN_DIR)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn path(&self) -> PathBuf {
        Path::new(RUN_DIR).join(&self.name)
    }
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Run `f` on a thread of its own inside the namespace (sockets it opens stay bound there).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| io("entering the namespace", e))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("a thread in the namespace panicked")))
        })
    }

    /// A command that runs inside the namespace (entered between fork and exec; no shell).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> crate::process::Program {
        crate::process::command_in(self.fd(), program)
    }

    /// Names of the namespace's links.
    pub fn links(&self) -> Vec<String> {
        self.run(|| podnet_dataplane::Netlink::open().ok().and_then(|mut nl| nl.links().ok()))
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.name)
            .collect()
    }

    /// IPv4 addresses of `dev` inside, without prefix.
    pub fn addrs4(&self, dev: &str) -> Vec<String> {
        let found = self.run(|| -> Option<Vec<ipnet::IpNet>> {
            let mut nl = podnet_dataplane::Netlink::open().ok()?;
            let link = nl.link_by_name(dev).ok()??;
            nl.addresses(link.index).ok()
        });
        found
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.addr().is_ipv4())
            .map(|a| a.addr().to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.kept {
            let _ = Netns::remove(&self.name);
        }
    }
}

/// Run `f` on a thread inside `ns` (for work that must see the namespace's loopback, e.g. etcd).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ns.run(f).expect("entering a test namespace")
}
