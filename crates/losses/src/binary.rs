//! Binary and ±1-target losses: BCE, BCE with logits, soft margin, hinge
//! embedding.
use crate::error::{invalid, Result};
use crate::reduction::Reduction;
use crate::util::{self, fmt, kernel};
use crate::{Loss, TargetKind, Targets};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::Tensor;

/// Errors unless every value of floating `t` lies in [0, 1] (NaN fails).
fn check_unit_interval(loss: &str, what: &str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 {
        return Ok(());
    }
    let (min, max) = kernel(loss, t.f_aminmax(None::<i64>, false))?;
    let min = kernel(loss, min.f_double_value(&[]))?;
    let max = kernel(loss, max.f_double_value(&[]))?;
    if !(min >= 0.0 && max <= 1.0) {
        let bad = if min.is_nan() || max.is_nan() || min < 0.0 {
            min
        } else {
            max
        };
        let bad = if max.is_nan() { max } else { bad };
        return Err(invalid(
            loss,
            format!("all elements of {what} must be between 0 and 1, found {bad}"),
        ));
    }
    Ok(())
}

/// Options of [`BceLoss`]; `Default` is `nn.BCELoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BceConfig {
    /// Rescaling weight broadcast to the target's shape (a 1-D list broadcasts
    /// over the last dimension); `None` = ones.
    pub weight: Option<Vec<f64>>,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.BCELoss`: `l_n = -w_n [y_n log x_n + (1 - y_n) log(1 - x_n)]`, each log
/// clamped to ≥ -100. Input probabilities and targets must lie in [0, 1] and
/// have the same shape. Calls libtorch's `binary_cross_entropy`.
#[derive(Debug, Clone, Default)]
pub struct BceLoss {
    cfg: BceConfig,
}

impl BceLoss {
    /// Spec name.
    pub const NAME: &'static str = "bce";
    /// Builds the loss.
    pub fn new(cfg: BceConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &BceConfig {
        &self.cfg
    }
}

impl Loss for BceLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::float(n, "target", target)?;
        util::same_size(n, &s, &ts)?;
        check_unit_interval(n, "input", input)?;
        check_unit_interval(n, "target", target)?;
        let weight = match &self.cfg.weight {
            None => None,
            Some(w) => {
                let ws = [w.len() as i64];
                let b = util::check_broadcast(n, "target", &ts, "weight", &ws)?;
                if b != ts {
                    return Err(invalid(
                        n,
                        format!(
                            "weight {} broadcast with target {} gives {}, not the target's shape",
                            fmt(&ws),
                            fmt(&ts),
                            fmt(&b)
                        ),
                    ));
                }
                let wt = util::tensor_like(n, w, input)?;
                Some(kernel(n, wt.f_expand(b.as_slice(), false))?)
            }
        };
        kernel(
            n,
            input.f_binary_cross_entropy(target, weight, self.cfg.reduction.into()),
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

/// Options of [`BceWithLogitsLoss`]; `Default` is `nn.BCEWithLogitsLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BceWithLogitsConfig {
    /// Rescaling weight broadcast to the input (1-D: over the last dimension).
    pub weight: Option<Vec<f64>>,
    /// Reduction; default mean.
    pub reduction: Reduction,
    /// Weight of positive examples per class (broadcast over the last dimension).
    pub pos_weight: Option<Vec<f64>>,
}

/// `nn.BCEWithLogitsLoss`: sigmoid and BCE in one numerically stable kernel,
/// `l_n = -w_n [p y_n log σ(x_n) + (1 - y_n) log(1 - σ(x_n))]` with `p` the
/// positive weight. Target of the input's shape. Calls libtorch's
/// `binary_cross_entropy_with_logits`.
#[derive(Debug, Clone, Default)]
pub struct BceWithLogitsLoss {
    cfg: BceWithLogitsConfig,
}

impl BceWithLogitsLoss {
    /// Spec name.
    pub const NAME: &'static str = "bce-with-logits";
    /// Builds the loss.
    pub fn new(cfg: BceWithLogitsConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &BceWithLogitsConfig {
        &self.cfg
    }
}

impl Loss for BceWithLogitsLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::float(n, "target", target)?;
        util::same_size(n, &s, &ts)?;
        let mut tensors = Vec::new();
        for (what, w) in [
            ("weight", &self.cfg.weight),
            ("pos_weight", &self.cfg.pos_weight),
        ] {
            tensors.push(match w {
                None => None,
                Some(w) => {
                    util::check_broadcast(n, "input", &s, what, &[w.len() as i64])?;
                    Some(util::tensor_like(n, w, input)?)
                }
            });
        }
        let pos_weight = tensors.pop().flatten();
        let weight = tensors.pop().flatten();
        kernel(
            n,
            input.f_binary_cross_entropy_with_logits(
                target,
                weight,
                pos_weight,
                self.cfg.reduction.into(),
            ),
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

/// Options of [`SoftMarginLoss`]; `Default` is `nn.SoftMarginLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoftMarginConfig {
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.SoftMarginLoss`: two-class logistic loss with ±1 targets,
/// `l_n = log(1 + exp(-y_n x_n))`. Calls libtorch's `soft_margin_loss`.
#[derive(Debug, Clone, Default)]
pub struct SoftMarginLoss {
    cfg: SoftMarginConfig,
}

impl SoftMarginLoss {
    /// Spec name.
    pub const NAME: &'static str = "soft-margin";
    /// Builds the loss.
    pub fn new(cfg: SoftMarginConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &SoftMarginConfig {
        &self.cfg
    }
}

impl Loss for SoftMarginLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::shape(n, "target", target)?;
        util::check_broadcast(n, "input", &s, "target", &ts)?;
        kernel(
            n,
            input.f_soft_margin_loss(target, self.cfg.reduction.into()),
        )
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Signs)
    }
}

// ---------------------------------------------------------------------------

/// Options of [`HingeEmbeddingLoss`]; `Default` is `nn.HingeEmbeddingLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct HingeEmbeddingConfig {
    /// Margin Δ; default 1.
    pub margin: f64,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for HingeEmbeddingConfig {
    fn default() -> Self {
        Self {
            margin: 1.0,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.HingeEmbeddingLoss`: with ±1 targets, `l_n = x_n` if `y_n = 1`,
/// `max(0, Δ - x_n)` if `y_n = -1`. Calls libtorch's `hinge_embedding_loss`.
#[derive(Debug, Clone, Default)]
pub struct HingeEmbeddingLoss {
    cfg: HingeEmbeddingConfig,
}

impl HingeEmbeddingLoss {
    /// Spec name.
    pub const NAME: &'static str = "hinge-embedding";
    /// Builds the loss.
    pub fn new(cfg: HingeEmbeddingConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &HingeEmbeddingConfig {
        &self.cfg
    }
}

impl Loss for HingeEmbeddingLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let s = util::float(n, "input", input)?;
        let ts = util::shape(n, "target", target)?;
        util::check_broadcast(n, "input", &s, "target", &ts)?;
        kernel(
            n,
            input.f_hinge_embedding_loss(target, self.cfg.margin, self.cfg.reduction.into()),
        )
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Signs)
    }
}

// ---------------------------------------------------------------------------
// Spec options: each config visits its fields once (see `kiln_tensor::spec::Options`).

util::from_spec!(
    BceLoss(BceConfig),
    BceWithLogitsLoss(BceWithLogitsConfig),
    SoftMarginLoss(SoftMarginConfig),
    HingeEmbeddingLoss(HingeEmbeddingConfig)
);

impl Options for BceConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "weight",
                "rescaling weights, ;-separated, broadcast over the last dimension",
            ),
            &mut self.weight,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for BceWithLogitsConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "weight",
                "rescaling weights, ;-separated, broadcast over the last dimension",
            ),
            &mut self.weight,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)?;
        v.option(
            OptionInfo::new(
                "pos_weight",
                "weights of positive examples per class, ;-separated",
            ),
            &mut self.pos_weight,
        )
    }
}

impl Options for SoftMarginConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for HingeEmbeddingConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("margin", "margin"), &mut self.margin)?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}
