//! libtorch's default dtype: `torch.set_default_dtype` / `torch.get_default_dtype`.
//!
//! The default dtype is global state of the process, exactly as in PyTorch
//! (libtorch keeps it; PyTorch's Python function sets the same variable). It
//! decides the dtype of factory calls without an explicit dtype and of
//! Python-number promotion in libtorch, and torch.optim keeps some scalar
//! optimizer state in it (NAdam's `mu_product`, ASGD's `eta` and `mu`):
//! kiln-optim reads it through [`default_dtype`] so that float64 models under
//! either default dtype give PyTorch's bits.
use crate::shim::{self, check, owned, raw};
use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// `torch.set_default_dtype(kind)`: float16, bfloat16, float32 or float64,
/// as PyTorch accepts (anything else is an error with PyTorch's message).
/// Process-wide, like PyTorch's.
pub fn set_default_dtype(kind: Kind) -> Result<()> {
    if !matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    ) {
        return Err(Error::InvalidArgument(
            "only floating-point types are supported as the default type".into(),
        ));
    }
    let like = Tensor::f_empty([0i64].as_slice(), (kind, Device::Cpu))?;
    // SAFETY: `like` is live for the call; libtorch only reads its dtype.
    check(unsafe { shim::kiln_set_default_dtype(raw(&like)) })
}

/// `torch.get_default_dtype()` (float32 unless the program set another).
pub fn default_dtype() -> Result<Kind> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` receives a tensor we then own.
    check(unsafe { shim::kiln_default_dtype(&mut out) })?;
    Ok(owned(out)?.f_kind()?)
}

/// `kind` as a `c10::ScalarType` value, how the shim takes a dtype.
pub(crate) fn scalar_type(kind: Kind) -> std::os::raw::c_int {
    // c10/core/ScalarType.h's numbering (tch's own `Kind::c_int` is private).
    match kind {
        Kind::Uint8 => 0,
        Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int => 3,
        Kind::Int64 => 4,
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::ComplexHalf => 8,
        Kind::ComplexFloat => 9,
        Kind::ComplexDouble => 10,
        Kind::Bool => 11,
        Kind::QInt8 => 12,
        Kind::QUInt8 => 13,
        Kind::QInt32 => 14,
        Kind::BFloat16 => 15,
        Kind::Float8e5m2 => 23,
        Kind::Float8e4m3fn => 24,
        Kind::Float8e5m2fnuz => 25,
        Kind::Float8e4m3fnuz => 26,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_get_default_dtype_like_pytorch() -> Result<()> {
        // Other tests of this binary never depend on the default dtype.
        assert_eq!(default_dtype()?, Kind::Float);
        set_default_dtype(Kind::Double)?;
        assert_eq!(default_dtype()?, Kind::Double);
        // libtorch itself follows it: a Python-float promotion of an int tensor.
        let t = Tensor::from_slice(&[1i64, 2]).f_mul_scalar(0.5)?;
        assert_eq!(t.f_kind()?, Kind::Double);
        let err = set_default_dtype(Kind::Int64).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("only floating-point types are supported as the default type")
        );
        assert_eq!(default_dtype()?, Kind::Double);
        set_default_dtype(Kind::Float)?;
        assert_eq!(default_dtype()?, Kind::Float);
        Ok(())
    }

    #[test]
    fn scalar_type_is_libtorchs_numbering() -> Result<()> {
        let kinds = [
            Kind::Uint8,
            Kind::Int8,
            Kind::Int16,
            Kind::Int,
            Kind::Int64,
            Kind::Half,
            Kind::Float,
            Kind::Double,
            Kind::ComplexFloat,
            Kind::ComplexDouble,
            Kind::Bool,
            Kind::BFloat16,
        ];
        for kind in kinds {
            // A generator draw builds its tensor from the number alone.
            let drawn = crate::rng::Generator::new(0)?.rand(&[1], kind);
            let name = match kind {
                Kind::Uint8 => "'Byte'",
                Kind::Int8 => "'Char'",
                Kind::Int16 => "'Short'",
                Kind::Int => "'Int'",
                Kind::Int64 => "'Long'",
                Kind::Bool => "'Bool'",
                _ => {
                    assert_eq!(drawn?.f_kind()?, kind);
                    continue;
                }
            };
            // torch.rand refuses integer dtypes, naming the one it got.
            let err = drawn.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(name), "{kind:?}: {err}");
        }
        Ok(())
    }
}
