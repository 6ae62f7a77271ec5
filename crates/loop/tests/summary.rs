//! `run::summarize` and `models::freeze` as library calls: the rows and
//! exact counts of each model's `ModelSummary` equal PyTorch's
//! `sum(p.numel())` over the same modules (tests/tools/make_fixtures.py,
//! run at test time), frozen parameters counted as non-trainable.
use crate::common;

use anyhow::{ensure, Context, Result};
use common::TempDir;
use kiln_loop::models::summary::LayerSummary;
use kiln_loop::run::{summarize, Registries};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs tests/tools/make_fixtures.py into `out` on the setup's PyTorch and
/// returns its summaries.json.
fn fixtures(out: &Path) -> Result<Value> {
    let run = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root().join("tests/tools/make_fixtures.py"))
        .arg(out)
        .env("PYTHONPATH", root().join(".libtorch"))
        .output()
        .context("running python3 (scripts/setup.sh installs the reference's torch)")?;
    ensure!(
        run.status.success(),
        "make_fixtures.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("summaries.json"))?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn summaries_count_the_parameters_pytorch_counts() -> Result<()> {
    let _lock = common::global_state();
    let dir = TempDir::new("summary")?;
    let expected = fixtures(dir.path())?;
    let at = |name: &str| dir.path().join(name).display().to_string();
    let fashion = root().join(".data/fashion-mnist").display().to_string();
    let cases = [
        ("mlp", json!({"model": "mlp", "data_dir": fashion})),
        (
            "cnn_frozen_convs",
            json!({"model": "cnn", "data_dir": fashion, "freeze": ["conv*"]}),
        ),
        (
            "torchscript",
            json!({"model": format!("torchscript:{}", at("small.pt")), "data_dir": fashion}),
        ),
        (
            "gpt",
            json!({
                "model": "gpt:n_layer=2,n_head=2,n_embd=16",
                "data": format!("tokens:{},block_size=8,vocab_size=11", at("tokens")),
            }),
        ),
        (
            "nan_grad",
            json!({
                "model": format!("torchscript:{}", at("nan_grad.pt")),
                "data": format!("tensors:{}", at("anomaly_train.safetensors")),
            }),
        ),
    ];
    for (case, flags) in cases {
        let Value::Object(flags) = flags else {
            unreachable!()
        };
        let summary = summarize(flags, &Registries::default())?;
        let want = &expected[case];
        let rows: Vec<(String, String, i64)> = summary
            .layers
            .iter()
            .map(|l: &LayerSummary| (l.name.clone(), l.kind.clone(), l.params))
            .collect();
        let want_rows: Vec<(String, String, i64)> = serde_json::from_value(want["rows"].clone())?;
        ensure!(rows == want_rows, "{case}: {rows:?} != {want_rows:?}");
        ensure!(
            summary.total_params == want["total"].as_i64().unwrap_or(-1)
                && summary.trainable_params == want["trainable"].as_i64().unwrap_or(-1),
            "{case}: {} total, {} trainable; PyTorch: {want}",
            summary.total_params,
            summary.trainable_params
        );
        ensure!(
            summary.to_string() == want["table"].as_str().unwrap_or_default(),
            "{case}:\n{summary}\n!=\n{}",
            want["table"]
        );
    }
    Ok(())
}
