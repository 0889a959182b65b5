//! A result in any version (a chained plugin's prevResult): decoded, then written in every
//! version and decoded again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podnet_cni::{CniResult, CniVersion};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(result) = CniResult::from_value(&v) else { return };
    for version in CniVersion::ALL {
        let json = result.to_json(version);
        let again = CniResult::from_value(&json);
        assert!(again.is_ok(), "a result podnet writes ({}) must read back: {json}", version.as_str());
    }
});
