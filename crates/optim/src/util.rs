//! Small helpers shared by the update rules.
use crate::{Error, Result};
use kiln_tensor::{Kind, Tensor};

pub use kiln_tensor::spec::py_float;

/// An `InvalidHyperparameter` error.
pub(crate) fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::InvalidHyperparameter(msg))
}

/// PyTorch's `if not 0.0 <= value: raise ValueError(f"Invalid {what}: {value}")`
/// (NaN is invalid too).
pub(crate) fn non_negative(value: f64, what: &str) -> Result<()> {
    if !(value >= 0.0) {
        return invalid(format!("Invalid {what}: {}", py_float(value)));
    }
    Ok(())
}

/// The newer optimizers' form of [`non_negative`] (Adafactor, Muon):
/// `"{what} should be >= 0 but is: {value}"`.
pub(crate) fn at_least_zero(value: f64, what: &str) -> Result<()> {
    if !(value >= 0.0) {
        return invalid(format!("{what} should be >= 0 but is: {}", py_float(value)));
    }
    Ok(())
}

/// A mutable handle on the same tensor (tch's in-place calls take `&mut self`).
pub(crate) fn m(t: &Tensor) -> Tensor {
    t.shallow_clone()
}

/// `a * b` on a 0-dim tensor of dtype `kind` (float64 or float32) and a
/// Python float, as `mu_product *= mu` computes it.
pub(crate) fn scalar_mul(kind: Kind, a: f64, b: f64) -> f64 {
    if kind == Kind::Double {
        a * b
    } else {
        f64::from((a as f32) * (b as f32))
    }
}

/// `grad` or `-grad` (PyTorch's `maximize`).
pub(crate) fn maybe_neg(grad: &Tensor, maximize: bool) -> Result<Tensor> {
    Ok(if maximize {
        grad.f_neg()?
    } else {
        grad.shallow_clone()
    })
}

/// `grad.add(param, alpha=weight_decay)` when weight decay is on.
pub(crate) fn l2(grad: Tensor, param: &Tensor, weight_decay: f64) -> Result<Tensor> {
    Ok(if weight_decay != 0.0 {
        kiln_tensor::ops::add(&grad, param, weight_decay)?
    } else {
        grad
    })
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn python_float_repr() {
        let cases = [
            (-1.0, "-1.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123.5, "123.5"),
            (1e15, "1000000000000000.0"),
            (-0.5, "-0.5"),
            (2.5e-7, "2.5e-07"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
            (0.1, "0.1"),
            (1.2, "1.2"),
        ];
        for (v, want) in cases {
            assert_eq!(py_float(v), want);
        }
    }
}
