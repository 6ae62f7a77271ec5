//! RAdam (`torch.optim.RAdam`): Adam with a rectified adaptive learning rate.
//!
//! ```text
//! θ ← θ (1 − γ λ) if decoupled_weight_decay, else g ← g + λ θ
//! m ← lerp(m, g, 1 − β1);   v ← β2 v + (1 − β2) g²;   m̂ = m / (1 − β1^t)
//! ρ∞ = 2 / (1 − β2) − 1;   ρ_t = ρ∞ − 2 t β2^t / (1 − β2^t)
//! if ρ_t > 5:  l = √(1 − β2^t) / (√v + ε),  r = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
//!              θ ← θ − γ m̂ l r
//! else:        θ ← θ − γ m̂
//! ```
use crate::adam::check_adam_like;
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{l2, m, maybe_neg};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// RAdam's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RAdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the denominator (1e-8).
    pub eps: f64,
    /// Weight decay (0).
    pub weight_decay: f64,
    /// Decay the weights directly (RAdamW).
    pub decoupled_weight_decay: bool,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for RAdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// `torch.optim.RAdam`.
pub type RAdam = Grouped<RAdamConfig>;

impl RAdamConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<RAdam> {
        RAdam::new(self, params)
    }
}

impl Rule for RAdamConfig {
    const NAME: &'static str = "radam";
    crate::hyperparameter_table! {
        @adam_like
        decoupled_weight_decay: bool = "decay the weights directly (RAdamW)",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let lr = self.lr;
        let exp_avg = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
        let exp_avg_sq = state.buffer_or_init("exp_avg_sq", || Ok(param.f_zeros_like()?))?;
        state.step += 1.0;
        let step = state.step;
        let mut grad = maybe_neg(grad, self.maximize)?;
        if self.weight_decay != 0.0 {
            if self.decoupled_weight_decay {
                let _ = m(param).f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            } else {
                grad = l2(grad, param, self.weight_decay)?;
            }
        }
        let _ = m(&exp_avg).f_lerp_(&grad, 1.0 - beta1)?;
        let _ = m(&exp_avg_sq).f_mul_scalar_(beta2)?;
        ops::addcmul_(&exp_avg_sq, &grad, &grad, 1.0 - beta2)?;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let bias_corrected_exp_avg = exp_avg.f_div_scalar(bias_correction1)?;
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bias_correction2;
        let update = if rho_t > 5.0 {
            let sq = exp_avg_sq.f_sqrt()?;
            let _ = m(&sq).f_add_scalar_(self.eps)?;
            // `float / tensor` is `tensor.reciprocal() * float` in PyTorch.
            let adaptive_lr = sq
                .f_reciprocal()?
                .f_mul_scalar(bias_correction2.powf(0.5))?;
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .powf(0.5);
            bias_corrected_exp_avg
                .f_mul_scalar(lr)?
                .f_mul(&adaptive_lr)?
                .f_mul_scalar(rect)?
        } else {
            bias_corrected_exp_avg.f_mul_scalar(lr)?
        };
        ops::add_(param, &update, -1.0)?;
        Ok(())
    }
}
