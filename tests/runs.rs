//! Watching and steering runs from the CLI: early stopping, NaN detection,
//! JSON logs, config files, evaluation of checkpoints, dry runs, spec strings.
use crate::common;

use common::{data_dir, kiln, temp_dir, text};

fn train(extra: &[&str]) -> (std::process::Output, String, String) {
    let data = data_dir().display().to_string();
    let mut argv = vec![
        "train",
        "--data-dir",
        data.as_str(),
        "--train-samples",
        "1280",
        "--test-samples",
        "300",
        "--seed",
        "2",
        "--threads",
        "1",
    ];
    argv.extend_from_slice(extra);
    let out = kiln(&argv);
    let (stdout, stderr) = text(&out);
    (out, stdout, stderr)
}

#[test]
fn early_stopping_stops_after_patience() {
    let run = temp_dir("early");
    let run_s = run.display().to_string();
    // No epoch can improve accuracy by 50 points, so the second evaluation is the first bad one.
    let (out, stdout, stderr) = train(&[
        "--epochs",
        "5",
        "--early-stopping",
        "test_accuracy:patience=1,min_delta=0.5",
        "--run-dir",
        &run_s,
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Epoch 2\n") && !stdout.contains("Epoch 3\n"),
        "{stdout}"
    );
    // It says why it stopped, not that training completed.
    assert!(
        stdout.contains(
            "Training stopped: early stopping after epoch 2: test_accuracy stopped improving"
        ),
        "{stdout}"
    );
}

#[test]
fn nonfinite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let run = temp_dir("nan");
    let run_s = run.display().to_string();
    let (out, stdout, stderr) = train(&[
        "--lr",
        "1e12",
        "--checkpoint-every",
        "1",
        "--run-dir",
        &run_s,
    ]);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    // The start of the run is announced; then one error line.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("error:")),
        "{stderr}"
    );
    assert!(
        stderr.contains("training loss became") && stderr.contains("last good checkpoint"),
        "{stderr}"
    );
    // The step named in the message and every later checkpoint are gone.
    let step: usize = stderr
        .split("(after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with('.') || n < &format!("step-{step:09}")),
        "{names:?} vs step {step}"
    );
}

#[test]
fn json_log_format_is_one_object_per_line() {
    let (out, stdout, stderr) = train(&[
        "--epochs",
        "1",
        "--log-format",
        "json",
        "--run-dir",
        &temp_dir("json").display().to_string(),
    ]);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["event"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(events.first().map(String::as_str), Some("start"));
    assert_eq!(events.get(1).map(String::as_str), Some("step"));
    assert!(events.contains(&"eval".to_string()));
    // The start event says where the run is and its seed (issue 25, item 17).
    let start: serde_json::Value =
        serde_json::from_str(stdout.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(start["seed"], 2, "{start}");
    assert!(
        start["run_dir"]
            .as_str()
            .is_some_and(|d| d.ends_with("/json")),
        "{start}"
    );
    assert_eq!(events.last().map(String::as_str), Some("end"));
}

#[test]
fn config_file_gives_flags_and_command_line_wins() {
    let dir = temp_dir("config");
    let config = dir.join("run.json");
    std::fs::write(&config, r#"{"epochs": 3, "batch-size": 128, "lr": 0.01}"#).unwrap_or_default();
    let run = dir.join("run");
    let (out, stdout, stderr) = train(&[
        "--config",
        config.to_str().unwrap_or(""),
        "--epochs",
        "1",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Epoch 1\n") && !stdout.contains("Epoch 2\n"),
        "{stdout}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(saved["epochs"], 1);
    assert_eq!(saved["batch_size"], 128);
    // --lr is not a setting of its own: it lands in the optimizer spec that ran.
    assert!(
        saved["optimizer"]
            .as_str()
            .is_some_and(|o| o.starts_with("sgd:lr=0.01,momentum=0.9,")),
        "{saved}"
    );
    std::fs::write(&config, r#"{"epochz": 3}"#).unwrap_or_default();
    let (out, _, stderr) = train(&["--config", config.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("unknown flag 'epochz' (did you mean 'epochs'?)"),
        "{stderr}"
    );
}

#[test]
fn eval_reproduces_the_last_test_report() {
    let run = temp_dir("eval");
    let run_s = run.display().to_string();
    let (out, stdout, stderr) = train(&["--epochs", "2", "--run-dir", &run_s]);
    assert!(out.status.success(), "{stderr}");
    let last_report = stdout
        .rsplit("Test Error:")
        .next()
        .unwrap_or_default()
        .trim_end_matches("Training completed\n");
    let out = kiln(&["eval", "--checkpoint", &run_s]);
    let (eval_out, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(eval_out, format!("Test Error:{last_report}"));
}

#[test]
fn dry_run_is_one_batch_of_each() {
    let (out, stdout, stderr) = train(&[
        "--dry-run",
        "--run-dir",
        &temp_dir("dry").display().to_string(),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("loss: ")).count(),
        1,
        "{stdout}"
    );
    assert_eq!(stdout.matches("Test Error").count(), 1, "{stdout}");
}

#[test]
fn loss_spec_strings_reach_the_loss() {
    let run = temp_dir("spec").display().to_string();
    let run2 = temp_dir("spec2").display().to_string();
    let (out, plain, stderr) = train(&["--epochs", "1", "--run-dir", &run]);
    assert!(out.status.success(), "{stderr}");
    let (out, smoothed, stderr) = train(&[
        "--epochs",
        "1",
        "--run-dir",
        &run2,
        "--loss",
        "cross-entropy:label_smoothing=0.1,ignore_index=3",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_ne!(plain, smoothed, "options must change the loss");
    let (out, _, stderr) = train(&["--loss", "huber:delta=0.5,epsilon=1", "--run-dir", &run]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("epsilon") && stderr.contains("delta"),
        "{stderr}"
    );
    let listing = text(&kiln(&["losses"])).0;
    for name in [
        "cross-entropy",
        "nll",
        "mse",
        "ctc",
        "kl-div",
        "bce-with-logits",
        "triplet-margin-with-distance",
        "huber",
    ] {
        assert!(listing.contains(name), "kiln losses lacks {name}");
    }
    assert!(listing.contains("label_smoothing"), "{listing}");
}

#[test]
fn scheduler_specs_are_checked() {
    let (out, _, stderr) = train(&[
        "--scheduler",
        "onecycle:max_lr=-1",
        "--run-dir",
        &temp_dir("sched").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let (out, _, stderr) = train(&[
        "--scheduler",
        "warp",
        "--run-dir",
        &temp_dir("sched2").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("warp") && stderr.contains("onecycle"),
        "{stderr}"
    );
    assert!(text(&kiln(&["schedulers"])).0.contains("cosine"));
}

#[test]
fn metrics_files_and_plots_are_written() {
    let run = temp_dir("plot");
    let run_s = run.display().to_string();
    let (out, _, stderr) = train(&[
        "--epochs",
        "2",
        "--run-dir",
        &run_s,
        "--plot",
        "--scheduler",
        "step:step_size=1,gamma=0.5",
    ]);
    assert!(out.status.success(), "{stderr}");
    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    // 1280 samples / 64 = 20 steps per epoch, 2 epochs; plus 2 evaluations.
    assert_eq!(
        jsonl
            .lines()
            .filter(|l| l.contains("\"scope\":\"step\""))
            .count(),
        40,
        "{jsonl}"
    );
    assert_eq!(
        jsonl
            .lines()
            .filter(|l| l.contains("\"scope\":\"epoch\""))
            .count(),
        2,
        "{jsonl}"
    );
    let epochs = std::fs::read_to_string(run.join("metrics_epoch.csv")).unwrap_or_default();
    assert!(
        epochs.starts_with("step,epoch,epoch_train_seconds,test_accuracy,test_loss\n20,1,"),
        "{epochs}"
    );
    for chart in ["loss", "accuracy", "lr"] {
        let png = std::fs::read(run.join(format!("plots/{chart}.png"))).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
            "{chart}.png"
        );
        let svg =
            std::fs::read_to_string(run.join(format!("plots/{chart}.svg"))).unwrap_or_default();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}.svg"
        );
    }
    // `kiln plot` redraws into another directory.
    let other = run.join("again");
    let out = kiln(&["plot", &run_s, "--out", other.to_str().unwrap_or("")]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(other.join("loss.svg").is_file());
    let out = kiln(&["plot", "/nonexistent-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("metrics.jsonl"));
}

#[test]
fn csv_regression_trains_and_bad_csv_is_named() {
    let dir = temp_dir("csv");
    let mut rows = String::from("size,rooms,\"note, quoted\",price\n");
    for i in 0..200 {
        let (size, rooms) = (30 + (i * 7) % 90, 1 + i % 4);
        rows.push_str(&format!(
            "{size},{rooms},{},{}\n",
            i % 3,
            2 * size + 15 * rooms + 5
        ));
    }
    let csv = dir.join("prices.csv");
    std::fs::write(&csv, rows).unwrap_or_default();
    let spec = format!("csv:{},target=price", csv.display());
    let run = dir.join("run").display().to_string();
    let out = kiln(&[
        "train",
        "--data",
        &spec,
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--optimizer",
        "adam:lr=0.01",
        "--seed",
        "1",
        "--run-dir",
        &run,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let losses: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(" Avg loss: "))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(losses.len(), 30, "{stdout}");
    assert!(
        losses[29] < losses[0] / 20.0,
        "regression did not learn: {losses:?}"
    );
    let out = kiln(&["eval", "--checkpoint", &run]);
    assert!(
        out.status.success() && text(&out).0.contains("Avg loss"),
        "{}",
        text(&out).1
    );

    std::fs::write(&csv, "size,price\n1,2\n3,three\n").unwrap_or_default();
    let out = kiln(&["train", "--data", &spec, "--run-dir", &run]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("line 3") && stderr.contains("\"three\" is not a number"),
        "{stderr}"
    );
    let out = kiln(&[
        "train",
        "--data",
        &format!("csv:{},target=cost", csv.display()),
        "--run-dir",
        &run,
    ]);
    assert!(
        text(&out).1.contains("no column \"cost\""),
        "{}",
        text(&out).1
    );
    let out = kiln(&[
        "train",
        "--data",
        &format!("csv:{}", csv.display()),
        "--run-dir",
        &run,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("option target is required"));
}

#[test]
fn gradient_clipping_is_logged() {
    let run = temp_dir("clip");
    let (out, _, stderr) = train(&[
        "--epochs",
        "1",
        "--clip-grad-norm",
        "0.5",
        "--clip-grad-value",
        "0.1",
        "--run-dir",
        run.to_str().unwrap_or(""),
    ]);
    assert!(out.status.success(), "{stderr}");
    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    assert!(
        jsonl
            .lines()
            .next()
            .is_some_and(|l| l.contains("\"grad_norm\"")),
        "{jsonl}"
    );
    let (out, _, stderr) = train(&["--clip-grad-norm", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("clipping"), "{stderr}");
}

#[test]
fn optimizer_specs_reach_the_optimizer() {
    let run = temp_dir("optim").display().to_string();
    let (out, adamw, stderr) = train(&[
        "--epochs",
        "1",
        "--run-dir",
        &run,
        "--optimizer",
        "adamw:lr=3e-4,weight_decay=0.05,betas=0.85;0.99",
    ]);
    assert!(out.status.success(), "{stderr}");
    let (out, sgd, _) = train(&[
        "--epochs",
        "1",
        "--run-dir",
        &temp_dir("optim-sgd").display().to_string(),
    ]);
    assert!(out.status.success());
    assert_ne!(adamw, sgd);
    let (out, _, stderr) = train(&[
        "--optimizer",
        "adam",
        "--momentum",
        "0.9",
        "--run-dir",
        &run,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("momentum") && stderr.contains("betas"),
        "{stderr}"
    );
    let (out, _, stderr) = train(&["--optimizer", "lion", "--run-dir", &run]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("lion") && stderr.contains("adamw"),
        "{stderr}"
    );
    // LBFGS steps through a closure that re-evaluates the batch.
    let (out, lbfgs, stderr) = train(&[
        "--epochs",
        "1",
        "--run-dir",
        &temp_dir("optim-lbfgs").display().to_string(),
        "--optimizer",
        "lbfgs:lr=0.5,max_iter=4,line_search_fn=strong_wolfe",
    ]);
    assert!(out.status.success(), "{stderr}");
    let accuracy: f64 = lbfgs
        .split("Accuracy: ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(accuracy > 50.0, "{lbfgs}");
    let listing = text(&kiln(&["optimizers"])).0;
    for name in [
        "sgd",
        "adam",
        "adamw",
        "adagrad",
        "adadelta",
        "adamax",
        "nadam",
        "radam",
        "rmsprop",
        "rprop",
        "asgd",
        "lbfgs",
        "sparse-adam",
        "adafactor",
        "muon",
    ] {
        assert!(
            listing.contains(name),
            "kiln optimizers lacks {name}:\n{listing}"
        );
    }
}

#[test]
fn keep_best_top_k_and_eval_schedule() {
    let run = temp_dir("best");
    let run_s = run.display().to_string();
    let (out, stdout, stderr) = train(&[
        "--epochs",
        "3",
        "--run-dir",
        &run_s,
        "--keep-checkpoints",
        "1",
        "--keep-best",
        "test_loss",
        "--top-k",
        "3",
        "--eval-every-epochs",
        "1",
        "--lr",
        "0.05",
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("Test Error").count(), 3, "{stdout}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(best["metric"], "test_loss");
    // Paths inside a run are relative to it.
    let best_dir = run.join(best["checkpoint"].as_str().unwrap_or_default());
    assert!(
        best_dir.join("manifest.json").is_file(),
        "the best checkpoint is kept: {best}"
    );
    let kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.len() <= 2 && kept.contains(&"step-000000060".to_string()),
        "{kept:?}"
    );
    let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    assert!(jsonl.contains("\"test_top3_accuracy\""), "{jsonl}");
    let (out, stdout, _) = train(&[
        "--epochs",
        "2",
        "--eval-every-epochs",
        "0",
        "--run-dir",
        &temp_dir("noeval").display().to_string(),
    ]);
    assert!(out.status.success());
    assert!(!stdout.contains("Test Error"), "{stdout}");
}

/// `--data csv:` classifies with `classes=N` and standardises regression
/// targets with `standardize_targets=true` (issue 25, item 7).
#[test]
fn csv_classes_and_standardized_targets() {
    let dir = temp_dir("csv_classes");
    let mut rows = String::from("x,y,label,price\n");
    for i in 0..200 {
        let (x, y) = ((i * 37 % 100) as f64 / 10.0, (i * 53 % 100) as f64 / 10.0);
        let label = usize::from(x > 5.0) + 2 * usize::from(y > 5.0);
        rows.push_str(&format!(
            "{x},{y},{label},{}\n",
            1000.0 * x + 3000.0 * y + 20000.0
        ));
    }
    let csv = dir.join("table.csv");
    std::fs::write(&csv, rows).unwrap_or_default();
    let avg = |stdout: &str| -> Vec<f64> {
        stdout
            .lines()
            .filter_map(|l| l.split("Avg loss: ").nth(1))
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let train = |spec: String, name: &str| {
        let run = dir.join(name).display().to_string();
        let out = kiln(&[
            "train",
            "--data",
            &spec,
            "--model",
            "mlp:hidden=64;64,standardize=true",
            "--epochs",
            "8",
            "--batch-size",
            "16",
            "--optimizer",
            "adam:lr=0.01",
            "--seed",
            "1",
            "--threads",
            "1",
            "--run-dir",
            &run,
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        stdout
    };
    // The label column as classes (the price column is a feature here,
    // standardised by the model).
    let stdout = train(
        format!("csv:{},target=label,classes=4", csv.display()),
        "classes",
    );
    let accuracy: f64 = stdout
        .rsplit("Accuracy: ")
        .next()
        .and_then(|t| t.split('%').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(accuracy > 80.0, "{stdout}");
    // Prices in the tens of thousands: standardised, the loss is in
    // standard deviations (about 1 for a model that predicts the mean).
    let stdout = train(
        format!(
            "csv:{},target=price,standardize_targets=true",
            csv.display()
        ),
        "standardized",
    );
    let losses = avg(&stdout);
    assert_eq!(losses.len(), 8, "{stdout}");
    assert!(losses[0] < 2.0 && losses[7] < 0.1, "{losses:?}");

    // A target that is no class index is named by its row.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "x,label\n1,0\n2,1\n3,1.5\n4,0\n").unwrap_or_default();
    let out = kiln(&[
        "train",
        "--data",
        &format!("csv:{},target=label,classes=2", bad.display()),
        "--run-dir",
        &dir.join("bad").display().to_string(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("data row 3, column \"label\": 1.5 is not a class index in 0..=1"),
        "{stderr}"
    );
}

/// `kiln eval` on the run's validation split, with top-K accuracy, and on
/// other data (issue 25, item 8).
#[test]
fn eval_takes_the_validation_split_top_k_and_other_data() {
    let dir = temp_dir("eval_more");
    let run = dir.join("run").display().to_string();
    let (out, stdout, stderr) =
        train(&["--epochs", "1", "--val-fraction", "0.25", "--run-dir", &run]);
    assert!(out.status.success(), "{stderr}");
    let validation = stdout
        .split("Validation Error:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default();
    let out = kiln(&["eval", "--checkpoint", &run, "--split", "val"]);
    let (eval_out, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(eval_out, format!("Validation Error:{validation}\n\n"));

    let out = kiln(&["eval", "--checkpoint", &run, "--top-k", "3"]);
    let (eval_out, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        eval_out.starts_with("Test Error: \n Accuracy: "),
        "{eval_out}"
    );
    assert!(eval_out.contains("\n Top-3 accuracy: "), "{eval_out}");

    // Other data: a generated IDX set of 28x28 images.
    let other = temp_dir("eval_more_other");
    common::write_dataset(&other, 64, 28, |i| (i % 10) as u8);
    let out = kiln(&[
        "eval",
        "--checkpoint",
        &run,
        "--data",
        &format!("idx:{}", other.display()),
        "--test-samples",
        "64",
    ]);
    let (eval_out, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        eval_out.starts_with("Test Error: \n Accuracy: "),
        "{eval_out}"
    );

    let (out, _, stderr) = train(&[
        "--epochs",
        "1",
        "--run-dir",
        &dir.join("noval").display().to_string(),
    ]);
    assert!(out.status.success(), "{stderr}");
    let out = kiln(&[
        "eval",
        "--checkpoint",
        &dir.join("noval").display().to_string(),
        "--split",
        "val",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out)
            .1
            .contains("--split val: this run has no validation split"),
        "{}",
        text(&out).1
    );
}

/// `--init FILE --init-strict false` loads what matches and names what it
/// skipped: the quickstart model's first layer under a narrower second
/// layer and head (issue 25, item 9).
#[test]
fn non_strict_init_loads_what_matches_and_names_the_rest() {
    let dir = temp_dir("init_partial");
    let run = dir.join("ten").display().to_string();
    let (out, _, stderr) = train(&["--max-steps", "2", "--run-dir", &run]);
    assert!(out.status.success(), "{stderr}");
    let weights = common::newest(std::path::Path::new(&run)).join("model.safetensors");
    let weights = weights.display().to_string();
    let three = temp_dir("init_partial_data");
    common::write_dataset(&three, 64, 28, |i| (i % 10) as u8);
    let three = three.display().to_string();
    let args = |strict: &'static str, name: &str| -> Vec<String> {
        [
            "train",
            "--data-dir",
            &three,
            "--model",
            "mlp:hidden=512;256",
            "--max-steps",
            "1",
            "--lr",
            "0",
            "--init",
            &weights,
            "--init-strict",
            strict,
            "--run-dir",
            &dir.join(name).display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run_with = |v: Vec<String>| kiln(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run_with(args("true", "strict"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    assert!(
        text(&out)
            .1
            .contains("size mismatch for linear_relu_stack.4.weight"),
        "{}",
        text(&out).1
    );
    let out = run_with(args("false", "partial"));
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: --init {weights} (not strict): skipped mis-shaped: linear_relu_stack.2.weight [512, 512] in the file, [256, 512] in the model, linear_relu_stack.2.bias [512] in the file, [256] in the model, linear_relu_stack.4.weight [10, 512] in the file, [10, 256] in the model\n"
        )),
        "{stderr}"
    );
    // The body came from the file: with lr 0 the first layer is still the file's, bit for bit.
    let first = |path: &std::path::Path| {
        common::read_safetensors(path)
            .into_iter()
            .find(|t| t.name == "linear_relu_stack.0.weight")
            .map(|t| t.bytes)
    };
    let trained = common::newest(&dir.join("partial")).join("model.safetensors");
    let loaded = first(std::path::Path::new(&weights));
    assert!(loaded.as_ref().is_some_and(|b| b.len() == 784 * 512 * 4));
    assert!(
        first(&trained) == loaded,
        "the first layer is not the file's"
    );
}
