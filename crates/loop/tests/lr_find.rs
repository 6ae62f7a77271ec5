//! `kiln_loop::run::lr_find` (`kiln lr-find`) against Lightning's rule:
//! the losses a kiln sweep computed are replayed through a copy of
//! Lightning's lr finder (`lr_find/lightning_lr_find.py`, on the setup's
//! torch, run here at test time), which must give the same lrs, the same
//! smoothed curve, the same stopping point and the same suggestion; the
//! run directory holds the chart and nothing else.
use crate::common;

use anyhow::{ensure, Context, Result};
use common::TempDir;
use kiln_loop::lr_find::{LrFindConfig, SweepMode};
use kiln_loop::run::{lr_find, LrFindRequest, TrainRequest};
use kiln_loop::StopReason;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::run::own;

fn request(run_dir: PathBuf, finder: LrFindConfig) -> LrFindRequest {
    let flags =
        json!({"data": "rings:n=256", "model": "wide:width=16", "seed": 3, "batch_size": 32});
    LrFindRequest {
        train: TrainRequest {
            flags: flags.as_object().cloned().unwrap_or_default(),
            run_dir: Some(run_dir),
            ..TrainRequest::default()
        },
        finder,
    }
}

/// Lightning's finder replayed on `raw_losses`.
fn lightning(raw_losses: &[f64], finder: &LrFindConfig) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lr_find/lightning_lr_find.py");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let input = json!({
        "raw_losses": raw_losses,
        "min_lr": finder.min_lr,
        "max_lr": finder.max_lr,
        "num_training": finder.num_training,
        "mode": finder.mode.to_string(),
        "early_stop_threshold": finder.early_stop_threshold,
    });
    let mut child = Command::new("python3")
        .args(["-W", "ignore"])
        .arg(&script)
        .env("PYTHONPATH", root.join(".libtorch"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running python3")?;
    child
        .stdin
        .take()
        .context("python's stdin")?
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn lr_find_suggests_what_lightnings_finder_suggests_on_the_same_losses() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("lr-find")?;
    let sweeps = [
        // Lightning's defaults, fewer steps: the whole sweep runs.
        LrFindConfig {
            num_training: 40,
            ..LrFindConfig::default()
        },
        // Up to lr 100: the loss diverges and the sweep stops early.
        LrFindConfig {
            max_lr: 100.0,
            num_training: 60,
            ..LrFindConfig::default()
        },
        LrFindConfig {
            mode: SweepMode::Linear,
            max_lr: 0.5,
            num_training: 30,
            early_stop_threshold: None,
            ..LrFindConfig::default()
        },
    ];
    let mut stopped_early = false;
    for (n, finder) in sweeps.into_iter().enumerate() {
        let run = tmp.path().join(format!("find-{n}"));
        let report = lr_find(request(run.clone(), finder), &own::registries())?;
        let mut written: Vec<String> = std::fs::read_dir(&run)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        written.sort();
        ensure!(written == ["lr_find.png", "lr_find.svg"], "{written:?}");
        let result = &report.result;
        let curve = &result.curve;
        ensure!(
            curve.raw_losses.iter().all(|l| l.is_finite()),
            "sweep {n}: {:?}",
            curve.raw_losses
        );
        let reference = lightning(&curve.raw_losses, &finder)?;
        let floats =
            |key: &str| -> Result<Vec<f64>> { Ok(serde_json::from_value(reference[key].clone())?) };
        ensure!(
            curve.lrs == floats("lrs")?,
            "sweep {n}: lrs {:?}",
            curve.lrs
        );
        ensure!(
            curve.losses == floats("losses")?,
            "sweep {n}: smoothed losses {:?}",
            curve.losses
        );
        let stopped = reference["stopped"] == json!(true);
        stopped_early |= stopped;
        match &result.stop {
            StopReason::Requested { step, .. } => {
                ensure!(
                    stopped && *step == curve.lrs.len(),
                    "sweep {n}: {:?}",
                    result.stop
                )
            }
            StopReason::MaxSteps { max_steps } => ensure!(
                !stopped && *max_steps == finder.num_training && curve.lrs.len() == *max_steps,
                "sweep {n}: {:?}",
                result.stop
            ),
            other => anyhow::bail!("sweep {n}: stopped by {other:?}"),
        }
        ensure!(
            result.suggestion == reference["suggestion"].as_f64()
                && result.suggestion_index.map(|i| i as u64) == reference["optimal_idx"].as_u64(),
            "sweep {n}: kiln suggests {:?} (index {:?}), Lightning {} (index {})",
            result.suggestion,
            result.suggestion_index,
            reference["suggestion"],
            reference["optimal_idx"]
        );
        ensure!(result.suggestion.is_some(), "sweep {n}: no suggestion");
    }
    ensure!(
        stopped_early,
        "no sweep diverged: the early stop went untested"
    );
    Ok(())
}

#[test]
fn lr_find_refuses_to_resume_and_writes_nothing() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("lr-find-resume")?;
    let run = tmp.path().join("find");
    let mut req = request(run.clone(), LrFindConfig::default());
    req.train.resume = Some(tmp.path().to_path_buf());
    let err = lr_find(req, &own::registries())
        .err()
        .context("--resume was accepted")?;
    ensure!(
        err.exit_code() == 2 && err.to_string().contains("--resume"),
        "{err}"
    );
    let bad = LrFindConfig {
        min_lr: 1.0,
        max_lr: 0.1,
        ..LrFindConfig::default()
    };
    let err = lr_find(request(run.clone(), bad), &own::registries())
        .err()
        .context("max_lr < min_lr was accepted")?;
    ensure!(err.to_string().contains("--max-lr"), "{err}");
    ensure!(!run.exists(), "a refused lr-find created {}", run.display());
    Ok(())
}
