//! Gradient clipping against torch.nn.utils (bitwise, from PyTorch's recorded gradients).
use crate::common;

use anyhow::{anyhow, ensure, Result};
use common::*;
use kiln_optim::{clip_grad_norm_, clip_grad_value_, NamedParameter};
use kiln_tensor::{ops, Kind};

/// The fixture's parameters with PyTorch's gradients at the start (recorded,
/// not recomputed: see `tests/golden/make_golden.py`).
fn grads_at_init(g: &serde_json::Value, dtype: &str) -> Result<Vec<NamedParameter>> {
    let params = params(g, dtype)?;
    set_grads(&params, &g["grads_at_init"][dtype])?;
    Ok(params)
}

fn grads_flat(params: &[NamedParameter]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for p in params {
        if ops::has_grad(&p.tensor)? {
            let v: Vec<f64> =
                Vec::try_from(&p.tensor.grad().f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
            out.extend(v);
        }
    }
    Ok(out)
}

#[test]
fn clip_grad_norm_matches_pytorch() -> Result<()> {
    let g = golden()?;
    for case in g["clip"]
        .as_array()
        .ok_or_else(|| anyhow!("no clip cases"))?
    {
        let max_norm = case["max_norm"]
            .as_f64()
            .ok_or_else(|| anyhow!("max_norm"))?;
        let norm_type = match &case["norm_type"] {
            serde_json::Value::String(s) if s == "inf" => f64::INFINITY,
            v => v.as_f64().ok_or_else(|| anyhow!("norm_type"))?,
        };
        for dtype in ["f64", "f32"] {
            let params = grads_at_init(&g, dtype)?;
            let total =
                clip_grad_norm_(params.iter().map(|p| &p.tensor), max_norm, norm_type, true)?;
            let want_total = case[dtype]["total_norm"]
                .as_f64()
                .ok_or_else(|| anyhow!("total"))?;
            ensure!(
                total.f_double_value(&[])? == want_total,
                "{norm_type} {dtype}: total norm {total} vs {want_total}"
            );
            let (_, differ) = compare(&grads_flat(&params)?, &floats(&case[dtype]["grads"])?);
            ensure!(
                differ == 0,
                "{norm_type} {dtype}: {differ} clipped gradients differ"
            );
        }
    }
    Ok(())
}

#[test]
fn clip_grad_value_matches_pytorch() -> Result<()> {
    let g = golden()?;
    for dtype in ["f64", "f32"] {
        let params = grads_at_init(&g, dtype)?;
        clip_grad_value_(params.iter().map(|p| &p.tensor), 0.05)?;
        let (_, differ) = compare(&grads_flat(&params)?, &floats(&g["clip_value"][dtype])?);
        ensure!(differ == 0);
    }
    Ok(())
}

#[test]
fn nonfinite_norm_is_an_error_when_asked() -> Result<()> {
    let g = golden()?;
    let with_grads = grads_at_init(&g, "f32")?;
    if let Some(p) = with_grads.first() {
        let _ = p.tensor.grad().f_fill_(f64::INFINITY)?;
    }
    let err = clip_grad_norm_(with_grads.iter().map(|p| &p.tensor), 1.0, 2.0, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.starts_with(
            "The total norm of order 2.0 for gradients from `parameters` is non-finite"
        ),
        "{err}"
    );
    // Without the flag it returns the infinite norm.
    let total = clip_grad_norm_(with_grads.iter().map(|p| &p.tensor), 1.0, 2.0, false)?;
    ensure!(total.f_double_value(&[])?.is_infinite());
    // No gradients at all: a zero norm and nothing to do.
    let none = params(&g, "f32")?;
    let total = clip_grad_norm_(none.iter().map(|p| &p.tensor), 1.0, 2.0, true)?;
    ensure!(total.f_double_value(&[])? == 0.0);
    Ok(())
}
