//! libtorch's kernels that tch 0.24 does not expose, with PyTorch's exact
//! arithmetic (e.g. `add_(other, alpha)` is one fused multiply-add in
//! libtorch's kernel; `a + other * alpha` in two steps rounds differently),
//! through the shim's `cpp/kernels/`:
//! - elementwise ops with scalars and gradients (`add_`, `addcmul_`,
//!   `grad = None`, `grad = g`);
//! - norms, `addmm`, `multi_margin_loss`;
//! - the `_foreach_*` multi-tensor kernels;
//! - libtorch's fused optimizers (`_fused_sgd_`, `_fused_adam(w)_`,
//!   `_fused_adagrad_`);
//! - kiln's one-pass optimizer steps ([`sgd_step_`], [`adam_step_`]).
use crate::shim::{self, check, owned, raw, raw_list};
use crate::Result;
use tch::Tensor;

/// Post-accumulate-grad hooks live in [`crate::autograd`]; re-exported here
/// for the callers that name them by their first home.
pub use crate::autograd::{register_post_accumulate_grad_hook, PostAccumulateGradHook};

/// `tensor.add_(other, alpha=alpha)` in place.
pub fn add_(tensor: &Tensor, other: &Tensor, alpha: f64) -> Result<()> {
    // SAFETY: both tensors are live for the call; the shim does not keep them.
    check(unsafe { shim::kiln_add_(raw(tensor), raw(other), alpha) })
}

/// `tensor.add(other, alpha=alpha)`, a new tensor.
pub fn add(tensor: &Tensor, other: &Tensor, alpha: f64) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: inputs are live; `out` receives a tensor we then own.
    check(unsafe { shim::kiln_add(raw(tensor), raw(other), alpha, &mut out) })?;
    owned(out)
}

/// `tensor.detach().clone()`: a new tensor with its own storage, outside autograd.
pub fn detached_clone(tensor: &Tensor) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the input is live; `out` receives a tensor we then own.
    check(unsafe { shim::kiln_detached_clone(raw(tensor), &mut out) })?;
    owned(out)
}

/// `tensor.addcmul_(t1, t2, value=value)` in place.
pub fn addcmul_(tensor: &Tensor, t1: &Tensor, t2: &Tensor, value: f64) -> Result<()> {
    // SAFETY: all tensors are live for the call.
    check(unsafe { shim::kiln_addcmul_(raw(tensor), raw(t1), raw(t2), value) })
}

/// `tensor.addcdiv_(t1, t2, value=value)` in place.
pub fn addcdiv_(tensor: &Tensor, t1: &Tensor, t2: &Tensor, value: f64) -> Result<()> {
    // SAFETY: all tensors are live for the call.
    check(unsafe { shim::kiln_addcdiv_(raw(tensor), raw(t1), raw(t2), value) })
}

/// `tensor.grad = None` (what `zero_grad()` does by default in PyTorch).
pub fn clear_grad(tensor: &Tensor) -> Result<()> {
    // SAFETY: the tensor is live for the call.
    check(unsafe { shim::kiln_clear_grad(raw(tensor)) })
}

/// Whether `tensor.grad` is not None.
pub fn has_grad(tensor: &Tensor) -> Result<bool> {
    let mut defined = 0;
    // SAFETY: the tensor is live; `defined` is a valid out-pointer.
    check(unsafe { shim::kiln_grad_defined(raw(tensor), &mut defined) })?;
    Ok(defined != 0)
}

/// `tensor.grad = grad` (PyTorch's `Tensor.grad` setter, with its dtype,
/// device and size checks). A sparse `grad` of the tensor's size is allowed.
pub fn set_grad(tensor: &Tensor, grad: &Tensor) -> Result<()> {
    // SAFETY: both tensors are live for the call; libtorch keeps its own reference.
    check(unsafe { shim::kiln_set_grad(raw(tensor), raw(grad)) })
}

/// `torch.linalg.vector_norm(tensor, ord)` over all elements (0-dim result).
pub fn vector_norm(tensor: &Tensor, ord: f64) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the input is live; `out` receives a tensor we then own.
    check(unsafe { shim::kiln_vector_norm(raw(tensor), ord, &mut out) })?;
    owned(out)
}

/// `torch.linalg.vector_norm(tensor, ord, dim=[dim], keepdim=keepdim)`.
pub fn vector_norm_dim(tensor: &Tensor, ord: f64, dim: i64, keepdim: bool) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: the input is live; `out` receives a tensor we then own.
    check(unsafe {
        shim::kiln_vector_norm_dim(raw(tensor), ord, dim, i32::from(keepdim), &mut out)
    })?;
    owned(out)
}

/// `torch.addmm(tensor, mat1, mat2, beta=beta, alpha=alpha)`: `β·tensor + α·mat1 @ mat2`.
pub fn addmm(
    tensor: &Tensor,
    mat1: &Tensor,
    mat2: &Tensor,
    beta: f64,
    alpha: f64,
) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    // SAFETY: inputs are live; `out` receives a tensor we then own.
    check(unsafe { shim::kiln_addmm(raw(tensor), raw(mat1), raw(mat2), beta, alpha, &mut out) })?;
    owned(out)
}

/// `torch._C._nn.multi_margin_loss(input, target, p, margin, weight,
/// reduction)`: libtorch's kernel, forward and backward as autograd records
/// it (what `F.multi_margin_loss` calls).
pub fn multi_margin_loss(
    input: &Tensor,
    target: &Tensor,
    p: i64,
    margin: f64,
    weight: Option<&Tensor>,
    reduction: tch::Reduction,
) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    let w = weight.map_or(std::ptr::null_mut(), raw);
    // SAFETY: inputs are live (weight may be NULL); `out` receives a tensor we then own.
    check(unsafe {
        shim::kiln_multi_margin_loss(
            raw(input),
            raw(target),
            p,
            margin,
            w,
            reduction.to_int(),
            &mut out,
        )
    })?;
    owned(out)
}

/// `torch._foreach_add_(tensors, others, alpha=alpha)`: one multi-tensor kernel.
pub fn foreach_add_(tensors: &[&Tensor], others: &[&Tensor], alpha: f64) -> Result<()> {
    if tensors.len() != others.len() {
        return Err(crate::Error::InvalidArgument(format!(
            "foreach_add_ needs lists of equal length, got {} and {}",
            tensors.len(),
            others.len()
        )));
    }
    let (a, b) = (raw_list(tensors), raw_list(others));
    // SAFETY: both pointer arrays hold `len` live tensors for the call.
    check(unsafe { shim::kiln_foreach_add_(a.as_ptr(), b.as_ptr(), a.len() as i64, alpha) })
}

/// `torch._foreach_mul_(tensors, scalar)`.
pub fn foreach_mul_(tensors: &[&Tensor], scalar: f64) -> Result<()> {
    let a = raw_list(tensors);
    // SAFETY: the pointer array holds `len` live tensors for the call.
    check(unsafe { shim::kiln_foreach_mul_scalar_(a.as_ptr(), a.len() as i64, scalar) })
}

/// `torch._foreach_add_(tensors, scalar)`.
pub fn foreach_add_scalar_(tensors: &[&Tensor], scalar: f64) -> Result<()> {
    let a = raw_list(tensors);
    // SAFETY: the pointer array holds `len` live tensors for the call.
    check(unsafe { shim::kiln_foreach_add_scalar_(a.as_ptr(), a.len() as i64, scalar) })
}

/// `torch._foreach_mul_(tensors, other)` with a 0-dim tensor `other`
/// (what `clip_grad_norm_` scales the gradients with).
pub fn foreach_mul_tensor_(tensors: &[&Tensor], other: &Tensor) -> Result<()> {
    let a = raw_list(tensors);
    // SAFETY: the pointer array holds `len` live tensors; `other` is live.
    check(unsafe { shim::kiln_foreach_mul_tensor_(a.as_ptr(), a.len() as i64, raw(other)) })
}

/// `torch._foreach_norm(tensors, ord)`: one 0-dim norm per tensor.
pub fn foreach_norm(tensors: &[&Tensor], ord: f64) -> Result<Vec<Tensor>> {
    let a = raw_list(tensors);
    let mut outs: Vec<*mut torch_sys::C_tensor> = vec![std::ptr::null_mut(); a.len()];
    // SAFETY: `a` holds `len` live tensors; `outs` has room for `len` results we then own.
    let err = check(unsafe {
        shim::kiln_foreach_norm(a.as_ptr(), a.len() as i64, ord, outs.as_mut_ptr())
    });
    // Take ownership of whatever was produced before reporting an error.
    let owned_outs: Vec<Result<Tensor>> = outs.into_iter().map(owned).collect();
    err?;
    owned_outs.into_iter().collect()
}

/// Hyperparameters of [`fused_sgd_`], as `torch._fused_sgd_` takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSgd {
    /// L2 penalty.
    pub weight_decay: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Learning rate.
    pub lr: f64,
    /// Dampening.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximise instead of minimise.
    pub maximize: bool,
    /// The momentum buffers are uninitialised and must be set to the gradient.
    pub is_first_step: bool,
}

/// `torch._fused_sgd_`: libtorch's one-pass SGD kernel (`SGD(fused=True)`).
/// `momentum_buffers` is empty when momentum is 0, else one per parameter.
pub fn fused_sgd_(
    params: &[&Tensor],
    grads: &[&Tensor],
    momentum_buffers: &[&Tensor],
    h: &FusedSgd,
) -> Result<()> {
    if params.len() != grads.len()
        || !(momentum_buffers.is_empty() || momentum_buffers.len() == params.len())
    {
        return Err(crate::Error::InvalidArgument(
            "fused_sgd_ needs lists of equal length".into(),
        ));
    }
    let (p, g, b) = (
        raw_list(params),
        raw_list(grads),
        raw_list(momentum_buffers),
    );
    // SAFETY: every pointer array holds its stated number of live tensors for the call.
    check(unsafe {
        shim::kiln_fused_sgd_(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            p.len() as i64,
            b.len() as i64,
            h.weight_decay,
            h.momentum,
            h.lr,
            h.dampening,
            i32::from(h.nesterov),
            i32::from(h.maximize),
            i32::from(h.is_first_step),
        )
    })
}

/// Hyperparameters of [`fused_adam_`], as `torch._fused_adam(w)_` takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam {
    /// Learning rate.
    pub lr: f64,
    /// First moment decay.
    pub beta1: f64,
    /// Second moment decay.
    pub beta2: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// AMSGrad variant.
    pub amsgrad: bool,
    /// Maximise instead of minimise.
    pub maximize: bool,
    /// `_fused_adamw_` (decoupled weight decay) instead of `_fused_adam_`.
    pub decoupled_weight_decay: bool,
}

/// The per-parameter lists `torch._fused_adam_` updates.
#[derive(Debug, Clone, Copy)]
pub struct AdamLists<'a> {
    /// Parameters.
    pub params: &'a [&'a Tensor],
    /// Their gradients.
    pub grads: &'a [&'a Tensor],
    /// First moments.
    pub exp_avgs: &'a [&'a Tensor],
    /// Second moments.
    pub exp_avg_sqs: &'a [&'a Tensor],
    /// Running maxima of the second moments (empty unless amsgrad).
    pub max_exp_avg_sqs: &'a [&'a Tensor],
    /// float32 0-dim step counters, already incremented for this step.
    pub steps: &'a [&'a Tensor],
}

/// `torch._fused_adam_` / `torch._fused_adamw_`: libtorch's one-pass Adam kernel
/// (`Adam(fused=True)`).
pub fn fused_adam_(l: &AdamLists<'_>, h: &FusedAdam) -> Result<()> {
    let n = l.params.len();
    let same = [
        l.grads.len(),
        l.exp_avgs.len(),
        l.exp_avg_sqs.len(),
        l.steps.len(),
    ]
    .iter()
    .all(|&k| k == n);
    if !same || !(l.max_exp_avg_sqs.is_empty() || l.max_exp_avg_sqs.len() == n) {
        return Err(crate::Error::InvalidArgument(
            "fused_adam_ needs lists of equal length".into(),
        ));
    }
    let (p, g, m, v, mx, st) = (
        raw_list(l.params),
        raw_list(l.grads),
        raw_list(l.exp_avgs),
        raw_list(l.exp_avg_sqs),
        raw_list(l.max_exp_avg_sqs),
        raw_list(l.steps),
    );
    // SAFETY: every pointer array holds its stated number of live tensors for the call.
    check(unsafe {
        shim::kiln_fused_adam_(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            mx.as_ptr(),
            mx.len() as i64,
            st.as_ptr(),
            n as i64,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            i32::from(h.amsgrad),
            i32::from(h.maximize),
            i32::from(h.decoupled_weight_decay),
        )
    })
}

/// Hyperparameters of [`fused_adagrad_`], as `torch._fused_adagrad_` takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdagrad {
    /// Learning rate.
    pub lr: f64,
    /// Learning-rate decay.
    pub lr_decay: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Maximise instead of minimise.
    pub maximize: bool,
}

/// `torch._fused_adagrad_`: libtorch's one-pass Adagrad kernel
/// (`Adagrad(fused=True)`, CPU). `state_steps` are float32 0-dim counters,
/// already incremented for this step (PyTorch does `_foreach_add_(steps, 1)`
/// first).
pub fn fused_adagrad_(
    params: &[&Tensor],
    grads: &[&Tensor],
    state_sums: &[&Tensor],
    state_steps: &[&Tensor],
    h: &FusedAdagrad,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || state_sums.len() != n || state_steps.len() != n {
        return Err(crate::Error::InvalidArgument(
            "fused_adagrad_ needs lists of equal length".into(),
        ));
    }
    let (p, g, s, st) = (
        raw_list(params),
        raw_list(grads),
        raw_list(state_sums),
        raw_list(state_steps),
    );
    // SAFETY: every pointer array holds `n` live tensors for the call.
    check(unsafe {
        shim::kiln_fused_adagrad_(
            p.as_ptr(),
            g.as_ptr(),
            s.as_ptr(),
            st.as_ptr(),
            n as i64,
            h.lr,
            h.lr_decay,
            h.weight_decay,
            h.eps,
            i32::from(h.maximize),
        )
    })
}

/// SGD's hyperparameters for [`sgd_step_`] (torch.optim.SGD's names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: no buffer).
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximise instead of minimise.
    pub maximize: bool,
}

/// One SGD update of `param` as torch.optim's default path computes it
/// (`_single_tensor_sgd`: `buf.mul_(momentum).add_(grad, alpha=1 -
/// dampening)`, `param.add_(buf, alpha=-lr)`, with weight decay, Nesterov
/// and maximize), in one pass over memory with the same bits: each
/// intermediate is rounded where the op sequence stores it, and a
/// multiply-add is fused exactly where libtorch's kernels fuse it (asked of
/// libtorch once per dtype). `momentum_buffer` is `None` without momentum;
/// `first` says it is fresh (uninitialised) and takes the gradient, as
/// PyTorch's first step clones it.
///
/// Returns `false`, changing nothing, when the one-pass kernel does not
/// apply — tensors not all float32 or all float64 dense CPU tensors, grad
/// mode on for a parameter that requires grad, or a libtorch whose kernels
/// round in a way the kernel does not reproduce — and the caller runs the
/// op sequence instead.
pub fn sgd_step_(
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&Tensor>,
    first: bool,
    h: &SgdStep,
) -> Result<bool> {
    let mut applied = 0;
    let buf = momentum_buffer.map_or(std::ptr::null_mut(), raw);
    // SAFETY: the tensors are live for the call (buf may be NULL, which the
    // shim accepts); `applied` is a valid out-pointer.
    check(unsafe {
        shim::kiln_fused_sgd_step(
            raw(param),
            raw(grad),
            buf,
            i32::from(first),
            h.lr,
            h.momentum,
            h.dampening,
            h.weight_decay,
            i32::from(h.nesterov),
            i32::from(h.maximize),
            &mut applied,
        )
    })?;
    Ok(applied != 0)
}

/// Adam's hyperparameters and one parameter's step scalars for
/// [`adam_step_`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay rate of the first moment.
    pub beta1: f64,
    /// Decay rate of the second moment.
    pub beta2: f64,
    /// Term added to the denominator.
    pub eps: f64,
    /// Weight decay (L2 or decoupled).
    pub weight_decay: f64,
    /// AMSGrad (needs `max_exp_avg_sq`).
    pub amsgrad: bool,
    /// Maximise instead of minimise.
    pub maximize: bool,
    /// Decay the weights directly (AdamW).
    pub decoupled_weight_decay: bool,
    /// `lr / (1 - beta1^t)` for this parameter's step `t`.
    pub step_size: f64,
    /// `(1 - beta2^t)^0.5` for this parameter's step `t`.
    pub bias_correction2_sqrt: f64,
}

/// One Adam/AdamW update of `param` as torch.optim's default path computes
/// it (`_single_tensor_adam`, neither capturable nor differentiable:
/// `exp_avg.lerp_`, `exp_avg_sq.mul_().addcmul_()`, `torch.maximum` for
/// AMSGrad, `(v.sqrt() / bias_correction2_sqrt).add_(eps)` with libtorch's
/// own `sqrt`, `param.addcdiv_`), in one pass over memory with the same
/// bits; the step is already counted in `h`. Returns `false`, changing
/// nothing, where the one-pass kernel does not apply (see [`sgd_step_`]).
pub fn adam_step_(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    max_exp_avg_sq: Option<&Tensor>,
    h: &AdamStep,
) -> Result<bool> {
    let mut applied = 0;
    let max = max_exp_avg_sq.map_or(std::ptr::null_mut(), raw);
    // SAFETY: the tensors are live for the call (max may be NULL, which the
    // shim accepts); `applied` is a valid out-pointer.
    check(unsafe {
        shim::kiln_fused_adam_step(
            raw(param),
            raw(grad),
            raw(exp_avg),
            raw(exp_avg_sq),
            max,
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            h.weight_decay,
            i32::from(h.amsgrad),
            i32::from(h.maximize),
            i32::from(h.decoupled_weight_decay),
            h.step_size,
            h.bias_correction2_sqrt,
            &mut applied,
        )
    })?;
    Ok(applied != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Reduction};

    #[test]
    fn add_with_alpha_is_one_rounding_like_pytorch() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[0.5f32, -1.0, 0.25]);
        assert!(add_(&a, &b, -2.0).is_ok());
        assert_eq!(
            Vec::<f32>::try_from(&a).unwrap_or_default(),
            vec![0.0, 4.0, 2.5]
        );
        let c = add(&a, &b, 1.0).map(|t| Vec::<f32>::try_from(&t).unwrap_or_default());
        assert_eq!(c.ok(), Some(vec![0.5, 3.0, 2.75]));
        // Shape errors come back as Err, not as an abort.
        let bad = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let err = add_(&a, &bad, 1.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("libtorch:") && e.contains("size")));
    }

    #[test]
    fn addcmul_addcdiv_and_foreach() {
        let a = Tensor::from_slice(&[1.0f64, 1.0]);
        let t1 = Tensor::from_slice(&[2.0f64, 3.0]);
        let t2 = Tensor::from_slice(&[4.0f64, 0.5]);
        assert!(addcmul_(&a, &t1, &t2, 0.5).is_ok());
        assert_eq!(
            Vec::<f64>::try_from(&a).unwrap_or_default(),
            vec![5.0, 1.75]
        );
        assert!(addcdiv_(&a, &t1, &t2, 2.0).is_ok());
        assert_eq!(
            Vec::<f64>::try_from(&a).unwrap_or_default(),
            vec![6.0, 13.75]
        );
        let x = Tensor::from_slice(&[1.0f32]);
        let y = Tensor::from_slice(&[2.0f32, 2.0]);
        assert!(foreach_add_(&[&x, &y], &[&x, &y], 0.5).is_ok());
        assert!(foreach_mul_(&[&x, &y], 2.0).is_ok());
        assert_eq!(Vec::<f32>::try_from(&y).unwrap_or_default(), vec![6.0, 6.0]);
        assert!(foreach_add_(&[&x], &[], 1.0).is_err());
    }

    #[test]
    fn clear_grad_sets_none() {
        let w = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let loss = (&w * &w).sum(Kind::Float);
        assert!(loss.f_backward().is_ok());
        assert_eq!(has_grad(&w).ok(), Some(true));
        assert!(clear_grad(&w).is_ok());
        assert_eq!(has_grad(&w).ok(), Some(false));
    }

    #[test]
    fn norms_and_fused_kernels() -> Result<()> {
        let a = Tensor::from_slice(&[3.0f32, 4.0]);
        let b = Tensor::from_slice(&[1.0f32, -2.0, 2.0]).f_reshape([1, 3])?;
        let norms = foreach_norm(&[&a, &b], 2.0)?;
        assert_eq!(
            norms
                .iter()
                .map(|n| n.double_value(&[]))
                .collect::<Vec<_>>(),
            vec![5.0, 3.0]
        );
        assert_eq!(vector_norm(&a, f64::INFINITY)?.double_value(&[]), 4.0);
        assert_eq!(vector_norm_dim(&b, 1.0, -1, true)?.size(), vec![1, 1]);
        let s = Tensor::from_slice(&[0.5f32]).f_reshape([])?;
        foreach_mul_tensor_(&[&a], &s)?;
        assert_eq!(Vec::<f32>::try_from(&a).unwrap_or_default(), vec![1.5, 2.0]);
        // SGD without momentum: p -= lr * g.
        let p = Tensor::from_slice(&[1.0f32, 1.0]);
        let g = Tensor::from_slice(&[0.5f32, -0.5]);
        let h = FusedSgd {
            weight_decay: 0.0,
            momentum: 0.0,
            lr: 0.5,
            dampening: 0.0,
            nesterov: false,
            maximize: false,
            is_first_step: false,
        };
        fused_sgd_(&[&p], &[&g], &[], &h)?;
        assert_eq!(
            Vec::<f32>::try_from(&p).unwrap_or_default(),
            vec![0.75, 1.25]
        );
        assert!(fused_sgd_(&[&p], &[], &[], &h).is_err());
        let m = addmm(
            &p.f_reshape([1, 2])?,
            &Tensor::from_slice(&[1.0f32]).f_reshape([1, 1])?,
            &g.f_reshape([1, 2])?,
            2.0,
            1.0,
        )?;
        assert_eq!(
            Vec::<f32>::try_from(&m.f_reshape([-1])?).unwrap_or_default(),
            vec![2.0, 2.0]
        );
        Ok(())
    }

    #[test]
    fn set_grad_checks_like_pytorch() -> Result<()> {
        let p = Tensor::from_slice(&[1.0f32, 2.0]);
        set_grad(&p, &Tensor::from_slice(&[0.5f32, 0.25]))?;
        assert!(has_grad(&p)?);
        assert_eq!(
            Vec::<f32>::try_from(&p.grad()).unwrap_or_default(),
            vec![0.5, 0.25]
        );
        let err = set_grad(&p, &Tensor::from_slice(&[0.5f64, 0.25])).err();
        assert!(err.is_some_and(|e| e.to_string().contains("different type")));
        let err = set_grad(&p, &Tensor::from_slice(&[0.5f32])).err();
        assert!(err.is_some_and(|e| e.to_string().contains("different size")));
        Ok(())
    }

    #[test]
    fn fused_adagrad_and_multi_margin_loss() -> Result<()> {
        // Adagrad, one step: sum = g^2, p -= lr * g / (sqrt(sum) + eps).
        let p = Tensor::from_slice(&[1.0f32, 1.0]);
        let g = Tensor::from_slice(&[0.5f32, -2.0]);
        let sum = Tensor::from_slice(&[0.0f32, 0.0]);
        let step = Tensor::from_slice(&[1.0f32]).f_reshape([])?;
        let h = FusedAdagrad {
            lr: 0.5,
            lr_decay: 0.0,
            weight_decay: 0.0,
            eps: 0.0,
            maximize: false,
        };
        fused_adagrad_(&[&p], &[&g], &[&sum], &[&step], &h)?;
        assert_eq!(Vec::<f32>::try_from(&p).unwrap_or_default(), vec![0.5, 1.5]);
        assert!(fused_adagrad_(&[&p], &[], &[], &[], &h).is_err());
        // x = [0, 1, 3], y = 2: (max(0, 1 - 3 + 0) + max(0, 1 - 3 + 1)) / 3 = 0.
        let x = Tensor::from_slice(&[0.0f64, 1.0, 3.0]).f_reshape([1, 3])?;
        let y = Tensor::from_slice(&[0i64]);
        let l = multi_margin_loss(&x, &y, 1, 1.0, None, Reduction::Mean)?;
        // y = 0: (max(0, 1 - 0 + 1) + max(0, 1 - 0 + 3)) / 3 = 2.
        assert_eq!(l.f_double_value(&[])?, 2.0);
        let bad = Tensor::from_slice(&[5i64]);
        assert!(multi_margin_loss(&x, &bad, 1, 1.0, None, Reduction::Mean).is_err());
        let w = Tensor::from_slice(&[0.5f64, 1.0, 1.0]);
        let l = multi_margin_loss(&x, &y, 2, 1.0, Some(&w), Reduction::Sum)?;
        assert_eq!(l.f_kind()?, Kind::Double);
        assert_eq!(l.f_double_value(&[])?, 0.5 * (4.0 + 16.0) / 3.0);
        Ok(())
    }
}
