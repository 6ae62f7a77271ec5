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
            let handles: Vec<_> = params.iter().map(|p| kiln_optim::NamedParameter { name: p.name.clone(), tensor: p.tensor.shallow_clone() }).collect();
            let mut opt = registry.build_with_overrides(spec, only(case, handles), &overrides(case)?)?;
            let traj = case[dtype].as_array().ok_or_else(|| anyhow!("no trajectory"))?;
            for (step, want) in traj.iter().enumerate() {
                opt.zero_grad()?;
                loss_backward(&params, &x, &y)?;
                opt.step()?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                if err > tolerance(dtype) {
                    failures.push(format!("{spec} [{dtype}] step {}: relative error {err:e}", step + 1));
                    break;
                }
                if differ > 0 && step + 1 == traj.len() {
                    inexact.push(format!("{spec} [{dtype}]: {differ} values differ, max rel {err:e}"));
                }
            }
        }
    }
    println!("{} cases x 2 dtypes; not bitwise: {inexact:#?}", cases.len());
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
    for case in g["lbfgs"].as_array().ok_or_else(|| anyhow!("no lbfgs cases"))? {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let traj = case[dtype].as_array().ok_or_else(|| anyhow!("no trajectory"))?;
            let losses = floats(&case[format!("{dtype}_loss")])?;
            let (x, y) = data(&g, dtype)?;
            let mut params = params(&g, dtype)?;
            let handles = |ps: &[kiln_optim::NamedParameter]| -> Vec<kiln_optim::NamedParameter> {
                ps.iter().map(|p| kiln_optim::NamedParameter { name: p.name.clone(), tensor: p.tensor.shallow_clone() }).collect()
            };
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
                        .map(|p| Ok(kiln_optim::NamedParameter { name: p.name.clone(), tensor: kiln_tensor::ops::detached_clone(&p.tensor)?.set_requires_grad(true) }))
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
                    loss_backward(&ps, &x, &y).map_err(|e| kiln_optim::Error::InvalidArgument(e.to_string()))
                };
                let loss = opt.step_with_closure(&mut closure)?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                let want_loss = losses.get(step).copied().unwrap_or(f64::NAN);
                if err > tolerance(dtype) || loss != want_loss {
                    failures.push(format!("{spec} [{dtype}] step {}: rel {err:e} ({differ} differ), loss {loss} vs {want_loss}", step + 1));
                    break;
                }
                if differ > 0 {
                    println!("{spec} [{dtype}] step {}: {differ} values differ, max rel {err:e}", step + 1);
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
