//! Compiles kiln's C++ shim (`cpp/`, one file per concept) against the
//! libtorch headers torch-sys found: kernels (with the one-pass optimizer
//! kernels once per instruction set), runtime, amp, autograd, the profiler, TorchScript;
//! and tells `cuda.rs` where libtorch's libraries are.
use std::path::PathBuf;

/// The shim's files compiled once (the one-pass kernels are compiled per
/// instruction set below).
const SOURCES: [&str; 8] = [
    "cpp/kernels/kernels.cpp",
    "cpp/kernels/fused_optim_dispatch.cpp",
    "cpp/runtime/runtime.cpp",
    "cpp/runtime/cpu_alloc.cpp",
    "cpp/amp.cpp",
    "cpp/autograd.cpp",
    "cpp/profiler.cpp",
    // Its own file: only it needs the heavy <torch/script.h>.
    "cpp/jit.cpp",
];

fn main() {
    // Every file under cpp/ (cargo scans the directory).
    println!("cargo:rerun-if-changed=cpp");
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
    // The one-pass optimizer kernels, once per instruction set
    // (fused_optim_dispatch.cpp picks one at run time): scalar loops for any
    // CPU, and on x86-64 ATen's AVX2 `Vectorized` with FMA instructions.
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
        build.out_dir(&dir).file("cpp/kernels/fused_optim.cpp");
        objects.extend(build.compile_intermediates());
    }
    let mut build = cc::Build::new();
    base(&mut build);
    build.files(SOURCES).objects(&objects);
    // libtorch_cuda is not linked: `cuda.rs` loads it on first use where a
    // CUDA driver exists, so CPU runs never map the CUDA libraries; this
    // directory is where it looks when the soname is not found (and the
    // torch wheel's NCCL and CUDA runtime are beside it).
    println!("cargo:rustc-env=KILN_TORCH_LIB_DIR={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=dl");
    build.compile("kiln_shim");
}
