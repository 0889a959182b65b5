//! Exec'ing another IPAM plugin per the spec: found in CNI_PATH, same environment but for
//! CNI_COMMAND, the whole network config on stdin, its result or error JSON on stdout.

use podnet_cni::{CniError, CniResult, ErrorCode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    path.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::invalid_config(format!(
            "IPAM plugin {name:?} was not found in CNI_PATH ({}); install it or fix ipam.type",
            path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
        ))
    })
}

/// Run `plugin` with `command`; returns its stdout on success, its CNI error otherwise.
pub fn exec(plugin: &Path, command: &str, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::io(format!("running IPAM plugin {}: {e}", plugin.display())))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).map_err(|e| CniError::io(format!("writing config to {}: {e}", plugin.display())))?;
    }
    let out = child.wait_with_output().map_err(|e| CniError::io(format!("waiting for {}: {e}", plugin.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(CniError::from_json(&out.stdout).unwrap_or_else(|| {
        CniError::new(
            ErrorCode::DelegateFailed,
            format!("IPAM plugin {} {command} failed with {}", plugin.display(), out.status),
        )
    }))
}

/// ADD through the plugin. A result that does not decode is undone with the plugin's DEL, as the
/// spec asks, so nothing stays reserved.
pub fn add(plugin: &Path, stdin: &[u8]) -> Result<CniResult, CniError> {
    let out = exec(plugin, "ADD", stdin)?;
    let decoded = serde_json::from_slice::<serde_json::Value>(&out)
        .map_err(|e| e.to_string())
        .and_then(|v| CniResult::from_value(&v));
    decoded.map_err(|e| {
        let _ = exec(plugin, "DEL", stdin);
        CniError::decode(format!("IPAM plugin {} printed no usable result: {e}", plugin.display()))
    })
}
