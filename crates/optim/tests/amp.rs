//! Mixed-precision parity with PyTorch, bit for bit: autocast (kiln-tensor's
//! `amp`) + `GradScaler` (kiln-optim's `amp`) on the tutorial's job.
//!
//! The reference is `tests/golden/amp/make_golden.py`, run once per test
//! binary at test time on this machine (float results depend on the CPU's
//! kernels — AVX2 vs AVX-512, bfloat16 instructions — so committed numbers
//! from another machine would differ in the last bits). Each test drives its
//! own small loop step for step as the script does — the quickstart MLP built
//! with `kiln_tensor::init::linear` after `manual_seed(0)`, kiln-optim's SGD,
//! libtorch's cross-entropy (`F.cross_entropy`'s kernel), forward and loss inside an autocast guard —
//! and compares every loss, every scale, every skipped step and the final
//! weights bit for bit.
//!
//! Needs the Python `torch` the setup installs next to libtorch (the parent
//! directory of `$LIBTORCH`); `KILN_PYTHON` overrides `python3`.
use crate::common;

use anyhow::{anyhow, bail, ensure, Result};
use common::{env_or, WORKSPACE};
use kiln_optim::amp::GradScaler;
use kiln_optim::{clip_grad_norm_, Optimizer, OptimizerState, SgdConfig};
use kiln_tensor::amp::{autocast, DeviceType};
use kiln_tensor::{init, io, nn, params, Device, Kind, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/amp/make_golden.py"
);
const BATCH: i64 = 64;
const THREADS: i32 = 1;

static GOLDEN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Runs the reference script once per test binary; its output directory.
fn golden_dir() -> Result<PathBuf> {
    GOLDEN_DIR
        .get_or_init(|| run_script().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

/// Removes reference outputs (about 20 MB each) that earlier runs left
/// behind, once they are an hour old (a concurrent run's are younger).
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old && name.to_string_lossy().starts_with("amp-golden-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn run_script() -> Result<PathBuf> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale(&tmp);
    let out = tmp.join(format!("amp-golden-{}", std::process::id()));
    let data_dir = env_or(
        "KILN_DEFAULT_DATA_DIR",
        option_env!("KILN_DEFAULT_DATA_DIR"),
    )
    .map(PathBuf::from)
    .unwrap_or_else(|| Path::new(WORKSPACE).join(".data/fashion-mnist"));
    common::run_reference(
        SCRIPT,
        &[
            "--out".as_ref(),
            out.as_os_str(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
        ],
    )?;
    Ok(out)
}

struct Golden {
    tensors: HashMap<String, Tensor>,
    meta: serde_json::Value,
}

impl Golden {
    fn load() -> Result<Self> {
        let dir = golden_dir()?;
        let tensors = io::read_safetensors(&dir.join("amp_golden.safetensors"))?
            .into_iter()
            .collect();
        let meta = serde_json::from_slice(&std::fs::read(dir.join("amp_golden.json"))?)?;
        Ok(Self { tensors, meta })
    }

    fn get(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .ok_or_else(|| anyhow!("the reference has no {key}"))
    }

    fn steps(&self) -> Result<i64> {
        self.meta["steps"]
            .as_i64()
            .ok_or_else(|| anyhow!("no steps"))
    }
}

/// The quickstart MLP, parameters `linear_relu_stack.{0,2,4}.{weight,bias}`.
struct Mlp {
    vs: nn::VarStore,
    layers: [nn::Linear; 3],
}

impl Mlp {
    fn new(seed: u64) -> Result<Self> {
        kiln_tensor::rng::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let stack = vs.root() / "linear_relu_stack";
        let layers = [
            init::linear(&(&stack / "0"), 784, 512, true)?,
            init::linear(&(&stack / "2"), 512, 512, true)?,
            init::linear(&(&stack / "4"), 512, 10, true)?,
        ];
        Ok(Self { vs, layers })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.f_flatten(1, -1)?;
        for (i, l) in self.layers.iter().enumerate() {
            h = h.f_linear(&l.ws, l.bs.as_ref())?;
            if i < 2 {
                h = h.f_relu()?;
            }
        }
        Ok(h)
    }

    fn params(&self) -> Result<Vec<kiln_optim::NamedParameter>> {
        Ok(params::named_parameters(&self.vs)?)
    }

    fn sgd(&self) -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(
            SgdConfig {
                lr: 1e-3,
                momentum: 0.9,
                ..Default::default()
            }
            .build(self.params()?)?,
        ))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Bf16,
    Fp16,
    Overflow,
}

impl Case {
    fn dtype(self) -> Kind {
        match self {
            Case::Bf16 => Kind::BFloat16,
            _ => Kind::Half,
        }
    }

    /// `GradScaler("cpu", **kwargs)` as the script builds it.
    fn scaler(self) -> Result<Option<GradScaler>> {
        let cpu = kiln_optim::GradScalerConfig::new(DeviceType::Cpu);
        Ok(match self {
            Case::Bf16 => None,
            Case::Fp16 => Some(cpu.build()?),
            Case::Overflow => Some(
                kiln_optim::GradScalerConfig {
                    init_scale: 16_777_216.0,
                    growth_interval: 3,
                    ..cpu
                }
                .build()?,
            ),
        })
    }

    fn clip(self) -> Option<f64> {
        (self == Case::Overflow).then_some(1.0)
    }
}

#[derive(Default, Debug)]
struct Record {
    loss: Vec<f32>,
    scale: Vec<f64>,
    growth_tracker: Vec<i64>,
    stepped: Vec<i64>,
}

/// Steps `start..end` of the script's `train()`.
#[allow(clippy::too_many_arguments)]
fn train(
    case: Case,
    model: &Mlp,
    opt: &mut dyn Optimizer,
    mut scaler: Option<&mut GradScaler>,
    g: &Golden,
    start: i64,
    end: i64,
    rec: &mut Record,
) -> Result<()> {
    let (x, y) = (g.get("data.x")?, g.get("data.y")?);
    let params: Vec<Tensor> = model.params()?.into_iter().map(|p| p.tensor).collect();
    for i in start..end {
        let xb = x.f_narrow(0, i * BATCH, BATCH)?;
        let yb = y.f_narrow(0, i * BATCH, BATCH)?;
        opt.zero_grad()?;
        let loss = {
            let _autocast = autocast(Device::Cpu, case.dtype())?;
            cross_entropy(&model.forward(&xb)?, &yb)?
        };
        ensure!(loss.kind() == Kind::Float, "loss is {:?}", loss.kind());
        let (stepped, scale, tracker) = match scaler.as_deref_mut() {
            None => {
                loss.f_backward()?;
                opt.step()?;
                (true, 1.0, 0)
            }
            Some(s) => {
                s.scale(&loss)?.f_backward()?;
                if let Some(max_norm) = case.clip() {
                    s.unscale_(opt)?;
                    let _ = clip_grad_norm_(params.iter(), max_norm, 2.0, false)?;
                }
                let stepped = s.step(opt)?;
                s.update()?;
                (stepped, s.get_scale()?, s.growth_tracker()?)
            }
        };
        rec.loss.push(loss.f_double_value(&[])? as f32);
        rec.scale.push(scale);
        rec.growth_tracker.push(tracker);
        rec.stepped.push(i64::from(stepped));
    }
    Ok(())
}

fn f32s(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &t.f_to_kind(Kind::Float)?.f_reshape([-1])?,
    )?)
}

fn i64s(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(&t.f_reshape([-1])?)?)
}

/// Errors unless `got` and `want` are the same float32 values bit for bit.
fn same_bits(what: &str, got: &[f32], want: &[f32]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} values, PyTorch has {}",
        got.len(),
        want.len()
    );
    let differ: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    if let Some(&i) = differ.first() {
        bail!(
            "{what}: {} of {} values differ from PyTorch; first at {i}: kiln {:e} ({:#010x}), PyTorch {:e} ({:#010x})",
            differ.len(),
            got.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
    Ok(())
}

fn same_weights(model: &Mlp, g: &Golden, prefix: &str) -> Result<()> {
    for p in model.params()? {
        let want = g.get(&format!("{prefix}.{}", p.name))?;
        ensure!(want.kind() == p.tensor.kind() && want.size() == p.tensor.size());
        same_bits(
            &format!("{prefix}.{}", p.name),
            &f32s(&p.tensor)?,
            &f32s(want)?,
        )?;
    }
    Ok(())
}

/// Compares a run's record with the script's record of `case`.
fn same_record(rec: &Record, g: &Golden, case: &str) -> Result<()> {
    same_bits(
        &format!("{case} losses"),
        &rec.loss,
        &f32s(g.get(&format!("{case}.loss"))?)?,
    )?;
    let want_scale: Vec<f64> = f32s(g.get(&format!("{case}.scale"))?)?
        .into_iter()
        .map(f64::from)
        .collect();
    ensure!(
        rec.scale == want_scale,
        "{case} scales: kiln {:?}, PyTorch {want_scale:?}",
        rec.scale
    );
    let want_stepped = i64s(g.get(&format!("{case}.stepped"))?)?;
    ensure!(
        rec.stepped == want_stepped,
        "{case} stepped: kiln {:?}, PyTorch {want_stepped:?}",
        rec.stepped
    );
    let want_tracker = i64s(g.get(&format!("{case}.growth_tracker"))?)?;
    ensure!(
        rec.growth_tracker == want_tracker,
        "{case} growth trackers: kiln {:?}, PyTorch {want_tracker:?}",
        rec.growth_tracker
    );
    Ok(())
}

fn run_case(case: Case, name: &str) -> Result<Record> {
    let _serial = common::global_state();
    kiln_tensor::tch::set_num_threads(THREADS);
    let g = Golden::load()?;
    let model = Mlp::new(0)?;
    same_weights(&model, &g, "init")?;
    let mut opt = model.sgd()?;
    let mut scaler = case.scaler()?;
    let mut rec = Record::default();
    train(
        case,
        &model,
        opt.as_mut(),
        scaler.as_mut(),
        &g,
        0,
        g.steps()?,
        &mut rec,
    )?;
    same_record(&rec, &g, name)?;
    same_weights(&model, &g, &format!("{name}.final"))?;
    Ok(rec)
}

#[test]
fn bf16_autocast_matches_pytorch_bit_for_bit() -> Result<()> {
    let rec = run_case(Case::Bf16, "bf16")?;
    // The comparison is sensitive to autocast: float32's first loss differs.
    let _serial = common::global_state();
    let g = Golden::load()?;
    let model = Mlp::new(0)?;
    let xb = g.get("data.x")?.f_narrow(0, 0, BATCH)?;
    let yb = g.get("data.y")?.f_narrow(0, 0, BATCH)?;
    let fp32 = cross_entropy(&model.forward(&xb)?, &yb)?;
    ensure!(fp32.f_double_value(&[])? as f32 != rec.loss[0]);
    Ok(())
}

#[test]
fn fp16_autocast_with_grad_scaler_matches_pytorch_bit_for_bit() -> Result<()> {
    let rec = run_case(Case::Fp16, "fp16")?;
    ensure!(rec.scale.iter().all(|&s| s == 65536.0));
    Ok(())
}

#[test]
fn overflowing_fp16_gradients_skip_steps_and_back_off_like_pytorch() -> Result<()> {
    let rec = run_case(Case::Overflow, "overflow")?;
    let skipped = rec.stepped.iter().filter(|&&s| s == 0).count();
    ensure!(skipped >= 3, "only {skipped} skipped steps");
    ensure!(rec.scale.windows(2).any(|w| w[1] < w[0]), "no backoff");
    ensure!(rec.scale.windows(2).any(|w| w[1] > w[0]), "no growth");
    println!(
        "overflow: {skipped} of {} steps skipped; scales {:?}",
        rec.stepped.len(),
        rec.scale
    );
    Ok(())
}

/// Steps to the script's resume point, saves model, optimizer and scaler to
/// files, continues in fresh objects loaded from them: identical to PyTorch's
/// uninterrupted run. Also loads PyTorch's own scaler `state_dict` (JSON).
#[test]
fn scaler_state_dict_save_load_continue_is_bit_exact() -> Result<()> {
    let _serial = common::global_state();
    kiln_tensor::tch::set_num_threads(THREADS);
    let g = Golden::load()?;
    let resume_at = g.meta["resume_at"]
        .as_i64()
        .ok_or_else(|| anyhow!("no resume_at"))?;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rec = Record::default();
    {
        let model = Mlp::new(0)?;
        let mut opt = model.sgd()?;
        let mut scaler = Case::Overflow
            .scaler()?
            .ok_or_else(|| anyhow!("no scaler"))?;
        train(
            Case::Overflow,
            &model,
            opt.as_mut(),
            Some(&mut scaler),
            &g,
            0,
            resume_at,
            &mut rec,
        )?;
        io::write_safetensors(
            &dir.join("model.safetensors"),
            &params::state_dict(&model.vs)?,
        )?;
        opt.state_dict()?.save(&dir.join("optimizer"))?;
        let json = serde_json::to_vec_pretty(&scaler.state_dict()?)?;
        io::write_atomic(&dir.join("scaler.json"), &json)?;
    }
    // A fresh process would see only the files.
    let model = Mlp::new(1)?;
    params::load_state_dict(
        &model.vs,
        &io::read_safetensors(&dir.join("model.safetensors"))?,
    )?;
    let mut opt = model.sgd()?;
    opt.load_state_dict(&OptimizerState::load(&dir.join("optimizer"))?)?;
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("scaler.json"))?)?;
    ensure!(
        saved == g.meta["scaler_state_at_resume"],
        "kiln's scaler state {saved} differs from PyTorch's {}",
        g.meta["scaler_state_at_resume"]
    );
    let mut scaler = GradScaler::new(DeviceType::Cpu)?; // defaults; the state restores the rest
    scaler.load_state_dict(&saved)?;
    // PyTorch's state_dict loads into kiln too, to the same state.
    let mut from_torch = GradScaler::new(DeviceType::Cpu)?;
    from_torch.load_state_dict(&g.meta["scaler_state_at_resume"])?;
    ensure!(from_torch.state()? == scaler.state()?);
    train(
        Case::Overflow,
        &model,
        opt.as_mut(),
        Some(&mut scaler),
        &g,
        resume_at,
        g.steps()?,
        &mut rec,
    )?;
    same_record(&rec, &g, "resume")?;
    same_record(&rec, &g, "overflow")?;
    same_weights(&model, &g, "overflow.final")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn one_ulp_is_a_difference() {
    let a = [1.0f32, 2.5];
    let b = [1.0f32, f32::from_bits(2.5f32.to_bits() + 1)];
    assert!(same_bits("x", &a, &a).is_ok());
    assert!(same_bits("x", &a, &b).is_err());
}

/// `F.cross_entropy(input, target)` (mean, no weights, no smoothing): the
/// kernel kiln-losses' `CrossEntropyLoss` calls, without depending on that
/// sibling crate.
fn cross_entropy(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok(input.f_cross_entropy_loss::<Tensor>(
        target,
        None,
        kiln_tensor::Reduction::Mean,
        -100,
        0.0,
    )?)
}
