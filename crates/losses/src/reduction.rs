//! Reductions over the per-element losses.
use crate::error::{invalid, Result};
use kiln_tensor::spec::Choice;
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

kiln_tensor::choices!(Reduction {
    None = "none",
    Mean = "mean",
    Sum = "sum",
});

impl Reduction {
    /// The spec/PyTorch spelling: `none`, `mean` or `sum`.
    pub fn as_str(self) -> &'static str {
        self.word()
    }

    /// Parses `none`, `mean` or `sum`; `loss` names the loss in the error.
    pub fn parse(loss: &str, text: &str) -> Result<Self> {
        Self::from_word(text).ok_or_else(|| {
            invalid(
                loss,
                format!("reduction '{text}' is not {}", Self::expected()),
            )
        })
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

kiln_tensor::choices!(KlDivReduction {
    None = "none",
    Mean = "mean",
    Sum = "sum",
    BatchMean = "batchmean",
});

impl KlDivReduction {
    /// The spec/PyTorch spelling.
    pub fn as_str(self) -> &'static str {
        self.word()
    }

    /// Parses `none`, `mean`, `sum` or `batchmean`.
    pub fn parse(loss: &str, text: &str) -> Result<Self> {
        Self::from_word(text).ok_or_else(|| {
            invalid(
                loss,
                format!("reduction '{text}' is not {}", Self::expected()),
            )
        })
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
