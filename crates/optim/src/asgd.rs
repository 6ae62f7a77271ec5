//! Averaged SGD (`torch.optim.ASGD`).
//!
//! ```text
//! g ← g + λw θ
//! θ ← θ (1 − λ η_t) − η_t g
//! ax ← ax + μ_t (θ − ax)          (ax ← θ while μ_t = 1)
//! η_{t+1} = γ / (1 + λ γ t)^α;   μ_{t+1} = 1 / max(1, t − t0)
//! ```
use crate::rule::{as_default_tensor, round_to, scalar_kind, Grouped, ParamState, Rule};
use crate::util::{l2, m, maybe_neg, non_negative};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// ASGD's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AsgdConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Decay term λ (1e-4).
    pub lambd: f64,
    /// Power for the eta update (0.75).
    pub alpha: f64,
    /// Step at which averaging starts (1e6).
    pub t0: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for AsgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `torch.optim.ASGD`.
pub type Asgd = Grouped<AsgdConfig>;

impl AsgdConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Asgd> {
        Asgd::new(self, params)
    }
}

impl Rule for AsgdConfig {
    const NAME: &'static str = "asgd";
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        lambd: f64 = "decay term",
        alpha: f64 = "power for the eta update",
        t0: f64 = "step at which averaging starts",
        weight_decay: f64 = "L2 penalty added to the gradient",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        non_negative(self.weight_decay, "weight_decay value")?;
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let ax = state.buffer_or_init("ax", || Ok(param.f_zeros_like()?))?;
        // eta and mu are 0-dim tensors of the scalar dtype in PyTorch.
        let kind = scalar_kind()?;
        let eta = state
            .value("eta")
            .unwrap_or_else(|| round_to(kind, self.lr));
        let mu = state.value("mu").unwrap_or(1.0);
        state.step += 1.0;
        let step = state.step;
        let grad = l2(maybe_neg(grad, self.maximize)?, param, self.weight_decay)?;
        let _ = m(param).f_mul_scalar_(1.0 - self.lambd * eta)?;
        ops::add_(param, &grad, -eta)?;
        if mu != 1.0 {
            let d = param.f_sub(&ax)?;
            let _ = m(&d).f_mul_scalar_(mu)?;
            let _ = m(&ax).f_add_(&d)?;
        } else {
            m(&ax).f_copy_(param)?;
        }
        let new_eta = self.lr / (1.0 + self.lambd * self.lr * step).powf(self.alpha);
        let new_mu = 1.0 / (step - self.t0).max(1.0);
        // `eta.copy_(torch.as_tensor(new_eta))`: the default dtype, then eta's.
        state.set_value("eta", round_to(kind, as_default_tensor(new_eta)?));
        state.set_value("mu", round_to(kind, as_default_tensor(new_mu)?));
        Ok(())
    }
}
