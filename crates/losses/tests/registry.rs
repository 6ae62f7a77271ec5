//! The spec-string registry, the closure impl and PyTorch's defaults.
mod common;

use anyhow::{ensure, Result};
use common::{err_msg, randn, ti};
use kiln_losses::*;
use kiln_tensor::{tch, Kind, Tensor};

const NAMES: [&str; 21] = [
    "cross-entropy",
    "nll",
    "mse",
    "l1",
    "ctc",
    "poisson-nll",
    "gaussian-nll",
    "kl-div",
    "bce",
    "bce-with-logits",
    "margin-ranking",
    "hinge-embedding",
    "multilabel-margin",
    "huber",
    "smooth-l1",
    "soft-margin",
    "multilabel-soft-margin",
    "cosine-embedding",
    "multi-margin",
    "triplet-margin",
    "triplet-margin-with-distance",
];

#[test]
fn registry_has_all_21_losses_by_name() -> Result<()> {
    let r = registry();
    ensure!(r.names() == NAMES.to_vec(), "names {:?}", r.names());
    for name in NAMES {
        let loss = r.build(name)?;
        ensure!(
            loss.name() == name,
            "{name} builds a loss named {}",
            loss.name()
        );
    }
    Ok(())
}

#[test]
fn unknown_name_lists_accepted() -> Result<()> {
    let msg = err_msg(registry().build("cross-entropi:ignore_index=3"))?;
    ensure!(
        msg == format!(
            "unknown loss 'cross-entropi'; accepted: {}",
            NAMES.join(", ")
        ),
        "{msg}"
    );
    Ok(())
}

#[test]
fn unknown_option_lists_accepted() -> Result<()> {
    let msg = err_msg(registry().build("cross-entropy:smoothing=0.1"))?;
    ensure!(
        msg == "cross-entropy: unknown option(s) smoothing; accepted: weight, ignore_index, reduction, label_smoothing",
        "{msg}"
    );
    let msg = err_msg(registry().build("mse:delta=1"))?;
    ensure!(
        msg == "mse: unknown option(s) delta; accepted: reduction",
        "{msg}"
    );
    Ok(())
}

#[test]
fn bad_values_are_named() -> Result<()> {
    let r = registry();
    for (spec, want) in [
        ("huber:delta=abc", "huber: option delta=abc is not a number"),
        ("huber:delta=-1", "huber: delta must be > 0, got -1"),
        (
            "mse:reduction=avg",
            "mse: reduction 'avg' is not one of none, mean, sum",
        ),
        (
            "kl-div:reduction=avg",
            "kl-div: reduction 'avg' is not one of none, mean, sum, batchmean",
        ),
        (
            "nll:ignore_index=1.5",
            "nll: option ignore_index=1.5 is not an integer",
        ),
        (
            "cross-entropy:label_smoothing=2",
            "cross-entropy: label_smoothing must be between 0.0 and 1.0, got 2",
        ),
        (
            "cross-entropy:weight=1;x",
            "cross-entropy: option weight=1;x is not a ;-separated list of numbers",
        ),
        (
            "bce-with-logits:pos_weight=a",
            "bce-with-logits: option pos_weight=a is not a ;-separated list of numbers",
        ),
        (
            "ctc:zero_infinity=yes",
            "ctc: option zero_infinity=yes is not true or false",
        ),
        (
            "multi-margin:p=3",
            "multi-margin: only p == 1 and p == 2 are supported, got p=3",
        ),
        (
            "triplet-margin:margin=0",
            "triplet-margin: margin must be greater than 0, got 0",
        ),
        (
            "triplet-margin-with-distance:distance=euclid",
            "triplet-margin-with-distance: option distance=euclid is not one of pairwise, cosine",
        ),
        (
            "huber:delta",
            "option 'delta' in spec 'huber:delta' is not key=value",
        ),
        (
            ":delta=1",
            "spec ':delta=1' has no name: write name or name:key=value,...",
        ),
    ] {
        let msg = err_msg(r.build(spec))?;
        ensure!(msg == want, "{spec}: got {msg:?}, want {want:?}");
    }
    Ok(())
}

#[test]
fn spec_options_reach_the_loss() -> Result<()> {
    // Same numbers as the typed API with the same options.
    let x = randn(&[6, 4])?;
    let y = ti(&[0, 3, 1, 2, 3, 3], &[6])?;
    let from_spec = registry().build(
        "cross-entropy: label_smoothing=0.1, ignore_index=3, weight=[1;2;0.5;1], reduction=sum",
    )?;
    let typed = CrossEntropyLoss::new(CrossEntropyConfig {
        weight: Some(vec![1.0, 2.0, 0.5, 1.0]),
        ignore_index: 3,
        reduction: Reduction::Sum,
        label_smoothing: 0.1,
    })?;
    let a = common::scalar(&from_spec.forward(&x, &y)?)?;
    let b = common::scalar(&typed.forward(&x, &y)?)?;
    ensure!(a == b, "{a} != {b}");
    let h = registry().build("huber:delta=0.5,reduction=none")?;
    let out = h.forward(&randn(&[3])?, &randn(&[3])?)?;
    ensure!(out.size() == vec![3], "reduction=none keeps the shape");
    Ok(())
}

#[test]
fn describe_lists_names_summaries_and_defaults() -> Result<()> {
    let text = registry().describe();
    for name in NAMES {
        ensure!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from describe()"
        );
    }
    ensure!(
        text.contains("label_smoothing") && text.contains("[0]"),
        "{text}"
    );
    ensure!(
        text.contains("ignore_index") && text.contains("[-100]"),
        "{text}"
    );
    ensure!(text.contains("batchmean"), "{text}");
    Ok(())
}

#[test]
fn downstream_crates_register_their_own() -> Result<()> {
    let mut r = registry();
    r.register(LossEntry::new(
        "scaled-mse",
        "MSE times a factor",
        vec![LossOption::new("scale", "1", "the factor")],
        |spec| {
            let scale = spec.f64("scale")?.unwrap_or(1.0);
            let mse = MseLoss::default();
            Ok(Box::new(
                move |x: &Tensor, y: &Tensor| -> kiln_losses::Result<Tensor> {
                    Ok(mse.forward(x, y)?.f_mul_scalar(scale)?)
                },
            ) as Box<dyn Loss>)
        },
    ));
    ensure!(r.names().len() == 22 && r.names().contains(&"scaled-mse"));
    let l = r.build("scaled-mse:scale=2")?;
    ensure!(l.name() == "custom");
    let (x, y) = (randn(&[4])?, randn(&[4])?);
    let a = common::scalar(&l.forward(&x, &y)?)?;
    let b = common::scalar(&MseLoss::default().forward(&x, &y)?)?;
    ensure!(a == 2.0 * b);
    let msg = err_msg(r.build("scaled-mse:factor=2"))?;
    ensure!(
        msg == "scaled-mse: unknown option(s) factor; accepted: scale",
        "{msg}"
    );
    ensure!(r.describe().contains("scaled-mse"));
    Ok(())
}

#[test]
fn a_closure_is_a_loss() -> Result<()> {
    let l1 = |x: &Tensor, y: &Tensor| -> kiln_losses::Result<Tensor> {
        Ok(x.f_sub(y)?.f_abs()?.f_mean(None::<Kind>)?)
    };
    let boxed: Box<dyn Loss> = Box::new(l1);
    ensure!(boxed.name() == "custom");
    let (x, y) = (randn(&[5])?, randn(&[5])?);
    let a = common::scalar(&boxed.forward(&x, &y)?)?;
    let b = common::scalar(&L1Loss::default().forward(&x, &y)?)?;
    ensure!((a - b).abs() < 1e-15, "{a} vs {b}");
    Ok(())
}

#[test]
fn defaults_are_pytorchs() -> Result<()> {
    let ce = CrossEntropyConfig::default();
    ensure!(
        ce.weight.is_none()
            && ce.ignore_index == -100
            && ce.reduction == Reduction::Mean
            && ce.label_smoothing == 0.0
    );
    let nll = NllConfig::default();
    ensure!(nll.ignore_index == -100 && nll.reduction == Reduction::Mean);
    let p = PoissonNllConfig::default();
    ensure!(p.log_input && !p.full && p.eps == 1e-8);
    let g = GaussianNllConfig::default();
    ensure!(!g.full && g.eps == 1e-6);
    ensure!(
        KlDivConfig::default().reduction == KlDivReduction::Mean
            && !KlDivConfig::default().log_target
    );
    ensure!(HuberConfig::default().delta == 1.0 && SmoothL1Config::default().beta == 1.0);
    ensure!(HingeEmbeddingConfig::default().margin == 1.0);
    ensure!(
        MarginRankingConfig::default().margin == 0.0
            && CosineEmbeddingConfig::default().margin == 0.0
    );
    let mm = MultiMarginConfig::default();
    ensure!(mm.p == 1 && mm.margin == 1.0 && mm.weight.is_none());
    let t = TripletMarginConfig::default();
    ensure!(t.margin == 1.0 && t.p == 2.0 && t.eps == 1e-6 && !t.swap);
    let td = TripletMarginWithDistanceConfig::default();
    ensure!(matches!(td.distance, TripletDistance::Pairwise) && td.margin == 1.0 && !td.swap);
    let c = CtcConfig::default();
    ensure!(c.blank == 0 && c.reduction == Reduction::Mean && !c.zero_infinity);
    Ok(())
}

/// `kiln train` prints PyTorch's numbers: the default cross-entropy is libtorch's
/// `cross_entropy_loss` called exactly as `F.cross_entropy` calls it, so the
/// value and gradient are bit-identical to a direct call.
#[test]
fn default_cross_entropy_is_the_kernel_bit_for_bit() -> Result<()> {
    for kind in [Kind::Float, Kind::Double] {
        let x =
            Tensor::f_randn([64, 10], (kind, kiln_tensor::Device::Cpu))?.set_requires_grad(true);
        let y = Tensor::f_randint(10, [64], (Kind::Int64, kiln_tensor::Device::Cpu))?;
        let ours = CrossEntropyLoss::default().forward(&x, &y)?;
        ours.f_backward()?;
        let g1 = common::values(&x.f_grad()?)?;
        let x2 = x.f_detach()?.set_requires_grad(true);
        let direct =
            x2.f_cross_entropy_loss(&y, None::<Tensor>, tch::Reduction::Mean, -100, 0.0)?;
        direct.f_backward()?;
        let g2 = common::values(&x2.f_grad()?)?;
        ensure!(common::scalar(&ours)?.to_bits() == common::scalar(&direct)?.to_bits());
        ensure!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
        let nll = NllLoss::default().forward(&x2.f_log_softmax(1, None::<Kind>)?, &y)?;
        let nll_direct = x2.f_log_softmax(1, None::<Kind>)?.f_nll_loss_nd(
            &y,
            None::<Tensor>,
            tch::Reduction::Mean,
            -100,
        )?;
        ensure!(common::scalar(&nll)?.to_bits() == common::scalar(&nll_direct)?.to_bits());
        let mse = MseLoss::default().forward(&x2, &x2.f_detach()?.f_mul_scalar(0.5)?)?;
        let mse_direct = x2.f_mse_loss(&x2.f_detach()?.f_mul_scalar(0.5)?, tch::Reduction::Mean)?;
        ensure!(common::scalar(&mse)?.to_bits() == common::scalar(&mse_direct)?.to_bits());
    }
    Ok(())
}

/// The range check of a 64-sample batch is one min/max over 64 integers.
#[test]
fn range_check_is_cheap_for_a_64_sample_batch() -> Result<()> {
    let x = Tensor::f_randn([64, 10], (Kind::Float, kiln_tensor::Device::Cpu))?;
    let y = Tensor::f_randint(10, [64], (Kind::Int64, kiln_tensor::Device::Cpu))?;
    let ce = CrossEntropyLoss::default();
    // The fastest of many single calls, interleaved: robust to a loaded machine.
    let (mut ours, mut direct) = (f64::MAX, f64::MAX);
    for _ in 0..500 {
        let t = std::time::Instant::now();
        let _ = ce.forward(&x, &y)?;
        ours = ours.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        let _ = x.f_cross_entropy_loss(&y, None::<Tensor>, tch::Reduction::Mean, -100, 0.0)?;
        direct = direct.min(t.elapsed().as_secs_f64());
    }
    eprintln!(
        "cross-entropy [64, 10]: kiln {:.1} µs, kernel alone {:.1} µs per call",
        ours * 1e6,
        direct * 1e6
    );
    // Generous bound for shared machines: the checks cost well under 50 µs.
    ensure!(
        ours - direct < 50e-6,
        "kiln {:.1} µs vs kernel {:.1} µs per call",
        ours * 1e6,
        direct * 1e6
    );
    Ok(())
}
