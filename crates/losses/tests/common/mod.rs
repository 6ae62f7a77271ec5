//! Helpers shared by the integration tests.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use kiln_losses::Error;
use kiln_tensor::{Kind, Tensor};

/// A float tensor from values and a shape.
pub fn t64(values: &[f64], shape: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(values)?.f_reshape(shape)?)
}

/// A float32 tensor from values and a shape.
pub fn t32(values: &[f64], shape: &[i64]) -> Result<Tensor> {
    Ok(t64(values, shape)?.f_to_kind(Kind::Float)?)
}

/// An int64 tensor from values and a shape.
pub fn ti(values: &[i64], shape: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(values)?.f_reshape(shape)?)
}

/// Random normal float64 tensor.
pub fn randn(shape: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_randn(
        shape,
        (Kind::Double, kiln_tensor::Device::Cpu),
    )?)
}

/// The error message of `r`, failing if `r` is Ok.
pub fn err_msg<T>(r: kiln_losses::Result<T>) -> Result<String> {
    match r {
        Ok(_) => bail!("expected an error, got Ok"),
        Err(e) => Ok(e.to_string()),
    }
}

/// Asserts `r` is an error whose message contains every one of `parts`.
pub fn expect_err<T>(r: kiln_losses::Result<T>, parts: &[&str]) -> Result<String> {
    let msg = err_msg(r)?;
    for p in parts {
        if !msg.contains(p) {
            bail!("error message {msg:?} does not contain {p:?}");
        }
    }
    Ok(msg)
}

/// Asserts `r` is an [`Error::Invalid`] (a kiln check, not a libtorch failure)
/// with exactly `message`.
pub fn expect_invalid<T>(r: kiln_losses::Result<T>, message: &str) -> Result<()> {
    match r {
        Ok(_) => bail!("expected error {message:?}, got Ok"),
        Err(e @ Error::Invalid { .. }) => {
            let got = e.to_string();
            if got != message {
                bail!("error message\n  got:      {got:?}\n  expected: {message:?}");
            }
            Ok(())
        }
        Err(e) => bail!("expected a kiln check error {message:?}, got {e:?}"),
    }
}

/// The values of a tensor as f64.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t
        .f_detach()?
        .f_to_kind(Kind::Double)?
        .f_reshape([-1i64].as_slice())?;
    Vec::<f64>::try_from(&flat).context("reading tensor values")
}

/// One f64 value of a scalar tensor.
pub fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.f_double_value(&[])?)
}
