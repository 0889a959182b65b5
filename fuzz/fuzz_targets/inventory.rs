//! The host agent's NIC document (vnet source): parse, choose a NIC, take its secondaries.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(inv) = podnet_ipam::inventory::parse(s) {
            for mac in [None, Some("00:0d:3a:6e:7f:0b")] {
                if let Ok(nic) = inv.nic(mac) {
                    let _ = podnet_ipam::inventory::secondaries(nic, "10.0.0.0/8".parse().unwrap());
                }
            }
        }
    }
});
