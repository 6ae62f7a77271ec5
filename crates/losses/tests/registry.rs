//! The spec-string registry, the closure impl and PyTorch's defaults.
use crate::common;

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
            "unknown loss 'cross-entropi' (did you mean 'cross-entropy'?); accepted: {}",
            NAMES.join(", ")
        ),
        "{msg}"
    );
    let msg = err_msg(registry().build("MSEloss"))?;
    ensure!(
        msg.starts_with(
            "unknown loss 'MSEloss' (did you mean 'MSELoss'?); accepted: cross-entropy, nll"
        ),
        "{msg}"
    );
    Ok(())
}

#[test]
fn unknown_option_lists_accepted() -> Result<()> {
    let msg = err_msg(registry().build("cross-entropy:smoothing=0.1"))?;
    ensure!(
        msg == "cross-entropy: unknown option(s) smoothing (did you mean label_smoothing?); accepted: weight, ignore_index, reduction, label_smoothing",
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
            "mse: option reduction=avg is not one of none, mean, sum",
        ),
        (
            "kl-div:reduction=avg",
            "kl-div: option reduction=avg is not one of none, mean, sum, batchmean",
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
            "cross-entropy: option weight=1;x is not none or a ;-separated list of numbers",
        ),
        (
            "bce-with-logits:pos_weight=a",
            "bce-with-logits: option pos_weight=a is not none or a ;-separated list of numbers",
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
    let r = registry();
    let text = r.describe();
    ensure!(
        text.starts_with("Losses (spec: NAME[:key=value,...]"),
        "{text}"
    );
    for e in r.entries() {
        ensure!(
            text.contains(&format!(
                "\n{} ({})\n    {}\n",
                e.name,
                e.aliases.join(", "),
                e.summary
            )),
            "{} missing from describe():\n{text}",
            e.name
        );
        for o in &e.options {
            let default = o.default.as_deref().unwrap_or("?");
            ensure!(
                text.contains(&format!("    {}={default} ", o.name)),
                "{}: {} missing from describe()",
                e.name,
                o.name
            );
        }
    }
    for want in [
        "label_smoothing=0.0",
        "ignore_index=-100",
        "reduction=mean",
        "batchmean",
        "distance=pairwise",
        "(also distance_function)",
        "eps=1e-08",
        "log_input=true",
    ] {
        ensure!(text.contains(want), "{want} missing from\n{text}");
    }
    Ok(())
}

/// Every entry's documented defaults are its config's `Default`, and its
/// resolved spec (name alone) is that config written as a spec.
#[test]
fn defaults_come_from_the_configs() -> Result<()> {
    use kiln_tensor::spec::Spec;
    fn written<C: kiln_tensor::spec::Options + Default>(name: &str) -> Result<Spec> {
        Ok(Spec::from_config(name, &mut C::default())?)
    }
    let r = registry();
    let pairs: Vec<(&str, Spec)> = vec![
        (
            "cross-entropy",
            written::<CrossEntropyConfig>("cross-entropy")?,
        ),
        ("nll", written::<NllConfig>("nll")?),
        ("mse", written::<MseConfig>("mse")?),
        ("l1", written::<L1Config>("l1")?),
        ("ctc", written::<CtcConfig>("ctc")?),
        ("poisson-nll", written::<PoissonNllConfig>("poisson-nll")?),
        (
            "gaussian-nll",
            written::<GaussianNllConfig>("gaussian-nll")?,
        ),
        ("kl-div", written::<KlDivConfig>("kl-div")?),
        ("bce", written::<BceConfig>("bce")?),
        (
            "bce-with-logits",
            written::<BceWithLogitsConfig>("bce-with-logits")?,
        ),
        (
            "margin-ranking",
            written::<MarginRankingConfig>("margin-ranking")?,
        ),
        (
            "hinge-embedding",
            written::<HingeEmbeddingConfig>("hinge-embedding")?,
        ),
        (
            "multilabel-margin",
            written::<MultiLabelMarginConfig>("multilabel-margin")?,
        ),
        ("huber", written::<HuberConfig>("huber")?),
        ("smooth-l1", written::<SmoothL1Config>("smooth-l1")?),
        ("soft-margin", written::<SoftMarginConfig>("soft-margin")?),
        (
            "multilabel-soft-margin",
            written::<MultiLabelSoftMarginConfig>("multilabel-soft-margin")?,
        ),
        (
            "cosine-embedding",
            written::<CosineEmbeddingConfig>("cosine-embedding")?,
        ),
        (
            "multi-margin",
            written::<MultiMarginConfig>("multi-margin")?,
        ),
        (
            "triplet-margin",
            written::<TripletMarginConfig>("triplet-margin")?,
        ),
        (
            "triplet-margin-with-distance",
            written::<TripletMarginWithDistanceConfig>("triplet-margin-with-distance")?,
        ),
    ];
    ensure!(pairs.len() == r.names().len());
    for (name, want) in pairs {
        let resolved = r.resolve(&name.parse()?)?;
        ensure!(
            resolved == want,
            "{name}: resolved {resolved}, Default gives {want}"
        );
    }
    let ce = r.resolve(&"cross-entropy".parse()?)?;
    ensure!(
        ce.to_string()
            == "cross-entropy:weight=none,ignore_index=-100,reduction=mean,label_smoothing=0.0",
        "{ce}"
    );
    Ok(())
}

/// One naming style: canonical names are kebab-case.
fn is_kebab(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Resolving gives canonical text that builds the same loss and resolves to
/// itself; PyTorch's class names and argument names are aliases.
#[test]
fn resolved_specs_round_trip() -> Result<()> {
    let r = registry();
    for e in r.entries() {
        ensure!(is_kebab(&e.name), "{} is not kebab-case", e.name);
        let resolved = r.resolve(&e.name.parse()?)?;
        ensure!(
            r.resolve(&resolved)? == resolved,
            "{resolved} is not a fixed point"
        );
        let loss = r.build(&resolved.to_string())?;
        ensure!(loss.name() == e.name, "{} built {}", e.name, loss.name());
        for alias in &e.aliases {
            ensure!(r.resolve(&alias.parse()?)? == resolved, "alias {alias}");
        }
    }
    let given =
        "CrossEntropyLoss: label_smoothing=1e-1, ignore_index=3, weight=[1;2;0.5;1], reduction=sum";
    let resolved = r.resolve(&given.parse()?)?;
    ensure!(
        resolved.to_string()
            == "cross-entropy:weight=1.0;2.0;0.5;1.0,ignore_index=3,reduction=sum,label_smoothing=0.1",
        "{resolved}"
    );
    let x = randn(&[6, 4])?;
    let y = ti(&[0, 3, 1, 2, 3, 3], &[6])?;
    let a = common::scalar(&r.build(given)?.forward(&x, &y)?)?;
    let b = common::scalar(&r.build(&resolved.to_string())?.forward(&x, &y)?)?;
    ensure!(a.to_bits() == b.to_bits(), "{a} != {b}");
    let t = r.resolve(&"TripletMarginWithDistanceLoss:distance_function=cosine".parse()?)?;
    ensure!(
        t.to_string()
            == "triplet-margin-with-distance:distance=cosine,margin=1.0,swap=false,reduction=mean",
        "{t}"
    );
    let h = r.build("HuberLoss:delta=0.5")?;
    ensure!(h.name() == "huber");
    Ok(())
}

#[test]
fn every_loss_declares_its_targets() -> Result<()> {
    let r = registry();
    let plain = Targets::new;
    let values = |one_hot| TargetKind::Values {
        one_hot_from_classes: one_hot,
    };
    let want = [
        (
            "cross-entropy",
            plain(TargetKind::ClassIndices {
                probabilities: true,
            }),
        ),
        (
            "nll",
            plain(TargetKind::ClassIndices {
                probabilities: false,
            }),
        ),
        ("mse", plain(values(true))),
        ("l1", plain(values(true))),
        ("ctc", plain(TargetKind::LabelSequences)),
        ("poisson-nll", plain(values(false))),
        ("gaussian-nll", plain(values(false)).stacked(2, 1)),
        ("kl-div", plain(values(false))),
        ("bce", plain(values(false))),
        ("bce-with-logits", plain(values(false))),
        ("margin-ranking", plain(TargetKind::Signs).stacked(2, 1)),
        ("hinge-embedding", plain(TargetKind::Signs)),
        ("multilabel-margin", plain(TargetKind::ClassIndexLists)),
        ("huber", plain(values(true))),
        ("smooth-l1", plain(values(true))),
        ("soft-margin", plain(TargetKind::Signs)),
        ("multilabel-soft-margin", plain(values(false))),
        ("cosine-embedding", plain(TargetKind::Signs).stacked(2, 1)),
        (
            "multi-margin",
            plain(TargetKind::ClassIndices {
                probabilities: false,
            }),
        ),
        ("triplet-margin", plain(values(false)).stacked(1, 2)),
        (
            "triplet-margin-with-distance",
            plain(values(false)).stacked(1, 2),
        ),
    ];
    ensure!(want.len() == 21);
    for (name, targets) in want {
        let got = r.build(name)?.targets();
        ensure!(got == targets, "{name}: {got:?}, want {targets:?}");
    }
    // What the training loop asks.
    let ce = r.build("cross-entropy")?.targets();
    ensure!(ce.takes_class_indices() && !ce.takes_values() && !ce.one_hot_from_classes());
    let mse = r.build("mse")?.targets();
    ensure!(!mse.takes_class_indices() && mse.takes_values() && mse.one_hot_from_classes());
    let bce = r.build("bce")?.targets();
    ensure!(!bce.takes_class_indices() && bce.takes_values() && !bce.one_hot_from_classes());
    ensure!(!r.build("margin-ranking")?.targets().is_plain() && ce.is_plain());
    ensure!(ce.kind.to_string() == "class indices (int64) or class probabilities");
    let closure = |x: &Tensor, _: &Tensor| -> kiln_losses::Result<Tensor> { Ok(x.shallow_clone()) };
    let any = closure.targets();
    ensure!(any == Targets::ANY && any.takes_class_indices() && any.takes_values());
    Ok(())
}

#[test]
fn downstream_crates_register_their_own() -> Result<()> {
    use kiln_tensor::spec::{OptionDoc, OptionInfo, OptionVisitor, Options, Spec};
    use std::sync::Arc;
    let mut r = registry();
    // A closure builder with a hand-written option.
    r.register(
        LossEntry::new(
            "scaled-mse",
            "MSE times a factor",
            Arc::new(|spec: &mut Spec| -> kiln_losses::Result<Box<dyn Loss>> {
                let scale = spec.f64("scale")?.unwrap_or(1.0);
                let mse = MseLoss::default();
                Ok(Box::new(
                    move |x: &Tensor, y: &Tensor| -> kiln_losses::Result<Tensor> {
                        Ok(mse.forward(x, y)?.f_mul_scalar(scale)?)
                    },
                ))
            }),
        )
        .alias("ScaledMSELoss")
        .option(OptionDoc::new("scale", 1.0, "the factor").alias("factor")),
    );
    // A config-based loss: options and defaults from its config.
    #[derive(Debug, Clone, PartialEq)]
    struct FocalConfig {
        gamma: f64,
    }
    impl Default for FocalConfig {
        fn default() -> Self {
            Self { gamma: 2.0 }
        }
    }
    impl Options for FocalConfig {
        fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
            v.option(
                OptionInfo::new("gamma", "focusing parameter"),
                &mut self.gamma,
            )
        }
    }
    struct Focal(FocalConfig);
    impl Loss for Focal {
        fn forward(&self, input: &Tensor, _target: &Tensor) -> kiln_losses::Result<Tensor> {
            Ok(input.f_mul_scalar(self.0.gamma)?.f_sum(Kind::Double)?)
        }
        fn name(&self) -> &str {
            "focal"
        }
        fn targets(&self) -> Targets {
            Targets::new(TargetKind::ClassIndices {
                probabilities: false,
            })
        }
    }
    r.register(loss_entry("focal", "focal loss", |c: FocalConfig| {
        Ok(Focal(c))
    }));
    ensure!(r.names().len() == 23 && r.names().contains(&"scaled-mse"));
    let l = r.build("ScaledMSELoss:factor=2")?;
    ensure!(l.name() == "custom");
    let (x, y) = (randn(&[4])?, randn(&[4])?);
    let a = common::scalar(&l.forward(&x, &y)?)?;
    let b = common::scalar(&MseLoss::default().forward(&x, &y)?)?;
    ensure!(a == 2.0 * b);
    let msg = err_msg(r.build("scaled-mse:scael=2"))?;
    ensure!(
        msg == "scaled-mse: unknown option(s) scael (did you mean scale?); accepted: scale",
        "{msg}"
    );
    ensure!(r.resolve(&"scaled-mse".parse()?)?.to_string() == "scaled-mse:scale=1.0");
    let focal = r.build("focal:gamma=3")?;
    ensure!(focal.name() == "focal" && !focal.targets().takes_values());
    ensure!(common::scalar(&focal.forward(&common::t64(&[1.0, 2.0], &[2])?, &y)?)? == 9.0);
    ensure!(r.resolve(&"focal".parse()?)?.to_string() == "focal:gamma=2.0");
    // Registering a name again replaces the entry.
    r.register(loss_entry("focal", "focal loss v2", |c: FocalConfig| {
        Ok(Focal(c))
    }));
    ensure!(
        r.names().len() == 23
            && r.get("focal").map(|e| e.summary.as_str()) == Some("focal loss v2")
    );
    let text = r.describe();
    ensure!(
        text.contains("scaled-mse (ScaledMSELoss)") && text.contains("gamma=2.0"),
        "{text}"
    );
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
