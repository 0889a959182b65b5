//! A `.conflist` (or `.conf`) file as podnetctl reads it from /etc/cni/net.d.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("podnet-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("net.conflist");
    if std::fs::write(&path, data).is_ok() {
        let _ = podnet_node::Network::load(&path);
    }
});
