//! The podnet CNI plugin. Speaks only CNI: env + stdin in, result or error JSON out.
fn main() {
    std::process::exit(podnet_cni::skel::run(&podnet_plugin::PodnetPlugin));
}
