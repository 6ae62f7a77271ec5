//! Muon (`torch.optim.Muon`): momentum orthogonalised by Newton–Schulz, for
//! 2-D parameters.
//!
//! ```text
//! b ← lerp(b, g, 1 − μ);   u = lerp(g, b, μ) if nesterov else b
//! u ← NewtonSchulz5(u) (in bfloat16, (a, b, c) coefficients, ns_steps)
//! θ ← θ (1 − γ λ);   θ ← θ − γ̃ u,   γ̃ = γ √max(1, A/B)  ("original")
//!                                     or 0.2 γ √max(A, B) ("match_rms_adamw")
//! ```
use crate::rule::{Grouped, Hyperparameter, ParamState, Rule};
use crate::util::{at_least_zero, invalid, m};
use crate::{Error, NamedParameter, Result};
use kiln_tensor::spec::OptionValue;
use kiln_tensor::{ops, Kind, Tensor};

/// How Muon scales the learning rate by the parameter's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AdjustLr {
    /// `√max(1, A/B)` (PyTorch's `None` / `"original"`).
    Original,
    /// `0.2 √max(A, B)` (`"match_rms_adamw"`).
    MatchRmsAdamw,
}

/// `original` or `match_rms_adamw` in specs (PyTorch's words; `none` is
/// PyTorch's `None`, the original). `0` and `1` are accepted too, the numbers
/// [`Optimizer::hyperparameter`](crate::Optimizer::hyperparameter) reads.
impl OptionValue for AdjustLr {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        *self = match kiln_tensor::spec::unbracket(text) {
            "original" | "none" | "0" => AdjustLr::Original,
            "match_rms_adamw" | "1" => AdjustLr::MatchRmsAdamw,
            _ => return Err("one of original, match_rms_adamw".into()),
        };
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            AdjustLr::Original => "original",
            AdjustLr::MatchRmsAdamw => "match_rms_adamw",
        }
        .into()
    }
}

/// 0 for original, 1 for match_rms_adamw; any value but 0 sets match_rms_adamw.
impl Hyperparameter for AdjustLr {
    fn get_part(&self, part: Option<usize>) -> Option<f64> {
        part.is_none()
            .then_some(f64::from(u8::from(*self == AdjustLr::MatchRmsAdamw)))
    }
    fn set_part(&mut self, part: Option<usize>, value: f64) -> bool {
        part.is_none() && {
            *self = if value != 0.0 {
                AdjustLr::MatchRmsAdamw
            } else {
                AdjustLr::Original
            };
            true
        }
    }
}

/// Muon's hyperparameters, with PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MuonConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Decoupled weight decay (0.1).
    pub weight_decay: f64,
    /// Momentum μ (0.95).
    pub momentum: f64,
    /// Nesterov momentum (true).
    pub nesterov: bool,
    /// Newton–Schulz coefficients (a, b, c) ((3.4445, −4.7750, 2.0315)).
    pub ns_coefficients: (f64, f64, f64),
    /// Norm floor of the Newton–Schulz input (1e-7).
    pub eps: f64,
    /// Newton–Schulz iterations (5).
    pub ns_steps: usize,
    /// Learning-rate adjustment by shape (original).
    pub adjust_lr_fn: AdjustLr,
}

impl Default for MuonConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.7750, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr_fn: AdjustLr::Original,
        }
    }
}

/// `torch.optim.Muon`.
pub type Muon = Grouped<MuonConfig>;

impl MuonConfig {
    /// Builds the optimizer over `params` (one param group; all 2-D).
    pub fn build(self, params: Vec<NamedParameter>) -> Result<Muon> {
        Muon::new(self, params)
    }
}

/// `_zeropower_via_newtonschulz`: the quintic Newton–Schulz iteration in bfloat16.
pub fn zeropower_via_newtonschulz(
    grad: &Tensor,
    coefficients: (f64, f64, f64),
    ns_steps: usize,
    eps: f64,
) -> Result<Tensor> {
    if ns_steps >= 100 {
        return invalid(
            "Number of steps must be less than 100 for computational efficiency".into(),
        );
    }
    let size = grad.size();
    let [rows, cols] = size.as_slice() else {
        return invalid("Input tensor gradient must be a 2D matrix".into());
    };
    let (a, b, c) = coefficients;
    let tall = rows > cols;
    let mut x = grad.f_to_kind(Kind::BFloat16)?;
    if tall {
        x = x.f_transpose(0, 1)?;
    }
    let norm = ops::vector_norm(&x, 2.0)?.f_clamp_min(eps)?;
    let _ = m(&x).f_div_(&norm)?;
    for _ in 0..ns_steps {
        let gram = x.f_matmul(&x.f_transpose(0, 1)?)?;
        let gram_update = ops::addmm(&gram, &gram, &gram, b, c)?;
        x = ops::addmm(&x, &gram_update, &x, a, 1.0)?;
    }
    if tall {
        x = x.f_transpose(0, 1)?;
    }
    Ok(x)
}

impl Rule for MuonConfig {
    const NAME: &'static str = "muon";
    // `adjust_lr_fn` reads 0 for original, 1 for match_rms_adamw.
    crate::hyperparameter_table! {
        lr: f64 = "learning rate",
        weight_decay: f64 = "decoupled weight decay",
        momentum: f64 = "momentum factor",
        nesterov: bool = "Nesterov momentum",
        ns_coefficients: (f64, f64, f64) = "Newton-Schulz coefficients (a, b, c)",
        eps: f64 = "norm floor of the Newton-Schulz input",
        ns_steps: usize = "Newton-Schulz iterations",
        adjust_lr_fn: AdjustLr = "original | match_rms_adamw: how the lr is scaled by the parameter's shape",
    }

    fn validate(&self) -> Result<()> {
        at_least_zero(self.lr, "Learning rate")?;
        at_least_zero(self.momentum, "momentum")?;
        at_least_zero(self.weight_decay, "weight decay")?;
        if self.ns_steps >= 100 {
            return invalid(
                "Number of steps must be less than 100 for computational efficiency".into(),
            );
        }
        Ok(())
    }

    fn check_param(&self, param: &NamedParameter) -> Result<()> {
        if param.tensor.f_is_complex()? {
            return invalid("Muon does not support complex parameters".into());
        }
        if param.tensor.dim() != 2 {
            let dims: Vec<String> = param.tensor.size().iter().map(i64::to_string).collect();
            return Err(Error::InvalidHyperparameter(format!(
                "Muon only supports 2D parameters whereas we found a parameter with size: torch.Size([{}])",
                dims.join(", ")
            )));
        }
        Ok(())
    }

    fn update(&self, param: &Tensor, grad: &Tensor, state: &mut ParamState) -> Result<()> {
        if grad.dim() != 2 {
            return invalid("Param gradient must be a 2D matrix".into());
        }
        let buf = state.buffer_or_init("momentum_buffer", || Ok(grad.f_zeros_like()?))?;
        let _ = m(&buf).f_lerp_(grad, 1.0 - self.momentum)?;
        let update = if self.nesterov {
            grad.f_lerp(&buf, self.momentum)?
        } else {
            buf.shallow_clone()
        };
        let update =
            zeropower_via_newtonschulz(&update, self.ns_coefficients, self.ns_steps, self.eps)?;
        let size = param.size();
        let (a, b) = match size.as_slice() {
            [a, b, ..] => (*a as f64, *b as f64),
            _ => (1.0, 1.0),
        };
        let ratio = match self.adjust_lr_fn {
            AdjustLr::Original => (if a / b > 1.0 { a / b } else { 1.0 }).sqrt(),
            AdjustLr::MatchRmsAdamw => 0.2 * (if b > a { b } else { a }).sqrt(),
        };
        let adjusted_lr = self.lr * ratio;
        let _ = m(param).f_mul_scalar_(1.0 - self.lr * self.weight_decay)?;
        ops::add_(param, &update, -adjusted_lr)?;
        Ok(())
    }
}
