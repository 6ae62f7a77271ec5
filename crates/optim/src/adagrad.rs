//! Adagrad (`torch.optim.Adagrad`).
//!
//! ```text
//! g ← g + λ θ;   γ̃ ← γ / (1 + (t − 1) η)
//! s ← s + g²
//! θ ← θ − γ̃ g / (√s + ε)
//! ```
//!
//! As in PyTorch, the constructor creates every parameter's state (`sum` =
//! `initial_accumulator_value`, `step` = 0), gradient or not; `fused: true`
//! runs libtorch's one-pass `_fused_adagrad_` kernel (CPU).
use crate::rule::{Grouped, Item, ParamState, Rule};
use crate::util::{l2, m, maybe_neg, non_negative};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// Adagrad's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdagradConfig {
    /// Learning rate (1e-2).
    pub lr: f64,
    /// Learning-rate decay η (0).
    pub lr_decay: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Initial value of the sum of squares (0).
    pub initial_accumulator_value: f64,
    /// Term added to the denominator (1e-10).
    pub eps: f64,
    /// Maximise the objective.
    pub maximize: bool,
    /// Use libtorch's one-pass kernel (`fused=True`, CPU).
    pub fused: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
            fused: false,
        }
    }
}

/// `torch.optim.Adagrad`.
pub type Adagrad = Grouped<AdagradConfig>;

impl AdagradConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Adagrad> {
        Adagrad::new(self, params)
    }
}

impl Rule for AdagradConfig {
    const NAME: &'static str = "adagrad";
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        lr_decay: f64 = "learning-rate decay",
        weight_decay: f64 = "L2 penalty added to the gradient",
        initial_accumulator_value: f64 = "initial value of the sum of squares",
        eps: f64 = "term added to the denominator for numerical stability",
        maximize: bool = "maximise the objective instead of minimising it",
        fused: bool = "use libtorch's fused kernel (_fused_adagrad_)",
    }

    fn validate(&self) -> Result<()> {
        non_negative(self.lr, "learning rate")?;
        non_negative(self.lr_decay, "lr_decay value")?;
        non_negative(self.weight_decay, "weight_decay value")?;
        non_negative(
            self.initial_accumulator_value,
            "initial_accumulator_value value",
        )?;
        non_negative(self.eps, "epsilon value")?;
        Ok(())
    }

    fn init_state(&self, param: &Tensor) -> Result<Option<ParamState>> {
        let mut st = ParamState::default();
        st.set_buffer("sum", param.f_full_like(self.initial_accumulator_value)?);
        Ok(Some(st))
    }

    fn update_group(&self, items: &mut [Item<'_>]) -> Result<()> {
        if self.fused {
            return fused_adagrad(items, self);
        }
        for item in items.iter_mut() {
            self.update(item.param, &item.grad, item.state)?;
        }
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        let sum = state.buffer_or_init("sum", || {
            Ok(param.f_full_like(self.initial_accumulator_value)?)
        })?;
        state.step += 1.0;
        let step = state.step;
        let grad = l2(maybe_neg(grad, self.maximize)?, param, self.weight_decay)?;
        let clr = self.lr / (1.0 + (step - 1.0) * self.lr_decay);
        ops::addcmul_(&sum, &grad, &grad, 1.0)?;
        let std = sum.f_sqrt()?;
        let _ = m(&std).f_add_scalar_(self.eps)?;
        ops::addcdiv_(param, &grad, &std, -clr)?;
        Ok(())
    }
}

/// `_fused_adagrad`: `_foreach_add_(steps, 1)` on float32 step counters, then
/// libtorch's `_fused_adagrad_` over the whole group.
fn fused_adagrad(items: &mut [Item<'_>], cfg: &AdagradConfig) -> Result<()> {
    let mut sums = Vec::with_capacity(items.len());
    let mut steps = Vec::with_capacity(items.len());
    for item in items.iter_mut() {
        let p = item.param;
        let st = &mut *item.state;
        sums.push(st.buffer_or_init("sum", || Ok(p.f_full_like(cfg.initial_accumulator_value)?))?);
        steps.push(st.fused_step(p.device())?);
    }
    let steps: Vec<&Tensor> = steps.iter().collect();
    ops::foreach_add_scalar_(&steps, 1.0)?;
    let params: Vec<&Tensor> = items.iter().map(|i| i.param).collect();
    let grads: Vec<&Tensor> = items.iter().map(|i| &i.grad).collect();
    let sums: Vec<&Tensor> = sums.iter().collect();
    let h = ops::FusedAdagrad {
        lr: cfg.lr,
        lr_decay: cfg.lr_decay,
        weight_decay: cfg.weight_decay,
        eps: cfg.eps,
        maximize: cfg.maximize,
    };
    Ok(ops::fused_adagrad_(&params, &grads, &sums, &steps, &h)?)
}
