//! libtorch operations tch 0.24 does not expose, with PyTorch's exact
//! arithmetic (e.g. `add_(other, alpha)` is one fused multiply-add in
//! libtorch's kernel; `a + other * alpha` in two steps rounds differently).
use crate::shim::{self, check, owned, raw};
use crate::Result;
use tch::Tensor;

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

fn raw_list(tensors: &[&Tensor]) -> Vec<*mut torch_sys::C_tensor> {
    tensors.iter().map(|t| raw(t)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

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
}
