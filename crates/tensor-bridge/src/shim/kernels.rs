//! Declarations of `cpp/kernels/` (libtorch ops tch lacks, `_foreach_*`,
//! libtorch's fused optimizers, kiln's one-pass optimizer steps). Called by
//! `ops`.
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

extern "C" {
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
    pub(crate) fn kiln_set_grad(this: *mut C_tensor, grad: *mut C_tensor) -> *mut c_char;
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
    pub(crate) fn kiln_multi_margin_loss(
        this: *mut C_tensor,
        target: *mut C_tensor,
        p: i64,
        margin: f64,
        weight: *mut C_tensor,
        reduction: i64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
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
