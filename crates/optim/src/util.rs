//! Small helpers shared by the update rules.
use crate::{Error, Result};
use kiln_tensor::{Kind, Tensor};

/// Formats a float as Python's `repr(float)` does (`-1.0`, `1e-05`, `inf`),
/// so validation messages read exactly like PyTorch's.
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent, e.g. "1.5e-5".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{digits}{}.0", "0".repeat((int_len - n) as usize))
            } else {
                let (a, b) = digits.split_at(int_len as usize);
                format!("{a}.{b}")
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { "-" } else { "+" };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    }
}

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
