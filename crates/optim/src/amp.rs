//! Gradient scaling for float16 mixed precision: `torch.amp.GradScaler`.
//!
//! [`GradScaler`] repeats PyTorch 2.11's `torch/amp/grad_scaler.py` step for
//! step on libtorch's own kernels, so a training run with it has PyTorch's
//! numbers bit for bit:
//!
//! - [`GradScaler::scale`] multiplies the loss by the scale, a float32 0-dim
//!   tensor created lazily on the loss's device (initially `init_scale`, 2^16);
//! - [`GradScaler::unscale_`] groups the optimizer's gradients by device and
//!   dtype (first-occurrence order) and runs
//!   `_amp_foreach_non_finite_check_and_unscale_` on each group with the
//!   inverse scale computed as PyTorch does (`scale.double().reciprocal().float()`)
//!   and a per-device `found_inf` flag;
//! - [`GradScaler::step`] unscales unless [`GradScaler::unscale_`] already ran
//!   for this optimizer in this iteration (PyTorch's per-optimizer stage
//!   `READY → UNSCALED → STEPPED`), then steps only if no gradient was inf/NaN;
//! - [`GradScaler::update`] combines the `found_inf` flags and runs
//!   `_amp_update_scale_` (backoff ×0.5 after an overflow, growth ×2 after
//!   `growth_interval` clean steps), then starts a new iteration.
//!
//! The recipe, with clipping of unscaled gradients:
//!
//! ```no_run
//! use kiln_optim::amp::GradScaler;
//! use kiln_optim::{clip_grad_norm_, Optimizer, SgdConfig};
//! use kiln_tensor::amp::{autocast, DeviceType};
//! use kiln_tensor::nn::{self, Module};
//! use kiln_tensor::{Device, Kind, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let vs = nn::VarStore::new(Device::Cpu);
//! # let layer = kiln_tensor::init::linear(&vs.root(), 4, 2, true)?;
//! # let (x, y) = (Tensor::ones([8, 4], (Kind::Float, Device::Cpu)), Tensor::zeros([8], (Kind::Int64, Device::Cpu)));
//! # let params = kiln_tensor::params::named_parameters(&vs)?;
//! let mut opt = SgdConfig { lr: 1e-3, momentum: 0.9, ..Default::default() }.build(params)?;
//! let mut scaler = GradScaler::new(DeviceType::Cpu)?;
//! opt.zero_grad()?;
//! let loss = {
//!     let _autocast = autocast(Device::Cpu, Kind::Half)?;
//!     layer.forward(&x).f_cross_entropy_loss::<Tensor>(&y, None, kiln_tensor::Reduction::Mean, -100, 0.0)?
//! };
//! scaler.scale(&loss)?.f_backward()?;
//! scaler.unscale_(&opt)?;
//! clip_grad_norm_(vs.trainable_variables().iter(), 1.0, 2.0, false)?;
//! let stepped = scaler.step(&mut opt)?; // false: skipped, a gradient was inf/NaN
//! scaler.update()?;
//! # let _ = stepped;
//! # Ok(())
//! # }
//! ```
//!
//! Its state ([`GradScaler::state_dict`]) has PyTorch's keys (`scale`,
//! `growth_factor`, `backoff_factor`, `growth_interval`, `_growth_tracker`),
//! so a run saved after [`GradScaler::update`] resumes bit-exactly.
//!
//! Deliberate differences from PyTorch: where PyTorch warns and disables the
//! scaler (`cuda` without a CUDA device) kiln returns an error; optimizers
//! that PyTorch lets unscale inside their fused kernel
//! (`_step_supports_amp_scaling`: SGD/Adam/AdamW with `fused=true`) are
//! refused by [`GradScaler::step`] instead of taking that different path;
//! the per-optimizer stage is keyed by the optimizer's own handle on its
//! first parameter (PyTorch keys by `id(optimizer)`), which survives moving
//! the optimizer (e.g. into a `Box`) within an iteration.
use crate::{Error, Optimizer, Result};
use kiln_tensor::amp::{self as tamp, DeviceType, Precision};
use kiln_tensor::{Device, Kind, Tensor};
use serde::{Deserialize, Serialize};

/// Options of [`GradScaler`]; `Default` is `torch.amp.GradScaler()`'s
/// (device type `cuda`, as in PyTorch; use [`GradScalerConfig::new`] for CPU).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradScalerConfig {
    /// `device`: the device type the scaler is used with (`cpu` or `cuda`).
    pub device: DeviceType,
    /// `init_scale`: the initial scale factor (2^16).
    pub init_scale: f64,
    /// `growth_factor`: multiplies the scale after `growth_interval` clean steps (2.0; > 1).
    pub growth_factor: f64,
    /// `backoff_factor`: multiplies the scale after a step with inf/NaN gradients (0.5; < 1).
    pub backoff_factor: f64,
    /// `growth_interval`: consecutive clean steps before the scale grows (2000).
    pub growth_interval: i64,
    /// `enabled`: when false, `scale` returns its input, `step` just steps
    /// and the other methods do nothing.
    pub enabled: bool,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        Self::new(DeviceType::Cuda)
    }
}

impl GradScalerConfig {
    /// `torch.amp.GradScaler(device)` with PyTorch's defaults.
    pub fn new(device: DeviceType) -> Self {
        Self {
            device,
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }

    /// Validates the options as PyTorch does (only when enabled) and builds the scaler.
    pub fn build(self) -> Result<GradScaler> {
        GradScaler::with_config(self)
    }
}

/// PyTorch's per-optimizer stage within one iteration (`OptState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptState {
    /// Nothing done yet this iteration.
    Ready,
    /// [`GradScaler::unscale_`] ran.
    Unscaled,
    /// [`GradScaler::step`] ran.
    Stepped,
}

#[derive(Debug)]
struct PerOptimizer {
    /// See `optimizer_id` (PyTorch: `id(optimizer)`).
    id: usize,
    stage: OptState,
    /// One float32 0-dim flag per device that had gradients, in first-seen order.
    found_inf_per_device: Vec<(Device, Tensor)>,
}

/// The scaler's state with PyTorch's `GradScaler.state_dict()` keys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScalerState {
    /// The current scale (a float32 value).
    pub scale: f64,
    /// The growth factor.
    pub growth_factor: f64,
    /// The backoff factor.
    pub backoff_factor: f64,
    /// The growth interval.
    pub growth_interval: i64,
    /// Consecutive steps without inf/NaN since the scale last changed.
    #[serde(rename = "_growth_tracker")]
    pub growth_tracker: i64,
}

/// `torch.amp.GradScaler`: dynamic loss scaling for float16 training.
///
/// See the [module docs](self) for the recipe. One scaler can serve several
/// optimizers per iteration (`step` each, then one `update`).
#[derive(Debug)]
pub struct GradScaler {
    device: DeviceType,
    enabled: bool,
    init_scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
    init_growth_tracker: i64,
    /// float32 0-dim, created by the first `scale` on the loss's device.
    scale: Option<Tensor>,
    /// int32 0-dim, created with `scale`.
    growth_tracker: Option<Tensor>,
    per_optimizer: Vec<PerOptimizer>,
}

fn misuse(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// What identifies an optimizer across calls (PyTorch: `id(optimizer)`): the
/// address of its own handle on its first parameter, which stays put when the
/// optimizer object moves (and is unique to it: each optimizer owns its
/// handles); the object's address if it has no parameters.
fn optimizer_id(optimizer: &dyn Optimizer) -> usize {
    (0..optimizer.num_groups())
        .find_map(|g| optimizer.group_params(g).first())
        .map(|p| p.tensor.as_ptr() as usize)
        .unwrap_or_else(|| (optimizer as *const dyn Optimizer).cast::<()>() as usize)
}

/// A copy of `master` on `device`, made once per device (`_MultiDeviceReplicator`).
fn replica<'a>(
    cache: &'a mut Vec<(Device, Tensor)>,
    master: &Tensor,
    device: Device,
) -> Result<&'a Tensor> {
    let pos = match cache.iter().position(|(d, _)| *d == device) {
        Some(pos) => pos,
        None => {
            // master.to(device=device, non_blocking=True, copy=True)
            let copy = master.f_to_device_(device, master.kind(), true, true)?;
            cache.push((device, copy));
            cache.len() - 1
        }
    };
    cache
        .get(pos)
        .map(|(_, t)| t)
        .ok_or_else(|| misuse("internal: replica cache lost an entry"))
}

impl GradScaler {
    /// `torch.amp.GradScaler(device)` with PyTorch's defaults (init scale
    /// 2^16, growth 2.0, backoff 0.5, growth interval 2000, enabled).
    pub fn new(device: DeviceType) -> Result<Self> {
        Self::with_config(GradScalerConfig::new(device))
    }

    /// The scaler `precision` trains with on `device`, as in Lightning:
    /// `16-mixed` gets `torch.amp.GradScaler(device.type)` with PyTorch's
    /// defaults, `bf16-mixed` and `32-true` none.
    pub fn for_precision(precision: Precision, device: Device) -> Result<Option<Self>> {
        if !precision.needs_grad_scaler() {
            return Ok(None);
        }
        Self::new(DeviceType::of(device)?).map(Some)
    }

    /// A scaler with the given options. Errors as PyTorch raises (growth
    /// factor ≤ 1, backoff factor ≥ 1, when enabled), and where PyTorch would
    /// warn and silently disable the scaler: device `cuda` without CUDA.
    pub fn with_config(cfg: GradScalerConfig) -> Result<Self> {
        if cfg.enabled {
            if cfg.device == DeviceType::Cuda && !DeviceType::Cuda.is_available() {
                return Err(Error::InvalidArgument(
                    "GradScaler on cuda, but CUDA is not available here (PyTorch would warn and \
                     disable scaling); use device cpu"
                        .into(),
                ));
            }
            // PyTorch: `if growth_factor <= 1.0` / `if backoff_factor >= 1.0` (NaN passes).
            if cfg.growth_factor <= 1.0 {
                return Err(Error::InvalidHyperparameter(
                    "The growth factor must be > 1.0.".into(),
                ));
            }
            if cfg.backoff_factor >= 1.0 {
                return Err(Error::InvalidHyperparameter(
                    "The backoff factor must be < 1.0.".into(),
                ));
            }
        }
        Ok(Self {
            device: cfg.device,
            enabled: cfg.enabled,
            init_scale: cfg.init_scale,
            growth_factor: cfg.growth_factor,
            backoff_factor: cfg.backoff_factor,
            growth_interval: cfg.growth_interval,
            init_growth_tracker: 0,
            scale: None,
            growth_tracker: None,
            per_optimizer: Vec::new(),
        })
    }

    /// Whether scaling is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The device type given at construction.
    pub fn device(&self) -> DeviceType {
        self.device
    }

    fn scale_and_tracker(&self, funcname: &str) -> Result<(&Tensor, &Tensor)> {
        let fix = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration.";
        let scale = self
            .scale
            .as_ref()
            .ok_or_else(|| misuse(format!("Attempted {funcname} but _scale is None.  {fix}")))?;
        let tracker = self.growth_tracker.as_ref().ok_or_else(|| {
            misuse(format!(
                "Attempted {funcname} but _growth_tracker is None.  {fix}"
            ))
        })?;
        Ok((scale, tracker))
    }

    fn lazy_init(&mut self, device: Device) -> Result<&Tensor> {
        if self.scale.is_none() {
            self.scale = Some(Tensor::f_full(
                [] as [i64; 0],
                self.init_scale,
                (Kind::Float, device),
            )?);
            self.growth_tracker = Some(Tensor::f_full(
                [] as [i64; 0],
                self.init_growth_tracker,
                (Kind::Int, device),
            )?);
        }
        self.scale
            .as_ref()
            .ok_or_else(|| misuse("_scale should not be None after lazy init"))
    }

    /// `scaler.scale(outputs)`: `outputs * scale` (the scale moved to the
    /// outputs' device); `outputs` unchanged (a shallow clone) when disabled.
    pub fn scale(&mut self, outputs: &Tensor) -> Result<Tensor> {
        if !self.enabled {
            return Ok(outputs.shallow_clone());
        }
        let device = outputs.device();
        let scale = self.lazy_init(device)?;
        Ok(outputs.f_mul(&scale.f_to_device(device)?)?)
    }

    /// `scaler.scale([o1, o2, ...])`: each output times the scale, with one
    /// copy of the scale per device (PyTorch's multi-output path).
    pub fn scale_each(&mut self, outputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        if !self.enabled {
            return Ok(outputs.iter().map(|t| t.shallow_clone()).collect());
        }
        let mut stash: Vec<(Device, Tensor)> = Vec::new();
        let mut out = Vec::with_capacity(outputs.len());
        for t in outputs {
            let master = self.lazy_init(t.device())?.shallow_clone();
            out.push(t.f_mul(replica(&mut stash, &master, t.device())?)?);
        }
        Ok(out)
    }

    fn state_of(&mut self, optimizer: &dyn Optimizer) -> &mut PerOptimizer {
        let id = optimizer_id(optimizer);
        let pos = match self.per_optimizer.iter().position(|s| s.id == id) {
            Some(pos) => pos,
            None => {
                self.per_optimizer.push(PerOptimizer {
                    id,
                    stage: OptState::Ready,
                    found_inf_per_device: Vec::new(),
                });
                self.per_optimizer.len() - 1
            }
        };
        &mut self.per_optimizer[pos]
    }

    /// The stage of `optimizer` in the current iteration.
    pub fn stage(&self, optimizer: &dyn Optimizer) -> OptState {
        let id = optimizer_id(optimizer);
        self.per_optimizer
            .iter()
            .find(|s| s.id == id)
            .map_or(OptState::Ready, |s| s.stage)
    }

    /// Whether the gradients of `optimizer` checked this iteration held an
    /// inf or NaN (`None` before `unscale_`/`step` ran for it).
    pub fn found_inf(&self, optimizer: &dyn Optimizer) -> Result<Option<bool>> {
        let id = optimizer_id(optimizer);
        let Some(state) = self.per_optimizer.iter().find(|s| s.id == id) else {
            return Ok(None);
        };
        if state.found_inf_per_device.is_empty() {
            return Ok(None);
        }
        Ok(Some(sum_found_inf(&state.found_inf_per_device)? != 0.0))
    }

    /// `_unscale_grads_`: the gradients of `optimizer` grouped by device and
    /// dtype, each group through `_amp_foreach_non_finite_check_and_unscale_`.
    fn unscale_grads(
        optimizer: &dyn Optimizer,
        inv_scale: &Tensor,
        found_inf: &Tensor,
        allow_fp16: bool,
    ) -> Result<Vec<(Device, Tensor)>> {
        let _no_grad = kiln_tensor::tch::no_grad_guard();
        type DtypeGroups = Vec<(Kind, Vec<Tensor>)>;
        let mut groups: Vec<(Device, DtypeGroups)> = Vec::new();
        for g in 0..optimizer.num_groups() {
            for p in optimizer.group_params(g) {
                if !kiln_tensor::ops::has_grad(&p.tensor)? {
                    continue;
                }
                let grad = p.tensor.f_grad()?;
                if !allow_fp16 && grad.kind() == Kind::Half {
                    return Err(misuse("Attempting to unscale FP16 gradients."));
                }
                let to_unscale = if grad.is_sparse() {
                    if grad.kind() == Kind::Half {
                        // PyTorch coalesces and replaces `param.grad` here; only
                        // reachable with fused optimizers, which kiln refuses.
                        return Err(misuse(format!(
                            "{}: float16 sparse gradients are not supported by kiln's GradScaler",
                            p.name
                        )));
                    }
                    grad.f_internal_values()?
                } else {
                    grad
                };
                let (device, kind) = (to_unscale.device(), to_unscale.kind());
                let pos = match groups.iter().position(|(d, _)| *d == device) {
                    Some(pos) => pos,
                    None => {
                        groups.push((device, Vec::new()));
                        groups.len() - 1
                    }
                };
                let per_dtype = &mut groups[pos].1;
                match per_dtype.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, v)) => v.push(to_unscale),
                    None => per_dtype.push((kind, vec![to_unscale])),
                }
            }
        }
        let mut found_infs: Vec<(Device, Tensor)> = Vec::new();
        let mut inv_scales: Vec<(Device, Tensor)> = Vec::new();
        for (device, per_dtype) in &groups {
            for (_, grads) in per_dtype {
                let refs: Vec<&Tensor> = grads.iter().collect();
                let found = replica(&mut found_infs, found_inf, *device)?.shallow_clone();
                let inv = replica(&mut inv_scales, inv_scale, *device)?;
                tamp::amp_foreach_non_finite_check_and_unscale_(&refs, &found, inv)?;
            }
        }
        Ok(found_infs)
    }

    /// `scaler.unscale_(optimizer)`: divides the optimizer's gradients by the
    /// scale in place (multiplying by `scale.double().reciprocal().float()`)
    /// and records whether any was inf/NaN. Optional: [`GradScaler::step`]
    /// does it otherwise; call it to clip or inspect unscaled gradients.
    /// At most once per optimizer between two [`GradScaler::update`]s, and not
    /// after `step`. A no-op when disabled.
    pub fn unscale_(&mut self, optimizer: &dyn Optimizer) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let (scale, _) = self.scale_and_tracker("unscale_")?;
        let scale = scale.shallow_clone();
        match self.state_of(optimizer).stage {
            OptState::Unscaled => {
                return Err(misuse(
                    "unscale_() has already been called on this optimizer since the last update().",
                ))
            }
            OptState::Stepped => return Err(misuse("unscale_() is being called after step().")),
            OptState::Ready => {}
        }
        // "FP32 division can be imprecise for certain compile options, so we
        // carry out the reciprocal in FP64."
        let inv_scale = scale
            .f_to_kind(Kind::Double)?
            .f_reciprocal()?
            .f_to_kind(Kind::Float)?;
        let found_inf = Tensor::f_full([] as [i64; 0], 0.0, (Kind::Float, scale.device()))?;
        let found = Self::unscale_grads(optimizer, &inv_scale, &found_inf, false)?;
        let state = self.state_of(optimizer);
        state.found_inf_per_device = found;
        state.stage = OptState::Unscaled;
        Ok(())
    }

    /// Errors if `optimizer` cannot be stepped through the scaler: one that
    /// needs a closure (LBFGS; PyTorch: "Closure use is not currently
    /// supported") or a fused one (PyTorch unscales inside the fused kernel,
    /// a path kiln does not implement). Lets a CLI refuse before a run starts.
    pub fn check_optimizer(&self, optimizer: &dyn Optimizer) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if optimizer.requires_closure() {
            return Err(misuse(format!(
                "Closure use is not currently supported if GradScaler is enabled ({} needs a closure); \
                 use another optimizer or disable the scaler",
                optimizer.name()
            )));
        }
        let fused = (0..optimizer.num_groups()).any(|g| {
            optimizer
                .hyperparameter(g, "fused")
                .is_some_and(|v| v != 0.0)
        });
        if fused {
            return Err(misuse(format!(
                "GradScaler with {}:fused=true is not supported (PyTorch unscales inside the fused kernel); \
                 use fused=false",
                optimizer.name()
            )));
        }
        Ok(())
    }

    /// `scaler.step(optimizer)`: unscales the gradients unless
    /// [`GradScaler::unscale_`] already did this iteration, then calls
    /// `optimizer.step()` only if no gradient was inf/NaN. Returns whether
    /// the optimizer stepped. Disabled: just steps (returns true).
    pub fn step(&mut self, optimizer: &mut dyn Optimizer) -> Result<bool> {
        if !self.enabled {
            optimizer.step()?;
            return Ok(true);
        }
        self.check_optimizer(optimizer)?;
        self.scale_and_tracker("step")?;
        let stage = self.state_of(optimizer).stage;
        if stage == OptState::Stepped {
            return Err(misuse(
                "step() has already been called since the last update().",
            ));
        }
        if stage == OptState::Ready {
            self.unscale_(optimizer)?;
        }
        let state = self.state_of(optimizer);
        if state.found_inf_per_device.is_empty() {
            return Err(misuse("No inf checks were recorded for this optimizer."));
        }
        // `if not sum(v.item() for v in found_inf_per_device.values())`
        let found = sum_found_inf(&state.found_inf_per_device)?;
        let stepped = found == 0.0;
        if stepped {
            optimizer.step()?;
        }
        self.state_of(optimizer).stage = OptState::Stepped;
        Ok(stepped)
    }

    /// `scaler.update()`: backs the scale off if any optimizer saw inf/NaN
    /// gradients this iteration, grows it after `growth_interval` clean
    /// iterations (`_amp_update_scale_`), and starts the next iteration.
    pub fn update(&mut self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let (scale, tracker) = self.scale_and_tracker("update")?;
        let device = scale.device();
        let mut found_infs = Vec::new();
        for state in &self.per_optimizer {
            for (_, found) in &state.found_inf_per_device {
                found_infs.push(found.f_to_device(device)?);
            }
        }
        let Some(combined) = found_infs.first() else {
            return Err(misuse("No inf checks were recorded prior to update."));
        };
        for other in found_infs.iter().skip(1) {
            let _ = combined.shallow_clone().f_add_(other)?;
        }
        tamp::amp_update_scale_(
            scale,
            tracker,
            combined,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        )?;
        self.per_optimizer.clear();
        Ok(())
    }

    /// `scaler.update(new_scale)`: sets the scale to `new_scale` (rounded to
    /// float32) instead of updating it, and starts the next iteration.
    pub fn update_to(&mut self, new_scale: f64) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let (scale, _) = self.scale_and_tracker("update")?;
        let _ = scale.shallow_clone().f_fill_(new_scale)?;
        self.per_optimizer.clear();
        Ok(())
    }

    /// `scaler.get_scale()`: the current scale (the initial one before the
    /// first [`GradScaler::scale`]); 1.0 when disabled.
    pub fn get_scale(&self) -> Result<f64> {
        if !self.enabled {
            return Ok(1.0);
        }
        match &self.scale {
            None => Ok(self.init_scale),
            Some(s) => Ok(s.f_double_value(&[])?),
        }
    }

    /// The growth factor.
    pub fn growth_factor(&self) -> f64 {
        self.growth_factor
    }

    /// Sets the growth factor (unchecked, as in PyTorch).
    pub fn set_growth_factor(&mut self, factor: f64) {
        self.growth_factor = factor;
    }

    /// The backoff factor.
    pub fn backoff_factor(&self) -> f64 {
        self.backoff_factor
    }

    /// Sets the backoff factor (unchecked, as in PyTorch).
    pub fn set_backoff_factor(&mut self, factor: f64) {
        self.backoff_factor = factor;
    }

    /// The growth interval.
    pub fn growth_interval(&self) -> i64 {
        self.growth_interval
    }

    /// Sets the growth interval.
    pub fn set_growth_interval(&mut self, interval: i64) {
        self.growth_interval = interval;
    }

    /// Consecutive clean steps counted toward the next growth (0 when disabled).
    pub fn growth_tracker(&self) -> Result<i64> {
        if !self.enabled {
            return Ok(0);
        }
        match &self.growth_tracker {
            None => Ok(self.init_growth_tracker),
            Some(t) => Ok(t.f_int64_value(&[])?),
        }
    }

    /// The state to checkpoint (`None` when disabled). Take it after
    /// [`GradScaler::update`], as PyTorch advises.
    pub fn state(&self) -> Result<Option<GradScalerState>> {
        if !self.enabled {
            return Ok(None);
        }
        Ok(Some(GradScalerState {
            scale: self.get_scale()?,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
            growth_tracker: self.growth_tracker()?,
        }))
    }

    /// Restores a state from [`GradScaler::state`] (`load_state_dict`'s
    /// effect); a no-op when disabled.
    pub fn load_state(&mut self, state: &GradScalerState) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.init_scale = state.scale;
        if let Some(s) = &self.scale {
            let _ = s.shallow_clone().f_fill_(state.scale)?;
        }
        self.growth_factor = state.growth_factor;
        self.backoff_factor = state.backoff_factor;
        self.growth_interval = state.growth_interval;
        self.init_growth_tracker = state.growth_tracker;
        if let Some(t) = &self.growth_tracker {
            let _ = t.shallow_clone().f_fill_(state.growth_tracker)?;
        }
        Ok(())
    }

    /// `scaler.state_dict()` as JSON: PyTorch's five keys, or `{}` when disabled.
    pub fn state_dict(&self) -> Result<serde_json::Value> {
        match self.state()? {
            None => Ok(serde_json::json!({})),
            Some(state) => serde_json::to_value(state)
                .map_err(|e| Error::State(format!("cannot serialise the GradScaler state: {e}"))),
        }
    }

    /// `scaler.load_state_dict(state_dict)` from JSON with PyTorch's keys
    /// (also one written by PyTorch's `json.dump(scaler.state_dict())`).
    /// A no-op when disabled; an empty dict is an error, as in PyTorch.
    pub fn load_state_dict(&mut self, state_dict: &serde_json::Value) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        if state_dict
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
        {
            return Err(Error::State(
                "The source state dict is empty, possibly because it was saved from a disabled \
                 instance of GradScaler."
                    .into(),
            ));
        }
        let state: GradScalerState = serde_json::from_value(state_dict.clone())
            .map_err(|e| Error::State(format!("GradScaler state dict: {e}")))?;
        self.load_state(&state)
    }
}

/// `sum(v.item() for v in found_inf_per_device.values())`.
fn sum_found_inf(found: &[(Device, Tensor)]) -> Result<f64> {
    let mut total = 0.0;
    for (_, t) in found {
        total += t.f_double_value(&[])?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NamedParameter, SgdConfig};

    fn param(name: &str, values: &[f32], grad: Option<&[f32]>) -> Result<NamedParameter> {
        let t = Tensor::from_slice(values).set_requires_grad(true);
        if let Some(g) = grad {
            let g = Tensor::from_slice(g);
            (&t * &g).f_sum(Kind::Float)?.f_backward()?;
        }
        Ok(NamedParameter {
            name: name.into(),
            tensor: t,
        })
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t).unwrap_or_default()
    }

    #[test]
    fn config_defaults_and_checks() {
        let d = GradScalerConfig::default();
        assert_eq!(d.device, DeviceType::Cuda);
        assert_eq!(
            (
                d.init_scale,
                d.growth_factor,
                d.backoff_factor,
                d.growth_interval,
                d.enabled
            ),
            (65536.0, 2.0, 0.5, 2000, true)
        );
        let msg =
            |cfg: GradScalerConfig| cfg.build().err().map(|e| e.to_string()).unwrap_or_default();
        let cpu = GradScalerConfig::new(DeviceType::Cpu);
        assert_eq!(
            msg(GradScalerConfig {
                growth_factor: 1.0,
                ..cpu
            }),
            "The growth factor must be > 1.0."
        );
        assert_eq!(
            msg(GradScalerConfig {
                backoff_factor: 1.0,
                ..cpu
            }),
            "The backoff factor must be < 1.0."
        );
        // Disabled scalers are not checked, as in PyTorch.
        assert!(GradScalerConfig {
            growth_factor: 0.5,
            enabled: false,
            ..cpu
        }
        .build()
        .is_ok());
        if !DeviceType::Cuda.is_available() {
            assert!(msg(d).contains("CUDA is not available"));
            assert!(GradScalerConfig {
                enabled: false,
                ..d
            }
            .build()
            .is_ok());
        }
    }

    #[test]
    fn skip_backoff_growth_and_stages() -> Result<()> {
        let p = param("w", &[1.0, 1.0], Some(&[65536.0, 131072.0]))?;
        let w = p.tensor.shallow_clone();
        let mut opt = SgdConfig {
            lr: 1.0,
            ..Default::default()
        }
        .build(vec![p])?;
        let mut scaler = GradScalerConfig {
            growth_interval: 2,
            ..GradScalerConfig::new(DeviceType::Cpu)
        }
        .build()?;
        assert_eq!(scaler.get_scale()?, 65536.0);
        // Misuse before scale(): PyTorch's message.
        assert!(scaler
            .step(&mut opt)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("_scale is None"));
        let loss = Tensor::from_slice(&[2.0f32]).f_reshape([])?;
        assert_eq!(scaler.scale(&loss)?.double_value(&[]), 131072.0);
        // Clean step: gradients unscaled to [1, 2], then SGD steps.
        scaler.unscale_(&opt)?;
        assert_eq!(scaler.stage(&opt), OptState::Unscaled);
        assert_eq!(values(&w.f_grad()?), vec![1.0, 2.0]);
        assert!(scaler.unscale_(&opt).is_err());
        // Moving the optimizer keeps its stage (no second unscale).
        let mut opt: Box<dyn Optimizer> = Box::new(opt);
        assert_eq!(scaler.stage(opt.as_ref()), OptState::Unscaled);
        assert!(scaler.step(opt.as_mut())?);
        assert_eq!(values(&w), vec![0.0, -1.0]);
        assert!(scaler.step(opt.as_mut()).is_err());
        assert!(scaler.unscale_(opt.as_ref()).is_err());
        scaler.update()?;
        assert_eq!(
            (scaler.get_scale()?, scaler.growth_tracker()?),
            (65536.0, 1)
        );
        // An inf gradient: the step is skipped, the scale backs off.
        let _ = w.f_grad()?.f_fill_(f64::INFINITY)?;
        assert!(!scaler.step(opt.as_mut())?);
        assert_eq!(scaler.found_inf(opt.as_ref())?, Some(true));
        assert_eq!(values(&w), vec![0.0, -1.0]);
        scaler.update()?;
        assert_eq!(
            (scaler.get_scale()?, scaler.growth_tracker()?),
            (32768.0, 0)
        );
        // Two clean steps: growth.
        for _ in 0..2 {
            let _ = w.f_grad()?.f_fill_(0.0)?;
            assert!(scaler.step(opt.as_mut())?);
            scaler.update()?;
        }
        assert_eq!(
            (scaler.get_scale()?, scaler.growth_tracker()?),
            (65536.0, 0)
        );
        assert!(scaler
            .update()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("No inf checks"));
        scaler.update_to(8.0)?;
        assert_eq!(scaler.get_scale()?, 8.0);
        Ok(())
    }

    #[test]
    fn fp16_grads_closures_and_fused_are_refused() -> Result<()> {
        let mut scaler = GradScaler::new(DeviceType::Cpu)?;
        let _ = scaler.scale(&Tensor::from_slice(&[1.0f32]))?;
        let half = Tensor::from_slice(&[1.0f32])
            .f_to_kind(Kind::Half)?
            .set_requires_grad(true);
        half.f_sum(Kind::Half)?.f_backward()?;
        let opt = SgdConfig::default().build(vec![NamedParameter {
            name: "h".into(),
            tensor: half,
        }])?;
        let err = scaler.unscale_(&opt).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("Attempting to unscale FP16 gradients.")
        );
        let p = param("w", &[1.0], Some(&[1.0]))?;
        let mut fused = SgdConfig {
            fused: true,
            ..Default::default()
        }
        .build(vec![p])?;
        assert!(scaler
            .step(&mut fused)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("fused=true"));
        let p = param("w", &[1.0], Some(&[1.0]))?;
        let lbfgs = crate::LbfgsConfig::default().build(vec![p])?;
        assert!(scaler.check_optimizer(&lbfgs).is_err());
        Ok(())
    }

    #[test]
    fn scaler_per_precision() -> Result<()> {
        let scaler = GradScaler::for_precision(Precision::F16Mixed, Device::Cpu)?;
        assert_eq!(
            scaler.as_ref().map(GradScaler::device),
            Some(DeviceType::Cpu)
        );
        assert_eq!(scaler.map(|s| s.get_scale().unwrap_or(0.0)), Some(65536.0));
        assert!(GradScaler::for_precision(Precision::Bf16Mixed, Device::Cpu)?.is_none());
        assert!(GradScaler::for_precision(Precision::F32True, Device::Cpu)?.is_none());
        assert!(GradScaler::for_precision(Precision::F16Mixed, Device::Mps).is_err());
        Ok(())
    }

    #[test]
    fn disabled_is_transparent() -> Result<()> {
        let p = param("w", &[1.0], Some(&[3.0]))?;
        let w = p.tensor.shallow_clone();
        let mut opt = SgdConfig {
            lr: 1.0,
            ..Default::default()
        }
        .build(vec![p])?;
        let mut scaler = GradScalerConfig {
            enabled: false,
            ..GradScalerConfig::new(DeviceType::Cpu)
        }
        .build()?;
        let loss = Tensor::from_slice(&[2.0f32]);
        assert_eq!(values(&scaler.scale(&loss)?), vec![2.0]);
        scaler.unscale_(&opt)?;
        assert!(scaler.step(&mut opt)?);
        scaler.update()?;
        assert_eq!(values(&w), vec![-2.0]);
        assert_eq!(scaler.get_scale()?, 1.0);
        assert_eq!(scaler.state_dict()?, serde_json::json!({}));
        scaler.load_state_dict(&serde_json::json!({}))?;
        Ok(())
    }

    #[test]
    fn state_dict_has_pytorch_keys_and_round_trips() -> Result<()> {
        let mut scaler = GradScaler::new(DeviceType::Cpu)?;
        assert_eq!(
            scaler.state_dict()?,
            serde_json::json!({"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                               "growth_interval": 2000, "_growth_tracker": 0})
        );
        let saved = serde_json::json!({"scale": 1024.0, "growth_factor": 3.0, "backoff_factor": 0.25,
                                       "growth_interval": 7, "_growth_tracker": 5});
        scaler.load_state_dict(&saved)?;
        assert_eq!(scaler.state_dict()?, saved);
        // Lazily created tensors start from the loaded values.
        let scaled = scaler.scale(&Tensor::from_slice(&[1.0f32]))?;
        assert_eq!(values(&scaled), vec![1024.0]);
        assert_eq!(scaler.growth_tracker()?, 5);
        // Loading into a scaler whose tensors exist fills them.
        scaler.load_state_dict(
            &serde_json::json!({"scale": 2.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                                   "growth_interval": 1, "_growth_tracker": 0}),
        )?;
        assert_eq!(scaler.get_scale()?, 2.0);
        let empty = scaler
            .load_state_dict(&serde_json::json!({}))
            .err()
            .map(|e| e.to_string());
        assert!(empty.is_some_and(|e| e.contains("saved from a disabled instance")));
        assert!(scaler
            .load_state_dict(&serde_json::json!({"scale": 1.0}))
            .is_err());
        Ok(())
    }

    #[test]
    fn scale_each_and_ownership() -> Result<()> {
        fn assert_send<T: Send>() {}
        assert_send::<GradScaler>();
        let mut boxed: Box<GradScaler> = Box::new(GradScaler::new(DeviceType::Cpu)?);
        let a = Tensor::from_slice(&[1.0f32]);
        let b = Tensor::from_slice(&[0.5f32]);
        let out = boxed.scale_each(&[&a, &b])?;
        assert_eq!(
            out.iter().map(values).collect::<Vec<_>>(),
            vec![vec![65536.0], vec![32768.0]]
        );
        Ok(())
    }
}
