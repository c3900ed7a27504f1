//! Embeds the run-time search path of the prebuilt oneDNN library (see
//! `worker/onednn/`), so `voxq-worker` runs without LD_LIBRARY_PATH.

fn main() {
    if let Ok(dir) = std::env::var("DEP_DNNL_LIBRARY_PATH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
