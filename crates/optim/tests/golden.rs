//! Golden tests: kiln's optimizers reproduce torch.optim's trajectories
//! recorded by `tests/golden/make_golden.py` (f64 ≤ 1e-10, f32 ≤ 1e-6
//! relative; in practice bit for bit).
mod common;

use anyhow::{anyhow, bail, Result};
use common::*;
use kiln_optim::optimizers;

#[test]
fn every_optimizer_matches_pytorch() -> Result<()> {
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let mut failures = Vec::new();
    let mut inexact = Vec::new();
    let cases = g["cases"].as_array().ok_or_else(|| anyhow!("no cases"))?;
    for case in cases {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let params = params(&g, dtype)?;
            let (x, y) = data(&g, dtype)?;
            let handles = handles(&params);
            let mut opt =
                registry.build_with_overrides(spec, only(case, handles), &overrides(case)?)?;
            let traj = case[dtype]
                .as_array()
                .ok_or_else(|| anyhow!("no trajectory"))?;
            for (step, want) in traj.iter().enumerate() {
                opt.zero_grad()?;
                loss_backward(&params, &x, &y)?;
                opt.step()?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                if err > tolerance(dtype) {
                    failures.push(format!(
                        "{spec} [{dtype}] step {}: relative error {err:e}",
                        step + 1
                    ));
                    break;
                }
                if differ > 0 && step + 1 == traj.len() {
                    inexact.push(format!(
                        "{spec} [{dtype}]: {differ} values differ, max rel {err:e}"
                    ));
                }
            }
        }
    }
    println!(
        "{} cases x 2 dtypes; not bitwise: {inexact:#?}",
        cases.len()
    );
    if !failures.is_empty() {
        bail!("mismatches:\n{}", failures.join("\n"));
    }
    Ok(())
}

#[test]
fn lbfgs_matches_pytorch_and_resumes_bitwise() -> Result<()> {
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let mut failures = Vec::new();
    let dir = std::env::temp_dir().join(format!("kiln-optim-lbfgs-{}", std::process::id()));
    for case in g["lbfgs"]
        .as_array()
        .ok_or_else(|| anyhow!("no lbfgs cases"))?
    {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let traj = case[dtype]
                .as_array()
                .ok_or_else(|| anyhow!("no trajectory"))?;
            let losses = floats(&case[format!("{dtype}_loss")])?;
            let (x, y) = data(&g, dtype)?;
            let mut params = params(&g, dtype)?;
            let mut opt = registry.build(spec, handles(&params))?;
            if opt.step().is_ok() {
                bail!("lbfgs step() without a closure must fail");
            }
            for (step, want) in traj.iter().enumerate() {
                if step == 2 {
                    // Resume from a saved state into fresh parameters and optimizer.
                    opt.state_dict()?.save(&dir)?;
                    let fresh: Vec<kiln_optim::NamedParameter> = params
                        .iter()
                        .map(|p| {
                            Ok(kiln_optim::NamedParameter {
                                name: p.name.clone(),
                                tensor: kiln_tensor::ops::detached_clone(&p.tensor)?
                                    .set_requires_grad(true),
                            })
                        })
                        .collect::<Result<_>>()?;
                    params = fresh;
                    opt = registry.build(spec, handles(&params))?;
                    opt.load_state_dict(&kiln_optim::OptimizerState::load(&dir)?)?;
                }
                let ps = handles(&params);
                let mut closure = || -> kiln_optim::Result<f64> {
                    for p in &ps {
                        kiln_tensor::ops::clear_grad(&p.tensor)?;
                    }
                    loss_backward(&ps, &x, &y)
                        .map_err(|e| kiln_optim::Error::InvalidArgument(e.to_string()))
                };
                let loss = opt.step_with_closure(&mut closure)?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                let want_loss = losses.get(step).copied().unwrap_or(f64::NAN);
                if err > tolerance(dtype) || loss != want_loss {
                    failures.push(format!("{spec} [{dtype}] step {}: rel {err:e} ({differ} differ), loss {loss} vs {want_loss}", step + 1));
                    break;
                }
                if differ > 0 {
                    println!(
                        "{spec} [{dtype}] step {}: {differ} values differ, max rel {err:e}",
                        step + 1
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        bail!("lbfgs mismatches:\n{}", failures.join("\n"));
    }
    Ok(())
}

#[test]
fn sparse_adam_matches_pytorch_and_resumes_bitwise() -> Result<()> {
    use kiln_tensor::{Kind, Reduction, Tensor};
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let dir = std::env::temp_dir().join(format!("kiln-optim-sparse-{}", std::process::id()));
    let idx = Tensor::from_slice(&[1i64, 3, 3, 7, 0, 1, 9, 3, 5, 5, 2, 8]).f_reshape([3, 4])?;
    let mut failures = Vec::new();
    for case in g["sparse"]
        .as_array()
        .ok_or_else(|| anyhow!("no sparse cases"))?
    {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let k = kind(dtype);
            let w0: Vec<f64> = (0..10)
                .flat_map(|i| {
                    (0..3).map(move |j| (0.37 * f64::from(i) + 0.11 * f64::from(j)).sin())
                })
                .collect();
            let target = Tensor::from_slice(&[0.5, -0.5, 1.0, 1.0, 0.0, -1.0, -0.5, 0.25, 0.75])
                .f_to_kind(k)?
                .f_reshape([3, 3])?;
            let mut w = Tensor::from_slice(&w0)
                .f_to_kind(k)?
                .f_reshape([10, 3])?
                .set_requires_grad(true);
            let named = |w: &Tensor| {
                vec![kiln_optim::NamedParameter {
                    name: "emb.weight".into(),
                    tensor: w.shallow_clone(),
                }]
            };
            let mut opt = registry.build(spec, named(&w))?;
            for (step, want) in case[dtype]
                .as_array()
                .ok_or_else(|| anyhow!("trajectory"))?
                .iter()
                .enumerate()
            {
                if step == 9 {
                    opt.state_dict()?.save(&dir)?;
                    w = kiln_tensor::ops::detached_clone(&w)?.set_requires_grad(true);
                    opt = registry.build(spec, named(&w))?;
                    opt.load_state_dict(&kiln_optim::OptimizerState::load(&dir)?)?;
                }
                opt.zero_grad()?;
                let emb = Tensor::f_embedding(&w, &idx, -1, false, true)?;
                let loss = emb
                    .f_sum_dim_intlist(Some(&[1i64][..]), false, None::<Kind>)?
                    .f_mse_loss(&target, Reduction::Mean)?;
                loss.f_backward()?;
                opt.step()?;
                let got: Vec<f64> = Vec::try_from(&w.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
                let (err, differ) = compare(&got, &floats(want)?);
                if differ > 0 {
                    failures.push(format!(
                        "{spec} [{dtype}] step {}: {differ} differ, rel {err:e}",
                        step + 1
                    ));
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        bail!("sparse_adam mismatches:\n{}", failures.join("\n"));
    }
    // Dense gradients are refused with PyTorch's message.
    let p = params(&g, "f32")?;
    let (x, y) = data(&g, "f32")?;
    let mut opt = registry.build("sparse_adam", handles(&p))?;
    loss_backward(&p, &x, &y)?;
    let err = opt.step().err().map(|e| e.to_string()).unwrap_or_default();
    if err != "SparseAdam does not support dense gradients, please consider Adam instead" {
        bail!("{err}");
    }
    Ok(())
}
