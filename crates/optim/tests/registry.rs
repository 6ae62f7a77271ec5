//! Spec strings, the registry, validation messages (PyTorch's, from the
//! golden fixture), param groups and hyperparameter access.
mod common;

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
    ensure!(err.contains("betas needs 2 values"), "{err}");
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
        text.contains("lr=0.001,momentum=0.0,dampening=0.0,weight_decay=0.0,nesterov=false"),
        "{text}"
    );
    ensure!(text.contains("betas=0.9;0.999"), "{text}");
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
