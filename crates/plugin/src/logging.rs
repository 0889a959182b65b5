//! Logs go to the configured file (or stderr if it cannot be opened), never to stdout, which
//! carries the CNI result.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

pub fn init(file: &Path, level: &str) {
    let level = match level {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    if let Some(dir) = file.parent() {
        // Logs name pods and addresses: root only, like the state.
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    }
    let writer = match OpenOptions::new().create(true).append(true).mode(0o600).open(file) {
        Ok(f) => {
            // A log an older version (or a person) left readable to all is narrowed.
            if f.metadata().is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
            BoxMakeWriter::new(Mutex::new(f))
        }
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false)
        .try_init();
}
