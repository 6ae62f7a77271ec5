//! Every validation rule: the loss refuses the input before libtorch runs and
//! says which loss, which shapes and which rule.
use crate::common;

use anyhow::Result;
use common::{expect_err, expect_invalid, randn, t32, t64, ti};
use kiln_losses::*;
use kiln_tensor::{Kind, Tensor};

fn ce() -> CrossEntropyLoss {
    CrossEntropyLoss::default()
}

#[test]
fn cross_entropy_options() -> Result<()> {
    let cfg = CrossEntropyConfig {
        label_smoothing: 1.5,
        ..Default::default()
    };
    expect_invalid(
        CrossEntropyLoss::new(cfg),
        "cross-entropy: label_smoothing must be between 0.0 and 1.0, got 1.5",
    )?;
    let cfg = CrossEntropyConfig {
        label_smoothing: -0.1,
        ..Default::default()
    };
    expect_invalid(
        CrossEntropyLoss::new(cfg),
        "cross-entropy: label_smoothing must be between 0.0 and 1.0, got -0.1",
    )
}

#[test]
fn cross_entropy_dtypes_and_dims() -> Result<()> {
    let x = randn(&[4, 3])?;
    expect_invalid(
        ce().forward(
            &ti(&[0, 1, 2, 1], &[2, 2])?.f_reshape([4])?,
            &ti(&[0, 1, 2, 1], &[4])?,
        ),
        "cross-entropy: input [4] must be floating point, got Int64",
    )?;
    expect_invalid(
        ce().forward(&randn(&[])?, &ti(&[1], &[])?),
        "cross-entropy: input [] must have at least 1 dimension (the classes)",
    )?;
    expect_invalid(
        ce().forward(&x, &ti(&[0, 1, 2, 1], &[4])?.f_to_kind(Kind::Int)?),
        "cross-entropy: target [4] must hold int64 class indices, got Int",
    )?;
    expect_invalid(
        ce().forward(&x, &Tensor::new()),
        "cross-entropy: target is an undefined tensor",
    )?;
    expect_invalid(
        ce().forward(&Tensor::new(), &x),
        "cross-entropy: input is an undefined tensor",
    )
}

#[test]
fn cross_entropy_shapes() -> Result<()> {
    expect_invalid(
        ce().forward(
            &randn(&[64, 10])?,
            &Tensor::f_zeros([32], (Kind::Int64, kiln_tensor::Device::Cpu))?,
        ),
        "cross-entropy: input [64, 10] and target [32] must have the same batch size",
    )?;
    expect_invalid(
        ce().forward(&randn(&[4, 3, 2])?, &Tensor::f_zeros([4, 3], (Kind::Int64, kiln_tensor::Device::Cpu))?),
        "cross-entropy: input [4, 3, 2] needs a target of shape [4, 2] (input without the class dimension 1), got [4, 3]",
    )?;
    expect_invalid(
        ce().forward(&randn(&[5])?, &ti(&[1, 2], &[2])?),
        "cross-entropy: input [5] needs a target of shape [] (input without the class dimension 1), got [2]",
    )?;
    expect_invalid(
        ce().forward(&randn(&[4, 3])?, &randn(&[4, 2])?),
        "cross-entropy: input [4, 3] and target [4, 2] (class probabilities) must have the same shape",
    )?;
    let l = CrossEntropyLoss::new(CrossEntropyConfig {
        ignore_index: 1,
        ..Default::default()
    })?;
    expect_invalid(
        l.forward(&randn(&[4, 3])?, &randn(&[4, 3])?),
        "cross-entropy: ignore_index=1 is not supported with class-probability (floating) targets",
    )
}

#[test]
fn cross_entropy_target_range() -> Result<()> {
    let x = randn(&[3, 10])?;
    expect_invalid(
        ce().forward(&x, &ti(&[1, 12, 3], &[3])?),
        "cross-entropy: target 12 is out of range for 10 classes",
    )?;
    expect_invalid(
        ce().forward(&x, &ti(&[1, -1, 3], &[3])?),
        "cross-entropy: target -1 is out of range for 10 classes",
    )?;
    expect_invalid(
        ce().forward(&x, &ti(&[10, 0, 3], &[3])?),
        "cross-entropy: target 10 is out of range for 10 classes",
    )?;
    // The ignored value is the minimum: the range is checked without it.
    expect_invalid(
        ce().forward(&x, &ti(&[-100, 11, 3], &[3])?),
        "cross-entropy: target 11 is out of range for 10 classes",
    )?;
    expect_invalid(
        ce().forward(&x, &ti(&[-100, -7, 3], &[3])?),
        "cross-entropy: target -7 is out of range for 10 classes",
    )?;
    // Ignored values above the range are fine too.
    let l = CrossEntropyLoss::new(CrossEntropyConfig {
        ignore_index: 255,
        ..Default::default()
    })?;
    let _ = l.forward(&x, &ti(&[255, 9, 0], &[3])?)?;
    expect_invalid(
        l.forward(&x, &ti(&[255, 19, 0], &[3])?),
        "cross-entropy: target 19 is out of range for 10 classes",
    )?;
    // uint8 targets are class indices too (as in PyTorch).
    let _ = ce().forward(&x, &ti(&[1, 2, 3], &[3])?.f_to_kind(Kind::Uint8)?)?;
    // Every target ignored: no error.
    let all = ce().forward(&x, &ti(&[-100, -100, -100], &[3])?)?;
    anyhow::ensure!(
        common::scalar(&all)?.is_nan(),
        "mean over no target is NaN in PyTorch"
    );
    Ok(())
}

#[test]
fn cross_entropy_weight_length() -> Result<()> {
    let l = CrossEntropyLoss::new(CrossEntropyConfig {
        weight: Some(vec![1.0, 2.0]),
        ..Default::default()
    })?;
    expect_invalid(
        l.forward(&randn(&[4, 3])?, &ti(&[0, 1, 2, 1], &[4])?),
        "cross-entropy: weight has 2 values but input [4, 3] has 3 classes: give one weight per class",
    )
}

#[test]
fn nll_rules() -> Result<()> {
    let l = NllLoss::default();
    expect_invalid(
        l.forward(&randn(&[4, 3])?, &ti(&[0, 1], &[2])?),
        "nll: input [4, 3] and target [2] must have the same batch size",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, 3], &[2])?),
        "nll: target 3 is out of range for 3 classes",
    )?;
    let w = NllLoss::new(NllConfig {
        weight: Some(vec![1.0; 4]),
        ..Default::default()
    })?;
    expect_invalid(
        w.forward(&randn(&[2, 3])?, &ti(&[0, 1], &[2])?),
        "nll: weight has 4 values but input [2, 3] has 3 classes: give one weight per class",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &randn(&[2])?),
        "nll: target [2] must hold int64 class indices, got Double",
    )
}

#[test]
fn multi_margin_rules() -> Result<()> {
    expect_invalid(
        MultiMarginLoss::new(MultiMarginConfig {
            p: 3,
            ..Default::default()
        }),
        "multi-margin: only p == 1 and p == 2 are supported, got p=3",
    )?;
    let l = MultiMarginLoss::default();
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, 3], &[2])?),
        "multi-margin: target 3 is out of range for 3 classes",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, 1, 2], &[3])?),
        "multi-margin: input [2, 3] needs a target of 2 class indices ([2] or []), got [3]",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 0])?, &ti(&[0, 0], &[2])?),
        "multi-margin: input [2, 0] must be a non-empty vector [C] or matrix [N, C] (C > 0)",
    )?;
    expect_invalid(
        l.forward(
            &randn(&[2, 3])?,
            &ti(&[0, 1], &[2])?.f_to_kind(Kind::Uint8)?,
        ),
        "multi-margin: target [2] must hold int64 class indices, got Uint8",
    )?;
    let w = MultiMarginLoss::new(MultiMarginConfig {
        weight: Some(vec![1.0]),
        ..Default::default()
    })?;
    expect_invalid(
        w.forward(&randn(&[2, 3])?, &ti(&[0, 1], &[2])?),
        "multi-margin: weight has 1 values but input [2, 3] has 3 classes: give one weight per class",
    )
}

#[test]
fn multilabel_margin_rules() -> Result<()> {
    let l = MultiLabelMarginLoss::default();
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, 3, -1, 1, -1, 0], &[2, 3])?),
        "multilabel-margin: target 3 is out of range for 3 classes (values must be in [-1, 3))",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, -1, 2, 1, -5, 0], &[2, 3])?),
        "multilabel-margin: target -5 is out of range for 3 classes (values must be in [-1, 3))",
    )?;
    // Values after a row's first -1 are not labels but must still be in range (as in PyTorch).
    let _ = l.forward(&randn(&[2, 3])?, &ti(&[0, -1, 2, 1, -1, 0], &[2, 3])?)?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &ti(&[0, -1], &[1, 2])?),
        "multilabel-margin: input [2, 3] needs a target of the same shape, got [1, 2]",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &randn(&[2, 3])?),
        "multilabel-margin: target [2, 3] must hold int64 class indices, got Double",
    )?;
    expect_invalid(
        l.forward(&randn(&[3])?, &ti(&[0, -1], &[2])?),
        "multilabel-margin: input [3] needs a target of the same shape, got [2]",
    )?;
    expect_invalid(
        l.forward(&randn(&[])?, &ti(&[0, -1], &[2])?),
        "multilabel-margin: input [] needs a target of 1 index, got [2]",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 0])?, &ti(&[], &[2, 0])?),
        "multilabel-margin: input [2, 0] must be a non-empty vector [C] or matrix [N, C] (C > 0)",
    )
}

#[test]
fn multilabel_soft_margin_rules() -> Result<()> {
    let l = MultiLabelSoftMarginLoss::default();
    expect_invalid(
        l.forward(&randn(&[])?, &randn(&[])?),
        "multilabel-soft-margin: input [] must have at least 1 dimension (the classes)",
    )?;
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &randn(&[2, 4])?),
        "multilabel-soft-margin: input [2, 3] and target [2, 4] cannot be broadcast together",
    )?;
    let w = MultiLabelSoftMarginLoss::new(MultiLabelSoftMarginConfig {
        weight: Some(vec![1.0, 2.0]),
        ..Default::default()
    })?;
    expect_invalid(
        w.forward(&randn(&[2, 3])?, &randn(&[2, 3])?),
        "multilabel-soft-margin: loss [2, 3] and weight [2] cannot be broadcast together",
    )
}

#[test]
fn pointwise_rules() -> Result<()> {
    let (x, y) = (randn(&[2, 3])?, randn(&[4])?);
    for (l, name) in [
        (Box::new(MseLoss::default()) as Box<dyn Loss>, "mse"),
        (Box::new(L1Loss::default()), "l1"),
        (Box::new(HuberLoss::default()), "huber"),
        (Box::new(SmoothL1Loss::default()), "smooth-l1"),
        (Box::new(PoissonNllLoss::default()), "poisson-nll"),
        (Box::new(KlDivLoss::default()), "kl-div"),
        (Box::new(SoftMarginLoss::default()), "soft-margin"),
        (Box::new(HingeEmbeddingLoss::default()), "hinge-embedding"),
    ] {
        expect_invalid(
            l.forward(&x, &y),
            &format!("{name}: input [2, 3] and target [4] cannot be broadcast together"),
        )?;
        expect_invalid(
            l.forward(&ti(&[1, 2], &[2])?, &randn(&[2])?),
            &format!("{name}: input [2] must be floating point, got Int64"),
        )?;
    }
    expect_invalid(
        HuberLoss::new(HuberConfig {
            delta: 0.0,
            ..Default::default()
        }),
        "huber: delta must be > 0, got 0",
    )?;
    expect_invalid(
        SmoothL1Loss::new(SmoothL1Config {
            beta: -1.0,
            ..Default::default()
        }),
        "smooth-l1: beta must be >= 0, got -1",
    )
}

#[test]
fn gaussian_nll_rules() -> Result<()> {
    let l = GaussianNllLoss::default();
    let (x, y) = (randn(&[4, 3])?, randn(&[4, 3])?);
    expect_invalid(
        l.forward_var(&x, &y, &t64(&[1.0, -1.0, 1.0, 1.0], &[4])?),
        "gaussian-nll: var [4] has negative entries",
    )?;
    expect_invalid(
        l.forward_var(&x, &y, &randn(&[3])?.f_abs()?),
        "gaussian-nll: var [3] is of incorrect size for input [4, 3]: use the input's shape, drop its last dimension, or make one dimension 1",
    )?;
    expect_invalid(
        l.forward_var_scalar(&x, &y, -0.5),
        "gaussian-nll: var -0.5 is negative",
    )?;
    expect_invalid(
        l.forward(&x, &y),
        "gaussian-nll: input [4, 3] must stack the mean and the variance along a new leading dimension of size 2",
    )?;
    // A scalar variance is a float like PyTorch's `var: float`.
    let a = l.forward_var_scalar(&x, &y, 0.5)?;
    let b = l.forward_var(&x, &y, &x.f_ones_like()?.f_mul_scalar(0.5)?)?;
    anyhow::ensure!(common::scalar(&a)? == common::scalar(&b)?);
    Ok(())
}

#[test]
fn kl_div_reduction_parse() -> Result<()> {
    expect_invalid(
        KlDivReduction::parse("kl-div", "avg"),
        "kl-div: reduction 'avg' is not one of none, mean, sum, batchmean",
    )?;
    anyhow::ensure!(KlDivReduction::parse("kl-div", "batchmean")? == KlDivReduction::BatchMean);
    expect_invalid(
        Reduction::parse("mse", "batchmean"),
        "mse: reduction 'batchmean' is not one of none, mean, sum",
    )
}

#[test]
fn bce_rules() -> Result<()> {
    let l = BceLoss::default();
    expect_invalid(
        l.forward(&t64(&[0.5, 0.5], &[2])?, &t64(&[0.5, 0.5, 0.5], &[3])?),
        "bce: input [2] and target [3] must have the same size",
    )?;
    expect_invalid(
        l.forward(&t64(&[0.5, 1.5], &[2])?, &t64(&[0.5, 0.5], &[2])?),
        "bce: all elements of input must be between 0 and 1, found 1.5",
    )?;
    expect_invalid(
        l.forward(&t64(&[0.5, 0.5], &[2])?, &t64(&[-0.25, 0.5], &[2])?),
        "bce: all elements of target must be between 0 and 1, found -0.25",
    )?;
    expect_invalid(
        l.forward(&t64(&[f64::NAN, 0.5], &[2])?, &t64(&[0.5, 0.5], &[2])?),
        "bce: all elements of input must be between 0 and 1, found NaN",
    )?;
    expect_invalid(
        l.forward(&t64(&[0.5, 0.5], &[2])?, &ti(&[0, 1], &[2])?),
        "bce: target [2] must be floating point, got Int64",
    )?;
    let w = BceLoss::new(BceConfig {
        weight: Some(vec![1.0, 2.0, 3.0]),
        ..Default::default()
    })?;
    expect_invalid(
        w.forward(&t64(&[0.5; 4], &[2, 2])?, &t64(&[0.5; 4], &[2, 2])?),
        "bce: target [2, 2] and weight [3] cannot be broadcast together",
    )
}

#[test]
fn bce_with_logits_rules() -> Result<()> {
    let l = BceWithLogitsLoss::default();
    expect_invalid(
        l.forward(&randn(&[2, 3])?, &randn(&[3, 2])?),
        "bce-with-logits: input [2, 3] and target [3, 2] must have the same size",
    )?;
    let p = BceWithLogitsLoss::new(BceWithLogitsConfig {
        pos_weight: Some(vec![1.0, 2.0]),
        ..Default::default()
    })?;
    expect_invalid(
        p.forward(&randn(&[2, 3])?, &randn(&[2, 3])?),
        "bce-with-logits: input [2, 3] and pos_weight [2] cannot be broadcast together",
    )
}

#[test]
fn margin_ranking_and_cosine_rules() -> Result<()> {
    let mr = MarginRankingLoss::default();
    expect_invalid(
        mr.forward3(&randn(&[3])?, &randn(&[3])?, &randn(&[3, 1])?),
        "margin-ranking: input1 [3], input2 [3] and target [3, 1] must have the same number of dimensions",
    )?;
    expect_invalid(
        mr.forward(&randn(&[3, 4])?, &randn(&[4])?),
        "margin-ranking: input [3, 4] must stack input1 and input2 along a new leading dimension of size 2",
    )?;
    let ce = CosineEmbeddingLoss::default();
    expect_invalid(
        ce.forward3(&randn(&[3, 4])?, &randn(&[3, 5])?, &randn(&[3])?),
        "cosine-embedding: input1 [3, 4] and input2 [3, 5] must have the same shape",
    )?;
    expect_invalid(
        ce.forward3(&randn(&[3, 4])?, &randn(&[3, 4])?, &randn(&[2])?),
        "cosine-embedding: inputs [3, 4] need a target of shape [N] for inputs [N, D] or [] for inputs [D], got [2]",
    )
}

#[test]
fn triplet_rules() -> Result<()> {
    expect_invalid(
        TripletMarginLoss::new(TripletMarginConfig {
            margin: 0.0,
            ..Default::default()
        }),
        "triplet-margin: margin must be greater than 0, got 0",
    )?;
    expect_invalid(
        TripletMarginWithDistanceLoss::new(TripletMarginWithDistanceConfig {
            margin: -1.0,
            ..Default::default()
        }),
        "triplet-margin-with-distance: margin must be greater than 0, got -1",
    )?;
    let t = TripletMarginLoss::default();
    expect_invalid(
        t.forward3(&randn(&[3, 4])?, &randn(&[3, 4])?, &randn(&[4])?),
        "triplet-margin: anchor [3, 4], positive [3, 4] and negative [4] must have the same number of dimensions",
    )?;
    expect_invalid(
        t.forward(&randn(&[3, 4])?, &randn(&[3, 4])?),
        "triplet-margin: target [3, 4] must stack the positive and the negative along a new leading dimension of size 2",
    )?;
    let d = TripletMarginWithDistanceLoss::default();
    expect_invalid(
        d.forward3(&randn(&[3, 4])?, &randn(&[4])?, &randn(&[3, 4])?),
        "triplet-margin-with-distance: anchor [3, 4], positive [4] and negative [3, 4] must have the same number of dimensions",
    )
}

#[test]
fn triplet_custom_distance() -> Result<()> {
    // A user closure equal to the default distance gives the same loss.
    let dist: DistanceFn = std::sync::Arc::new(|x: &Tensor, y: &Tensor| {
        Ok(Tensor::f_pairwise_distance(x, y, 2.0, 1e-6, false)?)
    });
    let custom = TripletMarginWithDistanceLoss::new(TripletMarginWithDistanceConfig {
        distance: TripletDistance::Custom(dist),
        swap: true,
        ..Default::default()
    })?;
    let default = TripletMarginWithDistanceLoss::new(TripletMarginWithDistanceConfig {
        swap: true,
        ..Default::default()
    })?;
    let (a, p, n) = (randn(&[5, 3])?, randn(&[5, 3])?, randn(&[5, 3])?);
    let x = common::scalar(&custom.forward3(&a, &p, &n)?)?;
    let y = common::scalar(&default.forward3(&a, &p, &n)?)?;
    anyhow::ensure!(x == y, "custom {x} != default {y}");
    // A closure's error comes back unchanged.
    let failing: DistanceFn = std::sync::Arc::new(|_: &Tensor, _: &Tensor| {
        Err(Error::Invalid {
            loss: "my-distance".into(),
            message: "refused".into(),
        })
    });
    let l = TripletMarginWithDistanceLoss::new(TripletMarginWithDistanceConfig {
        distance: TripletDistance::Custom(failing),
        ..Default::default()
    })?;
    expect_invalid(l.forward3(&a, &p, &n), "my-distance: refused")
}

#[test]
fn ctc_rules() -> Result<()> {
    let l = CtcLoss::default();
    let lp = randn(&[6, 2, 4])?.f_log_softmax(2, None::<Kind>)?;
    let tg = ti(&[1, 2, 3, 1, 0, 0], &[2, 3])?;
    expect_invalid(
        CtcLoss::new(CtcConfig {
            blank: -1,
            ..Default::default()
        }),
        "ctc: blank must be >= 0, got -1",
    )?;
    let b = CtcLoss::new(CtcConfig {
        blank: 4,
        ..Default::default()
    })?;
    expect_invalid(
        b.forward_ctc(&lp, &tg, &[6, 6], &[3, 1]),
        "ctc: blank 4 is out of range for log_probs [6, 2, 4] with 4 classes",
    )?;
    expect_invalid(
        l.forward_ctc(&randn(&[6])?, &tg, &[6, 6], &[3, 1]),
        "ctc: log_probs [6] must be [T, N, C] or [T, C] (unbatched)",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &tg, &[6], &[3, 1]),
        "ctc: log_probs [6, 2, 4] has batch size 2, but got 1 input lengths and 2 target lengths",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &tg, &[7, 6], &[3, 1]),
        "ctc: input length 7 is out of range for log_probs [6, 2, 4] with T = 6",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &tg, &[6, 6], &[4, 1]),
        "ctc: target length 4 is longer than the padded targets [2, 3]",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &tg, &[6, 6], &[3, -1]),
        "ctc: target length -1 is negative",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &ti(&[1, 2, 3, 1, 0, 4], &[2, 3])?, &[6, 6], &[3, 1]),
        "ctc: target 4 is out of range for 4 classes",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &ti(&[1, 2, 3], &[3])?, &[6, 6], &[3, 1]),
        "ctc: target lengths sum to 4, more than the concatenated targets [3]",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &randn(&[2, 3])?, &[6, 6], &[3, 1]),
        "ctc: targets [2, 3] must be int64 or int32, got Double",
    )?;
    expect_invalid(
        l.forward_ctc(&lp, &ti(&[1, 2, 3, 1, 0, 0], &[3, 2])?, &[6, 6], &[2, 1]),
        "ctc: targets [3, 2] must be padded [N, S] (N = 2) or concatenated [sum(target_lengths)] for log_probs [6, 2, 4]",
    )?;
    expect_invalid(
        l.forward_ctc_tensors(&lp, &tg, &t64(&[6.0, 6.0], &[2])?, &ti(&[3, 1], &[2])?),
        "ctc: input_lengths [2] must be an integer tensor [N] or []",
    )?;
    // Concatenated targets are accepted and equal the padded form.
    let a = l.forward_ctc(&lp, &ti(&[1, 2, 3, 1], &[4])?, &[6, 6], &[3, 1])?;
    let p = l.forward_ctc(&lp, &tg, &[6, 6], &[3, 1])?;
    anyhow::ensure!((common::scalar(&a)? - common::scalar(&p)?).abs() < 1e-12);
    // Unbatched [T, C] equals the batch of one.
    let lp1 = lp.f_select(1, 0)?;
    let tg1 = ti(&[1, 2, 3], &[3])?;
    let u = l.forward_ctc(&lp1, &tg1, &[6], &[3])?;
    let b1 = l.forward_ctc(&lp1.f_unsqueeze(1)?, &tg1.f_unsqueeze(0)?, &[6], &[3])?;
    anyhow::ensure!((common::scalar(&u)? - common::scalar(&b1)?).abs() < 1e-12);
    let uf = l.forward(&lp1, &tg1)?;
    anyhow::ensure!((common::scalar(&uf)? - common::scalar(&u)?).abs() < 1e-12);
    expect_invalid(
        l.forward(&lp, &ti(&[1, 2, 3], &[3])?),
        "ctc: targets [3] must be blank-padded [N, S] ([S] unbatched) for log_probs [6, 2, 4]",
    )?;
    expect_invalid(
        l.forward_ctc_tensors(&lp, &tg, &ti(&[6, 6], &[1, 2])?, &ti(&[3, 1], &[2])?),
        "ctc: input_lengths [1, 2] must be an integer tensor [N] or []",
    )?;
    // Loss::forward infers the lengths from blank padding.
    let f = l.forward(&lp, &tg)?;
    anyhow::ensure!(common::scalar(&f)? == common::scalar(&p)?);
    Ok(())
}

#[test]
fn libtorch_refusals_name_the_loss() -> Result<()> {
    // A dtype mix PyTorch's kernel refuses comes back as an error naming the loss.
    let r = BceLoss::default().forward(&t32(&[0.5, 0.5], &[2])?, &t64(&[0.5, 0.5], &[2])?);
    anyhow::ensure!(
        matches!(r, Err(Error::Kernel { .. })),
        "expected a libtorch refusal"
    );
    let msg = expect_err(
        r,
        &["bce: libtorch: ", "Found dtype Double but expected Float"],
    )?;
    anyhow::ensure!(!msg.contains('\n'), "multi-line message {msg:?}");
    Ok(())
}
