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
mod own;

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
