//! kiln's default SGD, Adam and AdamW against torch.optim's default path,
//! bit for bit, where kiln runs them as one pass over memory
//! (`kiln_tensor::ops::sgd_step_` / `adam_step_`).
//!
//! The reference is `tests/golden/one_pass/make_reference.py`, run at test
//! time on this machine (libtorch's kernels round differently per CPU and
//! build: fused multiply-adds in its AVX2/AVX-512 kernels, none in the x86
//! `DEFAULT` ones, MKL's `sqrt` per CPU). Every case feeds PyTorch's recorded
//! gradients to kiln's optimizer (built from its spec through the registry)
//! and compares every parameter after every step and the state after the
//! last, at 2 threads (the reference's) and at 1. On x86-64 the test runs
//! again in a child process with `ATEN_CPU_CAPABILITY=default`, against a
//! reference generated under the same setting.
//!
//! Needs the Python `torch` the setup installs next to libtorch (the parent
//! directory of `$LIBTORCH`); `KILN_PYTHON` overrides `python3`.
use crate::common;

use anyhow::{anyhow, ensure, Result};
use kiln_optim::{optimizers, NamedParameter, Optimizer};
use kiln_tensor::{io, ops, tch, Device, Kind, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/one_pass/make_reference.py"
);
/// Set in the child process that reruns the comparison without vector kernels.
const CHILD: &str = "KILN_ONE_PASS_CHILD";

/// Runs the reference script (with this process's `ATEN_CPU_CAPABILITY`);
/// its output directory.
fn run_script() -> Result<PathBuf> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let capability = std::env::var("ATEN_CPU_CAPABILITY").unwrap_or_else(|_| "native".into());
    let out = tmp.join(format!("one-pass-{}-{capability}", std::process::id()));
    common::run_reference(SCRIPT, &["--out".as_ref(), out.as_os_str()])?;
    Ok(out)
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
    dir: PathBuf,
}

impl Reference {
    fn generate() -> Result<Self> {
        let dir = run_script()?;
        let tensors = io::read_safetensors(&dir.join("one_pass.safetensors"))?
            .into_iter()
            .collect();
        let meta = serde_json::from_slice(&std::fs::read(dir.join("one_pass.json"))?)?;
        Ok(Self { tensors, meta, dir })
    }

    fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .ok_or_else(|| anyhow!("the reference has no tensor {key}"))
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.meta[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `got` and `want` differ bit for bit (NaNs of any payload agree),
/// as a message; `None` when they are the same.
fn differs(what: &str, got: &Tensor, want: &Tensor) -> Result<Option<String>> {
    ensure!(
        got.size() == want.size() && got.kind() == want.kind(),
        "{what}: shape/dtype {:?}/{:?} vs {:?}/{:?}",
        got.size(),
        got.kind(),
        want.size(),
        want.kind()
    );
    let bits = if got.kind() == Kind::Double {
        Kind::Int64
    } else {
        Kind::Int
    };
    let (g, w) = (got.f_contiguous()?, want.f_contiguous()?);
    let unequal = g
        .f_view_dtype(bits)?
        .f_ne_tensor(&w.f_view_dtype(bits)?)?
        .f_logical_and(&g.f_isnan()?.f_logical_and(&w.f_isnan()?)?.f_logical_not()?)?;
    let count = unequal.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    if count == 0 {
        return Ok(None);
    }
    let first = unequal
        .f_flatten(0, -1)?
        .f_nonzero()?
        .f_int64_value(&[0, 0])?;
    let (gf, wf) = (g.f_flatten(0, -1)?, w.f_flatten(0, -1)?);
    Ok(Some(format!(
        "{what}: {count} of {} values differ, first at {first}: kiln {:e} vs pytorch {:e}",
        g.numel(),
        gf.f_double_value(&[first])?,
        wf.f_double_value(&[first])?
    )))
}

/// The parameters at their initial values: `d` is a transposed leaf.
fn params(r: &Reference, dtype: &str, names: &[String]) -> Result<Vec<NamedParameter>> {
    names
        .iter()
        .map(|n| {
            let init = r.get(&format!("{dtype}.init.{n}"))?.f_detach_copy()?;
            let t = if n == "d" { init.f_tr()? } else { init };
            Ok(NamedParameter {
                name: n.clone(),
                tensor: t.set_requires_grad(true),
            })
        })
        .collect()
}

/// Replays every case at the current thread count; the mismatches.
fn replay_all(r: &Reference) -> Result<Vec<String>> {
    let names = r.strings("params");
    let steps = r.meta["steps"].as_u64().unwrap_or(0) as usize;
    ensure!(steps > 0 && !names.is_empty(), "empty reference");
    let mut bad = Vec::new();
    let cases = r.meta["cases"].as_array().cloned().unwrap_or_default();
    ensure!(!cases.is_empty(), "no cases");
    for dtype in r.strings("dtypes") {
        for case in &cases {
            let (name, spec) = (
                case["name"].as_str().unwrap_or("?"),
                case["spec"].as_str().unwrap_or("?"),
            );
            let ps = params(r, &dtype, &names)?;
            let handles = ps
                .iter()
                .map(|p| NamedParameter {
                    name: p.name.clone(),
                    tensor: p.tensor.shallow_clone(),
                })
                .collect();
            let mut opt: Box<dyn Optimizer> = optimizers().build(spec, handles)?;
            for k in 0..steps {
                for p in &ps {
                    let g = r
                        .get(&format!("{dtype}.grad.{k}.{}", p.name))?
                        .f_detach_copy()?;
                    ops::set_grad(&p.tensor, &g)?;
                }
                opt.step()?;
                for p in &ps {
                    let key = format!("{name}.{dtype}.step{}.{}", k + 1, p.name);
                    bad.extend(differs(&key, &p.tensor.f_detach()?, r.get(&key)?)?);
                }
            }
            let state = opt.state_dict()?;
            let prefix = format!("{name}.{dtype}.state.");
            let mut want: Vec<&String> = r
                .tensors
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .collect();
            want.sort();
            let got: Vec<String> = state
                .tensors
                .iter()
                .map(|(k, _)| format!("{prefix}{k}"))
                .collect();
            ensure!(
                got.iter().collect::<Vec<_>>() == want,
                "{name}/{dtype}: state {got:?}, pytorch's {want:?}"
            );
            for (k, t) in &state.tensors {
                let key = format!("{prefix}{k}");
                bad.extend(differs(&key, t, r.get(&key)?)?);
            }
        }
    }
    Ok(bad)
}

#[test]
fn default_paths_match_pytorch_bit_for_bit() -> Result<()> {
    // It changes the process's thread count (restored at the end).
    let _threads = common::global_state();
    let before = tch::get_num_threads();
    let r = Reference::generate()?;
    let threads = r.meta["threads"].as_i64().unwrap_or(2);
    for t in [threads, 1] {
        tch::set_num_threads(t as i32);
        let bad = replay_all(&r)?;
        ensure!(
            bad.is_empty(),
            "{} tensors differ from torch.optim's ({} threads, cpu capability {}):\n{}",
            bad.len(),
            t,
            r.meta["cpu_capability"],
            bad.join("\n")
        );
    }
    tch::set_num_threads(before);
    Ok(())
}

/// libtorch's x86 `DEFAULT` kernels round a multiply-add twice: the
/// kernels must follow (libtorch reads `ATEN_CPU_CAPABILITY` once, so this
/// reruns the test above in a child process).
#[test]
fn default_paths_match_pytorch_without_vector_kernels() -> Result<()> {
    if cfg!(not(target_arch = "x86_64")) || std::env::var_os(CHILD).is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "--exact",
            "one_pass::default_paths_match_pytorch_bit_for_bit",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("ATEN_CPU_CAPABILITY", "default")
        .env(CHILD, "1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && text.contains("1 passed"),
        "with ATEN_CPU_CAPABILITY=default:\n{text}"
    );
    Ok(())
}

/// The comparison sees one ulp: a reference nudged by one ulp in one value
/// is reported.
#[test]
fn one_ulp_is_a_difference() -> Result<()> {
    let _global = common::global_state();
    for kind in [Kind::Float, Kind::Double] {
        let want = Tensor::f_randn([1000], (kind, Device::Cpu))?;
        let nudged = want.f_detach_copy()?;
        let next = nudged.f_get(617)?.f_nextafter(&Tensor::f_scalar_tensor(
            f64::INFINITY,
            (kind, Device::Cpu),
        )?)?;
        nudged.f_get(617)?.f_copy_(&next)?;
        ensure!(differs("same", &want, &want)?.is_none());
        let msg = differs("nudged", &nudged, &want)?.unwrap_or_default();
        ensure!(msg.contains("1 of 1000") && msg.contains("at 617"), "{msg}");
    }
    Ok(())
}

/// The optimizers above really run the one-pass kernels on float CPU
/// tensors (and leave other dtypes to the op sequence).
#[test]
fn one_pass_kernels_apply_to_float_cpu_tensors() -> Result<()> {
    let sgd = ops::SgdStep {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
        maximize: false,
    };
    let adam = ops::AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        amsgrad: false,
        maximize: false,
        decoupled_weight_decay: false,
        step_size: 1e-2,
        bias_correction2_sqrt: 0.03,
    };
    for (kind, applies) in [
        (Kind::Float, true),
        (Kind::Double, true),
        (Kind::BFloat16, false),
        (Kind::Half, false),
    ] {
        let opts = (kind, Device::Cpu);
        let (p, g, b) = (
            Tensor::f_ones([3], opts)?,
            Tensor::f_ones([3], opts)?,
            Tensor::f_zeros([3], opts)?,
        );
        ensure!(
            ops::sgd_step_(&p, &g, Some(&b), false, &sgd)? == applies,
            "sgd {kind:?}"
        );
        let (m, v) = (Tensor::f_zeros([3], opts)?, Tensor::f_zeros([3], opts)?);
        ensure!(
            ops::adam_step_(&p, &g, &m, &v, None, &adam)? == applies,
            "adam {kind:?}"
        );
        if applies {
            // p = 1 - 0.1 * (0.9 * 0 + 1): one SGD step; nothing else is touched.
            ensure!(b.f_double_value(&[0])? == 1.0);
        }
    }
    Ok(())
}
