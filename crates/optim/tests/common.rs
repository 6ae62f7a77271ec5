//! Shared helpers of kiln-optim's integration tests: the golden fixture's
//! model, data, parameters and PyTorch's recorded gradients.
//!
//! Tests that compare with PyTorch's numbers feed PyTorch's gradients
//! ([`set_grads`]) instead of recomputing them with [`loss_backward`]: the
//! model's forward and backward round differently on different CPUs, the
//! optimizers' arithmetic on given gradients does not (see
//! `tests/golden/make_golden.py`).
#![allow(dead_code)]
use anyhow::{anyhow, Context, Result};
use kiln_optim::{GroupOverride, NamedParameter};
use kiln_tensor::{Device, Kind, Reduction, Tensor};
use serde_json::Value;

pub fn golden() -> Result<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/optim_golden.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
    Ok(serde_json::from_str(&text)?)
}

pub fn kind(dtype: &str) -> Kind {
    if dtype == "f64" {
        Kind::Double
    } else {
        Kind::Float
    }
}

pub fn floats(v: &Value) -> Result<Vec<f64>> {
    v.as_array()
        .ok_or_else(|| anyhow!("not an array"))?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| anyhow!("not a number")))
        .collect()
}

/// New handles on the same tensors (what an optimizer takes ownership of).
pub fn handles(params: &[NamedParameter]) -> Vec<NamedParameter> {
    params
        .iter()
        .map(|p| NamedParameter {
            name: p.name.clone(),
            tensor: p.tensor.shallow_clone(),
        })
        .collect()
}

/// The fixture's initial parameters (including `unused`, which gets no gradient).
pub fn params(g: &Value, dtype: &str) -> Result<Vec<NamedParameter>> {
    let init = &g["init"][dtype]["params"];
    let mut out = Vec::new();
    for p in init.as_array().ok_or_else(|| anyhow!("no params"))? {
        let name = p[0].as_str().ok_or_else(|| anyhow!("no name"))?.to_string();
        let shape: Vec<i64> = p[1]
            .as_array()
            .ok_or_else(|| anyhow!("no shape"))?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        let data = floats(&p[2])?;
        let t = Tensor::from_slice(&data)
            .f_to_kind(kind(dtype))?
            .f_reshape(&shape)?
            .set_requires_grad(true);
        out.push(NamedParameter { name, tensor: t });
    }
    Ok(out)
}

pub fn data(g: &Value, dtype: &str) -> Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(&floats(&g["init"][dtype]["x"])?)
        .f_to_kind(kind(dtype))?
        .f_reshape([8, 4])?;
    let y = Tensor::from_slice(&floats(&g["init"][dtype]["y"])?)
        .f_to_kind(kind(dtype))?
        .f_reshape([8, 2])?;
    Ok((x, y))
}

fn find<'a>(params: &'a [NamedParameter], name: &str) -> Result<&'a Tensor> {
    params
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.tensor)
        .ok_or_else(|| anyhow!("no parameter {name}"))
}

/// The MLP's MSE loss (forward only).
pub fn loss(params: &[NamedParameter], x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let h = x
        .f_linear(find(params, "0.weight")?, Some(find(params, "0.bias")?))?
        .f_tanh()?;
    let out = h.f_linear(find(params, "2.weight")?, Some(find(params, "2.bias")?))?;
    Ok(out.f_mse_loss(y, Reduction::Mean)?)
}

/// Sets every parameter's gradient to PyTorch's recorded one (`grads`: per
/// parameter a flat list, or null for no gradient), after clearing it.
pub fn set_grads(params: &[NamedParameter], grads: &Value) -> Result<()> {
    let grads = grads.as_array().ok_or_else(|| anyhow!("no gradients"))?;
    if grads.len() != params.len() {
        return Err(anyhow!(
            "{} gradients for {} parameters",
            grads.len(),
            params.len()
        ));
    }
    for (p, g) in params.iter().zip(grads) {
        kiln_tensor::ops::clear_grad(&p.tensor)?;
        if !g.is_null() {
            let t = Tensor::from_slice(&floats(g)?)
                .f_to_kind(p.tensor.kind())?
                .f_reshape(p.tensor.size())?;
            kiln_tensor::ops::set_grad(&p.tensor, &t)?;
        }
    }
    Ok(())
}

/// PyTorch's gradients of `case` for `dtype` at step `step` (0-based).
pub fn step_grads<'a>(case: &'a Value, dtype: &str, step: usize) -> Result<&'a Value> {
    case[format!("{dtype}_grads")]
        .get(step)
        .ok_or_else(|| anyhow!("no recorded gradients for step {}", step + 1))
}

/// Forward + backward; returns the loss value. Its gradients are this
/// machine's: compare against PyTorch only through [`set_grads`].
pub fn loss_backward(params: &[NamedParameter], x: &Tensor, y: &Tensor) -> Result<f64> {
    let l = loss(params, x, y)?;
    l.f_backward()?;
    Ok(l.f_double_value(&[])?)
}

pub fn flat(params: &[NamedParameter]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for p in params {
        let v: Vec<f64> = Vec::try_from(&p.tensor.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
        out.extend(v);
    }
    Ok(out)
}

pub fn overrides(case: &Value) -> Result<Vec<GroupOverride>> {
    let mut out = Vec::new();
    for o in case["overrides"].as_array().cloned().unwrap_or_default() {
        let patterns = o["patterns"].as_array().cloned().unwrap_or_default();
        let hp = o["hyperparameters"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        out.push(GroupOverride {
            patterns: patterns
                .iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect(),
            hyperparameters: hp
                .iter()
                .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                .collect(),
        });
    }
    Ok(out)
}

/// Largest relative difference (relative to max(|want|, 1e-3)) and the
/// number of values that differ at all.
pub fn compare(got: &[f64], want: &[f64]) -> (f64, usize) {
    let mut worst = 0.0f64;
    let mut differ = 0;
    for (a, b) in got.iter().zip(want) {
        if a != b {
            differ += 1;
        }
        let rel = (a - b).abs() / b.abs().max(1e-3);
        if rel.is_nan() || rel > worst {
            worst = if rel.is_nan() { f64::INFINITY } else { rel };
        }
    }
    if got.len() != want.len() {
        worst = f64::INFINITY;
    }
    (worst, differ)
}

pub const CPU: Device = Device::Cpu;

/// The parameters a case gives its optimizer (all unless it lists some).
pub fn only(case: &Value, params: Vec<NamedParameter>) -> Vec<NamedParameter> {
    match case["params"].as_array() {
        Some(names) => params
            .into_iter()
            .filter(|p| names.iter().any(|n| n.as_str() == Some(p.name.as_str())))
            .collect(),
        None => params,
    }
}

/// The workspace root.
pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// `name` from the environment, else its value when the tests were built.
pub fn env_or(name: &str, compiled: Option<&'static str>) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| compiled.map(String::from))
}

/// Runs a reference `script` with `args` on the setup's Python torch (the
/// wheel beside `LIBTORCH`, then the workspace's `.libtorch`); an error
/// carries the script's stderr.
pub fn run_reference(script: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    reference_output(script, args).map(drop)
}

/// [`run_reference`], returning what the script writes to stdout.
pub fn reference_output(script: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    use std::path::Path;
    let mut pythonpath = Vec::new();
    if let Some(lib) = env_or("LIBTORCH", option_env!("LIBTORCH")) {
        if let Some(parent) = Path::new(&lib).parent() {
            pythonpath.push(parent.to_path_buf());
        }
    }
    pythonpath.push(Path::new(WORKSPACE).join(".libtorch"));
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        pythonpath.extend(std::env::split_paths(&existing));
    }
    let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = std::process::Command::new(&python)
        .arg("-W")
        .arg("ignore")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", std::env::join_paths(&pythonpath)?)
        .output()
        .with_context(|| format!("cannot run {python} (set KILN_PYTHON)"))?;
    anyhow::ensure!(
        output.status.success(),
        "{script} failed ({}); it needs the setup's Python torch (scripts/setup.sh):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Held by every test that seeds or draws from libtorch's global CPU
/// generator or changes another process-wide setting (the thread count):
/// all the tests of one process share them.
pub fn global_state() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
