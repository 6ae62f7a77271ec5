//! Golden tests: kiln's optimizers reproduce torch.optim's trajectories
//! recorded by `tests/golden/make_golden.py` bit for bit, fed PyTorch's own
//! recorded gradients (so they hold on any x86-64 machine with AVX2; see the
//! generator's docstring).
use crate::common;

use anyhow::{anyhow, bail, Result};
use common::*;
use kiln_optim::optimizers;

#[test]
fn every_optimizer_matches_pytorch() -> Result<()> {
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let mut failures = Vec::new();
    let cases = g["cases"].as_array().ok_or_else(|| anyhow!("no cases"))?;
    for case in cases {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let params = params(&g, dtype)?;
            let handles = handles(&params);
            let mut opt =
                registry.build_with_overrides(spec, only(case, handles), &overrides(case)?)?;
            let traj = case[dtype]
                .as_array()
                .ok_or_else(|| anyhow!("no trajectory"))?;
            for (step, want) in traj.iter().enumerate() {
                opt.zero_grad()?;
                set_grads(&params, step_grads(case, dtype, step)?)?;
                opt.step()?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                if differ > 0 {
                    failures.push(format!(
                        "{spec} [{dtype}] step {}: {differ} values differ, max relative error {err:e}",
                        step + 1
                    ));
                    break;
                }
            }
        }
    }
    println!("{} cases x 2 dtypes, bit for bit", cases.len());
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
            let evals = case[format!("{dtype}_evals")]
                .as_array()
                .ok_or_else(|| anyhow!("no closure evaluations"))?;
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
                // PyTorch's closure evaluations of this step, in order.
                let step_evals = evals
                    .get(step)
                    .and_then(|e| e.as_array())
                    .ok_or_else(|| anyhow!("no evaluations for step {}", step + 1))?;
                let mut used = 0usize;
                let mut closure = || -> kiln_optim::Result<f64> {
                    let fail = |e: anyhow::Error| kiln_optim::Error::InvalidArgument(e.to_string());
                    let e = step_evals
                        .get(used)
                        .ok_or_else(|| fail(anyhow!("more closure evaluations than PyTorch")))?;
                    used += 1;
                    set_grads(&ps, &e["grads"]).map_err(fail)?;
                    e["loss"].as_f64().ok_or_else(|| fail(anyhow!("no loss")))
                };
                let loss = opt.step_with_closure(&mut closure)?;
                let (err, differ) = compare(&flat(&params)?, &floats(want)?);
                let want_loss = losses.get(step).copied().unwrap_or(f64::NAN);
                if differ > 0 || loss != want_loss || used != step_evals.len() {
                    failures.push(format!(
                        "{spec} [{dtype}] step {}: {differ} values differ (max rel {err:e}), loss {loss} vs {want_loss}, {used} closure calls vs {}",
                        step + 1,
                        step_evals.len()
                    ));
                    break;
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
    use kiln_tensor::{Kind, Tensor};
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let dir = std::env::temp_dir().join(format!("kiln-optim-sparse-{}", std::process::id()));
    let mut failures = Vec::new();
    for case in g["sparse"]
        .as_array()
        .ok_or_else(|| anyhow!("no sparse cases"))?
    {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        for dtype in ["f64", "f32"] {
            let k = kind(dtype);
            let w0 = floats(&g["sparse_init"][dtype])?;
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
                // PyTorch's sparse gradient of the embedding (uncoalesced, as
                // `embedding(sparse=True)` left it).
                let rec = step_grads(case, dtype, step)?;
                let rows: Vec<Vec<f64>> = rec["indices"]
                    .as_array()
                    .ok_or_else(|| anyhow!("no indices"))?
                    .iter()
                    .map(floats)
                    .collect::<Result<_>>()?;
                let nnz = rows.first().map_or(0, Vec::len) as i64;
                let flat_idx: Vec<i64> = rows.concat().iter().map(|&v| v as i64).collect();
                let indices = Tensor::from_slice(&flat_idx).f_reshape([rows.len() as i64, nnz])?;
                let values = Tensor::from_slice(&floats(&rec["values"])?)
                    .f_to_kind(k)?
                    .f_reshape([nnz, 3])?;
                let grad = Tensor::f_sparse_coo_tensor_indices_size(
                    &indices,
                    &values,
                    [10i64, 3].as_slice(),
                    (k, kiln_tensor::Device::Cpu),
                    rec["coalesced"].as_bool().unwrap_or(false),
                )?;
                kiln_tensor::ops::set_grad(&w, &grad)?;
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
