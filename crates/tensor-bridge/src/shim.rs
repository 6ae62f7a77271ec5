//! Raw declarations of `cpp/shim.cpp`. Only `ops`, `rng`, `device` and `memory` call these.
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

extern "C" {
    pub(crate) fn kiln_free_error(err: *mut c_char);
    pub(crate) fn kiln_set_omp_threads(threads: c_int, previous: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_cuda_load() -> c_int;
    pub(crate) fn kiln_install_cpu_allocator() -> c_int;
    pub(crate) fn kiln_cpu_allocator_stats(out: *mut u64) -> c_int;
    pub(crate) fn kiln_add_(this: *mut C_tensor, other: *mut C_tensor, alpha: f64) -> *mut c_char;
    pub(crate) fn kiln_add(
        this: *mut C_tensor,
        other: *mut C_tensor,
        alpha: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_detached_clone(this: *mut C_tensor, out: *mut *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_addcmul_(
        this: *mut C_tensor,
        t1: *mut C_tensor,
        t2: *mut C_tensor,
        value: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_addcdiv_(
        this: *mut C_tensor,
        t1: *mut C_tensor,
        t2: *mut C_tensor,
        value: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_clear_grad(this: *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_grad_defined(this: *mut C_tensor, defined: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_foreach_add_(
        selfs: *const *mut C_tensor,
        others: *const *mut C_tensor,
        n: i64,
        alpha: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_foreach_mul_scalar_(
        selfs: *const *mut C_tensor,
        n: i64,
        scalar: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_foreach_add_scalar_(
        selfs: *const *mut C_tensor,
        n: i64,
        scalar: f64,
    ) -> *mut c_char;
    pub(crate) fn kiln_foreach_mul_tensor_(
        selfs: *const *mut C_tensor,
        n: i64,
        other: *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_foreach_norm(
        selfs: *const *mut C_tensor,
        n: i64,
        ord: f64,
        outs: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_vector_norm(
        this: *mut C_tensor,
        ord: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_vector_norm_dim(
        this: *mut C_tensor,
        ord: f64,
        dim: i64,
        keepdim: c_int,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_addmm(
        this: *mut C_tensor,
        mat1: *mut C_tensor,
        mat2: *mut C_tensor,
        beta: f64,
        alpha: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_fused_sgd_(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: i64,
        nbufs: i64,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        dampening: f64,
        nesterov: c_int,
        maximize: c_int,
        is_first_step: c_int,
    ) -> *mut c_char;
    pub(crate) fn kiln_fused_adam_(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        max_exp_avg_sqs: *const *mut C_tensor,
        nmax: i64,
        steps: *const *mut C_tensor,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        amsgrad: c_int,
        maximize: c_int,
        decoupled: c_int,
    ) -> *mut c_char;
}

/// Turns a shim return value into a `Result`, freeing the message.
pub(crate) fn check(err: *mut c_char) -> crate::Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns NULL or a NUL-terminated malloc'd string that we own.
    let msg = unsafe { std::ffi::CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `err` came from the shim's malloc and is freed exactly once.
    unsafe { kiln_free_error(err) };
    Err(crate::Error::Torch(msg))
}

/// The raw pointer tch hands to C; the shim never frees it.
pub(crate) fn raw(t: &tch::Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}

/// Wraps a tensor the shim allocated with `new`; tch frees it on drop.
pub(crate) fn owned(ptr: *mut C_tensor) -> crate::Result<tch::Tensor> {
    if ptr.is_null() {
        return Err(crate::Error::Torch("libtorch returned no tensor".into()));
    }
    // SAFETY: the shim allocated this `at::Tensor` with `new` for us to own.
    Ok(unsafe { tch::Tensor::from_ptr(ptr) })
}

// ---------------------------------------------------------------------------
// Conformance block (issue 12): default dtype, `p.grad = g`, fused Adagrad,
// multi_margin_loss.
extern "C" {
    pub(crate) fn kiln_set_default_dtype(like: *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_default_dtype(out: *mut *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_set_grad(this: *mut C_tensor, grad: *mut C_tensor) -> *mut c_char;
    pub(crate) fn kiln_fused_adagrad_(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        state_sums: *const *mut C_tensor,
        state_steps: *const *mut C_tensor,
        n: i64,
        lr: f64,
        lr_decay: f64,
        weight_decay: f64,
        eps: f64,
        maximize: c_int,
    ) -> *mut c_char;
    pub(crate) fn kiln_multi_margin_loss(
        this: *mut C_tensor,
        target: *mut C_tensor,
        p: i64,
        margin: f64,
        weight: *mut C_tensor,
        reduction: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
}

// amp: libtorch's autocast state and the GradScaler kernels; only `crate::amp` calls these.
// Device types: 0 = CPU, 1 = CUDA; dtypes are c10::ScalarType values.
// ---------------------------------------------------------------------------
extern "C" {
    pub(crate) fn kiln_autocast_is_enabled(device_type: c_int, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_enabled(device_type: c_int, enabled: c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_get_dtype(device_type: c_int, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_dtype(device_type: c_int, dtype: c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_increment_nesting(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_decrement_nesting(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_clear_cache() -> *mut c_char;
    pub(crate) fn kiln_autocast_is_cache_enabled(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_cache_enabled(enabled: c_int) -> *mut c_char;
    pub(crate) fn kiln_amp_foreach_non_finite_check_and_unscale_(
        grads: *const *mut C_tensor,
        n: i64,
        found_inf: *mut C_tensor,
        inv_scale: *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_amp_update_scale_(
        scale: *mut C_tensor,
        growth_tracker: *mut C_tensor,
        found_inf: *mut C_tensor,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: i64,
    ) -> *mut c_char;
}

// Fused optimizer block (issue 16): one-pass default paths of SGD and
// Adam/AdamW (`cpp/fused_optim.cpp`); only `ops` calls these.
// ---------------------------------------------------------------------------
extern "C" {
    pub(crate) fn kiln_fused_sgd_step(
        param: *mut C_tensor,
        grad: *mut C_tensor,
        buf: *mut C_tensor,
        first: c_int,
        lr: f64,
        momentum: f64,
        dampening: f64,
        weight_decay: f64,
        nesterov: c_int,
        maximize: c_int,
        applied: *mut c_int,
    ) -> *mut c_char;
    pub(crate) fn kiln_fused_adam_step(
        param: *mut C_tensor,
        grad: *mut C_tensor,
        exp_avg: *mut C_tensor,
        exp_avg_sq: *mut C_tensor,
        max_exp_avg_sq: *mut C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        amsgrad: c_int,
        maximize: c_int,
        decoupled: c_int,
        step_size: f64,
        bias_correction2_sqrt: f64,
        applied: *mut c_int,
    ) -> *mut c_char;
}

// ---------------------------------------------------------------------------
// TorchScript modules (issue 10), `cpp/jit.cpp`; only `crate::jit` calls these.
// Device types: 0 = CPU, 1 = CUDA.
/// An opaque `torch::jit::Module`.
#[repr(C)]
pub(crate) struct JitModule {
    _private: [u8; 0],
}

extern "C" {
    pub(crate) fn kiln_jit_load(
        data: *const c_char,
        len: usize,
        device_type: c_int,
        index: i64,
        out: *mut *mut JitModule,
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_free(m: *mut JitModule);
    pub(crate) fn kiln_jit_forward(
        m: *mut JitModule,
        input: *mut C_tensor,
        out: *mut *mut C_tensor,
        kind: *mut *mut c_char,
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_train(m: *mut JitModule, on: c_int) -> *mut c_char;
    pub(crate) fn kiln_jit_is_training(m: *mut JitModule, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_jit_named_tensors(
        m: *mut JitModule,
        buffers: c_int,
        data: *mut std::ffi::c_void,
        f: extern "C" fn(*mut std::ffi::c_void, *const c_char, *mut C_tensor),
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_save(
        m: *mut JitModule,
        bytes: *mut *mut c_char,
        len: *mut usize,
    ) -> *mut c_char;
}

// Determinism: torch.use_deterministic_algorithms and cuDNN's flags.
extern "C" {
    pub(crate) fn kiln_set_deterministic(on: c_int) -> *mut c_char;
}

// ddp (issue 15): post-accumulate-grad hooks; only `crate::ops::PostAccumulateGradHook` calls these.
// ---------------------------------------------------------------------------
extern "C" {
    pub(crate) fn kiln_set_post_accumulate_grad_hook(
        this: *mut C_tensor,
        hook: unsafe extern "C" fn(*mut std::ffi::c_void),
        drop: unsafe extern "C" fn(*mut std::ffi::c_void),
        ctx: *mut std::ffi::c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_clear_post_accumulate_grad_hook(
        this: *mut C_tensor,
        ctx: *mut std::ffi::c_void,
    ) -> *mut c_char;
}

// Generators (`at::Generator` handles); only `crate::rng` calls these.
// Device types: 0 = CPU, 1 = CUDA; dtypes are c10::ScalarType values.
// ---------------------------------------------------------------------------
/// An opaque `at::Generator` handle.
#[repr(C)]
pub(crate) struct RawGenerator {
    _private: [u8; 0],
}

extern "C" {
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

// Activation checkpointing, `cpp/autograd.cpp`; only `crate::autograd` calls these.
// ---------------------------------------------------------------------------
extern "C" {
    pub(crate) fn kiln_checkpoint_enter(
        inputs: *const *mut C_tensor,
        n: i64,
        recompute: unsafe extern "C" fn(
            *mut std::ffi::c_void,
            *const *mut C_tensor,
            i64,
            *mut std::ffi::c_void,
        ) -> c_int,
        drop: unsafe extern "C" fn(*mut std::ffi::c_void),
        ctx: *mut std::ffi::c_void,
        out: *mut *mut std::ffi::c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_checkpoint_exit(region: *mut std::ffi::c_void) -> *mut c_char;
    pub(crate) fn kiln_error_assign(error: *mut std::ffi::c_void, msg: *const c_char, len: usize);
}
