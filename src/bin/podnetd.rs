//! podnetd, the node agent. A thin main over `podnet_agent`.
fn main() {
    std::process::exit(podnet_agent::main());
}
