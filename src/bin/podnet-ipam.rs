//! podnet's IPAM as a standalone CNI IPAM plugin, for other plugins to exec.
//! Built `no_main` like the `podnet` plugin (see src/bin/podnet.rs).
// A test build keeps libtest's own main.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    podnet_cni::skel::run(&podnet_plugin::ipam_cni::IpamPlugin)
}
