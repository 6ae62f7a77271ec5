//! Regression and distribution losses: L1, MSE, Huber, smooth L1, Poisson
//! NLL, Gaussian NLL and KL divergence.
use crate::error::{invalid, Result};
use crate::reduction::{KlDivReduction, Reduction};
use crate::util::{self, fmt, kernel};
use crate::{Loss, TargetKind, Targets};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{tch, Tensor};

/// Broadcasts input and target as `torch.broadcast_tensors` (PyTorch warns
/// when the shapes differ; kiln has no warning channel and broadcasts silently).
fn broadcast_pair(loss: &str, input: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = util::float(loss, "input", input)?;
    let ts = util::shape(loss, "target", target)?;
    util::check_broadcast(loss, "input", &s, "target", &ts)?;
    let mut v = kernel(loss, Tensor::f_broadcast_tensors(&[input, target]))?;
    match (v.pop(), v.pop()) {
        (Some(t), Some(i)) => Ok((i, t)),
        _ => Err(invalid(
            loss,
            "broadcast_tensors returned fewer than 2 tensors",
        )),
    }
}

macro_rules! reduction_only_config {
    ($(#[$m:meta])* $cfg:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $cfg {
            /// Reduction; default mean.
            pub reduction: Reduction,
        }
    };
}

reduction_only_config!(
    /// Options of [`L1Loss`]; `Default` is `nn.L1Loss()`'s.
    L1Config
);
reduction_only_config!(
    /// Options of [`MseLoss`]; `Default` is `nn.MSELoss()`'s.
    MseConfig
);

/// `nn.L1Loss`: `l_n = |x_n - y_n|`. Input and target are broadcast together
/// first (as `F.l1_loss`), then libtorch's `l1_loss` runs.
#[derive(Debug, Clone, Default)]
pub struct L1Loss {
    cfg: L1Config,
}

impl L1Loss {
    /// Spec name.
    pub const NAME: &'static str = "l1";
    /// Builds the loss.
    pub fn new(cfg: L1Config) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &L1Config {
        &self.cfg
    }
}

impl Loss for L1Loss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (i, t) = broadcast_pair(Self::NAME, input, target)?;
        kernel(Self::NAME, i.f_l1_loss(&t, self.cfg.reduction.into()))
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: true,
        })
    }
}

/// `nn.MSELoss`: `l_n = (x_n - y_n)²`. Input and target are broadcast
/// together first (as `F.mse_loss`), then libtorch's `mse_loss` runs.
#[derive(Debug, Clone, Default)]
pub struct MseLoss {
    cfg: MseConfig,
}

impl MseLoss {
    /// Spec name.
    pub const NAME: &'static str = "mse";
    /// Builds the loss.
    pub fn new(cfg: MseConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &MseConfig {
        &self.cfg
    }
}

impl Loss for MseLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (i, t) = broadcast_pair(Self::NAME, input, target)?;
        kernel(Self::NAME, i.f_mse_loss(&t, self.cfg.reduction.into()))
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: true,
        })
    }
}

// ---------------------------------------------------------------------------

/// Options of [`HuberLoss`]; `Default` is `nn.HuberLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct HuberConfig {
    /// Reduction; default mean.
    pub reduction: Reduction,
    /// Threshold δ > 0 between the quadratic and linear parts; default 1.
    pub delta: f64,
}

impl Default for HuberConfig {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            delta: 1.0,
        }
    }
}

/// `nn.HuberLoss`: `l_n = 0.5 (x_n - y_n)²` if `|x_n - y_n| < δ`, else
/// `δ (|x_n - y_n| - 0.5 δ)`. Broadcasts, then libtorch's `huber_loss`.
#[derive(Debug, Clone, Default)]
pub struct HuberLoss {
    cfg: HuberConfig,
}

impl HuberLoss {
    /// Spec name.
    pub const NAME: &'static str = "huber";
    /// Validates δ > 0.
    pub fn new(cfg: HuberConfig) -> Result<Self> {
        if cfg.delta.is_nan() || cfg.delta <= 0.0 {
            return Err(invalid(
                Self::NAME,
                format!("delta must be > 0, got {}", cfg.delta),
            ));
        }
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &HuberConfig {
        &self.cfg
    }
}

impl Loss for HuberLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (i, t) = broadcast_pair(Self::NAME, input, target)?;
        kernel(
            Self::NAME,
            i.f_huber_loss(&t, self.cfg.reduction.into(), self.cfg.delta),
        )
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: true,
        })
    }
}

/// Options of [`SmoothL1Loss`]; `Default` is `nn.SmoothL1Loss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothL1Config {
    /// Reduction; default mean.
    pub reduction: Reduction,
    /// Threshold β ≥ 0; default 1. β = 0 is exactly L1.
    pub beta: f64,
}

impl Default for SmoothL1Config {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            beta: 1.0,
        }
    }
}

/// `nn.SmoothL1Loss`: `l_n = 0.5 (x_n - y_n)² / β` if `|x_n - y_n| < β`, else
/// `|x_n - y_n| - 0.5 β`. Broadcasts, then libtorch's `smooth_l1_loss`
/// (`l1_loss` when β = 0, as `F.smooth_l1_loss`).
#[derive(Debug, Clone, Default)]
pub struct SmoothL1Loss {
    cfg: SmoothL1Config,
}

impl SmoothL1Loss {
    /// Spec name.
    pub const NAME: &'static str = "smooth-l1";
    /// Validates β ≥ 0.
    pub fn new(cfg: SmoothL1Config) -> Result<Self> {
        if cfg.beta.is_nan() || cfg.beta < 0.0 {
            return Err(invalid(
                Self::NAME,
                format!("beta must be >= 0, got {}", cfg.beta),
            ));
        }
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &SmoothL1Config {
        &self.cfg
    }
}

impl Loss for SmoothL1Loss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (i, t) = broadcast_pair(Self::NAME, input, target)?;
        let r: tch::Reduction = self.cfg.reduction.into();
        if self.cfg.beta == 0.0 {
            kernel(Self::NAME, i.f_l1_loss(&t, r))
        } else {
            kernel(Self::NAME, i.f_smooth_l1_loss(&t, r, self.cfg.beta))
        }
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: true,
        })
    }
}

// ---------------------------------------------------------------------------

/// Options of [`PoissonNllLoss`]; `Default` is `nn.PoissonNLLLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct PoissonNllConfig {
    /// Input is `log λ` (default true) rather than `λ`.
    pub log_input: bool,
    /// Add the Stirling term `y log y - y + 0.5 log(2π y)` (for y > 1); default false.
    pub full: bool,
    /// ε added to λ before the log when `log_input` is false; default 1e-8.
    pub eps: f64,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for PoissonNllConfig {
    fn default() -> Self {
        Self {
            log_input: true,
            full: false,
            eps: 1e-8,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.PoissonNLLLoss`: `l_n = exp(x_n) - y_n x_n` (log input) or
/// `x_n - y_n log(x_n + eps)`, plus the Stirling term when `full`.
/// Calls libtorch's `poisson_nll_loss`.
#[derive(Debug, Clone, Default)]
pub struct PoissonNllLoss {
    cfg: PoissonNllConfig,
}

impl PoissonNllLoss {
    /// Spec name.
    pub const NAME: &'static str = "poisson-nll";
    /// Builds the loss.
    pub fn new(cfg: PoissonNllConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &PoissonNllConfig {
        &self.cfg
    }
}

impl Loss for PoissonNllLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::shape(n, "target", target)?;
        util::check_broadcast(n, "input", &s, "target", &ts)?;
        let c = &self.cfg;
        kernel(
            n,
            input.f_poisson_nll_loss(target, c.log_input, c.full, c.eps, c.reduction.into()),
        )
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: false,
        })
    }
}

// ---------------------------------------------------------------------------

/// Options of [`GaussianNllLoss`]; `Default` is `nn.GaussianNLLLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianNllConfig {
    /// Add the constant `0.5 log(2π)`; default false.
    pub full: bool,
    /// Variances are clamped to at least `eps` (without gradient); default 1e-6.
    pub eps: f64,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for GaussianNllConfig {
    fn default() -> Self {
        Self {
            full: false,
            eps: 1e-6,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.GaussianNLLLoss`: `l_n = 0.5 (log max(var_n, eps) + (x_n - y_n)² / max(var_n, eps))`
/// (+ `0.5 log 2π` when `full`). Composed from tensor ops as
/// `F.gaussian_nll_loss` does (the clamp is applied without gradient).
///
/// Three inputs: use [`GaussianNllLoss::forward_var`] (or
/// [`GaussianNllLoss::forward_var_scalar`]). [`Loss::forward`] takes the mean
/// and the variance stacked along a new leading dimension,
/// `input = stack([mean, var])` of shape `[2, ...]`, and the target.
#[derive(Debug, Clone, Default)]
pub struct GaussianNllLoss {
    cfg: GaussianNllConfig,
}

impl GaussianNllLoss {
    /// Spec name.
    pub const NAME: &'static str = "gaussian-nll";
    /// Builds the loss.
    pub fn new(cfg: GaussianNllConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &GaussianNllConfig {
        &self.cfg
    }

    /// The loss of Gaussian means `input` with variances `var` against `target`
    /// (`GaussianNLLLoss()(input, target, var)`). `var` has the input's shape,
    /// or lacks its last dimension, or differs from it in exactly one dimension
    /// of size 1 (homoscedastic).
    pub fn forward_var(&self, input: &Tensor, target: &Tensor, var: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let vs = util::float(n, "var", var)?;
        util::shape(n, "target", target)?;
        if var.numel() > 0 {
            let neg = kernel(n, kernel(n, var.f_lt(0))?.f_any())?;
            if kernel(n, neg.f_int64_value(&[]))? != 0 {
                return Err(invalid(n, format!("var {} has negative entries", fmt(&vs))));
            }
        }
        let var = if vs != s {
            if !s.is_empty() && s.get(..s.len() - 1) == Some(vs.as_slice()) {
                kernel(n, var.f_unsqueeze(-1))?
            } else if s.len() == vs.len()
                && s.iter()
                    .zip(&vs)
                    .filter(|(x, y)| x != y)
                    .map(|(_, y)| *y)
                    .sum::<i64>()
                    == 1
            {
                var.shallow_clone()
            } else {
                return Err(invalid(
                    n,
                    format!(
                        "var {} is of incorrect size for input {}: use the input's shape, drop its last dimension, or make one dimension 1",
                        fmt(&vs),
                        fmt(&s)
                    ),
                ));
            }
        } else {
            var.shallow_clone()
        };
        // var = var.clone(); with no_grad: var.clamp_(min=eps)
        let mut v = kernel(n, var.f_zeros_like())?;
        kernel(n, v.f_copy_(&var))?;
        {
            let _guard = tch::no_grad_guard();
            let _clamped = kernel(n, v.f_clamp_min_(self.cfg.eps))?;
        }
        let diff = kernel(n, input.f_sub(target))?;
        let sq = kernel(n, diff.f_pow_tensor_scalar(2))?;
        let quot = kernel(n, sq.f_div(&v))?;
        let sum = kernel(n, kernel(n, v.f_log())?.f_add(&quot))?;
        let mut loss = kernel(n, sum.f_mul_scalar(0.5))?;
        if self.cfg.full {
            loss = kernel(
                n,
                loss.f_add_scalar(0.5 * (2.0 * std::f64::consts::PI).ln()),
            )?;
        }
        util::reduce(n, loss, self.cfg.reduction)
    }

    /// As [`GaussianNllLoss::forward_var`] with one variance for every element
    /// (`var` a Python float): `var · ones_like(input)`.
    pub fn forward_var_scalar(&self, input: &Tensor, target: &Tensor, var: f64) -> Result<Tensor> {
        let n = Self::NAME;
        util::float(n, "input", input)?;
        if var < 0.0 {
            return Err(invalid(n, format!("var {var} is negative")));
        }
        let v = kernel(n, kernel(n, input.f_ones_like())?.f_mul_scalar(var))?;
        self.forward_var(input, target, &v)
    }
}

impl Loss for GaussianNllLoss {
    /// `input` = `stack([mean, var])` (`[2, ...]`).
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let parts = util::unstack(Self::NAME, "input", input, 2, "the mean and the variance")?;
        match parts.as_slice() {
            [mean, var] => self.forward_var(mean, target, var),
            _ => Err(invalid(Self::NAME, "input must stack exactly 2 tensors")),
        }
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: false,
        })
        .stacked(2, 1)
    }
}

// ---------------------------------------------------------------------------

/// Options of [`KlDivLoss`]; `Default` is `nn.KLDivLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KlDivConfig {
    /// Reduction; default mean (PyTorch's default, which is not the KL
    /// divergence: use [`KlDivReduction::BatchMean`] for that).
    pub reduction: KlDivReduction,
    /// The target is given as log-probabilities; default false.
    pub log_target: bool,
}

/// `nn.KLDivLoss`: with `input` log-probabilities,
/// `l = y (log y - x)` (or `exp(y) (y - x)` with `log_target`).
/// Calls libtorch's `kl_div`; `batchmean` is `sum / input.size(0)` as in
/// `F.kl_div`.
#[derive(Debug, Clone, Default)]
pub struct KlDivLoss {
    cfg: KlDivConfig,
}

impl KlDivLoss {
    /// Spec name.
    pub const NAME: &'static str = "kl-div";
    /// Builds the loss.
    pub fn new(cfg: KlDivConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &KlDivConfig {
        &self.cfg
    }
}

impl Loss for KlDivLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::shape(n, "target", target)?;
        util::check_broadcast(n, "input", &s, "target", &ts)?;
        let r = match self.cfg.reduction {
            KlDivReduction::None => tch::Reduction::None,
            KlDivReduction::Mean => tch::Reduction::Mean,
            KlDivReduction::Sum | KlDivReduction::BatchMean => tch::Reduction::Sum,
        };
        let reduced = kernel(n, input.f_kl_div(target, r, self.cfg.log_target))?;
        match (self.cfg.reduction, s.first()) {
            (KlDivReduction::BatchMean, Some(&b)) => kernel(n, reduced.f_div_scalar(b)),
            _ => Ok(reduced),
        }
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: false,
        })
    }
}

// ---------------------------------------------------------------------------
// Spec options: each config visits its fields once (see `kiln_tensor::spec::Options`).

util::from_spec!(
    L1Loss(L1Config),
    MseLoss(MseConfig),
    HuberLoss(HuberConfig),
    SmoothL1Loss(SmoothL1Config),
    PoissonNllLoss(PoissonNllConfig),
    GaussianNllLoss(GaussianNllConfig),
    KlDivLoss(KlDivConfig)
);

impl Options for L1Config {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for MseConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for HuberConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new(
                "delta",
                "threshold between the quadratic and linear parts, > 0",
            ),
            &mut self.delta,
        )
    }
}

impl Options for SmoothL1Config {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new(
                "beta",
                "threshold between the quadratic and linear parts, >= 0",
            ),
            &mut self.beta,
        )
    }
}

impl Options for PoissonNllConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("log_input", "the input is log(rate)"),
            &mut self.log_input,
        )?;
        v.option(
            OptionInfo::new("full", "add the Stirling approximation term"),
            &mut self.full,
        )?;
        v.option(
            OptionInfo::new(
                "eps",
                "added to the rate before the log when log_input=false",
            ),
            &mut self.eps,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for GaussianNllConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("full", "add the constant 0.5 log(2 pi)"),
            &mut self.full,
        )?;
        v.option(
            OptionInfo::new("eps", "variances are clamped to at least eps"),
            &mut self.eps,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for KlDivConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::KL_REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new("log_target", "the target is given as log-probabilities"),
            &mut self.log_target,
        )
    }
}
