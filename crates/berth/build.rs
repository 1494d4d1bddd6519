//! Links the `berth` executable at a fixed address (not position-independent).
//!
//! Every pod's container shim is this binary re-executed (`berth __berth-node-shim`). A
//! position-independent executable has its pointer tables (about 1 MB of `.data.rel.ro` and
//! `.got`) rewritten by the loader in every process, which makes them private memory per
//! shim. Linked at a fixed address those pages need no rewriting: they stay clean, shared
//! with the page cache and between all shims. The price is that the binary's own code and
//! data are not placed at a random address (shared libraries, heap and stacks still are);
//! see ARCHITECTURE.md.

fn main() {
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
