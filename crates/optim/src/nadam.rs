//! NAdam (`torch.optim.NAdam`): Adam with Nesterov momentum.
//!
//! ```text
//! θ ← θ (1 − γ λ) if decoupled_weight_decay, else g ← g + λ θ
//! μ_t = β1 (1 − ½ 0.96^(t ψ));   μ_{t+1} = β1 (1 − ½ 0.96^((t+1) ψ));   Π ← Π μ_t
//! m ← lerp(m, g, 1 − β1);   v ← β2 v + (1 − β2) g²;   d ← √(v / (1 − β2^t)) + ε
//! θ ← θ − γ (1 − μ_t) / (1 − Π) · g / d − γ μ_{t+1} / (1 − Π μ_{t+1}) · m / d
//! ```
use crate::adam::check_adam_like;
use crate::rule::{round_to, scalar_kind, Grouped, ParamState, Rule};
use crate::util::{l2, m, maybe_neg, non_negative, scalar_mul};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// NAdam's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NAdamConfig {
    /// Learning rate (2e-3).
    pub lr: f64,
    /// Decay rates ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the denominator (1e-8).
    pub eps: f64,
    /// Weight decay (0).
    pub weight_decay: f64,
    /// Momentum decay ψ (4e-3).
    pub momentum_decay: f64,
    /// Decay the weights directly (NAdamW).
    pub decoupled_weight_decay: bool,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
}

/// `torch.optim.NAdam`.
pub type NAdam = Grouped<NAdamConfig>;

impl NAdamConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<NAdam> {
        NAdam::new(self, params)
    }
}

impl Rule for NAdamConfig {
    const NAME: &'static str = "nadam";
    crate::hyperparameter_table! {
        @adam_like
        momentum_decay: f64 = "momentum decay",
        decoupled_weight_decay: bool = "decay the weights directly (NAdamW)",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)?;
        non_negative(self.momentum_decay, "momentum_decay value")?;
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let (beta1, beta2) = self.betas;
        let (lr, psi) = (self.lr, self.momentum_decay);
        let exp_avg = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
        let exp_avg_sq = state.buffer_or_init("exp_avg_sq", || Ok(param.f_zeros_like()?))?;
        let mu_product = state.value("mu_product").unwrap_or(1.0);
        state.step += 1.0;
        let step = state.step;
        let bias_correction2 = 1.0 - beta2.powf(step);
        let mut grad = maybe_neg(grad, self.maximize)?;
        if self.weight_decay != 0.0 {
            if self.decoupled_weight_decay {
                let _ = m(param).f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            } else {
                grad = l2(grad, param, self.weight_decay)?;
            }
        }
        let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(step * psi));
        let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((step + 1.0) * psi));
        // `mu_product *= mu` on a 0-dim tensor of the scalar dtype.
        let kind = scalar_kind()?;
        let mu_product = round_to(kind, scalar_mul(kind, mu_product, mu));
        state.set_value("mu_product", mu_product);
        let _ = m(&exp_avg).f_lerp_(&grad, 1.0 - beta1)?;
        let _ = m(&exp_avg_sq).f_mul_scalar_(beta2)?;
        ops::addcmul_(&exp_avg_sq, &grad, &grad, 1.0 - beta2)?;
        let denom = exp_avg_sq.f_div_scalar(bias_correction2)?.f_sqrt()?;
        let mu_product_next = mu_product * mu_next;
        let _ = m(&denom).f_add_scalar_(self.eps)?;
        ops::addcdiv_(param, &grad, &denom, -lr * (1.0 - mu) / (1.0 - mu_product))?;
        ops::addcdiv_(
            param,
            &exp_avg,
            &denom,
            (-lr * mu_next) / (1.0 - mu_product_next),
        )?;
        Ok(())
    }
}
