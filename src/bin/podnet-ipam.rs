//! podnet's IPAM as a standalone CNI IPAM plugin, for other plugins to exec.
fn main() {
    std::process::exit(podnet_cni::skel::run(&podnet_plugin::ipam_cni::IpamPlugin));
}
