//! Exec'ing another IPAM plugin per the spec: found in CNI_PATH, same environment but for
//! CNI_COMMAND, the whole network config on stdin, its result or error JSON on stdout. Every
//! call is bounded (`ipamTimeoutMs`): a plugin that does not answer in time is killed (by its
//! PID), an ADD it may have half done is undone with its DEL, and the caller gets code 11.

use podnet_cni::{CniError, CniResult, ErrorCode};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    path.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::invalid_config(format!(
            "IPAM plugin {name:?} was not found in CNI_PATH ({}); install it or fix ipam.type",
            path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
        ))
    })
}

/// Why a call did not produce the plugin's answer.
pub enum Failure {
    /// The plugin answered with a CNI error, or could not be run.
    Cni(CniError),
    /// The plugin did not exit within the bound and was killed.
    TimedOut(CniError),
}

impl From<Failure> for CniError {
    fn from(f: Failure) -> CniError {
        match f {
            Failure::Cni(e) | Failure::TimedOut(e) => e,
        }
    }
}

/// Run `plugin` with `command` for at most `timeout`; returns its stdout on success.
pub fn exec(plugin: &Path, command: &str, stdin: &[u8], timeout: Duration) -> Result<Vec<u8>, Failure> {
    let cni = |e: CniError| Failure::Cni(e);
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| cni(CniError::io(format!("running IPAM plugin {}: {e}", plugin.display()))))?;
    // Stdin and stdout go through threads of their own: a plugin that reads nothing or writes
    // without end must not block the bounded wait below. They are not joined: a pipe a killed
    // plugin's child still holds would keep them waiting after this process is done.
    if let Some(mut input) = child.stdin.take() {
        let bytes = stdin.to_vec();
        std::thread::spawn(move || input.write_all(&bytes));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut output) = child.stdout.take() {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = output.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::TimedOut(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "IPAM plugin {} did not answer {command} within ipamTimeoutMs {}; it was stopped, try again",
                        plugin.display(),
                        timeout.as_millis()
                    ),
                )));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Err(e) => return Err(cni(CniError::io(format!("waiting for {}: {e}", plugin.display())))),
        }
    };
    // It exited: its stdout closes unless a child of its own kept it; wait for that no longer
    // than the bound left.
    let out = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
    let out = out.unwrap_or_default();
    if status.success() {
        return Ok(out);
    }
    Err(cni(CniError::from_json(&out).unwrap_or_else(|| {
        CniError::new(
            ErrorCode::DelegateFailed,
            format!("IPAM plugin {} {command} failed with {status}", plugin.display()),
        )
    })))
}

/// ADD through the plugin. A result that does not decode, or an ADD stopped for taking too
/// long, is undone with the plugin's DEL, as the spec asks, so nothing stays reserved.
pub fn add(plugin: &Path, stdin: &[u8], timeout: Duration) -> Result<CniResult, CniError> {
    let out = match exec(plugin, "ADD", stdin, timeout) {
        Ok(out) => out,
        Err(Failure::TimedOut(e)) => {
            let _ = exec(plugin, "DEL", stdin, timeout);
            return Err(e);
        }
        Err(Failure::Cni(e)) => return Err(e),
    };
    let decoded = serde_json::from_slice::<serde_json::Value>(&out)
        .map_err(|e| e.to_string())
        .and_then(|v| CniResult::from_value(&v));
    decoded.map_err(|e| {
        let _ = exec(plugin, "DEL", stdin, timeout);
        CniError::decode(format!("IPAM plugin {} printed no usable result: {e}", plugin.display()))
    })
}
