//! A plugin's stdin: the network config, its `ipam` object, GC's attachments and `prevResult`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podnet_cni::{CniResult, CniVersion, NetConf};

fuzz_target!(|data: &[u8]| {
    let Ok(conf) = NetConf::parse(data) else { return };
    let _ = podnet_plugin::config::PluginConfig::parse(&conf);
    if let Some(ipam) = conf.raw.get("ipam") {
        let _ = podnet_ipam::IpamConfig::parse(ipam, None);
    }
    let _ = conf.valid_attachments();
    if let Some(prev) = &conf.prev_result {
        for v in CniVersion::ALL {
            let _ = CniResult::from_value(&prev.to_json(v));
        }
    }
});
