//! podnetctl: the admin CLI. A thin main over `podnet::ctl`.
fn main() {
    std::process::exit(podnet::ctl::main());
}
