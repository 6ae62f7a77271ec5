//! Weight averaging: `torch.optim.swa_utils.AveragedModel` for Stochastic
//! Weight Averaging (equal weights) and exponential moving averages, over a
//! list of named tensors rather than a module (kiln has no module system: pass
//! the model's [`NamedParameter`]s, and its buffers too if they should be
//! averaged, as PyTorch's `use_buffers=True` does).
//!
//! Use it with [`crate::scheduler::Swalr`]:
//! ```no_run
//! # fn demo(params: &[kiln_optim::NamedParameter]) -> kiln_optim::Result<()> {
//! use kiln_optim::swa::{AveragedModel, AveragingStrategy};
//! let mut swa = AveragedModel::new(params, AveragingStrategy::Swa)?;
//! // after each epoch of the SWA phase:
//! swa.update(params)?;
//! // at the end, evaluate with the averaged weights:
//! swa.copy_to(params)?;
//! # Ok(()) }
//! ```
use crate::{Error, NamedParameter, Result};
use kiln_tensor::{ops, tch, Device, Kind, Tensor};
use serde_json::Value;

/// How [`AveragedModel::update`] averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AveragingStrategy {
    /// Stochastic Weight Averaging: the equal-weight running mean,
    /// `avg + (p - avg) / (n_averaged + 1)` (PyTorch's default `avg_fn=None`).
    Swa,
    /// Exponential moving average `avg = decay * avg + (1 - decay) * p`,
    /// computed as `get_ema_multi_avg_fn(decay)` does (`lerp_(p, 1 - decay)`);
    /// `decay` must be in `[0, 1]` (PyTorch's default 0.999).
    Ema {
        /// The decay rate.
        decay: f64,
    },
}

/// What [`AveragedModel::state_dict`] returns: the averaged tensors keyed
/// `module.{name}` (PyTorch's `AveragedModel.state_dict()` keys) and the
/// scalars (`n_averaged`, the strategy) as JSON.
#[derive(Debug, Default)]
pub struct AveragedState {
    /// `("module.{name}", tensor)` in parameter order.
    pub tensors: Vec<(String, Tensor)>,
    /// `{"n_averaged": n, "strategy": "swa" | "ema", "decay": "0.999"}`.
    pub scalars: Value,
}

/// `torch.optim.swa_utils.AveragedModel`: running averages of named tensors.
///
/// The first [`AveragedModel::update`] copies the tensors; later ones average
/// (PyTorch's `n_averaged == 0` rule). On CUDA the SWA update follows
/// PyTorch's foreach path (`lerp_` with weight `float32(1 / (n + 1))`), on
/// CPU its per-tensor path (`avg + (p - avg) / (n + 1)`), as PyTorch picks by
/// device. The CPU path is checked bit for bit against PyTorch; the CUDA path
/// mirrors PyTorch's code but has not been run against it yet.
#[derive(Debug)]
pub struct AveragedModel {
    strategy: AveragingStrategy,
    averaged: Vec<NamedParameter>,
    n_averaged: i64,
}

fn check_strategy(strategy: AveragingStrategy) -> Result<()> {
    if let AveragingStrategy::Ema { decay } = strategy {
        // `decay < 0.0 or decay > 1.0` in PyTorch: NaN passes.
        if !decay.is_nan() && !(0.0..=1.0).contains(&decay) {
            return Err(Error::InvalidHyperparameter(format!(
                "Invalid decay value {decay} provided. Please provide a value in [0,1] range."
            )));
        }
    }
    Ok(())
}

impl AveragedModel {
    /// Copies `params` (detached, like PyTorch's `deepcopy(model)`), each on its own device.
    pub fn new(params: &[NamedParameter], strategy: AveragingStrategy) -> Result<Self> {
        Self::build(params, strategy, None)
    }

    /// Like [`AveragedModel::new`], keeping the averages on `device`
    /// (PyTorch's `device=` argument).
    pub fn new_on(
        params: &[NamedParameter],
        strategy: AveragingStrategy,
        device: Device,
    ) -> Result<Self> {
        Self::build(params, strategy, Some(device))
    }

    fn build(
        params: &[NamedParameter],
        strategy: AveragingStrategy,
        device: Option<Device>,
    ) -> Result<Self> {
        check_strategy(strategy)?;
        let mut names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(name) = names.windows(2).find_map(|w| match w {
            [a, b] if a == b => Some(*a),
            _ => None,
        }) {
            return Err(Error::InvalidArgument(format!(
                "parameter name '{name}' appears more than once"
            )));
        }
        let averaged = params
            .iter()
            .map(|p| {
                let t = ops::detached_clone(&p.tensor)?;
                let t = match device {
                    Some(d) => t.f_to_device(d)?,
                    None => t,
                };
                Ok(NamedParameter {
                    name: p.name.clone(),
                    tensor: t,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            strategy,
            averaged,
            n_averaged: 0,
        })
    }

    /// The averaging strategy.
    pub fn strategy(&self) -> AveragingStrategy {
        self.strategy
    }

    /// How many updates have been averaged (`n_averaged`).
    pub fn n_averaged(&self) -> i64 {
        self.n_averaged
    }

    /// The averaged tensors with their names, in the order given at construction.
    pub fn parameters(&self) -> &[NamedParameter] {
        &self.averaged
    }

    /// The averaged tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.averaged
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.tensor)
    }

    fn check_match(&self, params: &[NamedParameter]) -> Result<()> {
        if params.len() != self.averaged.len() {
            return Err(Error::InvalidArgument(format!(
                "the averaged model has {} tensors, got {}",
                self.averaged.len(),
                params.len()
            )));
        }
        for (a, p) in self.averaged.iter().zip(params) {
            if a.name != p.name || a.tensor.size() != p.tensor.size() {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{}' {:?} does not match the averaged '{}' {:?}",
                    p.name,
                    p.tensor.size(),
                    a.name,
                    a.tensor.size()
                )));
            }
        }
        Ok(())
    }

    /// `update_parameters(model)`: folds the current values of `params` (same
    /// names, order and shapes as at construction) into the averages.
    pub fn update(&mut self, params: &[NamedParameter]) -> Result<()> {
        self.check_match(params)?;
        let n = self.n_averaged;
        let strategy = self.strategy;
        tch::no_grad(|| -> Result<()> {
            for (a, p) in self.averaged.iter_mut().zip(params) {
                let device = a.tensor.device();
                let model = p.tensor.f_detach()?.f_to_device(device)?;
                let avg = &mut a.tensor;
                if n == 0 {
                    avg.f_copy_(&model)?;
                    continue;
                }
                let floating = avg.is_floating_point() || avg.is_complex();
                match strategy {
                    AveragingStrategy::Ema { decay } if floating => {
                        let _ = avg.f_lerp_(&model, 1.0 - decay)?;
                    }
                    AveragingStrategy::Ema { decay } => {
                        let r = avg
                            .f_mul_scalar(decay)?
                            .f_add(&model.f_mul_scalar(1.0 - decay)?)?;
                        avg.f_copy_(&r)?;
                    }
                    AveragingStrategy::Swa if floating && device.is_cuda() => {
                        // `torch._foreach_lerp_(avg, model, 1 / (n_averaged + 1))`:
                        // the weight is a float32 tensor turned into a Scalar.
                        let weight = 1.0f32 / (n + 1) as f32;
                        let _ = avg.f_lerp_(&model, f64::from(weight))?;
                    }
                    AveragingStrategy::Swa => {
                        // `avg + (model - avg) / (n_averaged + 1)` with a 0-dim long tensor.
                        let n1 = Tensor::f_scalar_tensor(n + 1, (Kind::Int64, device))?;
                        let r = avg.f_add(&model.f_sub(avg)?.f_div(&n1)?)?;
                        avg.f_copy_(&r)?;
                    }
                }
            }
            Ok(())
        })?;
        self.n_averaged += 1;
        Ok(())
    }

    /// Copies the averaged values into `params` (to evaluate or save the
    /// averaged model); names and shapes must match.
    pub fn copy_to(&self, params: &[NamedParameter]) -> Result<()> {
        self.check_match(params)?;
        tch::no_grad(|| -> Result<()> {
            for (a, p) in self.averaged.iter().zip(params) {
                let mut dst = p.tensor.shallow_clone();
                dst.f_copy_(&a.tensor.f_to_device(p.tensor.device())?)?;
            }
            Ok(())
        })
    }

    /// The averaged tensors (`module.{name}`) and `n_averaged`.
    pub fn state_dict(&self) -> Result<AveragedState> {
        let tensors = self
            .averaged
            .iter()
            .map(|p| {
                Ok((
                    format!("module.{}", p.name),
                    ops::detached_clone(&p.tensor)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let scalars = match self.strategy {
            AveragingStrategy::Swa => {
                serde_json::json!({"n_averaged": self.n_averaged, "strategy": "swa"})
            }
            AveragingStrategy::Ema { decay } => {
                serde_json::json!({"n_averaged": self.n_averaged, "strategy": "ema", "decay": format!("{decay:?}")})
            }
        };
        Ok(AveragedState { tensors, scalars })
    }

    /// Restores [`AveragedModel::state_dict`]: every `module.{name}` must be
    /// present with the right shape; the strategy must be the same.
    pub fn load_state_dict(&mut self, state: &AveragedState) -> Result<()> {
        let bad = |what: &str| Error::State(format!("averaged model state: {what}"));
        let n = state
            .scalars
            .get("n_averaged")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("'n_averaged' is missing"))?;
        let strategy = match state.scalars.get("strategy").and_then(Value::as_str) {
            Some("swa") => AveragingStrategy::Swa,
            Some("ema") => {
                let decay = match state.scalars.get("decay") {
                    Some(Value::String(s)) => s.parse::<f64>().ok(),
                    Some(Value::Number(x)) => x.as_f64(),
                    _ => None,
                };
                AveragingStrategy::Ema {
                    decay: decay.ok_or_else(|| bad("'decay' is missing"))?,
                }
            }
            _ => return Err(bad("'strategy' is missing")),
        };
        if strategy != self.strategy {
            return Err(bad(&format!(
                "it was saved with {strategy:?}, this model uses {:?}",
                self.strategy
            )));
        }
        let known: Vec<String> = self
            .averaged
            .iter()
            .map(|p| format!("module.{}", p.name))
            .collect();
        if let Some((key, _)) = state.tensors.iter().find(|(k, _)| !known.contains(k)) {
            return Err(bad(&format!("'{key}' names no averaged tensor")));
        }
        let mut values = Vec::with_capacity(self.averaged.len());
        for (p, key) in self.averaged.iter().zip(&known) {
            let (_, t) = state
                .tensors
                .iter()
                .find(|(k, _)| k == key)
                .ok_or_else(|| bad(&format!("'{key}' is missing")))?;
            if t.size() != p.tensor.size() {
                return Err(bad(&format!(
                    "'{key}' has shape {:?}, expected {:?}",
                    t.size(),
                    p.tensor.size()
                )));
            }
            values.push(ops::detached_clone(&t.f_to_device(p.tensor.device())?)?);
        }
        for (p, v) in self.averaged.iter_mut().zip(values) {
            p.tensor = v;
        }
        self.n_averaged = n;
        Ok(())
    }
}
