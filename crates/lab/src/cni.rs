//! CNI plugin calls as a runtime makes them: the plugin exec'd inside the node's network
//! namespace with CNI_* in its environment and the network config on stdin.

use crate::process::{Child, Stdio};
use serde_json::Value;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What a plugin call printed.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    /// Ended by a signal (a crash test's kill), whatever it printed.
    pub killed: bool,
    pub json: Value,
    pub raw: String,
}

impl Outcome {
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }
    pub fn must(self) -> Value {
        assert!(self.ok, "plugin failed: {}", self.raw);
        self.json
    }
}

/// One plugin call.
pub struct Invocation<'a> {
    pub plugin: &'a Path,
    pub command: &'a str,
    /// The node's network namespace file (the plugin runs there).
    pub node_netns: &'a Path,
    /// CNI_NETNS, when the verb has one.
    pub pod_netns: Option<&'a Path>,
    /// CNI_CONTAINERID, CNI_IFNAME, CNI_ARGS and anything else.
    pub env: &'a [(&'a str, &'a str)],
    /// CNI_PATH.
    pub cni_path: &'a str,
    pub stdin: &'a [u8],
    /// A mount namespace to enter too (tests give the state dir a filesystem of their own).
    pub mount_ns: Option<PathBuf>,
}

impl Invocation<'_> {
    /// Start the call, stdin written and closed; [`finish`] waits for it.
    pub fn spawn(&self) -> std::io::Result<Child> {
        let node_ns = File::open(self.node_netns)?;
        let mut cmd = crate::process::command_in(node_ns.as_raw_fd(), self.plugin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", self.command)
            .env("CNI_PATH", self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = self.pod_netns {
            cmd.env("CNI_NETNS", ns);
        }
        for (k, v) in self.env {
            cmd.env(k, v);
        }
        let mounts = self.mount_ns.as_ref().map(File::open).transpose()?;
        if let Some(m) = &mounts {
            crate::process::enter_mount_ns_on_exec(&mut cmd, m.as_raw_fd());
        }
        let mut child = cmd.spawn()?;
        drop((node_ns, mounts));
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits before reading (a crash test) closes the pipe: not our failure.
            let _ = stdin.write_all(self.stdin);
        }
        Ok(child)
    }

    pub fn run(&self) -> std::io::Result<Outcome> {
        Ok(finish(self.spawn()?))
    }
}

/// Wait for a call started by [`Invocation::spawn`].
pub fn finish(child: Child) -> Outcome {
    let out = match child.wait_with_output() {
        Ok(out) => out,
        Err(e) => {
            return Outcome { ok: false, killed: false, json: Value::Null, raw: format!("waiting for the plugin: {e}") }
        }
    };
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(raw.trim()).unwrap_or(Value::Null);
    let killed = std::os::unix::process::ExitStatusExt::signal(&out.status).is_some();
    Outcome { ok: out.status.success(), killed, json, raw: format!("{raw}{}", String::from_utf8_lossy(&out.stderr)) }
}
