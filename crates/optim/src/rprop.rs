//! Rprop (`torch.optim.Rprop`), resilient backpropagation.
//!
//! ```text
//! s = sign(g · g_prev) mapped to η+ (> 0), η− (< 0), 1 (= 0)
//! Δ ← clamp(Δ s, Δmin, Δmax)
//! g ← 0 where s = η−
//! θ ← θ − sign(g) Δ;   g_prev ← g
//! ```
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{invalid, m, maybe_neg, non_negative, py_float};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// Rprop's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RpropConfig {
    /// Initial step size (1e-2).
    pub lr: f64,
    /// (η−, η+): multiplicative decrease and increase factors ((0.5, 1.2)).
    pub etas: (f64, f64),
    /// (min, max) allowed step sizes ((1e-6, 50)).
    pub step_sizes: (f64, f64),
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for RpropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            etas: (0.5, 1.2),
            step_sizes: (1e-6, 50.0),
            maximize: false,
        }
    }
}

/// `torch.optim.Rprop`.
pub type Rprop = Grouped<RpropConfig>;

impl RpropConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Rprop> {
        Rprop::new(self, params)
    }
}

impl Rule for RpropConfig {
    const NAME: &'static str = "rprop";
    crate::hyperparameter_table! {
        lr: f64 = "initial step size",
        etas: (f64, f64) = "multiplicative decrease and increase factors",
        step_sizes: (f64, f64) = "minimal and maximal step sizes",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        let (minus, plus) = self.etas;
        if !(0.0 < minus && minus < 1.0 && 1.0 < plus) {
            return invalid(format!(
                "Invalid eta values: {}, {}",
                py_float(minus),
                py_float(plus)
            ));
        }
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let (etaminus, etaplus) = self.etas;
        let prev = state.buffer_or_init("prev", || Ok(param.f_zeros_like()?))?;
        let step_size = state.buffer_or_init("step_size", || Ok(grad.f_full_like(self.lr)?))?;
        state.step += 1.0;
        let grad = maybe_neg(grad, self.maximize)?;
        let sign = grad.f_mul(&prev)?.f_sign()?;
        let pos = sign.f_gt(0.0)?;
        let _ = m(&sign).f_masked_fill_(&pos, etaplus)?;
        let neg = sign.f_lt(0.0)?;
        let _ = m(&sign).f_masked_fill_(&neg, etaminus)?;
        let zero = sign.f_eq(0.0)?;
        let _ = m(&sign).f_masked_fill_(&zero, 1.0)?;
        let _ = m(&step_size)
            .f_mul_(&sign)?
            .f_clamp_(self.step_sizes.0, self.step_sizes.1)?;
        let grad = ops::detached_clone(&grad)?;
        let minus = sign.f_eq(etaminus)?;
        let _ = m(&grad).f_masked_fill_(&minus, 0.0)?;
        ops::addcmul_(param, &grad.f_sign()?, &step_size, -1.0)?;
        m(&prev).f_copy_(&grad)?;
        Ok(())
    }
}
