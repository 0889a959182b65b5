//! Sysctls as direct writes under /proc/sys (no `sysctl` or `echo` shell-outs). Paths are relative
//! to /proc/sys and resolve in the calling thread's network namespace.

use std::path::Path;

pub fn read(key: &str) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(Path::new("/proc/sys").join(key))?.trim().to_string())
}

pub fn write(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key), value)
}

/// Write only when the value differs: most ADDs find forwarding already on, and a read is cheaper.
pub fn ensure(key: &str, value: &str) -> std::io::Result<()> {
    if read(key)? != value {
        write(key, value)?;
    }
    Ok(())
}
