//! Stochastic gradient descent (`torch.optim.SGD`).
use crate::optimizer::{check_group, check_unique_names, state_tensor};
use crate::{Error, NamedParameter, Optimizer, OptimizerState, Result};
use kiln_tensor::{ops, tch, Tensor};

/// SGD's hyperparameters, with PyTorch's defaults (`lr=1e-3`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Dampening for momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening = 0).
    pub nesterov: bool,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl SgdConfig {
    /// PyTorch's checks, with PyTorch's messages.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidHyperparameter(m));
        // `not 0.0 <= x` is also true for NaN, as in PyTorch.
        if !(self.lr >= 0.0) {
            return bad(format!("Invalid learning rate: {}", self.lr));
        }
        if !(self.momentum >= 0.0) {
            return bad(format!("Invalid momentum value: {}", self.momentum));
        }
        if !(self.weight_decay >= 0.0) {
            return bad(format!("Invalid weight_decay value: {}", self.weight_decay));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return bad("Nesterov momentum requires a momentum and zero dampening".into());
        }
        Ok(())
    }

    /// Builds an SGD optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Sgd> {
        Sgd::new(self, params)
    }

    fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "lr" => self.lr,
            "momentum" => self.momentum,
            "dampening" => self.dampening,
            "weight_decay" => self.weight_decay,
            "nesterov" => f64::from(u8::from(self.nesterov)),
            "maximize" => f64::from(u8::from(self.maximize)),
            _ => return None,
        })
    }

    fn set(&mut self, name: &str, value: f64) -> Result<()> {
        let mut next = *self;
        match name {
            "lr" => next.lr = value,
            "momentum" => next.momentum = value,
            "dampening" => next.dampening = value,
            "weight_decay" => next.weight_decay = value,
            "nesterov" => next.nesterov = value != 0.0,
            "maximize" => next.maximize = value != 0.0,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "sgd has no hyperparameter '{name}' (it has lr, momentum, dampening, weight_decay, nesterov, maximize)"
                )))
            }
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// One SGD update of one parameter, as `torch.optim.sgd._single_tensor_sgd`
/// computes it (same operations in the same order, so the same bits).
/// `momentum_buffer` is created on the first step when momentum is used.
pub fn sgd_update(
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: &mut Option<Tensor>,
    cfg: &SgdConfig,
) -> Result<()> {
    let mut grad = if cfg.maximize {
        grad.f_neg()?
    } else {
        grad.shallow_clone()
    };
    if cfg.weight_decay != 0.0 {
        grad = ops::add(&grad, param, cfg.weight_decay)?;
    }
    if cfg.momentum != 0.0 {
        let buf = match momentum_buffer {
            Some(buf) => {
                let _ = buf.f_mul_scalar_(cfg.momentum)?;
                ops::add_(buf, &grad, 1.0 - cfg.dampening)?;
                buf.shallow_clone()
            }
            None => {
                let buf = ops::detached_clone(&grad)?;
                *momentum_buffer = Some(buf.shallow_clone());
                buf
            }
        };
        grad = if cfg.nesterov {
            ops::add(&grad, &buf, cfg.momentum)?
        } else {
            buf
        };
    }
    ops::add_(param, &grad, -cfg.lr)?;
    Ok(())
}

/// `torch.optim.SGD` over one param group.
#[derive(Debug)]
pub struct Sgd {
    cfg: SgdConfig,
    params: Vec<NamedParameter>,
    momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Validates `cfg` and creates the optimizer.
    pub fn new(cfg: SgdConfig, params: Vec<NamedParameter>) -> Result<Self> {
        cfg.validate()?;
        check_unique_names(&params)?;
        let momentum_buffers = params.iter().map(|_| None).collect();
        Ok(Self {
            cfg,
            params,
            momentum_buffers,
        })
    }

    /// The current hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &str {
        "sgd"
    }

    fn step(&mut self) -> Result<()> {
        tch::no_grad(|| {
            for (p, buf) in self.params.iter().zip(self.momentum_buffers.iter_mut()) {
                if !ops::has_grad(&p.tensor)? {
                    continue;
                }
                sgd_update(&p.tensor, &p.tensor.grad(), buf, &self.cfg)?;
            }
            Ok(())
        })
    }

    fn num_groups(&self) -> usize {
        1
    }

    fn group_params(&self, group: usize) -> &[NamedParameter] {
        if group == 0 {
            &self.params
        } else {
            &[]
        }
    }

    fn hyperparameter(&self, group: usize, name: &str) -> Option<f64> {
        (group == 0).then(|| self.cfg.get(name)).flatten()
    }

    fn set_hyperparameter(&mut self, group: usize, name: &str, value: f64) -> Result<()> {
        check_group(group, 1)?;
        self.cfg.set(name, value)
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        let mut tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .zip(&self.momentum_buffers)
            .filter_map(|(p, b)| {
                b.as_ref()
                    .map(|b| (format!("{}.momentum_buffer", p.name), b.shallow_clone()))
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let scalars = serde_json::json!({ "optimizer": "sgd", "param_groups": [self.cfg] });
        Ok(OptimizerState { tensors, scalars })
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        if state.scalars.get("optimizer").and_then(|v| v.as_str()) != Some("sgd") {
            return Err(Error::State("it was not saved by sgd".into()));
        }
        let groups = state.scalars.get("param_groups").and_then(|g| g.as_array());
        let cfg: SgdConfig = match groups.map(|g| g.as_slice()) {
            Some([one]) => serde_json::from_value(one.clone())
                .map_err(|e| Error::State(format!("sgd hyperparameters: {e}")))?,
            _ => {
                return Err(Error::State(
                    "sgd state must have exactly one param group".into(),
                ))
            }
        };
        cfg.validate()?;
        let known: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}.momentum_buffer", p.name))
            .collect();
        if let Some((key, _)) = state.tensors.iter().find(|(k, _)| !known.contains(k)) {
            return Err(Error::State(format!(
                "'{key}' names no parameter of this optimizer"
            )));
        }
        let mut buffers = Vec::with_capacity(self.params.len());
        for (p, key) in self.params.iter().zip(&known) {
            let buf = state_tensor(state, key, &p.tensor)?
                .map(|t| ops::detached_clone(&t.f_to(p.tensor.device())?))
                .transpose()?;
            buffers.push(buf);
        }
        self.cfg = cfg;
        self.momentum_buffers = buffers;
        Ok(())
    }
}
