//! CNI_ARGS: `K=V;K=V` with the Kubernetes keys and IgnoreUnknown.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = podnet_cni::PodArgs::parse(s);
    }
});
