//! `kiln_loop::run::train` over a crate's own registries: a data source and
//! a model that kiln does not have train by spec with everything a run has
//! (run directory, `config.json`, checkpoints, metric files, resume), and
//! the library's messages reach the caller's sink instead of stderr.
use crate::common;

use anyhow::{ensure, Result};
use common::TempDir;
use kiln_loop::run::{train, Display, TrainRequest};
use kiln_loop::{Notice, Notices, StopReason};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[path = "../examples/shared/own.rs"]
pub mod own;

fn request(flags: Value, notices: &Arc<Mutex<Vec<Notice>>>) -> TrainRequest {
    let seen = notices.clone();
    TrainRequest {
        flags: flags.as_object().cloned().unwrap_or_default(),
        display: Display::Quiet,
        notices: Notices::new(move |n: &Notice| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(n.clone())
        }),
        ..TrainRequest::default()
    }
}

#[test]
fn a_run_over_ones_own_registries_trains_records_and_resumes() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("own-run")?;
    let run = tmp.path().join("run");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut first = request(
        json!({"data": "rings:n=256", "model": "wide:width=16", "epochs": 1, "seed": 3, "batch_size": 32}),
        &notices,
    );
    first.run_dir = Some(run.clone());
    let summary = train(first, &own::registries())?;
    ensure!(summary.stop == StopReason::Completed && summary.steps == 8);
    // config.json records the resolved specs of one's own components.
    let config: Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json"))?)?;
    ensure!(config["data"] == "rings:n=256", "{}", config["data"]);
    ensure!(config["model"] == "wide:width=16", "{}", config["model"]);
    ensure!(run.join("metrics.jsonl").is_file());
    {
        let seen = notices.lock().unwrap_or_else(|e| e.into_inner());
        ensure!(seen.contains(&Notice::RunDir(run.clone())), "{seen:?}");
        ensure!(seen.contains(&Notice::Seed(3)), "{seen:?}");
    }
    // Resumed with more epochs: the saved config (its own data and model)
    // comes back from the run directory.
    let mut more = request(json!({"epochs": 2}), &notices);
    more.resume = Some(run.clone());
    let summary = train(more, &own::registries())?;
    ensure!(summary.steps == 16, "{} steps", summary.steps);
    let seen = notices.lock().unwrap_or_else(|e| e.into_inner());
    ensure!(
        seen.iter().any(|n| matches!(n, Notice::Resuming { .. })),
        "{seen:?}"
    );
    // kiln's own registries know neither component: a clear error, not a guess.
    drop(seen);
    let err = train(
        request(json!({"data": "rings:n=256"}), &notices),
        &kiln_loop::run::Registries::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    ensure!(err.contains("unknown data source 'rings'"), "{err}");
    Ok(())
}

#[path = "../examples/shared/files.rs"]
mod files;

/// A dataset of one's own that reads one file per sample (the
/// `file_per_sample` example's) trains through `run::train` on 2 worker
/// threads: it learns, the same seed gives the same weights bit for bit
/// (each worker draws its noise from its own seeded generator), and a file
/// that cannot be read ends the run with an error naming it, after the
/// checkpoint before it.
#[test]
fn a_dataset_reading_one_file_per_sample_trains_on_workers_deterministically() -> Result<()> {
    let _global = common::global_state();
    let tmp = TempDir::new("file-per-sample")?;
    let data = tmp.path().join("data");
    files::write_demo(&data, 3, 60, 8)?;
    let notices = Arc::new(Mutex::new(Vec::new()));
    let flags = json!({
        "data": format!("files:{}", data.display()),
        "model": "mlp:hidden=16", "optimizer": "adam:lr=0.02", "epochs": 3,
        "batch_size": 16, "seed": 5, "workers": 2, "checkpoint_every": 4,
    });
    let mut weights = Vec::new();
    for attempt in ["a", "b"] {
        let run = tmp.path().join(attempt);
        let mut req = request(flags.clone(), &notices);
        req.run_dir = Some(run.clone());
        let summary = train(req, &files::registries())?;
        ensure!(summary.stop == StopReason::Completed, "{:?}", summary.stop);
        let accuracy = summary
            .last_eval
            .as_ref()
            .and_then(|e| e.get("test_accuracy"))
            .unwrap_or(0.0);
        ensure!(accuracy > 0.8, "accuracy {accuracy} (chance: 0.33)");
        let checkpoint = summary
            .last_checkpoint
            .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
        weights.push(std::fs::read(checkpoint.join("model.safetensors"))?);
    }
    ensure!(
        !weights[0].is_empty() && weights[0] == weights[1],
        "same seed, other weights"
    );

    // One file cut short.
    let bad = data.join("class-1").join("00007.f32");
    std::fs::write(&bad, [0u8; 7])?;
    let run = tmp.path().join("bad");
    let mut req = request(flags, &notices);
    req.run_dir = Some(run.clone());
    let err = train(req, &files::registries())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        err.contains("00007.f32") && err.contains("not a whole number of float32 values"),
        "{err}"
    );
    ensure!(!err.contains('\n'), "one line: {err}");
    Ok(())
}
