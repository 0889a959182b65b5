//! Logs go to the configured file (or stderr if it cannot be opened), never to stdout, which
//! carries the CNI result.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
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
        let _ = std::fs::create_dir_all(dir);
    }
    let writer = match OpenOptions::new().create(true).append(true).mode(0o600).open(file) {
        Ok(f) => BoxMakeWriter::new(Mutex::new(f)),
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let _ = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_max_level(level).with_target(false).try_init();
}
