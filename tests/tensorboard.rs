//! `kiln train --logger tensorboard`: what TensorBoard's own reader
//! (`crates/loop/tests/tensorboard/read_events.py dump`, EventAccumulator and
//! the server's data provider) returns equals, step for step, what the run
//! recorded in metrics.jsonl; a killed and resumed run reads as one curve.
use crate::common;

use common::{kiln, pytorch, temp_dir, text, train_args};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn train(run: &Path, extra: &[&str]) {
    let mut flags = vec![
        "--train-samples",
        "1280",
        "--test-samples",
        "300",
        "--epochs",
        "2",
        "--seed",
        "2",
        "--logger",
        "csv,jsonl,tensorboard",
        "--log-every-n-steps",
        "5",
    ];
    flags.extend_from_slice(extra);
    let argv = train_args(run, &flags);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);
}

fn dump(run: &Path) -> Value {
    let text = pytorch(
        "crates/loop/tests/tensorboard/read_events.py",
        &["dump", run.to_str().unwrap_or("")],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `[[step, value], ...]` of a scalar tag of the run's own directory.
fn scalars(d: &Value, tag: &str) -> Vec<(i64, f64)> {
    d["scalars"]["."][tag]
        .as_array()
        .unwrap_or_else(|| panic!("no scalar {tag}: {}", d["scalars"]))
        .iter()
        .map(|p| {
            (
                p[0].as_i64().unwrap_or(-1),
                p[1].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// The run's metrics.jsonl: (scope, metric) -> [(step, value as float32)].
fn recorded(run: &Path) -> BTreeMap<(String, String), Vec<(i64, f64)>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let mut out: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        let scope = v["scope"].as_str().unwrap_or("").to_string();
        for (name, value) in v["values"].as_object().cloned().unwrap_or_default() {
            let value = value.as_f64().unwrap_or(f64::NAN) as f32 as f64;
            out.entry((scope.clone(), name))
                .or_default()
                .push((v["step"].as_i64().unwrap_or(-1), value));
        }
    }
    out
}

#[test]
fn tensorboard_reads_the_run_step_for_step() {
    let run = temp_dir("tb-run");
    train(&run, &["--log-histograms", "--clip-grad-norm", "5"]);
    let d = dump(&run);
    let rec = recorded(&run);
    let every_5 = |k: &str| -> Vec<(i64, f64)> {
        rec[&("step".to_string(), k.to_string())]
            .iter()
            .copied()
            .filter(|(s, _)| s % 5 == 0)
            .collect()
    };
    // 1280 / 64 = 20 steps per epoch, 40 in all: scalars at 5, 10, …, 40.
    assert_eq!(scalars(&d, "train/loss"), every_5("train_loss"));
    assert_eq!(scalars(&d, "train/lr"), every_5("lr"));
    assert_eq!(scalars(&d, "train/grad_norm"), every_5("grad_norm"));
    assert_eq!(scalars(&d, "train/loss").len(), 8);
    for (tag, name) in [
        ("test/loss", "test_loss"),
        ("test/accuracy", "test_accuracy"),
    ] {
        assert_eq!(
            scalars(&d, tag),
            rec[&("epoch".to_string(), name.to_string())],
            "{tag}"
        );
    }
    assert_eq!(
        scalars(&d, "epoch").iter().map(|p| p.1).collect::<Vec<_>>(),
        [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    );
    // Histograms of every parameter and gradient at each epoch end.
    let hist = d["histograms"]["."]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for layer in ["0", "2", "4"] {
        for part in ["weight", "bias"] {
            for group in ["params", "grads"] {
                let tag = format!("{group}/linear_relu_stack.{layer}.{part}");
                let steps: Vec<i64> = hist
                    .get(&tag)
                    .and_then(Value::as_array)
                    .unwrap_or_else(|| panic!("no histogram {tag}"))
                    .iter()
                    .map(|h| h[0].as_i64().unwrap_or(-1))
                    .collect();
                assert_eq!(steps, [20, 40], "{tag}");
            }
        }
    }
    let weights = &hist["params/linear_relu_stack.0.weight"][0][1];
    assert_eq!(weights["num"].as_f64(), Some(512.0 * 784.0));
    // The flags as text, and the hyperparameters with the final metrics.
    let texts = d["texts"]["."].to_string();
    assert!(texts.contains("log_every_n_steps"), "{texts}");
    let groups = d["session_groups"].to_string();
    assert!(
        groups.contains("hparam/test_accuracy") && groups.contains("batch_size"),
        "{groups}"
    );
}

#[test]
fn a_killed_and_resumed_run_reads_as_one_curve() {
    let reference = temp_dir("tb-ref");
    train(&reference, &[]);
    let run = temp_dir("tb-resumed");
    // Stopped after 27 steps (its newest checkpoint is at 20: epoch 1's end):
    // steps 21-27 were logged, then run again by the resumed process.
    train(&run, &["--max-steps", "27", "--checkpoint-every", "100"]);
    std::fs::remove_dir_all(run.join("checkpoints/step-000000027")).unwrap_or_default();
    let out = kiln(&[
        "train",
        "--resume",
        run.to_str().unwrap_or(""),
        "--max-steps",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    let (want, got) = (dump(&reference), dump(&run));
    for tag in ["train/loss", "train/lr", "test/loss", "test/accuracy"] {
        assert_eq!(scalars(&got, tag), scalars(&want, tag), "{tag}");
    }
    let steps: Vec<i64> = scalars(&got, "train/loss").iter().map(|p| p.0).collect();
    assert_eq!(steps, [5, 10, 15, 20, 25, 30, 35, 40]);
}

/// Milliseconds to wait before the next kill: pseudo-random (from the
/// clock), between 150 and 2150 ms.
fn random_below(kill: u64, bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mixed =
        (nanos ^ (kill.wrapping_mul(0x9e37_79b9_7f4a_7c15))).wrapping_mul(0x2545_f491_4f6c_dd1d);
    (mixed >> 33) % bound
}

/// Steps the run has logged so far (one `metrics_step.csv` row per step).
fn logged_steps(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics_step.csv"))
        .map_or(0, |text| text.lines().count().saturating_sub(1))
}

/// Every logger of a run killed with SIGKILL at random moments and resumed
/// each time ends with each step exactly once, as an uninterrupted run's:
/// TensorBoard's own reader sees one curve, and metrics.jsonl and the CSVs
/// hold the same records. (Checkpoints make every logger durable first.)
#[test]
fn killed_at_random_moments_every_logger_keeps_each_step_exactly_once() {
    use std::process::{Command, Stdio};
    let flags = [
        "--train-samples",
        "640",
        "--test-samples",
        "200",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--seed",
        "5",
        "--logger",
        "csv,jsonl,tensorboard",
        "--log-every-n-steps",
        "1",
        "--checkpoint-every",
        "3",
        "--eval-every-steps",
        "7",
    ];
    let reference = temp_dir("tb-kill-ref");
    let argv = train_args(&reference, &flags);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);

    let run = temp_dir("tb-kill");
    let mut kills = 0;
    let mut finished = false;
    for attempt in 0..12u64 {
        let argv = if run.join("config.json").exists() {
            vec![
                "train".to_string(),
                "--resume".into(),
                run.display().to_string(),
            ]
        } else {
            let _ = std::fs::remove_dir_all(&run);
            train_args(&run, &flags)
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&argv)
            .current_dir(run.parent().unwrap_or(Path::new(".")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn kiln: {e}"));
        // The last attempts run to the end.
        // Kills are placed by progress, not by wall time, so a fast or a
        // slow machine kills as often: a random number of new steps, then a
        // random few milliseconds more (mid-step, mid-checkpoint, mid-write).
        if attempt < 5 {
            let target = logged_steps(&run) + 1 + random_below(attempt, 12) as usize;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while logged_steps(&run) < target
                && child.try_wait().ok().flatten().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            std::thread::sleep(std::time::Duration::from_millis(random_below(
                attempt + 99,
                40,
            )));
            if child.try_wait().ok().flatten().is_none() {
                child.kill().unwrap_or_default(); // SIGKILL
                kills += 1;
            }
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        if out.status.success() {
            finished = true;
            break;
        }
        assert!(
            out.status.code().is_none(),
            "attempt {attempt} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(finished, "the run never finished");
    assert!(
        kills >= 1,
        "no attempt was killed: the run is too short for the test"
    );

    let (want, got) = (dump(&reference), dump(&run));
    let steps: Vec<i64> = scalars(&got, "train/loss").iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=60).collect::<Vec<i64>>(), "train/loss steps");
    for tag in ["train/loss", "train/lr", "test/loss", "test/accuracy"] {
        assert_eq!(scalars(&got, tag), scalars(&want, tag), "{tag}");
    }
    // The metric files: the same records, timings aside.
    let without_timings = |run: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut v: Value = serde_json::from_str(line).unwrap_or_default();
                if let Some(values) = v["values"].as_object_mut() {
                    values.retain(|k, _| !k.ends_with("seconds") && k != "samples_per_sec");
                }
                v
            })
            .collect()
    };
    assert_eq!(without_timings(&run), without_timings(&reference));
    for csv in ["metrics_step.csv", "metrics_epoch.csv"] {
        let lines = |run: &Path| {
            std::fs::read_to_string(run.join(csv))
                .unwrap_or_default()
                .lines()
                .count()
        };
        assert_eq!(lines(&run), lines(&reference), "{csv}");
    }
}
