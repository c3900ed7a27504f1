//! Points CTranslate2's build (through `ct2rs`, which reads `DEP_DNNL_*`) at the prebuilt
//! oneDNN 3.1 unpacked by `scripts/fetch-onednn.sh`, and links it dynamically.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=VOXQ_ONEDNN_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = env::var_os("VOXQ_ONEDNN_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/voxq-onednn-3.1.0")))
        .expect("set VOXQ_ONEDNN_DIR or HOME");
    let include = dir.join("include");
    let lib = dir.join("lib");
    if !include.join("oneapi/dnnl/dnnl.h").is_file() || !lib.join("libdnnl.so").is_file() {
        panic!(
            "oneDNN 3.1 not found in {}: run scripts/fetch-onednn.sh (make deps does)",
            dir.display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        lib.join("libdnnl.so").display()
    );
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=dnnl");
    println!("cargo:ROOT={}", dir.display());
    println!("cargo:INCLUDE_PATH={}", include.display());
    println!("cargo:LIBRARY_PATH={}", lib.display());
}
