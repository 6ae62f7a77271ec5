//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`).
//!
//! With `g` the gradient (negated if `maximize`), `t` the step, `γ` the
//! learning rate and `λ` the weight decay:
//!
//! ```text
//! θ ← θ (1 − γ λ)         if decoupled_weight_decay (AdamW), else g ← g + λ θ
//! m ← lerp(m, g, 1 − β1)
//! v ← β2 v + (1 − β2) g²
//! v̂max ← max(v̂max, v)    if amsgrad (and v is replaced by v̂max below)
//! θ ← θ − γ / (1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! ```
use crate::rule::{Grouped, Item, ParamState, Rule};
use crate::util::{invalid, l2, m, maybe_neg, non_negative, py_float};
use crate::{NamedParameter, Result};
use kiln_tensor::{ops, Tensor};

/// Adam's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdamConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the denominator (1e-8).
    pub eps: f64,
    /// Weight decay (0): L2 added to the gradient, or decoupled.
    pub weight_decay: f64,
    /// AMSGrad: divide by the running maximum of the second moment.
    pub amsgrad: bool,
    /// Maximise the objective.
    pub maximize: bool,
    /// Decay the weights directly (AdamW) instead of adding L2 to the gradient.
    pub decoupled_weight_decay: bool,
    /// Use libtorch's one-pass multi-tensor kernel (`fused=True`).
    pub fused: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
            fused: false,
        }
    }
}

/// `torch.optim.Adam`.
pub type Adam = Grouped<AdamConfig>;

impl AdamConfig {
    /// Builds an Adam optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Adam> {
        Adam::new(self, params)
    }
}

/// PyTorch's Adam checks (shared by AdamW, NAdam, RAdam, Adamax).
pub(crate) fn check_adam_like(
    lr: f64,
    eps: f64,
    betas: (f64, f64),
    weight_decay: f64,
) -> Result<()> {
    non_negative(lr, "learning rate")?;
    non_negative(eps, "epsilon value")?;
    if !(0.0 <= betas.0 && betas.0 < 1.0) {
        return invalid(format!(
            "Invalid beta parameter at index 0: {}",
            py_float(betas.0)
        ));
    }
    if !(0.0 <= betas.1 && betas.1 < 1.0) {
        return invalid(format!(
            "Invalid beta parameter at index 1: {}",
            py_float(betas.1)
        ));
    }
    non_negative(weight_decay, "weight_decay value")?;
    Ok(())
}

/// One Adam/AdamW update of one parameter, as `_single_tensor_adam`.
///
/// Float32 and float64 CPU tensors take libtorch's arithmetic in one pass
/// over memory ([`ops::adam_step_`], the same bits as the op sequence);
/// other tensors (CUDA, other dtypes) run the op sequence below.
pub fn adam_update(
    param: &Tensor,
    grad: &Tensor,
    state: &mut ParamState,
    cfg: &AdamConfig,
) -> Result<()> {
    let (beta1, beta2) = cfg.betas;
    let exp_avg = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
    let exp_avg_sq = state.buffer_or_init("exp_avg_sq", || Ok(param.f_zeros_like()?))?;
    let max_sq = if cfg.amsgrad {
        Some(state.buffer_or_init("max_exp_avg_sq", || Ok(param.f_zeros_like()?))?)
    } else {
        None
    };
    state.step += 1.0;
    let step = state.step;
    let bias_correction1 = 1.0 - beta1.powf(step);
    let bias_correction2 = 1.0 - beta2.powf(step);
    let step_size = cfg.lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);
    let h = ops::AdamStep {
        lr: cfg.lr,
        beta1,
        beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        amsgrad: cfg.amsgrad,
        maximize: cfg.maximize,
        decoupled_weight_decay: cfg.decoupled_weight_decay,
        step_size,
        bias_correction2_sqrt,
    };
    if ops::adam_step_(param, grad, &exp_avg, &exp_avg_sq, max_sq.as_ref(), &h)? {
        return Ok(());
    }
    let mut grad = maybe_neg(grad, cfg.maximize)?;
    if cfg.weight_decay != 0.0 {
        if cfg.decoupled_weight_decay {
            let _ = m(param).f_mul_scalar_(1.0 - cfg.lr * cfg.weight_decay)?;
        } else {
            grad = l2(grad, param, cfg.weight_decay)?;
        }
    }
    let _ = m(&exp_avg).f_lerp_(&grad, 1.0 - beta1)?;
    let _ = m(&exp_avg_sq).f_mul_scalar_(beta2)?;
    ops::addcmul_(&exp_avg_sq, &grad, &grad, 1.0 - beta2)?;
    let denom = match &max_sq {
        Some(mx) => {
            let _ = mx.f_maximum_out(mx, &exp_avg_sq)?;
            mx.f_sqrt()?.f_div_scalar(bias_correction2_sqrt)?
        }
        None => exp_avg_sq.f_sqrt()?.f_div_scalar(bias_correction2_sqrt)?,
    };
    let _ = m(&denom).f_add_scalar_(cfg.eps)?;
    ops::addcdiv_(param, &exp_avg, &denom, -step_size)?;
    Ok(())
}

/// `_fused_adam` / `_fused_adamw`: one libtorch kernel over the whole group.
fn fused_adam(items: &mut [Item<'_>], cfg: &AdamConfig) -> Result<()> {
    let mut bufs = Vec::with_capacity(items.len());
    for item in items.iter_mut() {
        let p = item.param;
        let st = &mut *item.state;
        let a = st.buffer_or_init("exp_avg", || Ok(p.f_zeros_like()?))?;
        let b = st.buffer_or_init("exp_avg_sq", || Ok(p.f_zeros_like()?))?;
        let c = if cfg.amsgrad {
            Some(st.buffer_or_init("max_exp_avg_sq", || Ok(p.f_zeros_like()?))?)
        } else {
            None
        };
        let step = st.fused_step(p.device())?;
        bufs.push((a, b, c, step));
    }
    let steps: Vec<&Tensor> = bufs.iter().map(|b| &b.3).collect();
    ops::foreach_add_scalar_(&steps, 1.0)?;
    let params: Vec<&Tensor> = items.iter().map(|i| i.param).collect();
    let grads: Vec<&Tensor> = items.iter().map(|i| &i.grad).collect();
    let exp_avgs: Vec<&Tensor> = bufs.iter().map(|b| &b.0).collect();
    let exp_avg_sqs: Vec<&Tensor> = bufs.iter().map(|b| &b.1).collect();
    let maxs: Vec<&Tensor> = bufs.iter().filter_map(|b| b.2.as_ref()).collect();
    let lists = ops::AdamLists {
        params: &params,
        grads: &grads,
        exp_avgs: &exp_avgs,
        exp_avg_sqs: &exp_avg_sqs,
        max_exp_avg_sqs: &maxs,
        steps: &steps,
    };
    let h = ops::FusedAdam {
        lr: cfg.lr,
        beta1: cfg.betas.0,
        beta2: cfg.betas.1,
        weight_decay: cfg.weight_decay,
        eps: cfg.eps,
        amsgrad: cfg.amsgrad,
        maximize: cfg.maximize,
        decoupled_weight_decay: cfg.decoupled_weight_decay,
    };
    Ok(ops::fused_adam_(&lists, &h)?)
}

impl Rule for AdamConfig {
    const NAME: &'static str = "adam";
    crate::hyperparameter_table! {
        @adam_like
        amsgrad: bool = "AMSGrad: divide by the running maximum of the second moment",
        maximize: bool = "maximise the objective instead of minimising it",
        decoupled_weight_decay: bool = "decay the weights directly (AdamW) instead of adding L2 to the gradient",
        fused: bool = "libtorch's one-pass multi-tensor kernel (PyTorch's fused=True numbers)",
    }

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        adam_update(param, grad, state, self)
    }

    fn update_group(&self, items: &mut [Item<'_>]) -> Result<()> {
        if self.fused {
            return fused_adam(items, self);
        }
        for item in items.iter_mut() {
            adam_update(item.param, &item.grad, item.state, self)?;
        }
        Ok(())
    }
}

/// AdamW's hyperparameters: Adam with decoupled weight decay, default 1e-2.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decay rates of the first and second moments ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the denominator (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (1e-2).
    pub weight_decay: f64,
    /// AMSGrad variant.
    pub amsgrad: bool,
    /// Maximise the objective.
    pub maximize: bool,
    /// Use libtorch's one-pass multi-tensor kernel (`fused=True`).
    pub fused: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
            fused: false,
        }
    }
}

/// `torch.optim.AdamW`.
pub type AdamW = Grouped<AdamWConfig>;

impl AdamWConfig {
    /// Builds an AdamW optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<AdamW> {
        AdamW::new(self, params)
    }

    /// The equivalent Adam configuration (`decoupled_weight_decay=True`).
    pub fn as_adam(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
            maximize: self.maximize,
            decoupled_weight_decay: true,
            fused: self.fused,
        }
    }
}

impl Rule for AdamWConfig {
    const NAME: &'static str = "adamw";
    crate::hyperparameter_table! {
        @adam_like
        amsgrad: bool = "AMSGrad: divide by the running maximum of the second moment",
        maximize: bool = "maximise the objective instead of minimising it",
        fused: bool = "libtorch's one-pass multi-tensor kernel (PyTorch's fused=True numbers)",
    }

    fn validate(&self) -> Result<()> {
        check_adam_like(self.lr, self.eps, self.betas, self.weight_decay)
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        adam_update(param, grad, state, &self.as_adam())
    }

    fn update_group(&self, items: &mut [Item<'_>]) -> Result<()> {
        self.as_adam().update_group(items)
    }
}
