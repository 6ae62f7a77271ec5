//! Classification losses: cross-entropy, NLL, multi-margin, multilabel margin
//! and multilabel soft margin.
use crate::error::{invalid, Result};
use crate::reduction::Reduction;
use crate::util::{self, fmt, kernel};
use crate::{Loss, TargetKind, Targets};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{ops, Kind, Tensor};

/// Checks a class-index target against an input of shape `s` (`[C]`,
/// `[N, C]` or `[N, C, d1, ...]`) as `nll_loss_nd` does, then checks that
/// every index is in `[0, C)` or equals `ignore`. Returns `C`.
fn check_class_target(loss: &str, s: &[i64], target: &Tensor, ignore: Option<i64>) -> Result<i64> {
    let ts = util::class_indices(loss, "target", target)?;
    let (c, expected) = match s {
        [] => {
            return Err(invalid(
                loss,
                "input [] must have at least 1 dimension (the classes)",
            ));
        }
        [c] => (*c, Vec::new()),
        [n, c, rest @ ..] => {
            let mut e = vec![*n];
            e.extend_from_slice(rest);
            (*c, e)
        }
    };
    if ts != expected {
        if s.len() >= 2 && ts.len() == 1 && ts.first() != s.first() {
            return Err(invalid(
                loss,
                format!(
                    "input {} and target {} must have the same batch size",
                    fmt(s),
                    fmt(&ts)
                ),
            ));
        }
        return Err(invalid(
            loss,
            format!(
                "input {} needs a target of shape {} (input without the class dimension 1), got {}",
                fmt(s),
                fmt(&expected),
                fmt(&ts)
            ),
        ));
    }
    util::check_range(loss, target, 0, c, ignore, |v| {
        format!("target {v} is out of range for {c} classes")
    })?;
    Ok(c)
}

fn check_weight(loss: &str, weight: Option<&Vec<f64>>, c: i64, s: &[i64]) -> Result<()> {
    if let Some(w) = weight {
        if w.len() as i64 != c {
            return Err(invalid(
                loss,
                format!(
                    "weight has {} values but input {} has {c} classes: give one weight per class",
                    w.len(),
                    fmt(s)
                ),
            ));
        }
    }
    Ok(())
}

fn weight_tensor(loss: &str, weight: Option<&Vec<f64>>, like: &Tensor) -> Result<Option<Tensor>> {
    weight.map(|w| util::tensor_like(loss, w, like)).transpose()
}

// ---------------------------------------------------------------------------

/// Options of [`CrossEntropyLoss`]; `Default` is `nn.CrossEntropyLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropyConfig {
    /// Per-class rescaling weight `w_c` (length C); `None` = all ones.
    pub weight: Option<Vec<f64>>,
    /// A class-index target equal to this contributes nothing (and is not
    /// counted by `mean`). Default -100.
    pub ignore_index: i64,
    /// Reduction; default [`Reduction::Mean`] (weighted mean over non-ignored targets).
    pub reduction: Reduction,
    /// Label smoothing ε in [0, 1]; default 0.
    pub label_smoothing: f64,
}

impl Default for CrossEntropyConfig {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }
}

/// `nn.CrossEntropyLoss`: log-softmax over the class dimension followed by
/// the negative log-likelihood.
///
/// With class indices `y_n` (input `[N, C]`, `[C]` or `[N, C, d1, ...]`,
/// target int64 `[N]`, `[]` or `[N, d1, ...]`):
/// `l_n = -w_{y_n} log(exp(x_{n,y_n}) / Σ_c exp(x_{n,c})) · 1{y_n ≠ ignore_index}`,
/// `mean` = `Σ l_n / Σ w_{y_n} 1{y_n ≠ ignore_index}`. With label smoothing ε
/// the target distribution is `(1-ε)·onehot + ε/C`. With class probabilities
/// (floating target of the input's shape):
/// `l_n = -Σ_c w_c y_{n,c} log softmax(x_n)_c`, `mean` divides by N.
///
/// Calls libtorch's `cross_entropy_loss` exactly as `F.cross_entropy` does.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyLoss {
    cfg: CrossEntropyConfig,
}

impl CrossEntropyLoss {
    /// Spec name.
    pub const NAME: &'static str = "cross-entropy";

    /// Validates `cfg` (label smoothing in [0, 1]).
    pub fn new(cfg: CrossEntropyConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&cfg.label_smoothing) {
            return Err(invalid(
                Self::NAME,
                format!(
                    "label_smoothing must be between 0.0 and 1.0, got {}",
                    cfg.label_smoothing
                ),
            ));
        }
        Ok(Self { cfg })
    }

    /// The options.
    pub fn config(&self) -> &CrossEntropyConfig {
        &self.cfg
    }
}

impl Loss for CrossEntropyLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let tk = util::kind(n, "target", target)?;
        let c = if util::is_float(tk) {
            let ts = util::shape(n, "target", target)?;
            if ts != s {
                return Err(invalid(
                    n,
                    format!(
                        "input {} and target {} (class probabilities) must have the same shape",
                        fmt(&s),
                        fmt(&ts)
                    ),
                ));
            }
            if self.cfg.ignore_index >= 0 {
                return Err(invalid(
                    n,
                    format!(
                        "ignore_index={} is not supported with class-probability (floating) targets",
                        self.cfg.ignore_index
                    ),
                ));
            }
            match s.as_slice() {
                [] => {
                    return Err(invalid(
                        n,
                        "input [] must have at least 1 dimension (the classes)",
                    ))
                }
                [c] => *c,
                [_, c, ..] => *c,
            }
        } else {
            check_class_target(n, &s, target, Some(self.cfg.ignore_index))?
        };
        check_weight(n, self.cfg.weight.as_ref(), c, &s)?;
        let weight = weight_tensor(n, self.cfg.weight.as_ref(), input)?;
        kernel(
            n,
            input.f_cross_entropy_loss(
                target,
                weight,
                self.cfg.reduction.into(),
                self.cfg.ignore_index,
                self.cfg.label_smoothing,
            ),
        )
    }

    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::ClassIndices {
            probabilities: true,
        })
    }
    /// Class indices `[N]` without label smoothing: `log_softmax` (split
    /// over rows) and `nll_loss` (its reduction is one serial cascade sum;
    /// its backward is elementwise). Label smoothing and probability
    /// targets add full reductions, which ATen splits in two passes whose
    /// partial sums depend on the thread count.
    fn exact_on_one_thread(&self, target: &Tensor) -> bool {
        self.cfg.label_smoothing == 0.0 && target.dim() == 1 && target.kind() == Kind::Int64
    }
}

// ---------------------------------------------------------------------------

/// Options of [`NllLoss`]; `Default` is `nn.NLLLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct NllConfig {
    /// Per-class weight (length C); `None` = all ones.
    pub weight: Option<Vec<f64>>,
    /// Target value that contributes nothing; default -100.
    pub ignore_index: i64,
    /// Reduction; default mean (weighted by `w_{y_n}`).
    pub reduction: Reduction,
}

impl Default for NllConfig {
    fn default() -> Self {
        Self {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.NLLLoss`: negative log-likelihood of log-probabilities.
///
/// `l_n = -w_{y_n} x_{n,y_n} · 1{y_n ≠ ignore_index}`; `mean` =
/// `Σ l_n / Σ w_{y_n} 1{y_n ≠ ignore_index}`. Input `[N, C]`, `[C]` or
/// `[N, C, d1, ...]`; target int64 class indices. Calls libtorch's `nll_loss_nd`.
#[derive(Debug, Clone, Default)]
pub struct NllLoss {
    cfg: NllConfig,
}

impl NllLoss {
    /// Spec name.
    pub const NAME: &'static str = "nll";

    /// Builds the loss (every option value is valid).
    pub fn new(cfg: NllConfig) -> Result<Self> {
        Ok(Self { cfg })
    }

    /// The options.
    pub fn config(&self) -> &NllConfig {
        &self.cfg
    }
}

impl Loss for NllLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let c = check_class_target(n, &s, target, Some(self.cfg.ignore_index))?;
        check_weight(n, self.cfg.weight.as_ref(), c, &s)?;
        let weight = weight_tensor(n, self.cfg.weight.as_ref(), input)?;
        kernel(
            n,
            input.f_nll_loss_nd(
                target,
                weight,
                self.cfg.reduction.into(),
                self.cfg.ignore_index,
            ),
        )
    }

    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::ClassIndices {
            probabilities: false,
        })
    }
}

// ---------------------------------------------------------------------------

/// Options of [`MultiMarginLoss`]; `Default` is `nn.MultiMarginLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiMarginConfig {
    /// Exponent p, 1 or 2; default 1.
    pub p: i64,
    /// Margin; default 1.
    pub margin: f64,
    /// Per-class weight (length C); `None` = all ones.
    pub weight: Option<Vec<f64>>,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for MultiMarginConfig {
    fn default() -> Self {
        Self {
            p: 1,
            margin: 1.0,
            weight: None,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.MultiMarginLoss`: multi-class hinge loss.
///
/// `l_n = Σ_{i ≠ y_n} w_{y_n} max(0, margin - x_{n,y_n} + x_{n,i})^p / C`.
/// Input `[N, C]`, `[C]` or `[]`; target int64 `[N]` or `[]`.
///
/// Calls libtorch's `multi_margin_loss` kernel exactly as
/// `F.multi_margin_loss` does (through kiln-tensor's shim, since tch 0.24
/// lacks the binding), so value and gradient are PyTorch's bit for bit.
/// Deviation: for an empty batch `[0, C]` with `mean`, PyTorch 2.11 returns an
/// uninitialised value; kiln returns NaN (the mean of nothing).
#[derive(Debug, Clone, Default)]
pub struct MultiMarginLoss {
    cfg: MultiMarginConfig,
}

impl MultiMarginLoss {
    /// Spec name.
    pub const NAME: &'static str = "multi-margin";

    /// Validates `p` ∈ {1, 2}.
    pub fn new(cfg: MultiMarginConfig) -> Result<Self> {
        if cfg.p != 1 && cfg.p != 2 {
            return Err(invalid(
                Self::NAME,
                format!("only p == 1 and p == 2 are supported, got p={}", cfg.p),
            ));
        }
        Ok(Self { cfg })
    }

    /// The options.
    pub fn config(&self) -> &MultiMarginConfig {
        &self.cfg
    }
}

impl Loss for MultiMarginLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::int64_indices(n, "target", target)?;
        let (nframe, dim) = match s.as_slice() {
            [] => (1, 1),
            [c] if *c != 0 => (1, *c),
            [b, c] if *c != 0 => (*b, *c),
            _ => {
                return Err(invalid(
                    n,
                    format!(
                        "input {} must be a non-empty vector [C] or matrix [N, C] (C > 0)",
                        fmt(&s)
                    ),
                ))
            }
        };
        if ts.len() > 1 || target.numel() as i64 != nframe {
            return Err(invalid(
                n,
                format!(
                    "input {} needs a target of {nframe} class indices ([{nframe}] or []), got {}",
                    fmt(&s),
                    fmt(&ts)
                ),
            ));
        }
        check_weight(n, self.cfg.weight.as_ref(), dim, &s)?;
        util::check_range(n, target, 0, dim, None, |v| {
            format!("target {v} is out of range for {dim} classes")
        })?;

        let weight = weight_tensor(n, self.cfg.weight.as_ref(), input)?;
        if nframe == 0 && self.cfg.reduction == Reduction::Mean {
            // libtorch leaves the mean of an empty batch uninitialised; kiln
            // returns the mean of nothing, NaN (still through the kernel).
            let sum = ops::multi_margin_loss(
                input,
                target,
                self.cfg.p,
                self.cfg.margin,
                weight.as_ref(),
                Reduction::Sum.into(),
            )?;
            return kernel(n, sum.f_div_scalar(0.0));
        }
        Ok(ops::multi_margin_loss(
            input,
            target,
            self.cfg.p,
            self.cfg.margin,
            weight.as_ref(),
            self.cfg.reduction.into(),
        )?)
    }

    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::ClassIndices {
            probabilities: false,
        })
    }
}

// ---------------------------------------------------------------------------

/// Options of [`MultiLabelMarginLoss`]; `Default` is `nn.MultiLabelMarginLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MultiLabelMarginConfig {
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.MultiLabelMarginLoss`: multi-label hinge loss.
///
/// `l_n = Σ_{j ∈ targets(n)} Σ_{i ∉ targets(n)} max(0, 1 - (x_{n,j} - x_{n,i})) / C`,
/// where `targets(n)` are the indices of row n of the int64 target up to its
/// first -1 (every value must lie in [-1, C), as libtorch checks). Input `[C]` or `[N, C]`; target of the same shape.
/// Calls libtorch's `multilabel_margin_loss`.
#[derive(Debug, Clone, Default)]
pub struct MultiLabelMarginLoss {
    cfg: MultiLabelMarginConfig,
}

impl MultiLabelMarginLoss {
    /// Spec name.
    pub const NAME: &'static str = "multilabel-margin";

    /// Builds the loss.
    pub fn new(cfg: MultiLabelMarginConfig) -> Result<Self> {
        Ok(Self { cfg })
    }

    /// The options.
    pub fn config(&self) -> &MultiLabelMarginConfig {
        &self.cfg
    }
}

impl Loss for MultiLabelMarginLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::int64_indices(n, "target", target)?;
        let dim = match s.as_slice() {
            [] => {
                if ts.len() > 1 || target.numel() != 1 {
                    return Err(invalid(
                        n,
                        format!("input [] needs a target of 1 index, got {}", fmt(&ts)),
                    ));
                }
                1
            }
            [c] if *c != 0 => {
                if ts.len() > 1 || target.numel() as i64 != *c {
                    return Err(invalid(
                        n,
                        format!(
                            "input {} needs a target of the same shape, got {}",
                            fmt(&s),
                            fmt(&ts)
                        ),
                    ));
                }
                *c
            }
            [_, c] if *c != 0 => {
                if ts != s {
                    return Err(invalid(
                        n,
                        format!(
                            "input {} needs a target of the same shape, got {}",
                            fmt(&s),
                            fmt(&ts)
                        ),
                    ));
                }
                *c
            }
            _ => {
                return Err(invalid(
                    n,
                    format!(
                        "input {} must be a non-empty vector [C] or matrix [N, C] (C > 0)",
                        fmt(&s)
                    ),
                ))
            }
        };
        // libtorch requires every value in [-1, C) (a negative ends a row's labels).
        util::check_range(n, target, -1, dim, None, |v| {
            format!("target {v} is out of range for {dim} classes (values must be in [-1, {dim}))")
        })?;
        kernel(
            n,
            input.f_multilabel_margin_loss(target, self.cfg.reduction.into()),
        )
    }

    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::ClassIndexLists)
    }
}

// ---------------------------------------------------------------------------

/// Options of [`MultiLabelSoftMarginLoss`]; `Default` is `nn.MultiLabelSoftMarginLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MultiLabelSoftMarginConfig {
    /// Per-class weight (broadcast over the last dimension); `None` = ones.
    pub weight: Option<Vec<f64>>,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.MultiLabelSoftMarginLoss`: one-vs-all logistic loss.
///
/// `l_n = -(1/C) Σ_c w_c [y_{n,c} log σ(x_{n,c}) + (1 - y_{n,c}) log σ(-x_{n,c})]`.
/// Composed from tensor ops as `F.multilabel_soft_margin_loss` does.
#[derive(Debug, Clone, Default)]
pub struct MultiLabelSoftMarginLoss {
    cfg: MultiLabelSoftMarginConfig,
}

impl MultiLabelSoftMarginLoss {
    /// Spec name.
    pub const NAME: &'static str = "multilabel-soft-margin";

    /// Builds the loss.
    pub fn new(cfg: MultiLabelSoftMarginConfig) -> Result<Self> {
        Ok(Self { cfg })
    }

    /// The options.
    pub fn config(&self) -> &MultiLabelSoftMarginConfig {
        &self.cfg
    }
}

impl Loss for MultiLabelSoftMarginLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::shape(n, "target", target)?;
        let Some(&c) = s.last() else {
            return Err(invalid(
                n,
                "input [] must have at least 1 dimension (the classes)",
            ));
        };
        let b = util::check_broadcast(n, "input", &s, "target", &ts)?;
        let a = kernel(n, target.f_mul(&kernel(n, input.f_log_sigmoid())?))?;
        let neg = kernel(n, kernel(n, input.f_neg())?.f_log_sigmoid())?;
        let bb = kernel(n, kernel(n, target.f_rsub_scalar(1))?.f_mul(&neg))?;
        let mut loss = kernel(n, kernel(n, a.f_add(&bb))?.f_neg())?;
        if let Some(w) = &self.cfg.weight {
            util::check_broadcast(n, "loss", &b, "weight", &[w.len() as i64])?;
            loss = kernel(n, loss.f_mul(&util::tensor_like(n, w, input)?))?;
        }
        let last = s.len() as i64 - 1;
        let loss = kernel(
            n,
            loss.f_sum_dim_intlist([last].as_slice(), false, None::<Kind>),
        )?;
        let loss = kernel(n, loss.f_div_scalar(c))?;
        util::reduce(n, loss, self.cfg.reduction)
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
    CrossEntropyLoss(CrossEntropyConfig),
    NllLoss(NllConfig),
    MultiMarginLoss(MultiMarginConfig),
    MultiLabelMarginLoss(MultiLabelMarginConfig),
    MultiLabelSoftMarginLoss(MultiLabelSoftMarginConfig)
);

impl Options for CrossEntropyConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("weight", "per-class weights w_c, ;-separated (C values)"),
            &mut self.weight,
        )?;
        v.option(
            OptionInfo::new("ignore_index", "class index whose targets are ignored"),
            &mut self.ignore_index,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new("label_smoothing", "label smoothing in [0, 1]"),
            &mut self.label_smoothing,
        )
    }
}

impl Options for NllConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("weight", "per-class weights w_c, ;-separated (C values)"),
            &mut self.weight,
        )?;
        v.option(
            OptionInfo::new("ignore_index", "class index whose targets are ignored"),
            &mut self.ignore_index,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for MultiMarginConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("p", "exponent, 1 or 2"), &mut self.p)?;
        v.option(OptionInfo::new("margin", "margin"), &mut self.margin)?;
        v.option(
            OptionInfo::new("weight", "per-class weights w_c, ;-separated (C values)"),
            &mut self.weight,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for MultiLabelMarginConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for MultiLabelSoftMarginConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("weight", "per-class weights w_c, ;-separated (C values)"),
            &mut self.weight,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tensor::Device;

    /// Cross-entropy claims split-invariant kernels only for class indices
    /// `[N]` without label smoothing; other losses claim nothing.
    #[test]
    fn cross_entropy_runs_serially_only_on_class_indices_without_smoothing() -> anyhow::Result<()> {
        let indices = Tensor::f_zeros([4], (Kind::Int64, Device::Cpu))?;
        let probabilities = Tensor::f_zeros([4, 3], (Kind::Float, Device::Cpu))?;
        let plain = CrossEntropyLoss::new(CrossEntropyConfig::default())?;
        let smoothed = CrossEntropyLoss::new(CrossEntropyConfig {
            label_smoothing: 0.1,
            ..CrossEntropyConfig::default()
        })?;
        anyhow::ensure!(plain.exact_on_one_thread(&indices));
        anyhow::ensure!(!plain.exact_on_one_thread(&probabilities));
        anyhow::ensure!(!smoothed.exact_on_one_thread(&indices));
        anyhow::ensure!(!NllLoss::new(NllConfig::default())?.exact_on_one_thread(&indices));
        Ok(())
    }
}
