//! The container shim as its own executable, for tests of this crate; in production the
//! `berth` binary plays this part (see `berth_node::shim::run_if_requested`).

fn main() {
    berth_node::shim::run_if_requested();
    berth_node::oci_runtime::run_if_requested();
    eprintln!("usage: berth-node-shim {} <container-state-dir>", berth_node::shim::SHIM_ARG);
    std::process::exit(2);
}
