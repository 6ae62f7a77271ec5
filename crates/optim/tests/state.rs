//! State dicts: saving after k steps, loading into a fresh optimizer over
//! fresh parameters and continuing gives the uninterrupted trajectory bit for
//! bit, for every optimizer and flag combination of the golden fixture (fed
//! PyTorch's recorded gradients); state that does not fit is a clear error.
use crate::common;

use anyhow::{anyhow, bail, ensure, Result};
use common::*;
use kiln_optim::{optimizers, NamedParameter, Optimizer, OptimizerState};
use kiln_tensor::ops;

fn temp_dir(tag: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("kiln-optim-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn copy_params(params: &[NamedParameter]) -> Result<Vec<NamedParameter>> {
    params
        .iter()
        .map(|p| {
            Ok(NamedParameter {
                name: p.name.clone(),
                tensor: ops::detached_clone(&p.tensor)?.set_requires_grad(true),
            })
        })
        .collect()
}

#[test]
fn save_load_continue_is_bitwise_for_every_optimizer() -> Result<()> {
    kiln_tensor::tch::set_num_threads(1);
    let g = golden()?;
    let registry = optimizers();
    let dir = temp_dir("roundtrip")?;
    let mut failures = Vec::new();
    for case in g["cases"].as_array().ok_or_else(|| anyhow!("no cases"))? {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("no spec"))?;
        let ov = overrides(case)?;
        for dtype in ["f64", "f32"] {
            let traj = case[dtype]
                .as_array()
                .ok_or_else(|| anyhow!("no trajectory"))?;
            let params = params(&g, dtype)?;
            let mut opt = registry.build_with_overrides(spec, only(case, handles(&params)), &ov)?;
            let k = 7;
            for step in 0..k {
                opt.zero_grad()?;
                set_grads(&params, step_grads(case, dtype, step)?)?;
                opt.step()?;
            }
            opt.state_dict()?.save(&dir)?;
            drop(opt);
            // A new process would rebuild the model from its checkpoint and the
            // optimizer from the same spec, then load the state.
            let resumed = copy_params(&params)?;
            let mut opt =
                registry.build_with_overrides(spec, only(case, handles(&resumed)), &ov)?;
            opt.load_state_dict(&OptimizerState::load(&dir)?)?;
            for (step, want) in traj.iter().enumerate().skip(k) {
                opt.zero_grad()?;
                set_grads(&resumed, step_grads(case, dtype, step)?)?;
                opt.step()?;
                let (_, differ) = compare(&flat(&resumed)?, &floats(want)?);
                if differ > 0 {
                    failures.push(format!(
                        "{spec} [{dtype}] step {}: {differ} values differ",
                        step + 1
                    ));
                    break;
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    if !failures.is_empty() {
        bail!("resumed runs diverge:\n{}", failures.join("\n"));
    }
    Ok(())
}

fn stepped(spec: &str, dtype: &str) -> Result<(Vec<NamedParameter>, Box<dyn Optimizer>)> {
    let g = golden()?;
    let (x, y) = data(&g, dtype)?;
    let params = params(&g, dtype)?;
    let mut opt = optimizers().build(spec, handles(&params))?;
    opt.zero_grad()?;
    loss_backward(&params, &x, &y)?;
    opt.step()?;
    Ok((params, opt))
}

fn load_err(opt: &mut dyn Optimizer, state: &OptimizerState) -> Result<String> {
    match opt.load_state_dict(state) {
        Ok(()) => bail!("loading should have failed"),
        Err(e) => Ok(e.to_string()),
    }
}

#[test]
fn state_that_does_not_fit_is_an_error() -> Result<()> {
    let (_, adam) = stepped("adam:lr=0.1", "f32")?;
    let state = adam.state_dict()?;
    ensure!(state.tensors.iter().any(|(k, _)| k == "0.weight.exp_avg"));
    ensure!(
        !state.tensors.iter().any(|(k, _)| k.starts_with("unused.")),
        "no state without a gradient"
    );

    // Another optimizer.
    let (_, mut sgd) = stepped("sgd:lr=0.1,momentum=0.9", "f32")?;
    let msg = load_err(sgd.as_mut(), &state)?;
    ensure!(msg.contains("saved by adam, not by sgd"), "{msg}");

    // Other parameter names.
    let g = golden()?;
    let mut renamed = params(&g, "f32")?;
    if let Some(p) = renamed.first_mut() {
        p.name = "encoder.weight".into();
    }
    let mut other = optimizers().build("adam", renamed)?;
    let msg = load_err(other.as_mut(), &state)?;
    ensure!(msg.contains("encoder.weight"), "{msg}");

    // Wrong shapes.
    let mut reshaped = params(&g, "f32")?;
    if let Some(p) = reshaped.first_mut() {
        p.tensor = kiln_tensor::Tensor::f_zeros([4, 3], (kiln_tensor::Kind::Float, CPU))?
            .set_requires_grad(true);
    }
    let mut other = optimizers().build("adam", reshaped)?;
    let msg = load_err(other.as_mut(), &state)?;
    ensure!(
        msg.contains("shape [3, 4]") && msg.contains("[4, 3]"),
        "{msg}"
    );

    // A missing buffer and a stray one.
    let mut fresh = optimizers().build("adam", params(&g, "f32")?)?;
    let mut missing = OptimizerState {
        tensors: state
            .tensors
            .iter()
            .skip(1)
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect(),
        scalars: state.scalars.clone(),
    };
    let msg = load_err(fresh.as_mut(), &missing)?;
    ensure!(msg.contains("is missing"), "{msg}");
    missing.tensors = state
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    missing.tensors.push((
        "ghost.exp_avg".into(),
        kiln_tensor::Tensor::f_zeros([1], (kiln_tensor::Kind::Float, CPU))?,
    ));
    let msg = load_err(fresh.as_mut(), &missing)?;
    ensure!(msg.contains("ghost.exp_avg"), "{msg}");

    // Files from two different saves.
    let dir = temp_dir("mixed")?;
    state.save(&dir)?;
    let (_, sgd) = stepped("sgd:lr=0.1,momentum=0.9", "f32")?;
    let other_dir = temp_dir("mixed-other")?;
    sgd.state_dict()?.save(&other_dir)?;
    std::fs::copy(
        other_dir.join("optimizer.safetensors"),
        dir.join("optimizer.safetensors"),
    )?;
    let msg = match OptimizerState::load(&dir) {
        Ok(_) => bail!("mixed files should not load"),
        Err(e) => e.to_string(),
    };
    ensure!(msg.contains("same save"), "{msg}");
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&other_dir)?;
    Ok(())
}

#[test]
fn hyperparameters_are_saved_and_restored() -> Result<()> {
    let (_, mut opt) = stepped("adamw:lr=0.1", "f32")?;
    opt.set_lr(0, 0.025)?;
    opt.set_hyperparameter(0, "betas.0", 0.5)?;
    let state = opt.state_dict()?;
    let (_, mut fresh) = stepped("adamw", "f32")?;
    fresh.load_state_dict(&state)?;
    ensure!(fresh.lr(0) == Some(0.025) && fresh.hyperparameter(0, "betas.0") == Some(0.5));
    Ok(())
}

#[test]
fn an_empty_state_round_trips() -> Result<()> {
    let g = golden()?;
    let opt = optimizers().build("adam", params(&g, "f32")?)?;
    let dir = temp_dir("empty")?;
    opt.state_dict()?.save(&dir)?;
    let mut fresh = optimizers().build("adam", params(&g, "f32")?)?;
    fresh.load_state_dict(&OptimizerState::load(&dir)?)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
