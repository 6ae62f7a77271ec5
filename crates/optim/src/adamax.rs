//! Adamax (`torch.optim.Adamax`), Adam with the infinity norm.
//!
//! ```text
//! g ← g + λ θ
//! m ← lerp(m, g, 1 − β1)
//! u ← max(β2 u, |g| + ε)
//! θ ← θ − γ / (1 − β1^t) · m / u
//! ```
use crate::adam::check_adam_like;
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{l2, m, maybe_neg};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// Adamax's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdamaxConfig {
    /// Learning rate (2e-3).
    pub lr: f64,
    /// Decay rates ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the norm (1e-8).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `torch.optim.Adamax`.
pub type Adamax = Grouped<AdamaxConfig>;

impl AdamaxConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Adamax> {
        Adamax::new(self, params)
    }
}

impl Rule for AdamaxConfig {
    const NAME: &'static str = "adamax";
    crate::hyperparameter_table! {
        @adam_like
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let exp_avg = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
        let exp_inf = state.buffer_or_init("exp_inf", || Ok(param.f_zeros_like()?))?;
        state.step += 1.0;
        let grad = l2(maybe_neg(grad, self.maximize)?, param, self.weight_decay)?;
        let _ = m(&exp_avg).f_lerp_(&grad, 1.0 - beta1)?;
        let _ = m(&exp_inf).f_mul_scalar_(beta2)?;
        let norm = grad.f_abs()?;
        let _ = m(&norm).f_add_scalar_(self.eps)?;
        let _ = exp_inf.f_maximum_out(&exp_inf, &norm)?;
        let bias_correction = 1.0 - beta1.powf(state.step);
        let clr = self.lr / bias_correction;
        ops::addcdiv_(param, &exp_avg, &exp_inf, -clr)?;
        Ok(())
    }
}
