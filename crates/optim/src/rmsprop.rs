//! RMSprop (`torch.optim.RMSprop`).
//!
//! ```text
//! g ← g + λ θ
//! v ← α v + (1 − α) g²
//! a ← √(v − ḡ²) + ε with ḡ ← lerp(ḡ, g, 1 − α) if centered, else a ← √v + ε
//! b ← μ b + g / a;  θ ← θ − γ b      if μ > 0
//! θ ← θ − γ g / a                     otherwise
//! ```
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{l2, m, maybe_neg, non_negative};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// RMSprop's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RmspropConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Smoothing constant α (0.99).
    pub alpha: f64,
    /// Term added to the denominator (1e-8).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Momentum factor (0).
    pub momentum: f64,
    /// Normalise by the estimated variance of the gradient.
    pub centered: bool,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for RmspropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

/// `torch.optim.RMSprop`.
pub type Rmsprop = Grouped<RmspropConfig>;

impl RmspropConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Rmsprop> {
        Rmsprop::new(self, params)
    }
}

impl Rule for RmspropConfig {
    const NAME: &'static str = "rmsprop";
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        alpha: f64 = "smoothing constant",
        eps: f64 = "term added to the denominator for numerical stability",
        weight_decay: f64 = "L2 penalty added to the gradient",
        momentum: f64 = "momentum factor",
        centered: bool = "normalise by the estimated variance of the gradient",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        non_negative(self.eps, "epsilon value")?;
        non_negative(self.momentum, "momentum value")?;
        non_negative(self.weight_decay, "weight_decay value")?;
        non_negative(self.alpha, "alpha value")?;
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let square_avg = state.buffer_or_init("square_avg", || Ok(param.f_zeros_like()?))?;
        let buf = if self.momentum > 0.0 {
            Some(state.buffer_or_init("momentum_buffer", || Ok(param.f_zeros_like()?))?)
        } else {
            None
        };
        let grad_avg = if self.centered {
            Some(state.buffer_or_init("grad_avg", || Ok(param.f_zeros_like()?))?)
        } else {
            None
        };
        state.step += 1.0;
        let grad = l2(maybe_neg(grad, self.maximize)?, param, self.weight_decay)?;
        let _ = m(&square_avg).f_mul_scalar_(self.alpha)?;
        ops::addcmul_(&square_avg, &grad, &grad, 1.0 - self.alpha)?;
        let avg = match &grad_avg {
            Some(ga) => {
                let _ = m(ga).f_lerp_(&grad, 1.0 - self.alpha)?;
                let avg = ops::detached_clone(&square_avg)?;
                ops::addcmul_(&avg, ga, ga, -1.0)?;
                let _ = m(&avg).f_sqrt_()?;
                avg
            }
            None => square_avg.f_sqrt()?,
        };
        let _ = m(&avg).f_add_scalar_(self.eps)?;
        match &buf {
            Some(b) => {
                let _ = m(b).f_mul_scalar_(self.momentum)?;
                ops::addcdiv_(b, &grad, &avg, 1.0)?;
                ops::add_(param, b, -self.lr)?;
            }
            None => ops::addcdiv_(param, &grad, &avg, -self.lr)?,
        }
        Ok(())
    }
}
