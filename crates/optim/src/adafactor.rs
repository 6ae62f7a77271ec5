//! Adafactor (`torch.optim.Adafactor`): factored second moments.
//!
//! With `t` the step, `β̂2_t = t^beta2_decay`, `ρ_t = min(γ, 1/√t)` and
//! `α_t = max(ε2, RMS(θ)) ρ_t`:
//!
//! ```text
//! θ ← θ (1 − γ λ)
//! matrices: R ← lerp(R, mean_col(g²), β̂2_t);  C ← lerp(C, mean_row(g²), β̂2_t);
//!           V = R C / max(mean(R), ε1)
//! vectors:  V ← lerp(V, g², β̂2_t)
//! U = g / √max(V, ε1²);   θ ← θ − α_t U / max(1, RMS(U) / d)
//! ```
use crate::rule::{Grouped, ParamState, Rule};
use crate::util::{at_least_zero, invalid, m, maybe_neg, py_float};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Kind, Tensor};

/// Adafactor's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdafactorConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Decay exponent of β2 (−0.8).
    pub beta2_decay: f64,
    /// (ε1, ε2): ε1 `None` means the dtype's machine epsilon ((None, 1e-3)).
    pub eps: (Option<f64>, f64),
    /// Clipping threshold d (1.0).
    pub d: f64,
    /// Decoupled weight decay (0).
    pub weight_decay: f64,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            beta2_decay: -0.8,
            eps: (None, 1e-3),
            d: 1.0,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// `torch.optim.Adafactor`.
pub type Adafactor = Grouped<AdafactorConfig>;

impl AdafactorConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Adafactor> {
        Adafactor::new(self, params)
    }
}

impl Rule for AdafactorConfig {
    const NAME: &'static str = "adafactor";
    // `eps.0` reads as NaN while it is `None`; setting it to NaN makes it `None`.
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        beta2_decay: f64 = "decay exponent of beta2",
        eps: (Option<f64>, f64) = "(eps1, eps2): eps1 none means the dtype's machine epsilon",
        d: f64 = "clipping threshold of the update's RMS",
        weight_decay: f64 = "decoupled weight decay",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn check_param(&self, param: &NamedParameter) -> Result<()> {
        if param.tensor.f_is_complex()? {
            return invalid("Adafactor does not support complex parameters".into());
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        at_least_zero(self.lr, "Learning rate")?;
        if !(0.0 >= self.beta2_decay) {
            return invalid(format!(
                "beta2_decay should be <= 0 but is: {}",
                py_float(self.beta2_decay)
            ));
        }
        if let Some(e) = self.eps.0 {
            at_least_zero(e, "epsilon1")?;
        }
        at_least_zero(self.eps.1, "epsilon2")?;
        if !(1.0 <= self.d) {
            return invalid(format!(
                "Clipping threshold d should be >= 1 but is: {}",
                py_float(self.d)
            ));
        }
        at_least_zero(self.weight_decay, "weight_decay")?;
        Ok(())
    }

    fn buffer_shape(&self, buffer: &str, param: &Tensor) -> Vec<i64> {
        let mut shape = param.size();
        let n = shape.len();
        match buffer {
            "row_var" if n > 1 => {
                if let Some(last) = shape.last_mut() {
                    *last = 1;
                }
            }
            "col_var" if n > 1 => {
                if let Some(d) = shape.get_mut(n - 2) {
                    *d = 1;
                }
            }
            _ => {}
        }
        shape
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let grad = maybe_neg(grad, self.maximize)?;
        let factored = grad.dim() > 1;
        let (row_var, col_var, variance) = if factored {
            let r = state.buffer_or_init("row_var", || {
                Ok(grad.f_new_zeros(
                    self.buffer_shape("row_var", &grad),
                    (grad.kind(), grad.device()),
                )?)
            })?;
            let c = state.buffer_or_init("col_var", || {
                Ok(grad.f_new_zeros(
                    self.buffer_shape("col_var", &grad),
                    (grad.kind(), grad.device()),
                )?)
            })?;
            (Some(r), Some(c), None)
        } else {
            (
                None,
                None,
                Some(state.buffer_or_init("variance", || Ok(grad.f_zeros_like()?))?),
            )
        };
        let eps1 = self.eps.0.unwrap_or(if param.kind() == Kind::Double {
            f64::EPSILON
        } else {
            f64::from(f32::EPSILON)
        });
        let eps2 = self.eps.1;
        let lr = self.lr;
        state.step += 1.0;
        let step = state.step;
        let one_minus_beta2_t = step.powf(self.beta2_decay);
        let inv_sqrt = 1.0 / step.powf(0.5);
        let rho_t = if inv_sqrt < lr { inv_sqrt } else { lr };
        let rms =
            ops::vector_norm(param, 2.0)?.f_double_value(&[])? / (param.numel() as f64).powf(0.5);
        let alpha = if rms > eps2 { rms } else { eps2 } * rho_t;
        if self.weight_decay != 0.0 {
            let _ = m(param).f_mul_scalar_(1.0 - lr * self.weight_decay)?;
        }
        let var_estimate = match (&row_var, &col_var, &variance) {
            (Some(row_var), Some(col_var), _) => {
                let size = grad.size();
                let n = size.len();
                let last = size.get(n - 1).copied().unwrap_or(1);
                let second = size.get(n - 2).copied().unwrap_or(1);
                let row_mean = ops::vector_norm_dim(&grad, 2.0, -1, true)?;
                let _ = m(&row_mean).f_square_()?.f_div_scalar_(last)?;
                let _ = m(row_var).f_lerp_(&row_mean, one_minus_beta2_t)?;
                let col_mean = ops::vector_norm_dim(&grad, 2.0, -2, true)?;
                let _ = m(&col_mean).f_square_()?.f_div_scalar_(second)?;
                let _ = m(col_var).f_lerp_(&col_mean, one_minus_beta2_t)?;
                let v = row_var.f_matmul(col_var)?;
                let mean = row_var
                    .f_mean_dim(Some(&[-2i64][..]), true, None::<Kind>)?
                    .f_clamp_min_(eps1)?;
                let _ = m(&v).f_div_(&mean)?;
                v
            }
            (_, _, Some(variance)) => {
                let grad_squared = grad.f_mul(&grad)?;
                let _ = m(variance).f_lerp_(&grad_squared, one_minus_beta2_t)?;
                ops::detached_clone(variance)?
            }
            _ => return Ok(()),
        };
        let update = m(&var_estimate).f_clamp_min_(eps1 * eps1)?.f_rsqrt_()?;
        let _ = m(&update).f_mul_(&grad)?;
        let ratio = ops::vector_norm(&update, 2.0)?.f_double_value(&[])?
            / ((update.numel() as f64).powf(0.5) * self.d);
        let denom = if ratio > 1.0 { ratio } else { 1.0 };
        ops::add_(param, &update, -alpha / denom)?;
        Ok(())
    }
}
