//! Declarations of `cpp/runtime/` (OpenMP threads, the CPU allocator, the
//! default dtype, deterministic algorithms, generators). Called by `device`, `memory`, `dtype` and `rng`.
//! Device types are 0 = CPU, 1 = CUDA; dtypes are `c10::ScalarType` values.
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

/// An opaque `at::Generator` handle.
#[repr(C)]
pub(crate) struct RawGenerator {
    _private: [u8; 0],
}

extern "C" {
    pub(crate) fn kiln_set_omp_threads(threads: c_int, previous: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_install_cpu_allocator() -> c_int;
    pub(crate) fn kiln_cpu_allocator_stats(out: *mut u64) -> c_int;
    pub(crate) fn kiln_set_default_dtype(like: *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_default_dtype(out: *mut *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_set_deterministic(on: c_int) -> *mut c_char;
    pub(crate) fn kiln_generator_new(seed: u64, out: *mut *mut RawGenerator) -> *mut c_char;
    pub(crate) fn kiln_generator_default(
        device_type: c_int,
        index: i64,
        out: *mut *mut RawGenerator,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_free(g: *mut RawGenerator);
    pub(crate) fn kiln_generator_manual_seed(g: *mut RawGenerator, seed: u64) -> *mut c_char;
    pub(crate) fn kiln_generator_initial_seed(g: *mut RawGenerator, out: *mut u64) -> *mut c_char;
    pub(crate) fn kiln_generator_get_state(
        g: *mut RawGenerator,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_set_state(
        g: *mut RawGenerator,
        state: *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_rand(
        g: *mut RawGenerator,
        size: *const i64,
        ndim: i64,
        dtype: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_randn(
        g: *mut RawGenerator,
        size: *const i64,
        ndim: i64,
        dtype: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_randint(
        g: *mut RawGenerator,
        low: i64,
        high: i64,
        size: *const i64,
        ndim: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_randperm(
        g: *mut RawGenerator,
        n: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_uniform_(
        g: *mut RawGenerator,
        this: *mut C_tensor,
        from: f64,
        to: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_normal_(
        g: *mut RawGenerator,
        this: *mut C_tensor,
        mean: f64,
        std: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_random_(g: *mut RawGenerator, this: *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_generator_bernoulli_(
        g: *mut RawGenerator,
        this: *mut C_tensor,
        p: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_generator_multinomial(
        g: *mut RawGenerator,
        probs: *mut C_tensor,
        num_samples: i64,
        replacement: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}
