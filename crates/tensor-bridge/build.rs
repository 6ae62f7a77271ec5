//! Compiles `cpp/shim.cpp` against the libtorch headers torch-sys found.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-changed=cpp/jit.cpp");
    // torch-sys (links = "tch") publishes the libtorch lib dir as `libtorch_lib`.
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report a libtorch lib dir; run scripts/setup.sh (or `make setup`) first");
    };
    let lib = PathBuf::from(lib);
    let root = lib
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| lib.clone());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // Keep PyTorch's exact arithmetic: no contraction into FMAs we did not ask for.
        .flag("-ffp-contract=off")
        .file("cpp/shim.cpp")
        // TorchScript modules (`jit.rs`), in their own file: only it needs <torch/script.h>.
        .file("cpp/jit.cpp");
    // libtorch_cuda is not linked: the shim loads it on first use where a CUDA
    // driver exists (`kiln_cuda_load`), so CPU runs never map the CUDA
    // libraries. Its directory is the fallback when the soname is not found.
    if lib.join("libtorch_cuda.so").exists() {
        build.define(
            "KILN_TORCH_LIB_DIR",
            Some(format!("{:?}", lib.display().to_string()).as_str()),
        );
    }
    println!("cargo:rustc-link-lib=dylib=dl");
    build.compile("kiln_shim");
}
