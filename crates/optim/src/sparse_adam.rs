//! SparseAdam (`torch.optim.SparseAdam`): Adam for sparse gradients
//! (`nn.Embedding(sparse=True)`), updating only the rows present in the
//! gradient.
//!
//! For the gradient's coalesced indices `I` and values `g`, with `t` the step:
//!
//! ```text
//! m[I] ← m[I] + (1 − β1)(g − m[I]);   v[I] ← v[I] + (1 − β2)(g² − v[I])
//! θ[I] ← θ[I] − γ √(1 − β2^t) / (1 − β1^t) · m[I] / (√v[I] + ε)
//! ```
use crate::adam::check_adam_like;
use crate::rule::{Grouped, ParamGroup, ParamState, Rule};
use crate::util::{invalid, m, maybe_neg, py_float};
use crate::{Error, NamedParameter, Result};
use kiln_tensor::Tensor;

/// SparseAdam's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SparseAdamConfig {
    /// Learning rate (1e-3, must be > 0).
    pub lr: f64,
    /// Decay rates ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Term added to the denominator (1e-8, must be > 0).
    pub eps: f64,
    /// Maximise the objective.
    pub maximize: bool,
}

impl Default for SparseAdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            maximize: false,
        }
    }
}

/// `torch.optim.SparseAdam`.
pub type SparseAdam = Grouped<SparseAdamConfig>;

impl SparseAdamConfig {
    /// Builds the optimizer over `params` (one param group).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<SparseAdam> {
        SparseAdam::new(self, params)
    }
}

impl Rule for SparseAdamConfig {
    const NAME: &'static str = "sparse-adam";
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        betas: (f64, f64) = "decay rates of the running averages of the gradient and of its square",
        eps: f64 = "term added to the denominator for numerical stability",
        maximize: bool = "maximise the objective instead of minimising it",
    }

    fn validate(&self) -> Result<()> {
        if !(0.0 < self.lr) {
            return invalid(format!("Invalid learning rate: {}", py_float(self.lr)));
        }
        if !(0.0 < self.eps) {
            return invalid(format!("Invalid epsilon value: {}", py_float(self.eps)));
        }
        check_adam_like(self.lr, self.eps, self.betas, 0.0)
    }

    /// PyTorch's constructor checks, with its `[group, index]` lists.
    fn check_groups(groups: &[ParamGroup<Self>]) -> Result<()> {
        let mut sparse = Vec::new();
        let mut complex = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            for (pi, p) in g.params.iter().enumerate() {
                if p.tensor.is_sparse() {
                    sparse.push(format!("[{gi}, {pi}]"));
                }
                if p.tensor.f_is_complex()? {
                    complex.push(format!("[{gi}, {pi}]"));
                }
            }
        }
        if !sparse.is_empty() {
            return invalid(format!(
                "Sparse params at indices [{}]: SparseAdam requires dense parameter tensors",
                sparse.join(", ")
            ));
        }
        if !complex.is_empty() {
            return invalid(format!(
                "Complex params at indices [{}]: SparseAdam does not support complex parameters",
                complex.join(", ")
            ));
        }
        Ok(())
    }

    fn check_grad(&self, grad: &Tensor) -> Result<()> {
        if !grad.is_sparse() {
            return Err(Error::InvalidArgument(
                "SparseAdam does not support dense gradients, please consider Adam instead".into(),
            ));
        }
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        self.check_grad(grad)?;
        let (beta1, beta2) = self.betas;
        let exp_avg = state.buffer_or_init("exp_avg", || Ok(param.f_zeros_like()?))?;
        let exp_avg_sq = state.buffer_or_init("exp_avg_sq", || Ok(param.f_zeros_like()?))?;
        state.step += 1.0;
        let step = state.step;
        let grad = maybe_neg(grad, self.maximize)?.f_coalesce()?;
        let indices = grad.f_internal_indices()?;
        let values = grad.f_internal_values()?;
        if values.numel() == 0 {
            return Ok(());
        }
        let size = grad.size();
        let make_sparse = |v: &Tensor| -> Result<Tensor> {
            Ok(Tensor::f_sparse_coo_tensor_indices_size(
                &indices,
                v,
                size.as_slice(),
                (v.kind(), v.device()),
                false,
            )?)
        };
        let old_exp_avg_values = exp_avg.f_sparse_mask(&grad)?.f_internal_values()?;
        let exp_avg_update_values = values.f_sub(&old_exp_avg_values)?;
        let _ = m(&exp_avg_update_values).f_mul_scalar_(1.0 - beta1)?;
        let _ = m(&exp_avg).f_add_(&make_sparse(&exp_avg_update_values)?)?;
        let old_exp_avg_sq_values = exp_avg_sq.f_sparse_mask(&grad)?.f_internal_values()?;
        let exp_avg_sq_update_values = values.f_pow_tensor_scalar(2i64)?;
        let _ = m(&exp_avg_sq_update_values)
            .f_sub_(&old_exp_avg_sq_values)?
            .f_mul_scalar_(1.0 - beta2)?;
        let _ = m(&exp_avg_sq).f_add_(&make_sparse(&exp_avg_sq_update_values)?)?;
        let numer = m(&exp_avg_update_values).f_add_(&old_exp_avg_values)?;
        let _ = m(&exp_avg_sq_update_values).f_add_(&old_exp_avg_sq_values)?;
        let denom = m(&exp_avg_sq_update_values)
            .f_sqrt_()?
            .f_add_scalar_(self.eps)?;
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let step_size = self.lr * bias_correction2.sqrt() / bias_correction1;
        let update = m(&numer).f_div_(&denom)?.f_mul_scalar(-step_size)?;
        let _ = m(param).f_add_(&make_sparse(&update)?)?;
        Ok(())
    }
}
