//! The store's on-disk records (one JSON line and a CRC32 line): address records, block leases
//! and claims. Anything that is not a record that verifies must be an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podnet_fsio::decode_record;
use podnet_ipam::model::{Allocation, BlockLease, Claim};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz");
    let _ = decode_record::<Allocation>(p, data);
    let _ = decode_record::<BlockLease>(p, data);
    let _ = decode_record::<Claim>(p, data);
});
