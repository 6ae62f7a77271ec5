//! Embedding and ranking losses: margin ranking, cosine embedding, triplet
//! margin, triplet margin with a distance function.
use crate::error::{invalid, Result};
use crate::reduction::Reduction;
use crate::util::{self, fmt, kernel};
use crate::{Loss, TargetKind, Targets};
use kiln_tensor::spec::{OptionInfo, OptionValue, OptionVisitor, Options};
use kiln_tensor::Tensor;
use std::sync::Arc;

/// Splits `input` = `stack([x1, x2])`.
fn pair(loss: &str, input: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut v = util::unstack(loss, "input", input, 2, "input1 and input2")?;
    match (v.pop(), v.pop()) {
        (Some(b), Some(a)) => Ok((a, b)),
        _ => Err(invalid(loss, "input must stack exactly 2 tensors")),
    }
}

/// Options of [`MarginRankingLoss`]; `Default` is `nn.MarginRankingLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarginRankingConfig {
    /// Margin; default 0.
    pub margin: f64,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.MarginRankingLoss`: `l_n = max(0, -y_n (x1_n - x2_n) + margin)` with
/// `y_n ∈ {1, -1}`. Calls libtorch's `margin_ranking_loss`.
///
/// Three inputs: use [`MarginRankingLoss::forward3`]. [`Loss::forward`] takes
/// `input = stack([x1, x2])` (shape `[2, ...]`) and `target = y`.
#[derive(Debug, Clone, Default)]
pub struct MarginRankingLoss {
    cfg: MarginRankingConfig,
}

impl MarginRankingLoss {
    /// Spec name.
    pub const NAME: &'static str = "margin-ranking";
    /// Builds the loss.
    pub fn new(cfg: MarginRankingConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &MarginRankingConfig {
        &self.cfg
    }

    /// `MarginRankingLoss()(input1, input2, target)`: all three with the same
    /// number of dimensions and broadcastable shapes.
    pub fn forward3(&self, input1: &Tensor, input2: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let a = util::float(n, "input1", input1)?;
        let b = util::float(n, "input2", input2)?;
        let t = util::shape(n, "target", target)?;
        if a.len() != b.len() || a.len() != t.len() {
            return Err(invalid(
                n,
                format!(
                    "input1 {}, input2 {} and target {} must have the same number of dimensions",
                    fmt(&a),
                    fmt(&b),
                    fmt(&t)
                ),
            ));
        }
        let ab = util::check_broadcast(n, "input1", &a, "input2", &b)?;
        util::check_broadcast(n, "inputs", &ab, "target", &t)?;
        kernel(
            n,
            Tensor::f_margin_ranking_loss(
                input1,
                input2,
                target,
                self.cfg.margin,
                self.cfg.reduction.into(),
            ),
        )
    }
}

impl Loss for MarginRankingLoss {
    /// `input` = `stack([x1, x2])`, `target` = y.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (a, b) = pair(Self::NAME, input)?;
        self.forward3(&a, &b, target)
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Signs).stacked(2, 1)
    }
}

// ---------------------------------------------------------------------------

/// Options of [`CosineEmbeddingLoss`]; `Default` is `nn.CosineEmbeddingLoss()`'s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CosineEmbeddingConfig {
    /// Margin in [-1, 1]; default 0.
    pub margin: f64,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

/// `nn.CosineEmbeddingLoss`: `l_n = 1 - cos(x1_n, x2_n)` if `y_n = 1`,
/// `max(0, cos(x1_n, x2_n) - margin)` if `y_n = -1`. Inputs `[N, D]` with
/// target `[N]`, or `[D]` with target `[]`. Calls libtorch's
/// `cosine_embedding_loss`.
///
/// Three inputs: use [`CosineEmbeddingLoss::forward3`]. [`Loss::forward`]
/// takes `input = stack([x1, x2])` (`[2, N, D]` or `[2, D]`) and `target = y`.
#[derive(Debug, Clone, Default)]
pub struct CosineEmbeddingLoss {
    cfg: CosineEmbeddingConfig,
}

impl CosineEmbeddingLoss {
    /// Spec name.
    pub const NAME: &'static str = "cosine-embedding";
    /// Builds the loss.
    pub fn new(cfg: CosineEmbeddingConfig) -> Result<Self> {
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &CosineEmbeddingConfig {
        &self.cfg
    }

    /// `CosineEmbeddingLoss()(input1, input2, target)`.
    pub fn forward3(&self, input1: &Tensor, input2: &Tensor, target: &Tensor) -> Result<Tensor> {
        let n = Self::NAME;
        let a = util::float(n, "input1", input1)?;
        let b = util::float(n, "input2", input2)?;
        let t = util::shape(n, "target", target)?;
        if a != b {
            return Err(invalid(
                n,
                format!(
                    "input1 {} and input2 {} must have the same shape",
                    fmt(&a),
                    fmt(&b)
                ),
            ));
        }
        let ok = match (t.as_slice(), a.as_slice()) {
            ([], [_]) => true,
            ([tn], [an, _]) => tn == an,
            _ => false,
        };
        if !ok {
            return Err(invalid(
                n,
                format!(
                    "inputs {} need a target of shape [N] for inputs [N, D] or [] for inputs [D], got {}",
                    fmt(&a),
                    fmt(&t)
                ),
            ));
        }
        kernel(
            n,
            Tensor::f_cosine_embedding_loss(
                input1,
                input2,
                target,
                self.cfg.margin,
                self.cfg.reduction.into(),
            ),
        )
    }
}

impl Loss for CosineEmbeddingLoss {
    /// `input` = `stack([x1, x2])`, `target` = y.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (a, b) = pair(Self::NAME, input)?;
        self.forward3(&a, &b, target)
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Signs).stacked(2, 1)
    }
}

// ---------------------------------------------------------------------------

fn check_triplet(loss: &str, anchor: &Tensor, positive: &Tensor, negative: &Tensor) -> Result<()> {
    let a = util::float(loss, "anchor", anchor)?;
    let p = util::float(loss, "positive", positive)?;
    let ng = util::float(loss, "negative", negative)?;
    if a.len() != p.len() || p.len() != ng.len() {
        return Err(invalid(
            loss,
            format!(
                "anchor {}, positive {} and negative {} must have the same number of dimensions",
                fmt(&a),
                fmt(&p),
                fmt(&ng)
            ),
        ));
    }
    util::check_broadcast(loss, "anchor", &a, "positive", &p)?;
    util::check_broadcast(loss, "anchor", &a, "negative", &ng)?;
    Ok(())
}

/// Splits `target` = `stack([positive, negative])`.
fn pos_neg(loss: &str, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut v = util::unstack(loss, "target", target, 2, "the positive and the negative")?;
    match (v.pop(), v.pop()) {
        (Some(b), Some(a)) => Ok((a, b)),
        _ => Err(invalid(loss, "target must stack exactly 2 tensors")),
    }
}

/// Options of [`TripletMarginLoss`]; `Default` is `nn.TripletMarginLoss()`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct TripletMarginConfig {
    /// Margin > 0; default 1.
    pub margin: f64,
    /// Norm degree of the pairwise distance; default 2.
    pub p: f64,
    /// ε added inside the pairwise distance; default 1e-6.
    pub eps: f64,
    /// Use `min(d(a, n), d(p, n))` as the negative distance; default false.
    pub swap: bool,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for TripletMarginConfig {
    fn default() -> Self {
        Self {
            margin: 1.0,
            p: 2.0,
            eps: 1e-6,
            swap: false,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.TripletMarginLoss`: `l_n = max(0, d(a_n, p_n) - d(a_n, n_n) + margin)`
/// with `d(x, y) = ‖x - y + eps‖_p`. Calls libtorch's `triplet_margin_loss`.
///
/// Three inputs: use [`TripletMarginLoss::forward3`]. [`Loss::forward`] takes
/// `input` = the anchor and `target = stack([positive, negative])`
/// (`[2, ...]`).
#[derive(Debug, Clone, Default)]
pub struct TripletMarginLoss {
    cfg: TripletMarginConfig,
}

impl TripletMarginLoss {
    /// Spec name.
    pub const NAME: &'static str = "triplet-margin";
    /// Validates margin > 0.
    pub fn new(cfg: TripletMarginConfig) -> Result<Self> {
        util::positive_margin(Self::NAME, cfg.margin)?;
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &TripletMarginConfig {
        &self.cfg
    }

    /// `TripletMarginLoss()(anchor, positive, negative)`.
    pub fn forward3(
        &self,
        anchor: &Tensor,
        positive: &Tensor,
        negative: &Tensor,
    ) -> Result<Tensor> {
        let n = Self::NAME;
        check_triplet(n, anchor, positive, negative)?;
        let c = &self.cfg;
        kernel(
            n,
            Tensor::f_triplet_margin_loss(
                anchor,
                positive,
                negative,
                c.margin,
                c.p,
                c.eps,
                c.swap,
                c.reduction.into(),
            ),
        )
    }
}

impl Loss for TripletMarginLoss {
    /// `input` = anchor, `target` = `stack([positive, negative])`.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (p, ng) = pos_neg(Self::NAME, target)?;
        self.forward3(input, &p, &ng)
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: false,
        })
        .stacked(1, 2)
    }
}

// ---------------------------------------------------------------------------

/// A distance function for [`TripletMarginWithDistanceLoss`].
pub type DistanceFn = Arc<dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// The distance of [`TripletMarginWithDistanceLoss`].
#[derive(Clone, Default)]
pub enum TripletDistance {
    /// `torch.pairwise_distance(x, y)` (p = 2, eps = 1e-6): PyTorch's default.
    #[default]
    Pairwise,
    /// `1 - F.cosine_similarity(x, y)` (dim 1, eps 1e-8), as in PyTorch's docs.
    Cosine,
    /// A user function `d(x, y)` returning one distance per sample.
    Custom(DistanceFn),
}

impl std::fmt::Debug for TripletDistance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TripletDistance::Pairwise => f.write_str("Pairwise"),
            TripletDistance::Cosine => f.write_str("Cosine"),
            TripletDistance::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// `pairwise` or `cosine` in specs. A [`TripletDistance::Custom`] function
/// is written `custom`, which no spec can read back (it exists only in code).
impl OptionValue for TripletDistance {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        *self = match text {
            "pairwise" => TripletDistance::Pairwise,
            "cosine" => TripletDistance::Cosine,
            _ => return Err("one of pairwise, cosine".into()),
        };
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            TripletDistance::Pairwise => "pairwise",
            TripletDistance::Cosine => "cosine",
            TripletDistance::Custom(_) => "custom",
        }
        .into()
    }
}

impl TripletDistance {
    fn apply(&self, loss: &str, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        match self {
            TripletDistance::Pairwise => {
                kernel(loss, Tensor::f_pairwise_distance(x, y, 2.0, 1e-6, false))
            }
            TripletDistance::Cosine => {
                let cos = kernel(loss, Tensor::f_cosine_similarity(x, y, 1, 1e-8))?;
                kernel(loss, cos.f_rsub_scalar(1.0))
            }
            TripletDistance::Custom(f) => f(x, y),
        }
    }
}

/// Options of [`TripletMarginWithDistanceLoss`]; `Default` is
/// `nn.TripletMarginWithDistanceLoss()`'s.
#[derive(Debug, Clone)]
pub struct TripletMarginWithDistanceConfig {
    /// The distance; default pairwise (Euclidean).
    pub distance: TripletDistance,
    /// Margin > 0; default 1.
    pub margin: f64,
    /// Use `min(d(a, n), d(p, n))` as the negative distance; default false.
    pub swap: bool,
    /// Reduction; default mean.
    pub reduction: Reduction,
}

impl Default for TripletMarginWithDistanceConfig {
    fn default() -> Self {
        Self {
            distance: TripletDistance::Pairwise,
            margin: 1.0,
            swap: false,
            reduction: Reduction::Mean,
        }
    }
}

/// `nn.TripletMarginWithDistanceLoss`:
/// `l_n = max(0, d(a_n, p_n) - d(a_n, n_n) + margin)` for any distance `d`.
/// Composed from tensor ops as `F.triplet_margin_with_distance_loss` does.
///
/// Three inputs: use [`TripletMarginWithDistanceLoss::forward3`].
/// [`Loss::forward`] takes `input` = the anchor and
/// `target = stack([positive, negative])`.
#[derive(Debug, Clone, Default)]
pub struct TripletMarginWithDistanceLoss {
    cfg: TripletMarginWithDistanceConfig,
}

impl TripletMarginWithDistanceLoss {
    /// Spec name.
    pub const NAME: &'static str = "triplet-margin-with-distance";
    /// Validates margin > 0.
    pub fn new(cfg: TripletMarginWithDistanceConfig) -> Result<Self> {
        util::positive_margin(Self::NAME, cfg.margin)?;
        Ok(Self { cfg })
    }
    /// The options.
    pub fn config(&self) -> &TripletMarginWithDistanceConfig {
        &self.cfg
    }

    /// `TripletMarginWithDistanceLoss(...)(anchor, positive, negative)`.
    pub fn forward3(
        &self,
        anchor: &Tensor,
        positive: &Tensor,
        negative: &Tensor,
    ) -> Result<Tensor> {
        let n = Self::NAME;
        let a = util::shape(n, "anchor", anchor)?;
        let p = util::shape(n, "positive", positive)?;
        let ng = util::shape(n, "negative", negative)?;
        if a.len() != p.len() || p.len() != ng.len() {
            return Err(invalid(
                n,
                format!(
                    "anchor {}, positive {} and negative {} must have the same number of dimensions",
                    fmt(&a),
                    fmt(&p),
                    fmt(&ng)
                ),
            ));
        }
        let d = &self.cfg.distance;
        let dist_pos = d.apply(n, anchor, positive)?;
        let mut dist_neg = d.apply(n, anchor, negative)?;
        if self.cfg.swap {
            let dist_swap = d.apply(n, positive, negative)?;
            dist_neg = kernel(n, dist_neg.f_minimum(&dist_swap))?;
        }
        let x = kernel(n, dist_pos.f_add_scalar(self.cfg.margin))?;
        let x = kernel(n, x.f_sub(&dist_neg))?;
        let loss = kernel(n, x.f_clamp_min(0))?;
        util::reduce(n, loss, self.cfg.reduction)
    }
}

impl Loss for TripletMarginWithDistanceLoss {
    /// `input` = anchor, `target` = `stack([positive, negative])`.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (p, ng) = pos_neg(Self::NAME, target)?;
        self.forward3(input, &p, &ng)
    }
    fn name(&self) -> &str {
        Self::NAME
    }
    fn targets(&self) -> Targets {
        Targets::new(TargetKind::Values {
            one_hot_from_classes: false,
        })
        .stacked(1, 2)
    }
}

// ---------------------------------------------------------------------------
// Spec options: each config visits its fields once (see `kiln_tensor::spec::Options`).

util::from_spec!(
    MarginRankingLoss(MarginRankingConfig),
    CosineEmbeddingLoss(CosineEmbeddingConfig),
    TripletMarginLoss(TripletMarginConfig),
    TripletMarginWithDistanceLoss(TripletMarginWithDistanceConfig)
);

impl Options for MarginRankingConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("margin", "margin"), &mut self.margin)?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for CosineEmbeddingConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("margin", "margin in [-1, 1]"),
            &mut self.margin,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for TripletMarginConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("margin", "margin, > 0"), &mut self.margin)?;
        v.option(
            OptionInfo::new("p", "norm degree of the pairwise distance"),
            &mut self.p,
        )?;
        v.option(
            OptionInfo::new("eps", "added inside the pairwise distance"),
            &mut self.eps,
        )?;
        v.option(
            OptionInfo::new("swap", "use the distance swap"),
            &mut self.swap,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}

impl Options for TripletMarginWithDistanceConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "distance",
                "pairwise | cosine (any function through the Rust API)",
            )
            .aliases(&["distance_function"]),
            &mut self.distance,
        )?;
        v.option(OptionInfo::new("margin", "margin, > 0"), &mut self.margin)?;
        v.option(
            OptionInfo::new("swap", "use the distance swap"),
            &mut self.swap,
        )?;
        v.option(util::REDUCTION, &mut self.reduction)
    }
}
