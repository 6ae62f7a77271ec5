//! Compiles `cpp/shim.cpp` and the one-pass optimizer kernels of
//! `cpp/fused_optim.cpp` against the libtorch headers torch-sys found.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    println!("cargo:rerun-if-changed=cpp/jit.cpp");
    println!("cargo:rerun-if-changed=cpp/cpu_alloc.cpp");
    println!("cargo:rerun-if-changed=cpp/autograd.cpp");
    println!("cargo:rerun-if-changed=cpp/error.h");
    // torch-sys (links = "tch") publishes the libtorch lib dir as `libtorch_lib`.
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report a libtorch lib dir; run scripts/setup.sh (or `make setup`) first");
    };
    let lib = PathBuf::from(lib);
    let root = lib
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| lib.clone());
    let base = |build: &mut cc::Build| {
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
            .flag("-ffp-contract=off");
    };
    // The one-pass optimizer kernels, once per instruction set (shim.cpp
    // picks one at run time): scalar loops for any CPU, and on x86-64 ATen's
    // AVX2 `Vectorized` with FMA instructions.
    println!("cargo:rerun-if-changed=cpp/fused_optim.cpp");
    println!("cargo:rerun-if-changed=cpp/fused_optim.h");
    let mut objects = Vec::new();
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    let mut isas = vec![("base", vec![])];
    if x86_64 {
        isas.push((
            "avx2",
            vec![
                "-mavx2",
                "-mfma",
                "-DCPU_CAPABILITY=AVX2",
                "-DCPU_CAPABILITY_AVX2",
                "-DKILN_FUSED_VECTORIZED",
            ],
        ));
    }
    for (isa, flags) in isas {
        let mut build = cc::Build::new();
        base(&mut build);
        build
            .define("KILN_FUSED_ISA", isa)
            // Our copies of ATen's inline helpers stay ours (never interpose libtorch's).
            .flag("-fvisibility=hidden")
            .flag("-fvisibility-inlines-hidden");
        for f in flags {
            build.flag(f);
        }
        // One object per instruction set, from the same source file.
        let dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join(isa);
        build.out_dir(&dir).file("cpp/fused_optim.cpp");
        objects.extend(build.compile_intermediates());
    }
    let mut build = cc::Build::new();
    base(&mut build);
    build
        .file("cpp/shim.cpp")
        // TorchScript modules (`jit.rs`), in their own file: only it needs <torch/script.h>.
        .file("cpp/jit.cpp")
        // The arena CPU allocator (`memory.rs`).
        .file("cpp/cpu_alloc.cpp")
        // Activation checkpointing (`autograd.rs`).
        .file("cpp/autograd.cpp")
        .objects(&objects);
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
