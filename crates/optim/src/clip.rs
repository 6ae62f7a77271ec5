//! Gradient clipping: `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
use crate::{Error, Result};
use kiln_tensor::{ops, Device, Kind, Tensor};

/// The gradients of `params` that are not None, grouped by (device, dtype)
/// in first-occurrence order (PyTorch's `_group_tensors_by_device_and_dtype`).
type Groups = Vec<((Device, Kind), Vec<Tensor>)>;

fn grouped_grads<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Result<Groups> {
    let mut groups: Groups = Vec::new();
    for p in params {
        if !ops::has_grad(p)? {
            continue;
        }
        let g = p.f_grad()?;
        let key = (g.device(), g.kind());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(g),
            None => groups.push((key, vec![g])),
        }
    }
    Ok(groups)
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)`.
///
/// Computes the total norm of all gradients as PyTorch does on CPU and CUDA
/// (`torch._foreach_norm` per device/dtype group, then the norm of the
/// stacked norms), scales every gradient by `min(max_norm / (total + 1e-6), 1)`
/// with `torch._foreach_mul_`, and returns the total norm (a 0-dim tensor).
/// `norm_type` may be `f64::INFINITY`. With `error_if_nonfinite`, a NaN or
/// infinite total norm is an error (PyTorch's message) and nothing is scaled.
pub fn clip_grad_norm_<'a>(
    params: impl IntoIterator<Item = &'a Tensor>,
    max_norm: f64,
    norm_type: f64,
    error_if_nonfinite: bool,
) -> Result<Tensor> {
    let groups = grouped_grads(params)?;
    let Some(((first_device, _), _)) = groups.first() else {
        return Ok(Tensor::f_scalar_tensor(0.0, (Kind::Float, Device::Cpu))?);
    };
    let first_device = *first_device;
    let mut norms = Vec::new();
    for (_, grads) in &groups {
        let refs: Vec<&Tensor> = grads.iter().collect();
        for n in ops::foreach_norm(&refs, norm_type)? {
            norms.push(n.f_to_device(first_device)?);
        }
    }
    let total_norm = ops::vector_norm(&Tensor::f_stack(&norms, 0)?, norm_type)?;
    if error_if_nonfinite {
        let t = total_norm.f_double_value(&[])?;
        if !t.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "The total norm of order {} for gradients from `parameters` is non-finite, so it cannot be clipped. \
                 To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`",
                crate::py_float(norm_type)
            )));
        }
    }
    // `max_norm / (total_norm + 1e-6)` is `reciprocal() * max_norm` in PyTorch.
    let clip_coef = total_norm
        .f_add_scalar(1e-6)?
        .f_reciprocal()?
        .f_mul_scalar(max_norm)?;
    let clamped = clip_coef.f_clamp_max(1.0)?;
    for ((device, _), grads) in &groups {
        let refs: Vec<&Tensor> = grads.iter().collect();
        ops::foreach_mul_tensor_(&refs, &clamped.f_to_device(*device)?)?;
    }
    Ok(total_norm)
}

/// `torch.nn.utils.clip_grad_value_(params, clip_value)`: clamps every
/// gradient into `[-clip_value, clip_value]` in place.
pub fn clip_grad_value_<'a>(
    params: impl IntoIterator<Item = &'a Tensor>,
    clip_value: f64,
) -> Result<()> {
    for (_, grads) in grouped_grads(params)? {
        for g in grads {
            let _ = g
                .shallow_clone()
                .f_clamp_min_(-clip_value)?
                .f_clamp_max_(clip_value)?;
        }
    }
    Ok(())
}
