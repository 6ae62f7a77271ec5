//! Reductions over the per-element losses.
use crate::error::{invalid, Result};
use kiln_tensor::tch;

/// How a loss reduces its per-element values (`reduction=` in PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// No reduction: one loss per element (`'none'`).
    None,
    /// The mean of the per-element losses (`'mean'`, PyTorch's default).
    #[default]
    Mean,
    /// The sum of the per-element losses (`'sum'`).
    Sum,
}

impl Reduction {
    /// The spec/PyTorch spelling: `none`, `mean` or `sum`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
        }
    }

    /// Parses `none`, `mean` or `sum`; `loss` names the loss in the error.
    pub fn parse(loss: &str, text: &str) -> Result<Self> {
        match text {
            "none" => Ok(Reduction::None),
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            other => Err(invalid(
                loss,
                format!("reduction '{other}' is not one of none, mean, sum"),
            )),
        }
    }
}

impl From<Reduction> for tch::Reduction {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::None => tch::Reduction::None,
            Reduction::Mean => tch::Reduction::Mean,
            Reduction::Sum => tch::Reduction::Sum,
        }
    }
}

/// [`KlDivLoss`](crate::KlDivLoss)'s reductions: the usual three plus `batchmean`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KlDivReduction {
    /// No reduction.
    None,
    /// Mean over every element (PyTorch's default, which warns that it is not
    /// the mathematical KL divergence).
    #[default]
    Mean,
    /// Sum over every element.
    Sum,
    /// Sum divided by the batch size `input.size(0)` (the KL divergence).
    BatchMean,
}

impl KlDivReduction {
    /// The spec/PyTorch spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KlDivReduction::None => "none",
            KlDivReduction::Mean => "mean",
            KlDivReduction::Sum => "sum",
            KlDivReduction::BatchMean => "batchmean",
        }
    }

    /// Parses `none`, `mean`, `sum` or `batchmean`.
    pub fn parse(loss: &str, text: &str) -> Result<Self> {
        match text {
            "batchmean" => Ok(KlDivReduction::BatchMean),
            other => Reduction::parse(loss, other)
                .map(KlDivReduction::from)
                .map_err(|_| {
                    invalid(
                        loss,
                        format!("reduction '{other}' is not one of none, mean, sum, batchmean"),
                    )
                }),
        }
    }
}

impl From<Reduction> for KlDivReduction {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::None => KlDivReduction::None,
            Reduction::Mean => KlDivReduction::Mean,
            Reduction::Sum => KlDivReduction::Sum,
        }
    }
}
