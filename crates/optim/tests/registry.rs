//! Spec strings, the registry, validation messages (PyTorch's, from the
//! golden fixture), param groups and hyperparameter access.
use crate::common;

use anyhow::{anyhow, bail, ensure, Result};
use common::*;
use kiln_optim::{optimizers, GroupOverride, Optimizer};

#[test]
fn invalid_hyperparameters_give_pytorchs_messages() -> Result<()> {
    let g = golden()?;
    let registry = optimizers();
    for case in g["errors"]
        .as_array()
        .ok_or_else(|| anyhow!("no error cases"))?
    {
        let spec = case["spec"].as_str().ok_or_else(|| anyhow!("spec"))?;
        let want = case["message"].as_str().ok_or_else(|| anyhow!("message"))?;
        match registry.build(spec, params(&g, "f32")?) {
            Ok(_) => bail!("{spec} should be refused"),
            Err(e) => ensure!(
                e.to_string() == want,
                "{spec}: got '{e}', PyTorch says '{want}'"
            ),
        }
    }
    Ok(())
}

#[test]
fn set_hyperparameter_validates_like_the_constructor() -> Result<()> {
    let g = golden()?;
    let mut opt = optimizers().build("adam:lr=0.1", params(&g, "f32")?)?;
    let err = opt
        .set_lr(0, -1.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err == "Invalid learning rate: -1.0", "{err}");
    ensure!(opt.lr(0) == Some(0.1));
    let err = opt
        .set_hyperparameter(0, "momentum", 0.9)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("adam has no hyperparameter 'momentum'") && err.contains("betas.0"),
        "{err}"
    );
    ensure!(opt.set_lr(3, 0.1).is_err());
    opt.set_hyperparameter(0, "betas.1", 0.95)?;
    ensure!(opt.hyperparameter(0, "betas.1") == Some(0.95));
    ensure!(opt.hyperparameter(0, "nope").is_none() && opt.lr(1).is_none());
    Ok(())
}

#[test]
fn specs_parse_pairs_bools_and_reject_unknown_options() -> Result<()> {
    let g = golden()?;
    let r = optimizers();
    let opt = r.build(
        "adamw:lr=3e-4,weight_decay=0.05,betas=[0.8;0.9],amsgrad=true",
        params(&g, "f32")?,
    )?;
    ensure!(opt.name() == "adamw");
    ensure!(opt.lr(0) == Some(3e-4) && opt.hyperparameter(0, "weight_decay") == Some(0.05));
    ensure!(
        opt.hyperparameter(0, "betas.0") == Some(0.8)
            && opt.hyperparameter(0, "amsgrad") == Some(1.0)
    );
    let err = r
        .build("sgd:lr=0.1,mommentum=0.9", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("unknown option(s) mommentum") && err.contains("momentum"),
        "{err}"
    );
    let err = r
        .build("adam:betas=0.9", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err == "adam: option betas=0.9 is not 2 values written a;b",
        "{err}"
    );
    let err = r
        .build("adamm", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("unknown optimizer 'adamm'") && err.contains("adamw"),
        "{err}"
    );
    let err = r
        .build("sgd:nesterov=maybe", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("nesterov"), "{err}");
    ensure!(
        r.build("sgd", Vec::new()).err().map(|e| e.to_string())
            == Some("optimizer got an empty parameter list".into())
    );
    Ok(())
}

#[test]
fn describe_lists_every_optimizer_with_defaults() -> Result<()> {
    let r = optimizers();
    let names = r.names();
    for want in [
        "sgd", "adam", "adamw", "adagrad", "adadelta", "adamax", "nadam", "radam", "rmsprop",
        "rprop", "asgd", "lbfgs",
    ] {
        ensure!(names.contains(&want), "{want} missing from {names:?}");
    }
    let text = r.describe();
    ensure!(
        text.starts_with("Optimizers (spec: NAME[:key=value,...]"),
        "{text}"
    );
    ensure!(
        text.contains("\nsgd (SGD)\n    stochastic gradient descent, with momentum and Nesterov\n    lr=0.001 "),
        "{text}"
    );
    for want in [
        "    momentum=0.0 ",
        "    nesterov=false ",
        "    betas=0.9;0.999 ",
        "\nsparse-adam (SparseAdam, sparse_adam)\n",
        "    eps=none;0.001 ",
        "    adjust_lr_fn=original ",
        "    ns_coefficients=3.4445;-4.775;2.0315 ",
        "    max_eval=none ",
        "    line_search_fn=none ",
    ] {
        ensure!(text.contains(want), "{want:?} missing from\n{text}");
    }
    // Every option of every entry is listed with its default.
    for e in r.entries() {
        for o in &e.options {
            let line = format!("    {}={} ", o.name, o.default.as_deref().unwrap_or("?"));
            ensure!(text.contains(&line), "{}: {line:?} missing", e.name);
        }
    }
    Ok(())
}

#[test]
fn groups_by_pattern_have_their_own_hyperparameters() -> Result<()> {
    let g = golden()?;
    let overrides = [GroupOverride {
        patterns: vec!["*.bias".into()],
        hyperparameters: vec![("weight_decay".into(), 0.0), ("lr".into(), 0.5)],
    }];
    let mut opt = optimizers().build_with_overrides(
        "adamw:lr=0.1,weight_decay=0.1",
        params(&g, "f32")?,
        &overrides,
    )?;
    ensure!(opt.num_groups() == 2);
    let names = |o: &dyn Optimizer, i: usize| {
        o.group_params(i)
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    ensure!(names(opt.as_ref(), 0) == ["0.weight", "unused", "2.weight"]);
    ensure!(names(opt.as_ref(), 1) == ["0.bias", "2.bias"]);
    ensure!(opt.lr(0) == Some(0.1) && opt.lr(1) == Some(0.5));
    ensure!(opt.hyperparameter(1, "weight_decay") == Some(0.0));
    opt.set_lr(1, 0.25)?;
    ensure!(opt.lr(0) == Some(0.1) && opt.lr(1) == Some(0.25));
    let bad = [GroupOverride {
        patterns: vec!["*".into()],
        hyperparameters: vec![("lr".into(), -1.0)],
    }];
    ensure!(optimizers()
        .build_with_overrides("sgd", params(&g, "f32")?, &bad)
        .is_err());
    Ok(())
}

#[test]
fn glob_patterns() {
    use kiln_optim::glob_match;
    assert!(glob_match("*.bias", "layer.0.bias"));
    assert!(!glob_match("*.bias", "layer.0.weight"));
    assert!(glob_match("enc?.*", "enc1.w"));
    assert!(!glob_match("enc?.*", "enc12.w"));
    assert!(glob_match("*norm*", "blocks.3.layernorm.weight"));
    assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
    assert!(glob_match("*", ""));
}

#[test]
fn fused_groups_without_gradients_are_skipped() -> Result<()> {
    let g = golden()?;
    let ps = params(&g, "f32")?;
    let (x, y) = data(&g, "f32")?;
    let overrides = [GroupOverride {
        patterns: vec!["unused".into()],
        hyperparameters: vec![("lr".into(), 0.5)],
    }];
    let handles = handles(&ps);
    let mut opt =
        optimizers().build_with_overrides("adamw:lr=0.1,fused=true", handles, &overrides)?;
    opt.zero_grad()?;
    loss_backward(&ps, &x, &y)?;
    opt.step()?;
    ensure!(opt.group_params(1).len() == 1);
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

/// The defaults `describe` and `resolve` show are the configs' `Default`:
/// every entry's resolved name-only spec is its default config written out.
#[test]
fn defaults_come_from_the_configs() -> Result<()> {
    use kiln_optim::{
        AdadeltaConfig, AdafactorConfig, AdagradConfig, AdamConfig, AdamWConfig, AdamaxConfig,
        AsgdConfig, LbfgsConfig, MuonConfig, NAdamConfig, RAdamConfig, RmspropConfig, RpropConfig,
        Rule, RuleOptions, SgdConfig, SparseAdamConfig,
    };
    use kiln_tensor::spec::Spec;
    fn written<C: Rule + Default>() -> Result<Spec> {
        Ok(Spec::from_config(
            C::NAME,
            &mut RuleOptions(&mut C::default()),
        )?)
    }
    let r = optimizers();
    let want = [
        written::<SgdConfig>()?,
        written::<AdamConfig>()?,
        written::<AdamWConfig>()?,
        written::<AdagradConfig>()?,
        written::<AdadeltaConfig>()?,
        written::<AdamaxConfig>()?,
        written::<NAdamConfig>()?,
        written::<RAdamConfig>()?,
        written::<RmspropConfig>()?,
        written::<RpropConfig>()?,
        written::<AsgdConfig>()?,
        written::<AdafactorConfig>()?,
        written::<MuonConfig>()?,
        written::<SparseAdamConfig>()?,
        Spec::from_config("lbfgs", &mut LbfgsConfig::default())?,
    ];
    let names: Vec<&str> = want.iter().map(|s| s.name.as_str()).collect();
    ensure!(r.names() == names, "{:?} vs {names:?}", r.names());
    ensure!(names.iter().all(|n| is_kebab(n)), "{names:?}");
    for w in &want {
        let got = r.resolve(&w.name.parse()?)?;
        ensure!(&got == w, "{}: resolved {got}, Default gives {w}", w.name);
    }
    ensure!(
        r.resolve(&"sgd".parse()?)?.to_string()
            == "sgd:lr=0.001,momentum=0.0,dampening=0.0,weight_decay=0.0,nesterov=false,maximize=false,fused=false"
    );
    ensure!(
        r.resolve(&"AdamW".parse()?)?.to_string()
            == "adamw:lr=0.001,betas=0.9;0.999,eps=1e-08,weight_decay=0.01,amsgrad=false,maximize=false,fused=false"
    );
    Ok(())
}

/// The hyperparameter table is the one list of names and types: every
/// hyperparameter `get` reads is reachable by a spec option, and booleans are
/// read as booleans (no second list of boolean names).
#[test]
fn tables_declare_names_and_types_once() -> Result<()> {
    use kiln_optim::{
        AdadeltaConfig, AdafactorConfig, AdagradConfig, AdamConfig, AdamWConfig, AdamaxConfig,
        AsgdConfig, MuonConfig, NAdamConfig, RAdamConfig, RmspropConfig, RpropConfig, Rule,
        SgdConfig, SparseAdamConfig,
    };
    fn check<C: Rule + Default>() -> Result<()> {
        let c = C::default();
        for h in C::HYPERPARAMETERS {
            ensure!(c.get(h).is_some(), "{}: get({h})", C::NAME);
            let mut d = C::default();
            ensure!(d.set(h, 0.0), "{}: set({h})", C::NAME);
        }
        ensure!(c.get("nope").is_none() && c.get("lr.0").is_none());
        Ok(())
    }
    check::<SgdConfig>()?;
    check::<AdamConfig>()?;
    check::<AdamWConfig>()?;
    check::<AdagradConfig>()?;
    check::<AdadeltaConfig>()?;
    check::<AdamaxConfig>()?;
    check::<NAdamConfig>()?;
    check::<RAdamConfig>()?;
    check::<RmspropConfig>()?;
    check::<RpropConfig>()?;
    check::<AsgdConfig>()?;
    check::<AdafactorConfig>()?;
    check::<MuonConfig>()?;
    check::<SparseAdamConfig>()?;
    ensure!(
        AdamConfig::HYPERPARAMETERS
            == [
                "lr",
                "betas.0",
                "betas.1",
                "eps",
                "weight_decay",
                "amsgrad",
                "maximize",
                "decoupled_weight_decay",
                "fused"
            ]
    );
    ensure!(MuonConfig::HYPERPARAMETERS.contains(&"ns_coefficients.2"));
    let mut a = AdafactorConfig::default();
    ensure!(a.get("eps.0").is_some_and(f64::is_nan) && a.get("eps.1") == Some(1e-3));
    ensure!(a.set("eps.0", 1e-30) && a.eps.0 == Some(1e-30));
    let mut m = MuonConfig::default();
    ensure!(m.set("adjust_lr_fn", 1.0) && m.get("adjust_lr_fn") == Some(1.0));
    let r = optimizers();
    let resolved = |s: &str| -> Result<String> { Ok(r.resolve(&s.parse()?)?.to_string()) };
    ensure!(
        resolved("sgd:nesterov=1,fused=0")?.contains("nesterov=true,maximize=false,fused=false")
    );
    ensure!(resolved("muon:adjust_lr_fn=1")?.contains("adjust_lr_fn=match_rms_adamw"));
    ensure!(resolved("Adafactor:eps=[none;1e-2]")?.contains("eps=none;0.01"));
    ensure!(resolved("lbfgs:line_search_fn=strong_wolfe,max_eval=9")?
        .contains("max_eval=9,tolerance_grad=1e-07,tolerance_change=1e-09,history_size=100,line_search_fn=strong_wolfe"));
    let err = r
        .resolve(&"sgd:nesterov=maybe".parse()?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err == "sgd: option nesterov=maybe is not true or false",
        "{err}"
    );
    let err = r
        .resolve(&"lbfgs:line_search_fn=wolfe".parse()?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err == "lbfgs: option line_search_fn=wolfe is not one of none, strong_wolfe",
        "{err}"
    );
    Ok(())
}

/// Resolved specs are fixed points and build the same optimizer; PyTorch's
/// class names (and `sparse_adam`) are aliases.
#[test]
fn resolved_specs_round_trip_and_aliases() -> Result<()> {
    let g = golden()?;
    let r = optimizers();
    let matrices = |ps: Vec<kiln_optim::NamedParameter>| -> Vec<kiln_optim::NamedParameter> {
        ps.into_iter().filter(|p| p.tensor.dim() == 2).collect()
    };
    let given = [
        "SGD:lr=0.1,momentum=0.9,nesterov=1",
        "Adam:betas=[0.8;0.9],amsgrad=true",
        "AdamW:lr=3e-4,weight_decay=5e-2",
        "Adagrad:lr_decay=1e-3",
        "Adadelta:rho=0.8",
        "Adamax",
        "NAdam:momentum_decay=0.005,decoupled_weight_decay=true",
        "RAdam:decoupled_weight_decay=true",
        "RMSprop:centered=true,momentum=0.5",
        "Rprop:etas=0.4;1.3,step_sizes=1e-5;10",
        "ASGD:t0=100",
        "Adafactor:eps=1e-30;1e-3",
        "Muon:ns_steps=3,adjust_lr_fn=match_rms_adamw",
        "SparseAdam:lr=0.01",
        "sparse_adam:lr=0.01",
        "LBFGS:history_size=5,line_search_fn=strong_wolfe",
    ];
    for spec in given {
        let resolved = r.resolve(&spec.parse()?)?;
        ensure!(
            r.resolve(&resolved)? == resolved,
            "{resolved} is not a fixed point"
        );
        let ps = |s: &str| -> Result<Vec<kiln_optim::NamedParameter>> {
            let p = params(&g, "f32")?;
            Ok(if s.starts_with("Muon") || s.starts_with("muon") {
                matrices(p)
            } else {
                p
            })
        };
        let a = r.build(spec, ps(spec)?)?;
        let b = r.build(&resolved.to_string(), ps(spec)?)?;
        ensure!(a.name() == resolved.name && b.name() == resolved.name);
        let (sa, sb) = (a.state_dict()?.scalars, b.state_dict()?.scalars);
        ensure!(
            sa["param_groups"] == sb["param_groups"],
            "{spec}: {} vs {}",
            sa["param_groups"],
            sb["param_groups"]
        );
    }
    ensure!(r.resolve(&"sparse_adam".parse()?)?.name == "sparse-adam");
    ensure!(r.build("sparse_adam", params(&g, "f32")?)?.name() == "sparse-adam");
    let err = r
        .build("adamW", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.starts_with(
            "unknown optimizer 'adamW' (did you mean 'adamw'?); accepted: sgd, adam, adamw"
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn downstream_crates_register_their_own() -> Result<()> {
    use kiln_optim::{rule_entry, Error, OptimizerEntry, ParamState, Rule};
    use kiln_tensor::spec::{OptionDoc, Spec};
    use kiln_tensor::Tensor;
    use std::sync::Arc;
    /// Plain gradient descent with a scaled step.
    #[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
    struct ScaledConfig {
        lr: f64,
        scale: f64,
        flip: bool,
    }
    impl Default for ScaledConfig {
        fn default() -> Self {
            Self {
                lr: 0.5,
                scale: 2.0,
                flip: false,
            }
        }
    }
    impl Rule for ScaledConfig {
        const NAME: &'static str = "scaled-gd";
        kiln_optim::hyperparameter_table! {
            lr: f64 = "learning rate",
            scale: f64 = "step multiplier",
            flip: bool = "ascend instead",
        }
        fn validate(&self) -> kiln_optim::Result<()> {
            if self.scale <= 0.0 {
                return Err(Error::InvalidHyperparameter("scale must be > 0".into()));
            }
            Ok(())
        }
        fn update(&self, p: &Tensor, g: &Tensor, _: &mut ParamState) -> kiln_optim::Result<()> {
            let sign = if self.flip { 1.0 } else { -1.0 };
            kiln_tensor::ops::add_(p, g, sign * self.lr * self.scale)?;
            Ok(())
        }
    }
    let g = golden()?;
    let mut r = optimizers();
    r.register(rule_entry::<ScaledConfig>("gradient descent, scaled").alias("ScaledGD"));
    // A closure builder with hand-written options.
    r.register(
        OptimizerEntry::new(
            "sgd-one",
            "SGD with lr=1 unless given",
            Arc::new(|spec: &mut Spec, params, overrides| {
                let lr = spec.f64("lr")?.unwrap_or(1.0);
                optimizers().build_with_overrides(&format!("sgd:lr={lr}"), params, overrides)
            }),
        )
        .option(OptionDoc::new("lr", 1.0, "learning rate").alias("learning_rate")),
    );
    ensure!(r.names().len() == 17);
    let opt = r.build("ScaledGD:scale=3", params(&g, "f32")?)?;
    ensure!(opt.name() == "scaled-gd" && opt.hyperparameter(0, "scale") == Some(3.0));
    ensure!(opt.hyperparameter(0, "flip") == Some(0.0));
    ensure!(
        r.resolve(&"ScaledGD".parse()?)?.to_string() == "scaled-gd:lr=0.5,scale=2.0,flip=false"
    );
    let err = r
        .build("scaled-gd:scale=-1", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err == "scale must be > 0", "{err}");
    let opt = r.build("sgd-one:learning_rate=0.25", params(&g, "f32")?)?;
    ensure!(opt.name() == "sgd" && opt.lr(0) == Some(0.25));
    ensure!(r.resolve(&"sgd-one".parse()?)?.to_string() == "sgd-one:lr=1.0");
    let err = r
        .build("sgd-one:lrr=1", params(&g, "f32")?)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err == "sgd-one: unknown option(s) lrr (did you mean lr?); accepted: lr",
        "{err}"
    );
    // Registering a name again replaces it.
    r.register(rule_entry::<ScaledConfig>("v2"));
    ensure!(r.names().len() == 17 && r.get("scaled-gd").map(|e| e.summary.as_str()) == Some("v2"));
    let text = r.describe();
    ensure!(
        text.contains("\nscaled-gd\n    v2\n    lr=0.5 ") && text.contains("flip=false"),
        "{text}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Param groups by selector (`--param-group SELECTOR:options`).

/// Named float32 parameters of the given shapes (zeros).
fn shaped(shapes: &[(&str, &[i64])]) -> Result<Vec<kiln_optim::NamedParameter>> {
    shapes
        .iter()
        .map(|(name, shape)| {
            Ok(kiln_optim::NamedParameter {
                name: (*name).to_string(),
                tensor: kiln_tensor::Tensor::f_zeros(
                    *shape,
                    (kiln_tensor::Kind::Float, kiln_tensor::Device::Cpu),
                )?
                .set_requires_grad(true),
            })
        })
        .collect()
}

fn group_names(o: &dyn Optimizer) -> Vec<Vec<String>> {
    (0..o.num_groups())
        .map(|g| o.group_params(g).iter().map(|p| p.name.clone()).collect())
        .collect()
}

#[test]
fn param_group_specs_parse_print_and_refuse() -> Result<()> {
    use kiln_optim::Selector;
    let g: GroupOverride = "ndim<2:weight_decay=0".parse()?;
    ensure!(g.patterns == ["ndim<2"] && g.hyperparameters == [("weight_decay".to_string(), 0.0)]);
    let g: GroupOverride =
        " *.bias | ndim >= 3 :lr=1e-2,betas=[0.8;0.9],amsgrad=true,eps.1=none".parse()?;
    ensure!(g.patterns == ["*.bias", "ndim>=3"], "{:?}", g.patterns);
    let want: Vec<(String, f64)> = [
        ("lr", 0.01),
        ("betas.0", 0.8),
        ("betas.1", 0.9),
        ("amsgrad", 1.0),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), *v))
    .collect();
    ensure!(
        g.hyperparameters.get(..4) == Some(&want[..]),
        "{:?}",
        g.hyperparameters
    );
    ensure!(g
        .hyperparameters
        .get(4)
        .is_some_and(|(k, v)| k == "eps.1" && v.is_nan()));
    let text = g.to_string();
    ensure!(
        text == "*.bias|ndim>=3:lr=0.01,betas.0=0.8,betas.1=0.9,amsgrad=1.0,eps.1=nan",
        "{text}"
    );
    let back: GroupOverride = text.parse()?;
    ensure!(back.patterns == g.patterns && back.to_string() == text);
    for (text, selector) in [
        (
            "ndim<2",
            Selector::Ndim(kiln_optim::groups::Comparison::Less, 2),
        ),
        (
            "ndim<=1",
            Selector::Ndim(kiln_optim::groups::Comparison::LessOrEqual, 1),
        ),
        (
            "ndim==1",
            Selector::Ndim(kiln_optim::groups::Comparison::Equal, 1),
        ),
        (
            "ndim >= 2",
            Selector::Ndim(kiln_optim::groups::Comparison::GreaterOrEqual, 2),
        ),
        (
            "ndim>2",
            Selector::Ndim(kiln_optim::groups::Comparison::Greater, 2),
        ),
        (
            "blocks.*.ln_?.weight",
            Selector::Name("blocks.*.ln_?.weight".into()),
        ),
    ] {
        ensure!(text.parse::<Selector>()? == selector, "{text}");
    }
    let forms = "a selector is a name glob (*.bias, blocks.*.ln_?.weight) or ndim<N, ndim<=N, ndim==N, ndim>=N, ndim>N";
    for (text, want) in [
        ("dim<2:lr=1", format!("param group selector 'dim<2' is unknown; {forms}")),
        ("ndim=2:lr=1", format!("param group selector 'ndim=2' is unknown; {forms}")),
        ("ndim<x:lr=1", format!("param group selector 'ndim<x' is unknown; {forms}")),
        ("ndim!=2:lr=1", format!("param group selector 'ndim!=2' is unknown; {forms}")),
        (
            "ndim<2",
            format!("param group 'ndim<2' is not SELECTOR:key=value,... (e.g. ndim<2:weight_decay=0); {forms}"),
        ),
        (
            "*.bias:lr=fast",
            "param group '*.bias:lr=fast': option lr=fast is not a number, true or false, none, or numbers written a;b".into(),
        ),
        (
            "*.bias:lr",
            "param group '*.bias:lr': option 'lr' in spec 'param-group:lr' is not key=value".into(),
        ),
    ] {
        let e = text
            .parse::<GroupOverride>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        ensure!(e == want, "{text}: got '{e}', want '{want}'");
    }
    Ok(())
}

#[test]
fn param_groups_by_selector_take_the_parameters_they_select() -> Result<()> {
    let shapes: [(&str, &[i64]); 6] = [
        ("scale", &[]),
        ("wte.weight", &[5, 3]),
        ("h.0.ln.weight", &[3]),
        ("h.0.conv.weight", &[2, 3, 3]),
        ("h.0.fc.weight", &[4, 3]),
        ("h.0.fc.bias", &[4]),
    ];
    let build = |groups: &[&str]| -> Result<Box<dyn Optimizer>> {
        let groups = groups
            .iter()
            .map(|g| g.parse())
            .collect::<Result<Vec<GroupOverride>, _>>()?;
        Ok(optimizers().build_with_overrides(
            "adamw:weight_decay=0.1",
            shaped(&shapes)?,
            &groups,
        )?)
    };
    // nanoGPT's split: decayed matrices first, the rest second, in model order.
    let o = build(&["ndim<2:weight_decay=0"])?;
    ensure!(
        group_names(o.as_ref())
            == [
                vec!["wte.weight", "h.0.conv.weight", "h.0.fc.weight"],
                vec!["scale", "h.0.ln.weight", "h.0.fc.bias"],
            ],
        "{:?}",
        group_names(o.as_ref())
    );
    ensure!(o.hyperparameter(0, "weight_decay") == Some(0.1));
    ensure!(o.hyperparameter(1, "weight_decay") == Some(0.0));
    ensure!(o.lr(0) == Some(0.001) && o.lr(1) == Some(0.001));
    // Each comparison, globs, alternatives; the first group that selects a parameter wins.
    for (groups, want) in [
        (
            vec!["ndim<=1:lr=0.1"],
            vec![
                vec!["wte.weight", "h.0.conv.weight", "h.0.fc.weight"],
                vec!["scale", "h.0.ln.weight", "h.0.fc.bias"],
            ],
        ),
        (
            vec!["ndim==1:lr=0.1"],
            vec![
                vec!["scale", "wte.weight", "h.0.conv.weight", "h.0.fc.weight"],
                vec!["h.0.ln.weight", "h.0.fc.bias"],
            ],
        ),
        (
            vec!["ndim>2:lr=0.1"],
            vec![
                vec![
                    "scale",
                    "wte.weight",
                    "h.0.ln.weight",
                    "h.0.fc.weight",
                    "h.0.fc.bias",
                ],
                vec!["h.0.conv.weight"],
            ],
        ),
        (
            vec!["ndim>=2:lr=0.1"],
            vec![
                vec!["scale", "h.0.ln.weight", "h.0.fc.bias"],
                vec!["wte.weight", "h.0.conv.weight", "h.0.fc.weight"],
            ],
        ),
        (
            vec!["*.bias|scale:lr=0.1", "ndim<2:weight_decay=0"],
            vec![
                vec!["wte.weight", "h.0.conv.weight", "h.0.fc.weight"],
                vec!["scale", "h.0.fc.bias"],
                vec!["h.0.ln.weight"],
            ],
        ),
        (
            vec!["h.0.*:lr=0.1", "*.bias:lr=0.2"],
            vec![
                vec!["scale", "wte.weight"],
                vec![
                    "h.0.ln.weight",
                    "h.0.conv.weight",
                    "h.0.fc.weight",
                    "h.0.fc.bias",
                ],
                vec![],
            ],
        ),
    ] {
        match build(&groups) {
            Ok(o) => ensure!(
                group_names(o.as_ref()) == want,
                "{groups:?}: {:?}",
                group_names(o.as_ref())
            ),
            Err(e) => {
                // A group left without parameters is refused (the last case).
                ensure!(want.last().is_some_and(Vec::is_empty), "{groups:?}: {e}");
                ensure!(
                    e.to_string()
                        == "param group 2 (*.bias) selects no parameter: no parameter matches it, or an earlier group took every one that does",
                    "{e}"
                );
            }
        }
    }
    let o = build(&[
        "*.bias|scale:lr=0.1,betas=0.8;0.85",
        "ndim<2:weight_decay=0",
    ])?;
    ensure!(o.lr(1) == Some(0.1) && o.hyperparameter(1, "betas.1") == Some(0.85));
    ensure!(
        o.hyperparameter(1, "weight_decay") == Some(0.1)
            && o.hyperparameter(2, "weight_decay") == Some(0.0)
    );
    // Every parameter selected: group 0 stays, empty, so groups keep their indices.
    let o = build(&["*:lr=0.5"])?;
    ensure!(group_names(o.as_ref()).first().is_some_and(Vec::is_empty) && o.lr(1) == Some(0.5));
    // What the optimizer refuses names the group.
    for (groups, want) in [
        (vec!["*.bias:lr=-1"], "param group 1 (*.bias): Invalid learning rate: -1.0"),
        (
            vec!["*.bias:wd=0"],
            "param group 1 (*.bias): adamw has no hyperparameter 'wd' (it has lr, betas.0, betas.1, eps, weight_decay, amsgrad, maximize, fused)",
        ),
        (vec!["nothing.*:lr=0.1"], "param group 1 (nothing.*) selects no parameter: no parameter matches it, or an earlier group took every one that does"),
    ] {
        let e = build(&groups).err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(e == want, "{groups:?}: got '{e}'");
    }
    let lbfgs =
        optimizers().build_with_overrides("lbfgs", shaped(&shapes)?, &["ndim<2:lr=0.1".parse()?]);
    ensure!(lbfgs.is_err_and(|e| e
        .to_string()
        .contains("LBFGS doesn't support per-parameter options")));
    Ok(())
}

/// nanoGPT's optimizer (`configure_optimizers`: AdamW over the `dim() >= 2`
/// parameters with weight decay, then the others without) is
/// `adamw:lr=6e-4,betas=0.9;0.95,weight_decay=0.1` + `ndim<2:weight_decay=0`:
/// the same groups in the same order, and three steps bit for bit with
/// torch.optim.AdamW's (tests/golden/groups/nanogpt_adamw.py, run here).
#[test]
fn adamw_over_nanogpt_groups_matches_pytorch() -> Result<()> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/groups/nanogpt_adamw.py"
    );
    let reference: serde_json::Value = serde_json::from_str(&reference_output(script, &[])?)?;
    let fixture = serde_json::json!({ "init": { "f32": { "params": reference["params"] } } });
    let ps = params(&fixture, "f32")?;
    let groups = ["ndim<2:weight_decay=0".parse::<GroupOverride>()?];
    let mut opt = optimizers().build_with_overrides(
        "adamw:lr=6e-4,betas=0.9;0.95,weight_decay=0.1",
        handles(&ps),
        &groups,
    )?;
    let want_groups = reference["groups"]
        .as_array()
        .ok_or_else(|| anyhow!("no groups"))?;
    ensure!(opt.num_groups() == want_groups.len());
    for (g, want) in want_groups.iter().enumerate() {
        let names: Vec<&str> = want["names"]
            .as_array()
            .ok_or_else(|| anyhow!("names"))?
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        let ours: Vec<&str> = opt
            .group_params(g)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        ensure!(ours == names, "group {g}: {ours:?}, nanoGPT's {names:?}");
        for (key, ours) in [
            ("lr", "lr"),
            ("eps", "eps"),
            ("weight_decay", "weight_decay"),
        ] {
            ensure!(
                opt.hyperparameter(g, ours) == want[key].as_f64(),
                "group {g} {key}"
            );
        }
        for i in 0..2 {
            ensure!(opt.hyperparameter(g, &format!("betas.{i}")) == want["betas"][i].as_f64());
        }
    }
    let grads = reference["grads"]
        .as_array()
        .ok_or_else(|| anyhow!("no grads"))?;
    let after = reference["after"]
        .as_array()
        .ok_or_else(|| anyhow!("no steps"))?;
    ensure!(grads.len() == 3 && after.len() == 3);
    for (step, (g, want)) in grads.iter().zip(after).enumerate() {
        set_grads(&ps, g)?;
        opt.step()?;
        for (p, w) in ps
            .iter()
            .zip(want.as_array().ok_or_else(|| anyhow!("step"))?)
        {
            let got: Vec<f64> = Vec::try_from(
                &p.tensor
                    .f_to_kind(kiln_tensor::Kind::Double)?
                    .f_reshape([-1])?,
            )?;
            let want = floats(w)?;
            let (_, differ) = compare(&got, &want);
            ensure!(
                differ == 0 && got.len() == want.len(),
                "step {step}: {} differs in {differ} values",
                p.name
            );
        }
    }
    Ok(())
}
