//! Scheduler tests: PyTorch golden sequences (tests/golden/schedulers, made
//! by make_golden.py), state round trips, PyTorch's error messages, the spec
//! registry, schedulers from nested and nanoGPT specs (spec_reference.py,
//! run at test time), and AveragedModel.
use crate::common;

use anyhow::{anyhow, bail, ensure, Context, Result};
use kiln_optim::scheduler::{
    resume_at, schedulers, AnnealStrategy, ChainedScheduler, ConstantLrConfig,
    CosineAnnealingLrConfig, CosineAnnealingWarmRestarts, CosineAnnealingWarmRestartsConfig,
    CyclicLrConfig, CyclicMode, ExponentialLrConfig, GroupValues, LambdaLr, LinearLrConfig,
    LrLambda, LrScheduler, MultiStepLrConfig, MultiplicativeLr, OneCycleLrConfig, PlateauMode,
    PolynomialLrConfig, ReduceLrOnPlateauConfig, ScaleFn, ScaleMode, SequentialLr, StepLrConfig,
    SwalrConfig, ThresholdMode,
};
use kiln_optim::swa::{AveragedModel, AveragingStrategy};
use kiln_optim::{NamedParameter, Optimizer, OptimizerState, Sgd, SgdConfig};
use kiln_tensor::{Kind, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

// ---------------------------------------------------------------------------
// A test optimizer whose groups are dicts, like PyTorch's param_groups.

#[derive(Clone)]
struct DictOpt {
    groups: Vec<BTreeMap<String, f64>>,
    /// Reject keys it was not created with (like kiln's Sgd, which has no `initial_lr`).
    strict: bool,
}

impl DictOpt {
    fn new(kind: &str, lrs: &[f64], strict: bool) -> Result<Self> {
        let groups = lrs
            .iter()
            .map(|lr| {
                let mut g = BTreeMap::new();
                g.insert("lr".to_string(), *lr);
                match kind {
                    "sgd" => {
                        g.insert("momentum".into(), 0.9);
                    }
                    "adam" => {
                        g.insert("betas.0".into(), 0.9);
                        g.insert("betas.1".into(), 0.999);
                    }
                    "adagrad" => {}
                    other => bail!("unknown optimizer kind {other}"),
                }
                Ok(g)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { groups, strict })
    }

    /// Every group's lr, in group order.
    fn lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g["lr"]).collect()
    }

    fn momenta(&self) -> Vec<f64> {
        self.groups
            .iter()
            .filter_map(|g| g.get("betas.0").or_else(|| g.get("momentum")).copied())
            .collect()
    }
}

impl Optimizer for DictOpt {
    fn name(&self) -> &str {
        "dict"
    }
    fn step(&mut self) -> kiln_optim::Result<()> {
        Ok(())
    }
    fn num_groups(&self) -> usize {
        self.groups.len()
    }
    fn group_params(&self, _group: usize) -> &[NamedParameter] {
        &[]
    }
    fn hyperparameter(&self, group: usize, name: &str) -> Option<f64> {
        self.groups.get(group)?.get(name).copied()
    }
    fn set_hyperparameter(
        &mut self,
        group: usize,
        name: &str,
        value: f64,
    ) -> kiln_optim::Result<()> {
        let strict = self.strict;
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| kiln_optim::Error::InvalidArgument(format!("no group {group}")))?;
        if strict && !g.contains_key(name) {
            return Err(kiln_optim::Error::InvalidArgument(format!(
                "no hyperparameter {name}"
            )));
        }
        g.insert(name.to_string(), value);
        Ok(())
    }
    fn state_dict(&self) -> kiln_optim::Result<OptimizerState> {
        Ok(OptimizerState::default())
    }
    fn load_state_dict(&mut self, _state: &OptimizerState) -> kiln_optim::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

fn fixture(name: &str) -> Result<Value> {
    let path = format!(
        "{}/tests/golden/schedulers/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    Ok(serde_json::from_str(&text)?)
}

/// Floats are repr() strings in the fixtures (exact through Rust's parser).
fn num(v: &Value) -> Result<f64> {
    match v {
        Value::String(s) => Ok(s.parse::<f64>()?),
        Value::Number(n) => n.as_f64().ok_or_else(|| anyhow!("bad number {n}")),
        other => bail!("not a number: {other}"),
    }
}

fn nums(v: &Value) -> Result<Vec<f64>> {
    v.as_array()
        .ok_or_else(|| anyhow!("not a list: {v}"))?
        .iter()
        .map(num)
        .collect()
}

fn table(v: &Value) -> Result<Vec<Vec<f64>>> {
    v.as_array()
        .ok_or_else(|| anyhow!("not a table"))?
        .iter()
        .map(nums)
        .collect()
}

fn kw<'a>(spec: &'a Value, key: &str) -> Option<&'a Value> {
    spec.get("kwargs").and_then(|k| k.get(key))
}

fn kf(spec: &Value, key: &str) -> Result<Option<f64>> {
    kw(spec, key).map(num).transpose()
}

fn ki(spec: &Value, key: &str) -> Result<Option<i64>> {
    kw(spec, key)
        .map(|v| v.as_i64().ok_or_else(|| anyhow!("{key} is not an integer")))
        .transpose()
}

fn ku(spec: &Value, key: &str) -> Result<Option<usize>> {
    ki(spec, key)?
        .map(|v| usize::try_from(v).map_err(|e| anyhow!("{key}: {e}")))
        .transpose()
}

fn kgroup(spec: &Value, key: &str) -> Result<Option<GroupValues>> {
    match kw(spec, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(GroupValues::PerGroup(
            a.iter().map(num).collect::<Result<_>>()?,
        ))),
        Some(v) => Ok(Some(GroupValues::All(num(v)?))),
    }
}

fn ks<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    kw(spec, key).and_then(Value::as_str)
}

fn kb(spec: &Value, key: &str) -> Option<bool> {
    kw(spec, key).and_then(Value::as_bool)
}

/// The closures of make_golden.py's LAMBDAS.
fn lr_lambda(name: &str) -> Result<LrLambda> {
    Ok(match name {
        "pow095" => Box::new(|e| 0.95f64.powf(e as f64)),
        "inv" => Box::new(|e| 1.0 / (e + 1) as f64),
        "const09" => Box::new(|_| 0.9),
        "alt" => Box::new(|e| if e % 2 == 1 { 0.95 } else { 1.0 }),
        other => bail!("unknown lambda {other}"),
    })
}

fn scale_fn(name: &str) -> Result<ScaleFn> {
    Ok(match name {
        "scale_inv" => Box::new(|x| 1.0 / (1.0 + x)),
        "scale_pow" => Box::new(|x| 0.99f64.powf(x)),
        other => bail!("unknown scale_fn {other}"),
    })
}

fn anneal(s: Option<&str>) -> Result<Option<AnnealStrategy>> {
    Ok(match s {
        None => None,
        Some("cos") => Some(AnnealStrategy::Cos),
        Some("linear") => Some(AnnealStrategy::Linear),
        Some(o) => bail!("anneal {o}"),
    })
}

fn build_cawr(opt: &mut dyn Optimizer, spec: &Value) -> Result<CosineAnnealingWarmRestarts> {
    let mut cfg = CosineAnnealingWarmRestartsConfig::new(ki(spec, "T_0")?.unwrap_or(0));
    cfg.t_mult = ki(spec, "T_mult")?.unwrap_or(1);
    cfg.eta_min = kf(spec, "eta_min")?.unwrap_or(0.0);
    Ok(cfg.build(opt)?)
}

/// Builds a scheduler from its PyTorch class name and kwargs (`last_epoch=N`
/// resumes it through `resume_at`, as PyTorch's constructor does).
fn build(opt: &mut dyn Optimizer, spec: &Value) -> Result<Box<dyn LrScheduler>> {
    match ki(spec, "last_epoch")? {
        Some(n) => {
            let mut err = None;
            let built = resume_at(opt, n, |o| {
                build_fresh(o, spec).map_err(|e| {
                    err = Some(e);
                    kiln_optim::Error::InvalidArgument("build failed".into())
                })
            });
            match (built, err) {
                (_, Some(e)) => Err(e),
                (b, None) => Ok(b?),
            }
        }
        None => build_fresh(opt, spec),
    }
}

fn build_fresh(opt: &mut dyn Optimizer, spec: &Value) -> Result<Box<dyn LrScheduler>> {
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no type"))?;
    Ok(match ty {
        "LambdaLR" | "MultiplicativeLR" => {
            let lam = kw(spec, "lr_lambda").ok_or_else(|| anyhow!("no lr_lambda"))?;
            let multiplicative = ty == "MultiplicativeLR";
            match lam {
                Value::Array(names) => {
                    let fs = names
                        .iter()
                        .map(|n| lr_lambda(n.as_str().unwrap_or_default()))
                        .collect::<Result<Vec<_>>>()?;
                    if multiplicative {
                        Box::new(MultiplicativeLr::per_group(opt, fs)?)
                    } else {
                        Box::new(LambdaLr::per_group(opt, fs)?)
                    }
                }
                v => {
                    let f = lr_lambda(v.as_str().unwrap_or_default())?;
                    if multiplicative {
                        Box::new(MultiplicativeLr::new(opt, f)?)
                    } else {
                        Box::new(LambdaLr::new(opt, f)?)
                    }
                }
            }
        }
        "StepLR" => {
            let mut cfg = StepLrConfig::new(ku(spec, "step_size")?.unwrap_or(0));
            cfg.gamma = kf(spec, "gamma")?.unwrap_or(0.1);
            Box::new(cfg.build(opt)?)
        }
        "MultiStepLR" => {
            let ms = kw(spec, "milestones").ok_or_else(|| anyhow!("milestones"))?;
            let ms = ms
                .as_array()
                .ok_or_else(|| anyhow!("milestones"))?
                .iter()
                .map(|m| {
                    m.as_u64()
                        .map(|m| m as usize)
                        .ok_or_else(|| anyhow!("milestone"))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut cfg = MultiStepLrConfig::new(ms);
            cfg.gamma = kf(spec, "gamma")?.unwrap_or(0.1);
            Box::new(cfg.build(opt)?)
        }
        "ConstantLR" => {
            let d = ConstantLrConfig::default();
            let cfg = ConstantLrConfig {
                factor: kf(spec, "factor")?.unwrap_or(d.factor),
                total_iters: ku(spec, "total_iters")?.unwrap_or(d.total_iters),
            };
            Box::new(cfg.build(opt)?)
        }
        "LinearLR" => {
            let d = LinearLrConfig::default();
            let cfg = LinearLrConfig {
                start_factor: kf(spec, "start_factor")?.unwrap_or(d.start_factor),
                end_factor: kf(spec, "end_factor")?.unwrap_or(d.end_factor),
                total_iters: ku(spec, "total_iters")?.unwrap_or(d.total_iters),
            };
            Box::new(cfg.build(opt)?)
        }
        "ExponentialLR" => Box::new(
            ExponentialLrConfig {
                gamma: kf(spec, "gamma")?.ok_or_else(|| anyhow!("gamma"))?,
            }
            .build(opt)?,
        ),
        "PolynomialLR" => {
            let d = PolynomialLrConfig::default();
            let cfg = PolynomialLrConfig {
                total_iters: ku(spec, "total_iters")?.unwrap_or(d.total_iters),
                power: kf(spec, "power")?.unwrap_or(d.power),
            };
            Box::new(cfg.build(opt)?)
        }
        "CosineAnnealingLR" => {
            let mut cfg = CosineAnnealingLrConfig::new(ku(spec, "T_max")?.unwrap_or(0));
            cfg.eta_min = kf(spec, "eta_min")?.unwrap_or(0.0);
            Box::new(cfg.build(opt)?)
        }
        "CosineAnnealingWarmRestarts" => Box::new(build_cawr(opt, spec)?),
        "CyclicLR" => {
            let base = kgroup(spec, "base_lr")?.ok_or_else(|| anyhow!("base_lr"))?;
            let max = kgroup(spec, "max_lr")?.ok_or_else(|| anyhow!("max_lr"))?;
            let mut cfg = CyclicLrConfig::new(base, max);
            if let Some(v) = ku(spec, "step_size_up")? {
                cfg.step_size_up = v;
            }
            cfg.step_size_down = ku(spec, "step_size_down")?;
            cfg.mode = match ks(spec, "mode") {
                None | Some("triangular") => CyclicMode::Triangular,
                Some("triangular2") => CyclicMode::Triangular2,
                Some("exp_range") => CyclicMode::ExpRange,
                Some(o) => bail!("mode {o}"),
            };
            if let Some(v) = kf(spec, "gamma")? {
                cfg.gamma = v;
            }
            if let Some(name) = ks(spec, "scale_fn") {
                cfg.scale_fn = Some(scale_fn(name)?);
            }
            if ks(spec, "scale_mode") == Some("iterations") {
                cfg.scale_mode = ScaleMode::Iterations;
            }
            if let Some(v) = kb(spec, "cycle_momentum") {
                cfg.cycle_momentum = v;
            }
            if let Some(v) = kgroup(spec, "base_momentum")? {
                cfg.base_momentum = v;
            }
            if let Some(v) = kgroup(spec, "max_momentum")? {
                cfg.max_momentum = v;
            }
            Box::new(cfg.build(opt)?)
        }
        "OneCycleLR" => {
            let max = kgroup(spec, "max_lr")?.ok_or_else(|| anyhow!("max_lr"))?;
            let mut cfg = OneCycleLrConfig::new(max, 0);
            cfg.total_steps = ki(spec, "total_steps")?;
            cfg.epochs = ki(spec, "epochs")?;
            cfg.steps_per_epoch = ki(spec, "steps_per_epoch")?;
            if let Some(v) = kf(spec, "pct_start")? {
                cfg.pct_start = v;
            }
            if let Some(v) = anneal(ks(spec, "anneal_strategy"))? {
                cfg.anneal_strategy = v;
            }
            if let Some(v) = kb(spec, "cycle_momentum") {
                cfg.cycle_momentum = v;
            }
            if let Some(v) = kgroup(spec, "base_momentum")? {
                cfg.base_momentum = v;
            }
            if let Some(v) = kgroup(spec, "max_momentum")? {
                cfg.max_momentum = v;
            }
            if let Some(v) = kf(spec, "div_factor")? {
                cfg.div_factor = v;
            }
            if let Some(v) = kf(spec, "final_div_factor")? {
                cfg.final_div_factor = v;
            }
            if let Some(v) = kb(spec, "three_phase") {
                cfg.three_phase = v;
            }
            Box::new(cfg.build(opt)?)
        }
        "ReduceLROnPlateau" => {
            let mut cfg = ReduceLrOnPlateauConfig::default();
            if ks(spec, "mode") == Some("max") {
                cfg.mode = PlateauMode::Max;
            }
            if ks(spec, "threshold_mode") == Some("abs") {
                cfg.threshold_mode = ThresholdMode::Abs;
            }
            if let Some(v) = kf(spec, "factor")? {
                cfg.factor = v;
            }
            if let Some(v) = ku(spec, "patience")? {
                cfg.patience = v;
            }
            if let Some(v) = kf(spec, "threshold")? {
                cfg.threshold = v;
            }
            if let Some(v) = ku(spec, "cooldown")? {
                cfg.cooldown = v;
            }
            if let Some(v) = kgroup(spec, "min_lr")? {
                cfg.min_lr = v;
            }
            if let Some(v) = kf(spec, "eps")? {
                cfg.eps = v;
            }
            Box::new(cfg.build(opt)?)
        }
        "SWALR" => {
            let mut cfg =
                SwalrConfig::new(kgroup(spec, "swa_lr")?.ok_or_else(|| anyhow!("swa_lr"))?);
            if let Some(v) = ki(spec, "anneal_epochs")? {
                cfg.anneal_epochs = v;
            }
            if let Some(v) = anneal(ks(spec, "anneal_strategy"))? {
                cfg.anneal_strategy = v;
            }
            Box::new(cfg.build(opt)?)
        }
        other => bail!("unknown scheduler type {other}"),
    })
}

// ---------------------------------------------------------------------------
// Running a golden case.

enum Top {
    Dyn(Box<dyn LrScheduler>),
    Cawr(CosineAnnealingWarmRestarts),
}

impl Top {
    fn sched(&mut self) -> &mut dyn LrScheduler {
        match self {
            Top::Dyn(s) => s.as_mut(),
            Top::Cawr(s) => s,
        }
    }
}

/// The schedulers of a case: the top one and, without composition, the
/// others built on the same optimizer.
struct Built {
    top: Top,
    others: Vec<Box<dyn LrScheduler>>,
}

fn build_case(case: &Value, opt: &mut DictOpt) -> Result<Built> {
    let specs = case["build"].as_array().ok_or_else(|| anyhow!("build"))?;
    let ops = case["ops"].as_array().ok_or_else(|| anyhow!("ops"))?;
    let uses_epochs = ops.iter().any(|o| o.get("e").is_some());
    let first_is_cawr = specs
        .first()
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        == Some("CosineAnnealingWarmRestarts");
    if uses_epochs && first_is_cawr {
        let spec = specs.first().ok_or_else(|| anyhow!("no scheduler"))?;
        return Ok(Built {
            top: Top::Cawr(build_cawr(opt, spec)?),
            others: vec![],
        });
    }
    let mut built = specs
        .iter()
        .map(|s| build(opt, s))
        .collect::<Result<Vec<_>>>()?;
    match case["compose"].get("type").and_then(Value::as_str) {
        None => {
            let top = built.remove(0);
            Ok(Built {
                top: Top::Dyn(top),
                others: built,
            })
        }
        Some("sequential") => {
            let ms = case["compose"]["milestones"]
                .as_array()
                .ok_or_else(|| anyhow!("milestones"))?
                .iter()
                .map(|m| {
                    m.as_u64()
                        .map(|m| m as usize)
                        .ok_or_else(|| anyhow!("milestone"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Built {
                top: Top::Dyn(Box::new(SequentialLr::new(opt, built, ms)?)),
                others: vec![],
            })
        }
        Some("chained") => Ok(Built {
            top: Top::Dyn(Box::new(ChainedScheduler::new(opt, built)?)),
            others: vec![],
        }),
        Some(o) => bail!("compose {o}"),
    }
}

fn apply_op(b: &mut Built, opt: &mut DictOpt, op: &Value) -> Result<()> {
    if op.as_str() == Some("s") {
        b.top.sched().step(opt)?;
    } else if let Some(m) = op.get("m") {
        b.top.sched().step_with_metric(opt, num(m)?)?;
    } else if let Some(e) = op.get("e") {
        match &mut b.top {
            Top::Cawr(s) => s.step_to(opt, num(e)?)?,
            // `step(epoch)` with an integer epoch: the closed form.
            Top::Dyn(s) => {
                let e = num(e)?;
                ensure!(
                    e.fract() == 0.0,
                    "step({e}) needs CosineAnnealingWarmRestarts"
                );
                s.update_lr_at(opt, e as i64)?;
            }
        }
    } else if let Some(km) = op.get("km").and_then(Value::as_array) {
        let k = km
            .first()
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("km"))?;
        let m = num(km.get(1).ok_or_else(|| anyhow!("km metric"))?)?;
        if k == 0 {
            b.top.sched().step_with_metric(opt, m)?;
        } else {
            b.others
                .get_mut(k as usize - 1)
                .ok_or_else(|| anyhow!("no scheduler {k}"))?
                .step_with_metric(opt, m)?;
        }
    } else if let Some(k) = op.get("k").and_then(Value::as_u64) {
        if k == 0 {
            b.top.sched().step(opt)?;
        } else {
            let s = b
                .others
                .get_mut(k as usize - 1)
                .ok_or_else(|| anyhow!("no scheduler {k}"))?;
            s.step(opt)?;
        }
    } else {
        bail!("unknown op {op}");
    }
    Ok(())
}

fn new_opt(case: &Value, strict: bool) -> Result<DictOpt> {
    let mut opt = DictOpt::new(
        case["optimizer"].as_str().unwrap_or_default(),
        &nums(&case["lrs"])?,
        strict,
    )?;
    // A resuming case: the groups carry `initial_lr`, as a restored optimizer's do.
    if let Some(initial) = case.get("initial_lr").filter(|v| !v.is_null()) {
        for (g, v) in opt.groups.iter_mut().zip(nums(initial)?) {
            g.insert("initial_lr".into(), v);
        }
    }
    Ok(opt)
}

/// Compares bit for bit; on a mismatch reports the largest relative error.
fn check_exact(what: &str, got: &[Vec<f64>], want: &[Vec<f64>]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} rows, expected {}",
        got.len(),
        want.len()
    );
    let mut worst = 0.0f64;
    let mut first = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        ensure!(
            g.len() == w.len(),
            "{what}: row {i} has {} values, expected {}",
            g.len(),
            w.len()
        );
        for (a, b) in g.iter().zip(w) {
            if a.to_bits() != b.to_bits() {
                let rel = ((a - b) / b).abs();
                worst = worst.max(if rel.is_nan() { f64::INFINITY } else { rel });
                first.get_or_insert((i, *a, *b));
            }
        }
    }
    if let Some((i, a, b)) = first {
        bail!("{what}: not bit-exact; first at row {i}: {a:e} vs PyTorch {b:e}; max rel err {worst:e}");
    }
    Ok(())
}

/// Runs a case from the start; returns lrs and momenta after building and each op.
/// Rows of per-group values: after building, then after each op.
type Rows = Vec<Vec<f64>>;

fn run_case(case: &Value, strict: bool) -> Result<(Rows, Rows)> {
    let mut opt = new_opt(case, strict)?;
    let mut b = build_case(case, &mut opt)?;
    let mut lrs = vec![opt.lrs()];
    let mut moms = vec![opt.momenta()];
    for op in case["ops"].as_array().ok_or_else(|| anyhow!("ops"))? {
        apply_op(&mut b, &mut opt, op)?;
        let now = opt.lrs();
        if !case["ops"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| x.get("k").is_some()))
        {
            ensure!(
                b.top.sched().last_lr() == now.as_slice(),
                "last_lr() differs from the groups"
            );
        }
        lrs.push(now);
        moms.push(opt.momenta());
    }
    Ok((lrs, moms))
}

/// A golden case's name.
fn case_name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or_default()
}

/// The checks that failed over the golden cases, reported all together.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn record(&mut self, name: &str, result: Result<()>) {
        if let Err(e) = result {
            self.0.push(format!("{name}: {e:#}"));
        }
    }

    /// Errors listing every failure (`"{n} {what} differ"`) unless there were none.
    fn finish(self, what: &str) -> Result<()> {
        ensure!(
            self.0.is_empty(),
            "{} {what} differ:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
        Ok(())
    }
}

fn cases() -> Result<Vec<Value>> {
    let f = fixture("schedulers.json")?;
    Ok(f["cases"]
        .as_array()
        .ok_or_else(|| anyhow!("cases"))?
        .clone())
}

#[test]
fn golden_sequences_match_pytorch_bit_for_bit() -> Result<()> {
    let cases = cases()?;
    ensure!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Failures::default();
    for case in &cases {
        let name = case_name(case);
        let result = run_case(case, false).and_then(|(lrs, moms)| {
            check_exact(&format!("{name} lr"), &lrs, &table(&case["lr"])?)?;
            if let Some(m) = case.get("momentum").filter(|m| !m.is_null()) {
                check_exact(&format!("{name} momentum"), &moms, &table(m)?)?;
            }
            Ok(())
        });
        failures.record(name, result);
    }
    failures.finish("cases")
}

/// The same sequences with an optimizer that cannot store `initial_lr`
/// (kiln's Sgd today): every case still matches.
#[test]
fn golden_sequences_without_initial_lr_in_the_optimizer() -> Result<()> {
    let mut failures = Failures::default();
    // Resuming cases need `initial_lr` in the groups by definition.
    for case in cases()?.iter().filter(|c| c["initial_lr"].is_null()) {
        let name = case_name(case);
        let result =
            run_case(case, true).and_then(|(lrs, _)| check_exact(name, &lrs, &table(&case["lr"])?));
        failures.record(name, result);
    }
    failures.finish("cases")
}

/// Stops after k ops, saves the scheduler state (through JSON text) and the
/// optimizer's groups, builds everything afresh, loads, and continues: the
/// sequence is the uninterrupted golden one.
#[test]
fn state_round_trip_continues_identically() -> Result<()> {
    let mut failures = Failures::default();
    for case in &cases()? {
        let name = case_name(case);
        let ops = case["ops"].as_array().ok_or_else(|| anyhow!("ops"))?;
        let want = table(&case["lr"])?;
        let splits = [
            0,
            1,
            ops.len() / 3,
            ops.len() / 2,
            ops.len().saturating_sub(1),
        ];
        for k in splits {
            let result = (|| -> Result<()> {
                let mut opt = new_opt(case, false)?;
                let mut b = build_case(case, &mut opt)?;
                let mut lrs = vec![opt.lrs()];
                for op in &ops[..k] {
                    apply_op(&mut b, &mut opt, op)?;
                    lrs.push(opt.lrs());
                }
                let text = serde_json::to_string(&b.top.sched().state_dict())?;
                let others: Vec<String> = b
                    .others
                    .iter()
                    .map(|s| serde_json::to_string(&s.state_dict()))
                    .collect::<Result<_, _>>()?;
                let saved_groups = opt.groups.clone();
                drop(b);

                let mut opt = new_opt(case, false)?;
                let mut b = build_case(case, &mut opt)?;
                opt.groups = saved_groups; // the optimizer's own state_dict restores lrs
                b.top
                    .sched()
                    .load_state_dict(&serde_json::from_str(&text)?)?;
                for (s, t) in b.others.iter_mut().zip(&others) {
                    s.load_state_dict(&serde_json::from_str(t)?)?;
                }
                for op in &ops[k..] {
                    apply_op(&mut b, &mut opt, op)?;
                    lrs.push(opt.lrs());
                }
                check_exact(&format!("split at {k}"), &lrs, &want)
            })();
            failures.record(name, result);
        }
    }
    failures.finish("round trips")
}

#[test]
fn constructor_errors_have_pytorch_messages() -> Result<()> {
    let f = fixture("errors.json")?;
    let errors = f["errors"].as_array().ok_or_else(|| anyhow!("errors"))?;
    ensure!(errors.len() >= 20);
    for e in errors {
        let want = e["error"].as_str().unwrap_or_default();
        let mut opt = DictOpt::new(e["optimizer"].as_str().unwrap_or_default(), &[0.1], false)?;
        let got = match build(&mut opt, &e["build"]) {
            Err(err) => err.to_string(),
            Ok(mut s) => {
                let n = e["steps"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("{want}: building succeeded"))?;
                let mut msg = None;
                for _ in 0..n {
                    if let Err(err) = s.step(&mut opt) {
                        msg = Some(err.to_string());
                        break;
                    }
                }
                msg.ok_or_else(|| anyhow!("{want}: stepping succeeded"))?
            }
        };
        ensure!(got == want, "got '{got}', PyTorch says '{want}'");
    }
    Ok(())
}

#[test]
fn composite_and_other_errors() -> Result<()> {
    let mut opt = DictOpt::new("sgd", &[0.1], false)?;
    let msg = |r: kiln_optim::Result<Box<dyn LrScheduler>>| {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    };
    ensure!(
        msg(SequentialLr::new(&mut opt, vec![], vec![])
            .map(|s| Box::new(s) as Box<dyn LrScheduler>))
            == "SequentialLR expects at least one scheduler, but got no scheduler."
    );
    ensure!(
        msg(ChainedScheduler::new(&mut opt, vec![]).map(|s| Box::new(s) as Box<dyn LrScheduler>))
            == "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler."
    );
    let a: Box<dyn LrScheduler> = Box::new(StepLrConfig::new(2).build(&mut opt)?);
    let m =
        msg(SequentialLr::new(&mut opt, vec![a], vec![3])
            .map(|s| Box::new(s) as Box<dyn LrScheduler>));
    ensure!(m == "Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, but got number of schedulers 1 and the number of milestones to be equal to 1", "{m}");
    let p: Box<dyn LrScheduler> = Box::new(ReduceLrOnPlateauConfig::default().build(&mut opt)?);
    let m =
        msg(ChainedScheduler::new(&mut opt, vec![p]).map(|s| Box::new(s) as Box<dyn LrScheduler>));
    ensure!(m == "ChainedScheduler does not support `ReduceLROnPlateau` scheduler as it requires additional kwargs to be specified when calling `step`, but got one at index 0 in the given schedulers sequence.", "{m}");
    // ReduceLROnPlateau needs a metric.
    let mut p = ReduceLrOnPlateauConfig::default().build(&mut opt)?;
    ensure!(p.needs_metric());
    ensure!(p
        .step(&mut opt)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("step_with_metric"));
    // Python's ZeroDivisionError surfaces as an error at the same step.
    let mut s = CosineAnnealingLrConfig::new(0).build(&mut opt)?;
    let m = s
        .step(&mut opt)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        m == "CosineAnnealingLR (T_max is 0): integer modulo by zero",
        "{m}"
    );
    let mut s = StepLrConfig::new(0).build(&mut opt)?;
    ensure!(s.step(&mut opt).is_err());
    // CAWR rejects negative epochs like PyTorch.
    let mut c = CosineAnnealingWarmRestartsConfig::new(3).build(&mut opt)?;
    ensure!(
        c.step_to(&mut opt, -1.0)
            .err()
            .map(|e| e.to_string())
            .as_deref()
            == Some("Expected non-negative epoch, but got -1")
    );
    // Loading a state of another scheduler.
    let mut e = ExponentialLrConfig { gamma: 0.9 }.build(&mut opt)?;
    let st = StepLrConfig::new(3).build(&mut opt)?.state_dict();
    ensure!(e.load_state_dict(&st).is_err());
    ensure!(e.load_state_dict(&Value::Null).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------
// kiln's Sgd (no `initial_lr` key) drives schedulers through the trait.

fn sgd(lr: f64, momentum: f64) -> Result<Sgd> {
    let p = Tensor::f_zeros([2], (Kind::Float, kiln_tensor::Device::Cpu))?;
    Ok(SgdConfig {
        lr,
        momentum,
        ..Default::default()
    }
    .build(vec![NamedParameter {
        name: "w".into(),
        tensor: p,
    }])?)
}

#[test]
fn schedulers_drive_kiln_sgd() -> Result<()> {
    for case in &cases()? {
        let lrs = nums(&case["lrs"])?;
        if case["optimizer"] != "sgd" || lrs.len() != 1 {
            continue;
        }
        // kiln's Sgd rejects a negative lr; PyTorch lets OneCycleLR's linear
        // anneal extrapolate below 0 at step == total_steps.
        if table(&case["lr"])?.iter().flatten().any(|lr| *lr < 0.0) {
            continue;
        }
        let name = case_name(case);
        let mut opt = sgd(lrs[0], 0.9)?;
        let mut built = case["build"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| build(&mut opt, s))
            .collect::<Result<Vec<_>>>()?;
        let ops = case["ops"].as_array().ok_or_else(|| anyhow!("ops"))?;
        if ops
            .iter()
            .any(|o| o.get("e").is_some() || o.get("k").is_some())
        {
            continue;
        }
        let mut top: Box<dyn LrScheduler> =
            match case["compose"].get("type").and_then(Value::as_str) {
                None => built.remove(0),
                Some("sequential") => {
                    let ms = case["compose"]["milestones"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .map(|m| m as usize)
                        .collect();
                    Box::new(SequentialLr::new(&mut opt, built, ms)?)
                }
                Some(_) => Box::new(ChainedScheduler::new(&mut opt, built)?),
            };
        let mut got = vec![vec![opt.config(0).map_or(f64::NAN, |c| c.lr)]];
        for op in ops {
            match op.get("m") {
                Some(m) => top.step_with_metric(&mut opt, num(m)?)?,
                None => top.step(&mut opt)?,
            }
            got.push(vec![opt.config(0).map_or(f64::NAN, |c| c.lr)]);
        }
        check_exact(name, &got, &table(&case["lr"])?)?;
    }
    Ok(())
}

#[test]
fn cyclic_momentum_writes_sgd_momentum() -> Result<()> {
    let mut opt = sgd(0.1, 0.5)?;
    let mut s = CyclicLrConfig {
        step_size_up: 2,
        ..CyclicLrConfig::new(0.01, 0.1)
    }
    .build(&mut opt)?;
    ensure!(
        opt.config(0).map_or(f64::NAN, |c| c.momentum) == 0.9
            && opt.config(0).map_or(f64::NAN, |c| c.lr) == 0.01
    );
    s.step(&mut opt)?;
    ensure!(
        opt.config(0).map_or(f64::NAN, |c| c.momentum) < 0.9
            && opt.config(0).map_or(f64::NAN, |c| c.lr) > 0.01
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Registry.

fn registry_seq(spec: &str, opt: &mut DictOpt, hint: Option<usize>, n: usize) -> Result<Vec<f64>> {
    let s = schedulers().build(spec, opt, hint)?;
    config_seq(opt, s, n)
}

fn config_seq(opt: &mut DictOpt, mut s: Box<dyn LrScheduler>, n: usize) -> Result<Vec<f64>> {
    let mut out = vec![opt.groups[0]["lr"]];
    for _ in 0..n {
        s.step(opt)?;
        out.push(opt.groups[0]["lr"]);
    }
    Ok(out)
}

#[test]
fn registry_builds_what_configs_build() -> Result<()> {
    let fresh = || DictOpt::new("sgd", &[0.1], false);
    type Make = Box<dyn Fn(&mut DictOpt) -> Result<Box<dyn LrScheduler>>>;
    let pairs: Vec<(&str, Option<usize>, Make)> = vec![
        ("step:step_size=30,gamma=0.1", None, Box::new(|o| Ok(Box::new(StepLrConfig::new(30).build(o)?)))),
        ("multistep:milestones=2;5", None, Box::new(|o| Ok(Box::new(MultiStepLrConfig::new(vec![2, 5]).build(o)?)))),
        ("constant", None, Box::new(|o| Ok(Box::new(ConstantLrConfig::default().build(o)?)))),
        (
            "linear:start_factor=0.1,total_iters=4",
            None,
            Box::new(|o| {
                Ok(Box::new(LinearLrConfig { start_factor: 0.1, total_iters: 4, ..Default::default() }.build(o)?))
            }),
        ),
        ("exponential:gamma=0.9", None, Box::new(|o| Ok(Box::new(ExponentialLrConfig { gamma: 0.9 }.build(o)?)))),
        ("polynomial:power=2", None, Box::new(|o| Ok(Box::new(PolynomialLrConfig { power: 2.0, ..Default::default() }.build(o)?)))),
        ("cosine:t_max=10", None, Box::new(|o| Ok(Box::new(CosineAnnealingLrConfig::new(10).build(o)?)))),
        ("cosine:eta_min=0.01", Some(12), Box::new(|o| Ok(Box::new(CosineAnnealingLrConfig { t_max: 12, eta_min: 0.01 }.build(o)?)))),
        (
            "cosine-restarts:t_0=3,t_mult=2",
            None,
            Box::new(|o| Ok(Box::new(CosineAnnealingWarmRestartsConfig { t_mult: 2, ..CosineAnnealingWarmRestartsConfig::new(3) }.build(o)?))),
        ),
        (
            "cyclic:base_lr=0.01,max_lr=0.1,step_size_up=4,mode=triangular2",
            None,
            Box::new(|o| {
                Ok(Box::new(
                    CyclicLrConfig { step_size_up: 4, mode: CyclicMode::Triangular2, ..CyclicLrConfig::new(0.01, 0.1) }.build(o)?,
                ))
            }),
        ),
        ("onecycle:max_lr=0.1", Some(20), Box::new(|o| Ok(Box::new(OneCycleLrConfig::new(0.1, 20).build(o)?)))),
        (
            "onecycle:max_lr=0.1,epochs=2,steps_per_epoch=5,three_phase=true,anneal_strategy=linear",
            Some(99),
            Box::new(|o| {
                let mut c = OneCycleLrConfig::new(0.1, 0);
                c.total_steps = None;
                c.epochs = Some(2);
                c.steps_per_epoch = Some(5);
                c.three_phase = true;
                c.anneal_strategy = AnnealStrategy::Linear;
                Ok(Box::new(c.build(o)?))
            }),
        ),
        ("swalr:swa_lr=0.05,anneal_epochs=3", None, Box::new(|o| Ok(Box::new(SwalrConfig { anneal_epochs: 3, ..SwalrConfig::new(0.05) }.build(o)?)))),
    ];
    for (spec, hint, make) in pairs {
        let n = 10;
        let mut o1 = fresh()?;
        let a = registry_seq(spec, &mut o1, hint, n)?;
        let mut o2 = fresh()?;
        let s = make(&mut o2)?;
        let b = config_seq(&mut o2, s, n)?;
        ensure!(a == b, "{spec}: {a:?} vs {b:?}");
        ensure!(o1.groups == o2.groups, "{spec}: optimizer groups differ");
    }
    // Plateau through the registry with a metric.
    let mut o = fresh()?;
    let mut p = schedulers().build("plateau:patience=0,factor=0.5", &mut o, None)?;
    ensure!(p.needs_metric() && p.name() == "plateau");
    p.step_with_metric(&mut o, 1.0)?;
    p.step_with_metric(&mut o, 2.0)?;
    ensure!(o.groups[0]["lr"] == 0.05);
    Ok(())
}

#[test]
fn registry_errors_and_description() -> Result<()> {
    let reg = schedulers();
    let mut o = DictOpt::new("sgd", &[0.1], false)?;
    let err = |spec: &str, o: &mut DictOpt, hint: Option<usize>| {
        reg.build(spec, o, hint)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err("nope", &mut o, None);
    ensure!(
        e.starts_with("unknown scheduler 'nope'; accepted: step, multistep"),
        "{e}"
    );
    ensure!(err("lambda", &mut o, None).contains("built from code"));
    let e = err("step:step_size=3,gama=0.5", &mut o, None);
    ensure!(
        e == "step: unknown option(s) gama (did you mean gamma?); accepted: step_size, gamma",
        "{e}"
    );
    ensure!(
        o.groups[0]["lr"] == 0.1 && !o.groups[0].contains_key("initial_lr"),
        "a bad spec touched the optimizer"
    );
    ensure!(err("step", &mut o, None) == "step: option step_size is required");
    ensure!(err("step:step_size=-1", &mut o, None).contains("non-negative integer"));
    let e = err("onecycle:max_lr=0.1", &mut o, None);
    ensure!(
        e == "You must define either total_steps OR (epochs AND steps_per_epoch)",
        "{e}"
    );
    ensure!(
        err("onecycle:max_lr=0.1,total_steps=-2", &mut o, None)
            == "Expected positive integer total_steps, but got -2"
    );
    let e = err(
        "onecycle:max_lr=0.1,anneal_strategy=cosine",
        &mut o,
        Some(5),
    );
    ensure!(
        e == "onecycle: option anneal_strategy=cosine is not one of cos, linear",
        "{e}"
    );
    ensure!(
        err("plateau:mode=mid", &mut o, None) == "plateau: option mode=mid is not one of min, max"
    );
    ensure!(
        err("plateau:threshold_mode=x", &mut o, None)
            == "plateau: option threshold_mode=x is not one of rel, abs"
    );
    ensure!(
        err("cyclic:base_lr=0.1,max_lr=1,mode=sine", &mut o, None)
            == "cyclic: option mode=sine is not one of triangular, triangular2, exp_range"
    );
    ensure!(err("cyclic:max_lr=1", &mut o, None) == "cyclic: option base_lr is required");
    ensure!(
        err("CosineAnnealingLR:T_max=3,t_max=4", &mut o, None)
            == "cosine: option t_max is given twice (as T_max and t_max)"
    );
    ensure!(err("cosine", &mut o, None).contains("t_max is required"));
    ensure!(
        err("constant:factor=2", &mut o, None)
            == "Constant multiplicative factor expected to be between 0 and 1."
    );
    let d = reg.describe();
    for e in reg.entries() {
        ensure!(
            d.contains(&format!(
                "\n{} ({})\n    {}\n",
                e.name,
                e.aliases.join(", "),
                e.summary
            )),
            "describe() lacks {}",
            e.name
        );
        for o in &e.options {
            let lhs = match &o.default {
                Some(v) => format!("    {}={v} ", o.name),
                None => format!("    {} (required) ", o.name),
            };
            ensure!(d.contains(&lhs), "describe() lacks {lhs:?}");
        }
    }
    for name in [
        "lambda (LambdaLR)",
        "multiplicative (MultiplicativeLR)",
        "sequential (SequentialLR)",
        "chained (ChainedScheduler)",
        "step_size (required)",
        "max_lr (required)",
        "pct_start=0.3 ",
        "eps=1e-08 ",
        "t_max=none ",
        "(also T_max)",
        "(also T_0)",
        "factor=0.3333333333333333 ",
        "base_momentum=0.85 ",
        "step_size_down=none ",
    ] {
        ensure!(d.contains(name), "describe() lacks {name}");
    }
    ensure!(reg.names().len() == 14);
    Ok(())
}

#[test]
fn registry_accepts_downstream_schedulers() -> Result<()> {
    use kiln_optim::scheduler::{scheduler_entry, SchedulerEntry};
    use kiln_tensor::spec::{OptionDoc, OptionInfo, OptionVisitor, Options, Spec};
    use std::sync::Arc;
    let mut reg = schedulers();
    // A closure builder with a hand-written option.
    reg.register(
        SchedulerEntry::new(
            "halve",
            "halves once",
            Arc::new(|s: &mut Spec, o: &mut dyn Optimizer, _| {
                let at = s.value::<usize>("at")?.unwrap_or(1);
                Ok(Box::new(
                    MultiStepLrConfig {
                        milestones: vec![at],
                        gamma: 0.5,
                    }
                    .build(o)?,
                ) as Box<dyn LrScheduler>)
            }),
        )
        .option(OptionDoc::new("at", 1usize, "step")),
    );
    // A config-based one: options and defaults from its config.
    struct Third {
        every: usize,
    }
    impl Options for Third {
        fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
            v.option(
                OptionInfo::new("every", "period").aliases(&["step_size"]),
                &mut self.every,
            )
        }
    }
    reg.register(
        scheduler_entry(
            "third",
            "lr /= 3 every `every` steps",
            || Third { every: 2 },
            |c, o, _| {
                StepLrConfig {
                    step_size: c.every,
                    gamma: 1.0 / 3.0,
                }
                .build(o)
            },
        )
        .alias("ThirdLR"),
    );
    ensure!(reg.names().len() == 16);
    let mut o = DictOpt::new("sgd", &[0.1], false)?;
    let mut s = reg.build("halve:at=2", &mut o, None)?;
    s.step(&mut o)?;
    s.step(&mut o)?;
    ensure!(o.groups[0]["lr"] == 0.05);
    let mut o = DictOpt::new("sgd", &[0.3], false)?;
    let mut s = reg.build("ThirdLR:step_size=1", &mut o, None)?;
    s.step(&mut o)?;
    ensure!((o.groups[0]["lr"] - 0.1).abs() < 1e-15);
    ensure!(reg.resolve(&"ThirdLR".parse()?)?.to_string() == "third:every=2");
    ensure!(reg.resolve(&"halve".parse()?)?.to_string() == "halve:at=1");
    // Registering a name again replaces the entry.
    reg.register(SchedulerEntry::new(
        "halve",
        "replaced",
        Arc::new(|_: &mut Spec, _: &mut dyn Optimizer, _| {
            Err(kiln_optim::Error::InvalidArgument("replaced".into()))
        }),
    ));
    ensure!(reg.names().len() == 16);
    let e = reg
        .build("halve", &mut o, None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(e == "replaced", "{e}");
    let d = reg.describe();
    ensure!(
        d.contains("\nhalve\n    replaced\n") && d.contains("\nthird (ThirdLR)\n"),
        "{d}"
    );
    Ok(())
}

/// Resolved specs: canonical names, PyTorch's spellings as aliases, every
/// option with its default; they resolve to themselves and build the same
/// schedule (the run's total steps stay `none` and come from the hint).
#[test]
fn registry_resolves_specs_that_round_trip() -> Result<()> {
    let reg = schedulers();
    let cases: [(&str, Option<usize>, &str); 15] = [
        ("StepLR:step_size=3", None, "step:step_size=3,gamma=0.1"),
        ("MultiStepLR:milestones=[2;5],gamma=0.5", None, "multistep:milestones=2;5,gamma=0.5"),
        ("ConstantLR", None, "constant:factor=0.3333333333333333,total_iters=5"),
        ("LinearLR:start_factor=0.1", None, "linear:start_factor=0.1,end_factor=1.0,total_iters=5"),
        ("ExponentialLR:gamma=0.9", None, "exponential:gamma=0.9"),
        ("PolynomialLR:power=2", None, "polynomial:total_iters=5,power=2.0"),
        ("CosineAnnealingLR:T_max=10,eta_min=1e-3", None, "cosine:t_max=10,eta_min=0.001"),
        ("cosine", Some(12), "cosine:t_max=none,eta_min=0.0"),
        ("CosineAnnealingWarmRestarts:T_0=3,T_mult=2", None, "cosine-restarts:t_0=3,t_mult=2,eta_min=0.0"),
        (
            "CyclicLR:base_lr=0.01,max_lr=0.1,step_size_up=4",
            None,
            "cyclic:base_lr=0.01,max_lr=0.1,step_size_up=4,step_size_down=none,mode=triangular,gamma=1.0,cycle_momentum=true,base_momentum=0.8,max_momentum=0.9",
        ),
        (
            "OneCycleLR:max_lr=0.1",
            Some(20),
            "onecycle:max_lr=0.1,total_steps=none,epochs=none,steps_per_epoch=none,pct_start=0.3,anneal_strategy=cos,cycle_momentum=true,base_momentum=0.85,max_momentum=0.95,div_factor=25.0,final_div_factor=10000.0,three_phase=false",
        ),
        (
            "ReduceLROnPlateau:patience=0,factor=0.5",
            None,
            "plateau:mode=min,factor=0.5,patience=0,threshold=0.0001,threshold_mode=rel,cooldown=0,min_lr=0.0,eps=1e-08",
        ),
        ("SWALR:swa_lr=0.05", None, "swalr:swa_lr=0.05,anneal_epochs=10,anneal_strategy=cos"),
        (
            "WarmupCosineLR:warmup_iters=2,lr_decay_iters=8,min_lr=1e-3",
            None,
            "warmup-cosine:warmup_steps=2,decay_steps=8,min_lr=0.001",
        ),
        (
            "SequentialLR:schedulers=[ConstantLR:factor=0.5,total_iters=2;MultiStepLR:milestones=[1;2]],milestones=3",
            None,
            "sequential:schedulers=[constant:factor=0.5,total_iters=2;[multistep:milestones=1;2,gamma=0.1]],milestones=3",
        ),
    ];
    let mut seen: Vec<String> = Vec::new();
    for (given, hint, want) in cases {
        let resolved = reg.resolve(&given.parse()?)?;
        ensure!(
            resolved.to_string() == want,
            "{given}: {resolved}, want {want}"
        );
        ensure!(
            reg.resolve(&resolved)? == resolved,
            "{resolved} is not a fixed point"
        );
        if !seen.contains(&resolved.name) {
            seen.push(resolved.name.clone());
        }
        let seq = |spec: &str| -> Result<Vec<f64>> {
            let mut o = DictOpt::new("sgd", &[0.1], false)?;
            let mut s = reg.build(spec, &mut o, hint)?;
            let mut out = vec![o.groups[0]["lr"]];
            for i in 0..12 {
                if s.needs_metric() {
                    // A metric that stops improving after 3 steps.
                    s.step_with_metric(&mut o, f64::from(i.min(3)))?;
                } else {
                    s.step(&mut o)?;
                }
                out.push(o.groups[0]["lr"]);
            }
            Ok(out)
        };
        let (a, b) = (seq(given)?, seq(&resolved.to_string())?);
        ensure!(a == b, "{given}: {a:?} vs {b:?}");
        ensure!(
            a.windows(2).any(|w| w[0] != w[1]),
            "{given}: {a:?} never changes"
        );
    }
    // Every spec-buildable scheduler was covered.
    ensure!(seen.len() == reg.names().len(), "{seen:?}");
    // One naming style: canonical names are kebab-case.
    ensure!(
        reg.names().iter().all(|n| !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')),
        "{:?}",
        reg.names()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// AveragedModel.

fn named(values: &Value, shapes: &Value) -> Result<Vec<NamedParameter>> {
    let mut out = Vec::new();
    for name in ["w", "b"] {
        let data: Vec<f32> = nums(&values[name])?.iter().map(|x| *x as f32).collect();
        let shape: Vec<i64> = shapes[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        let t = Tensor::f_from_slice(&data)?.f_reshape(&shape)?;
        out.push(NamedParameter {
            name: name.into(),
            tensor: t,
        });
    }
    Ok(out)
}

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.f_to_kind(Kind::Double)?.f_flatten(0, -1)?;
    Ok(Vec::<f64>::try_from(&t)?)
}

#[test]
fn averaged_model_matches_pytorch() -> Result<()> {
    let f = fixture("averaged.json")?;
    let inputs = f["inputs"].as_array().ok_or_else(|| anyhow!("inputs"))?;
    for run in f["runs"].as_array().ok_or_else(|| anyhow!("runs"))? {
        let strategy = match run["decay"].is_null() {
            true => AveragingStrategy::Swa,
            false => AveragingStrategy::Ema {
                decay: num(&run["decay"])?,
            },
        };
        let first = named(&inputs[0], &f["shapes"])?;
        let mut avg = AveragedModel::new(&first, strategy)?;
        for (i, (values, want)) in inputs
            .iter()
            .zip(run["history"].as_array().into_iter().flatten())
            .enumerate()
        {
            let params = named(values, &f["shapes"])?;
            avg.update(&params)?;
            for name in ["w", "b"] {
                let got = flat(avg.get(name).ok_or_else(|| anyhow!("no {name}"))?)?;
                check_exact(
                    &format!("{} update {i} {name}", run["name"]),
                    &[got],
                    &[nums(&want[name])?],
                )?;
            }
            ensure!(avg.n_averaged() == i as i64 + 1);
        }
    }
    Ok(())
}

#[test]
fn averaged_model_state_round_trip_and_errors() -> Result<()> {
    let f = fixture("averaged.json")?;
    let inputs = f["inputs"].as_array().ok_or_else(|| anyhow!("inputs"))?;
    let p = |i: usize| named(&inputs[i], &f["shapes"]);
    for strategy in [
        AveragingStrategy::Swa,
        AveragingStrategy::Ema { decay: 0.9 },
    ] {
        let mut a = AveragedModel::new(&p(0)?, strategy)?;
        for i in 0..3 {
            a.update(&p(i)?)?;
        }
        let st = a.state_dict()?;
        ensure!(
            st.tensors
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                == ["module.w", "module.b"]
        );
        let mut b = AveragedModel::new(&p(0)?, strategy)?;
        let scalars: Value = serde_json::from_str(&serde_json::to_string(&st.scalars)?)?;
        b.load_state_dict(&kiln_optim::swa::AveragedState {
            tensors: st.tensors,
            scalars,
        })?;
        for i in 3..7 {
            a.update(&p(i)?)?;
            b.update(&p(i)?)?;
        }
        ensure!(b.n_averaged() == 7);
        for name in ["w", "b"] {
            let (x, y) = (
                flat(a.get(name).ok_or_else(|| anyhow!("w"))?)?,
                flat(b.get(name).ok_or_else(|| anyhow!("w"))?)?,
            );
            ensure!(x == y, "{name} differs after the round trip");
        }
        // copy_to writes the averages into the model.
        let model = p(6)?;
        a.copy_to(&model)?;
        ensure!(flat(&model[0].tensor)? == flat(a.get("w").ok_or_else(|| anyhow!("w"))?)?);
    }
    let e = AveragedModel::new(&p(0)?, AveragingStrategy::Ema { decay: 1.5 })
        .err()
        .map(|e| e.to_string());
    ensure!(
        e.as_deref()
            == Some("Invalid decay value 1.5 provided. Please provide a value in [0,1] range.")
    );
    let mut a = AveragedModel::new(&p(0)?, AveragingStrategy::Swa)?;
    let mut wrong = p(1)?;
    wrong.swap(0, 1);
    ensure!(a.update(&wrong).is_err());
    let ema = AveragedModel::new(&p(0)?, AveragingStrategy::Ema { decay: 0.5 })?.state_dict()?;
    ensure!(
        a.load_state_dict(&ema).is_err(),
        "loading an EMA state into SWA must fail"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Trait defaults and `initial_lr` bookkeeping.

/// A downstream scheduler that implements only the required methods.
struct Halving {
    last_lr: Vec<f64>,
    epoch: i64,
}

impl LrScheduler for Halving {
    fn name(&self) -> &str {
        "halving"
    }
    fn step(&mut self, opt: &mut dyn Optimizer) -> kiln_optim::Result<()> {
        let lr = opt.lr(0).unwrap_or_default() / 2.0;
        opt.set_lr(0, lr)?;
        self.last_lr = vec![lr];
        self.epoch += 1;
        Ok(())
    }
    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }
    fn last_epoch(&self) -> i64 {
        self.epoch
    }
    fn state_dict(&self) -> Value {
        Value::Null
    }
    fn load_state_dict(&mut self, _state: &Value) -> kiln_optim::Result<()> {
        Ok(())
    }
}

#[test]
fn trait_defaults_and_initial_lr() -> Result<()> {
    let mut o = DictOpt::new("sgd", &[0.1, 0.2], false)?;
    let mut s = StepLrConfig {
        step_size: 1,
        gamma: 0.5,
    }
    .build(&mut o)?;
    ensure!(o.groups[0]["initial_lr"] == 0.1 && o.groups[1]["initial_lr"] == 0.2);
    ensure!(s.last_epoch() == 0 && s.name() == "step" && !s.needs_metric());
    s.step_with_metric(&mut o, 123.0)?; // the metric is ignored
    ensure!(s.last_epoch() == 1 && s.last_lr() == [0.05, 0.1]);
    // OneCycleLR overwrites initial_lr; a later scheduler takes it as base_lr.
    let _one = OneCycleLrConfig::new(1.0, 10).build(&mut o)?;
    ensure!(o.groups[0]["initial_lr"] == 0.04);
    let lam = LambdaLr::new(&mut o, Box::new(|_| 1.0))?;
    ensure!(lam.last_lr() == [0.04, 0.04]);
    // A scheduler without update_lr_at can only come first in a SequentialLR.
    let mut o = DictOpt::new("sgd", &[0.1], false)?;
    let first: Box<dyn LrScheduler> = Box::new(ExponentialLrConfig { gamma: 0.9 }.build(&mut o)?);
    let second: Box<dyn LrScheduler> = Box::new(Halving {
        last_lr: vec![0.1],
        epoch: 0,
    });
    let mut seq = SequentialLr::new(&mut o, vec![first, second], vec![2])?;
    seq.step(&mut o)?;
    let e = seq
        .step(&mut o)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(e.starts_with("halving cannot restart at an epoch"), "{e}");
    let mut o = DictOpt::new("sgd", &[0.1], false)?;
    let second: Box<dyn LrScheduler> = Box::new(ExponentialLrConfig { gamma: 0.9 }.build(&mut o)?);
    let first: Box<dyn LrScheduler> = Box::new(Halving {
        last_lr: vec![0.1],
        epoch: 0,
    });
    let mut seq = SequentialLr::new(&mut o, vec![first, second], vec![2])?;
    seq.step(&mut o)?;
    seq.step(&mut o)?;
    ensure!(
        o.groups[0]["lr"] == 0.1,
        "ExponentialLR restarts from initial_lr at the milestone"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Schedulers from nested specs (SequentialLR) and nanoGPT's warmup-cosine,
// against `tests/golden/schedulers/spec_reference.py` run at test time.

static SPEC_REFERENCE: OnceLock<Result<Value, String>> = OnceLock::new();

/// The reference script's cases, computed once per test binary.
fn spec_reference() -> Result<Value> {
    SPEC_REFERENCE
        .get_or_init(|| {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/schedulers/spec_reference.py"
            );
            common::reference_output(script, &[])
                .and_then(|out| Ok(serde_json::from_str(&out)?))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

/// The lrs of `spec` built on `opt` with the run's `total` steps, after
/// building and after each of `steps` steps.
fn spec_lrs(spec: &str, opt: &mut DictOpt, total: Option<usize>, steps: usize) -> Result<Rows> {
    let mut s = schedulers().build(spec, opt, total)?;
    let mut out = vec![opt.lrs()];
    for _ in 0..steps {
        s.step(opt)?;
        ensure!(
            s.last_lr() == opt.lrs().as_slice(),
            "last_lr() differs from the groups"
        );
        out.push(opt.lrs());
    }
    Ok(out)
}

/// Every case bit for bit, with an optimizer that stores `initial_lr` and
/// one that cannot (kiln's own), from the given spec and from its resolved
/// form; stopped halfway, saved through JSON text and continued in a fresh
/// build; and (warmup-cosine) resumed with PyTorch's `last_epoch`.
#[test]
fn specs_match_pytorch_and_nanogpt() -> Result<()> {
    let reference = spec_reference()?;
    let cases = reference["cases"]
        .as_array()
        .ok_or_else(|| anyhow!("no cases"))?;
    ensure!(cases.len() >= 9, "only {} cases", cases.len());
    let reg = schedulers();
    let mut failures = Failures::default();
    for case in cases {
        let spec = case["spec"].as_str().unwrap_or_default();
        let result = (|| -> Result<()> {
            let lrs = nums(&case["lrs"])?;
            let total = case["total_steps"].as_u64().map(|t| t as usize);
            let want = table(&case["lr"])?;
            let steps = want.len() - 1;
            let resolved = reg.resolve(&spec.parse()?)?.to_string();
            ensure!(
                reg.resolve(&resolved.parse()?)?.to_string() == resolved,
                "{resolved} is not a fixed point"
            );
            for strict in [false, true] {
                for text in [spec, resolved.as_str()] {
                    let mut o = DictOpt::new("sgd", &lrs, strict)?;
                    let got = spec_lrs(text, &mut o, total, steps)?;
                    check_exact(&format!("{text} (strict: {strict})"), &got, &want)?;
                }
            }
            // Save halfway, build afresh, restore the optimizer, load, continue.
            let k = steps / 2;
            let mut o = DictOpt::new("sgd", &lrs, true)?;
            let mut s = reg.build(spec, &mut o, total)?;
            for _ in 0..k {
                s.step(&mut o)?;
            }
            let state = serde_json::to_string(&s.state_dict())?;
            let saved = o.groups.clone();
            let mut o = DictOpt::new("sgd", &lrs, true)?;
            let mut s = reg.build(spec, &mut o, total)?;
            o.groups = saved;
            s.load_state_dict(&serde_json::from_str(&state)?)?;
            let mut got = vec![o.lrs()];
            for _ in k..steps {
                s.step(&mut o)?;
                got.push(o.lrs());
            }
            check_exact("resumed from its state", &got, &want[k..])?;
            if resolved.starts_with("warmup-cosine:") {
                // `WarmupCosine(..., last_epoch=k)` on groups holding initial_lr.
                let mut o = DictOpt::new("sgd", want.get(k).map_or(&[][..], |v| v), false)?;
                for (g, base) in o.groups.iter_mut().zip(&lrs) {
                    g.insert("initial_lr".into(), *base);
                }
                let k = i64::try_from(k)?;
                resume_at(&mut o, k, |o| reg.build(spec, o, total))?;
                let next = want
                    .get(k as usize + 1)
                    .ok_or_else(|| anyhow!("short case"))?;
                ensure!(
                    o.lrs() == *next,
                    "resume_at({k}): {:?}, want {next:?}",
                    o.lrs()
                );
            }
            Ok(())
        })();
        failures.record(spec, result);
    }
    failures.finish("spec cases")
}

#[test]
fn spec_schedulers_refuse_bad_options() -> Result<()> {
    let reg = schedulers();
    let err = |spec: &str, hint: Option<usize>| -> Result<(String, DictOpt)> {
        let mut o = DictOpt::new("sgd", &[0.1], false)?;
        let e = reg
            .build(spec, &mut o, hint)
            .err()
            .map(|e| e.to_string())
            .ok_or_else(|| anyhow!("{spec} built"))?;
        Ok((e, o))
    };
    let untouched =
        |o: &DictOpt| o.groups[0]["lr"] == 0.1 && !o.groups[0].contains_key("initial_lr");
    for (spec, hint, want) in [
        (
            "warmup-cosine:warmup_steps=5,decay_steps=5",
            None,
            "warmup-cosine: warmup_steps (5) must be less than decay_steps (5)",
        ),
        (
            "warmup-cosine:warmup_steps=8",
            Some(4),
            "warmup-cosine: warmup_steps (8) must be less than decay_steps (4)",
        ),
        (
            "warmup-cosine:warmup_steps=1,decay_steps=5,min_lr=-1e-5",
            None,
            "warmup-cosine: min_lr must be a finite number >= 0, got -1e-05",
        ),
        (
            "warmup-cosine:warmup_steps=1,decay_steps=5,min_lr=nan",
            None,
            "warmup-cosine: min_lr must be a finite number >= 0, got nan",
        ),
        (
            "warmup-cosine:warmup_steps=1",
            None,
            "warmup-cosine: option decay_steps is required (no total steps known)",
        ),
        ("warmup-cosine", Some(5), "warmup-cosine: option warmup_steps is required"),
        (
            "warmup-cosine:warmup_steps=1,warmup_iters=2",
            None,
            "warmup-cosine: option warmup_steps is given twice (as warmup_steps and warmup_iters)",
        ),
        (
            "sequential:schedulers=[linear;cosine:t_max=3],milestones=[2;4]",
            None,
            "Sequential Schedulers expects number of schedulers provided to be one more than the number of \
             milestone points, but got number of schedulers 2 and the number of milestones to be equal to 2",
        ),
        (
            "sequential:schedulers=[],milestones=[]",
            None,
            "SequentialLR expects at least one scheduler, but got no scheduler.",
        ),
        ("sequential:milestones=2", None, "sequential: option schedulers is required"),
        (
            "sequential:schedulers=[linear;cosin],milestones=2",
            None,
            "sequential: option schedulers: unknown scheduler 'cosin' (did you mean 'cosine'?); accepted: ",
        ),
        (
            "sequential:schedulers=[linear;step:step_size=2,gama=0.5],milestones=2",
            None,
            "sequential: option schedulers: step: unknown option(s) gama (did you mean gamma?); accepted: step_size, gamma",
        ),
        (
            "sequential:schedulers=[linear;lambda],milestones=2",
            None,
            "sequential: option schedulers: scheduler 'lambda' is built from code",
        ),
        (
            "sequential:schedulers=[linear;step:step_size=2,[gamma=0.5]],milestones=2",
            None,
            "sequential: option schedulers=[linear;step:step_size=2,[gamma=0.5]] is not a ;-separated list of specs",
        ),
    ] {
        let (e, o) = err(spec, hint)?;
        ensure!(e.starts_with(want), "{spec}: got '{e}', want '{want}'");
        ensure!(untouched(&o), "{spec}: a refused spec touched the optimizer");
    }
    // Refused while the schedulers are built, as PyTorch's constructors refuse.
    let (e, _) = err(
        "sequential:schedulers=[linear;constant:factor=2],milestones=2",
        None,
    )?;
    ensure!(
        e == "sequential: scheduler 1 (constant): Constant multiplicative factor expected to be between 0 and 1.",
        "{e}"
    );
    let (e, _) = err("sequential:schedulers=[linear;plateau],milestones=2", None)?;
    ensure!(
        e.starts_with("SequentialLR does not support `ReduceLROnPlateau` scheduler"),
        "{e}"
    );
    // Which schedules are written per batch (the loop's default interval).
    use kiln_optim::scheduler::steps_per_batch;
    for (spec, per_batch) in [
        ("warmup-cosine:warmup_steps=1", true),
        ("onecycle:max_lr=0.1", true),
        ("step:step_size=2", false),
        ("sequential:schedulers=[linear;cosine],milestones=2", false),
        (
            "sequential:schedulers=[linear;onecycle:max_lr=0.1,total_steps=5],milestones=2",
            true,
        ),
    ] {
        let resolved = reg.resolve(&spec.parse()?)?;
        ensure!(steps_per_batch(&resolved) == per_batch, "{resolved}");
    }
    Ok(())
}
