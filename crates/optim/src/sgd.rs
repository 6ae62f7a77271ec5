//! Stochastic gradient descent (`torch.optim.SGD`).
//!
//! With `g` the gradient (negated if `maximize`), `λ` the weight decay, `μ`
//! the momentum, `τ` the dampening and `γ` the learning rate:
//!
//! ```text
//! g ← g + λ θ
//! b ← g                        (first step)
//! b ← μ b + (1 − τ) g          (later steps)
//! g ← g + μ b  if nesterov, else g ← b      (when μ ≠ 0)
//! θ ← θ − γ g
//! ```
use crate::rule::{Grouped, Item, ParamState, Rule};
use crate::util::{invalid, py_float};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// SGD's hyperparameters, with PyTorch's defaults (`lr=1e-3`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Use libtorch's one-pass multi-tensor kernel (`SGD(fused=True)`); its
    /// numbers are those of PyTorch's fused path, not of the default path.
    pub fused: bool,
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
            fused: false,
        }
    }
}

/// `torch.optim.SGD`: [`SgdConfig`]'s rule over param groups.
pub type Sgd = Grouped<SgdConfig>;

impl SgdConfig {
    /// PyTorch's checks, with PyTorch's messages (same as [`Rule::validate`]).
    pub fn validate(&self) -> Result<()> {
        <Self as Rule>::validate(self)
    }

    /// Builds an SGD optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Sgd> {
        Sgd::new(self, params)
    }
}

/// One SGD update of one parameter, as `torch.optim.sgd._single_tensor_sgd`
/// computes it (same operations in the same order, so the same bits).
/// `momentum_buffer` is created on the first step when momentum is used.
///
/// Float32 and float64 CPU tensors take libtorch's arithmetic in one pass
/// over memory ([`ops::sgd_step_`], the same bits as the op sequence); other
/// tensors (CUDA, other dtypes) run the op sequence below.
pub fn sgd_update(
    param: &Tensor,
    grad: &Tensor,
    momentum_buffer: &mut Option<Tensor>,
    cfg: &SgdConfig,
) -> Result<()> {
    let h = ops::SgdStep {
        lr: cfg.lr,
        momentum: cfg.momentum,
        dampening: cfg.dampening,
        weight_decay: cfg.weight_decay,
        nesterov: cfg.nesterov,
        maximize: cfg.maximize,
    };
    if cfg.momentum == 0.0 {
        if ops::sgd_step_(param, grad, None, false, &h)? {
            return Ok(());
        }
    } else {
        let (buf, first) = match momentum_buffer {
            Some(buf) => (buf.shallow_clone(), false),
            None => (grad.f_empty_like()?, true),
        };
        if ops::sgd_step_(param, grad, Some(&buf), first, &h)? {
            *momentum_buffer = Some(buf);
            return Ok(());
        }
    }
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

const BUF: &str = "momentum_buffer";

impl SgdConfig {
    fn fused_update(&self, items: &mut [Item<'_>]) -> Result<()> {
        let h = ops::FusedSgd {
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            lr: self.lr,
            dampening: self.dampening,
            nesterov: self.nesterov,
            maximize: self.maximize,
            is_first_step: false,
        };
        if self.momentum == 0.0 {
            let p: Vec<&Tensor> = items.iter().map(|i| i.param).collect();
            let g: Vec<&Tensor> = items.iter().map(|i| &i.grad).collect();
            return Ok(ops::fused_sgd_(&p, &g, &[], &h)?);
        }
        // Parameters without a buffer take the first-step formula (b = g).
        let had: Vec<bool> = items
            .iter()
            .map(|i| i.state.buffer(BUF).is_some())
            .collect();
        for first in [true, false] {
            let mut p = Vec::new();
            let mut g = Vec::new();
            let mut b = Vec::new();
            for (item, &has) in items.iter_mut().zip(&had) {
                if has == first {
                    continue;
                }
                let buf = item
                    .state
                    .buffer_or_init(BUF, || Ok(item.grad.f_empty_like()?))?;
                p.push(item.param);
                g.push(&item.grad);
                b.push(buf);
            }
            if p.is_empty() {
                continue;
            }
            let br: Vec<&Tensor> = b.iter().collect();
            ops::fused_sgd_(
                &p,
                &g,
                &br,
                &ops::FusedSgd {
                    is_first_step: first,
                    ..h
                },
            )?;
        }
        Ok(())
    }
}

impl Rule for SgdConfig {
    const NAME: &'static str = "sgd";
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        momentum: f64 = "momentum factor",
        dampening: f64 = "dampening for momentum",
        weight_decay: f64 = "L2 penalty added to the gradient",
        nesterov: bool = "Nesterov momentum (needs momentum > 0 and dampening = 0)",
        maximize: bool = "maximise the objective instead of minimising it",
        fused: bool = "libtorch's one-pass multi-tensor kernel (PyTorch's fused=True numbers)",
    }

    fn validate(&self) -> Result<()> {
        // SGD checks `x < 0.0` (so NaN passes), unlike the other optimizers'
        // `not 0.0 <= x`; kiln mirrors each.
        if self.lr < 0.0 {
            return invalid(format!("Invalid learning rate: {}", py_float(self.lr)));
        }
        if self.momentum < 0.0 {
            return invalid(format!(
                "Invalid momentum value: {}",
                py_float(self.momentum)
            ));
        }
        if self.weight_decay < 0.0 {
            return invalid(format!(
                "Invalid weight_decay value: {}",
                py_float(self.weight_decay)
            ));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return invalid("Nesterov momentum requires a momentum and zero dampening".into());
        }
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let mut buf = state.buffer(BUF);
        sgd_update(param, grad, &mut buf, self)?;
        if let Some(b) = buf {
            state.set_buffer(BUF, b);
        }
        Ok(())
    }

    fn update_group(&self, items: &mut [Item<'_>]) -> Result<()> {
        if self.fused {
            return self.fused_update(items);
        }
        for item in items.iter_mut() {
            self.update(item.param, &item.grad, item.state)?;
        }
        Ok(())
    }
}
