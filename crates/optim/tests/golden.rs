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
            let mut opt = registry.build_with_overrides(spec, handles, &overrides(case)?)?;
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
