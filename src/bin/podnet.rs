//! The podnet CNI plugin. Speaks only CNI: env + stdin in, result or error JSON out.
//!
//! Built `no_main`: a plugin is exec'd for every pod, and Rust's runtime start-up (the main
//! thread's stack guard, found by reading /proc/self/maps; an alternate signal stack) costs a
//! measurable share of an ADD. `podnet_cni::skel::run` keeps what a plugin needs of it.
// A test build keeps libtest's own main.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    podnet_cni::skel::run(&podnet_plugin::PodnetPlugin)
}
