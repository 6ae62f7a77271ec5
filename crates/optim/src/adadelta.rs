//! Adadelta (`torch.optim.Adadelta`).
//!
//! ```text
//! g ← g + λ θ
//! v ← ρ v + (1 − ρ) g²
//! Δ ← √(u + ε) / √(v + ε) · g
//! u ← ρ u + (1 − ρ) Δ²
//! θ ← θ − γ Δ
//! ```
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{invalid, l2, m, maybe_neg, non_negative, py_float};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// Adadelta's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdadeltaConfig {
    /// Coefficient scaling the delta (1.0).
    pub lr: f64,
    /// Decay rate of the running averages (0.9).
    pub rho: f64,
    /// Term added inside the square roots (1e-6).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `torch.optim.Adadelta`.
pub type Adadelta = Grouped<AdadeltaConfig>;

impl AdadeltaConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Adadelta> {
        Adadelta::new(self, params)
    }
}

impl Rule for AdadeltaConfig {
    const NAME: &'static str = "adadelta";
    crate::hyperparameter_table! {
        lr: f64 = "coefficient scaling the delta",
        rho: f64 = "decay rate of the running averages",
        eps: f64 = "term added inside the square roots for numerical stability",
        weight_decay: f64 = "L2 penalty added to the gradient",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        if !(0.0 <= self.rho && self.rho <= 1.0) {
            return invalid(format!("Invalid rho value: {}", py_float(self.rho)));
        }
        non_negative(self.eps, "epsilon value")?;
        non_negative(self.weight_decay, "weight_decay value")?;
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let square_avg = state.buffer_or_init("square_avg", || Ok(param.f_zeros_like()?))?;
        let acc_delta = state.buffer_or_init("acc_delta", || Ok(param.f_zeros_like()?))?;
        state.step += 1.0;
        let grad = l2(maybe_neg(grad, self.maximize)?, param, self.weight_decay)?;
        let _ = m(&square_avg).f_mul_scalar_(self.rho)?;
        ops::addcmul_(&square_avg, &grad, &grad, 1.0 - self.rho)?;
        let std = square_avg.f_add_scalar(self.eps)?.f_sqrt_()?;
        let delta = acc_delta.f_add_scalar(self.eps)?.f_sqrt_()?;
        let _ = m(&delta).f_div_(&std)?.f_mul_(&grad)?;
        let _ = m(&acc_delta).f_mul_scalar_(self.rho)?;
        ops::addcmul_(&acc_delta, &delta, &delta, 1.0 - self.rho)?;
        ops::add_(param, &delta, -self.lr)?;
        Ok(())
    }
}
