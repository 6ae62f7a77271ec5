//! Runs survive SIGKILL: kill a run mid-epoch, resume it, and it ends with
//! exactly the parameters, optimizer state and log of a run never stopped.
use crate::common;

use common::{
    assert_resumed_exactly, checkpoints, kill_after_checkpoint, kiln, newest, same_file, temp_dir,
    text, train_args,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: &str = "3";

fn args(run: &Path) -> Vec<String> {
    train_args(
        run,
        &[
            "--seed",
            "5",
            "--epochs",
            EPOCHS,
            "--train-samples",
            "3200",
            "--test-samples",
            "500",
            "--checkpoint-every",
            "7",
            "--keep-checkpoints",
            "100",
        ],
    )
}

/// The uninterrupted reference run: its stdout and final checkpoint.
fn reference(name: &str) -> (String, PathBuf) {
    let run = temp_dir(name);
    let argv = args(&run);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    (stdout, newest(&run))
}

/// Starts a run and SIGKILLs it once a checkpoint past `after_step` exists.
fn killed_run(name: &str, after_step: usize) -> PathBuf {
    let run = temp_dir(name);
    kill_after_checkpoint(&args(&run), &run, after_step);
    run
}

fn resume(run: &Path, extra: &[&str]) -> (String, String) {
    let run_s = run.display().to_string();
    let mut argv = vec!["train", "--resume", run_s.as_str()];
    argv.extend_from_slice(extra);
    let out = kiln(&argv);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "resume failed: {stderr}");
    (stdout, stderr)
}

#[test]
fn sigkill_mid_epoch_then_resume_is_bit_identical() {
    let (log, final_ckpt) = reference("resume-ref");
    // 50 batches per epoch: step 63 is mid-epoch 2.
    let run = killed_run("resume-kill", 63);
    let (stdout, stderr) = resume(&run, &[]);
    assert!(stderr.contains("resuming"), "{stderr}");
    // Same checkpoint bytes, and exactly the rest of the uninterrupted log.
    assert_resumed_exactly(&final_ckpt, &newest(&run), &log, &stdout);
    assert!(stdout.contains("Epoch 3"), "{stdout}");
    // The metrics files continue where the checkpoint was: the same steps,
    // losses and learning rates as the uninterrupted run.
    let reference_run = final_ckpt
        .parent()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    assert_eq!(loss_curve(&reference_run), loss_curve(&run));
}

/// (scope, step, losses, accuracy, lr) of every metrics record: the
/// deterministic part (timings differ from run to run).
fn loss_curve(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let curve: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            let m = &v["values"];
            format!(
                "{} {} {} {} {} {}",
                v["scope"], v["step"], m["train_loss"], m["test_loss"], m["test_accuracy"], m["lr"]
            )
        })
        .collect();
    assert!(
        curve.len() > 100,
        "{}: {} records",
        run.display(),
        curve.len()
    );
    curve
}

#[test]
fn sigkill_between_epochs_then_resume_is_bit_identical() {
    let (log, final_ckpt) = reference("between-ref");
    // Only epoch-end checkpoints: whichever is newest at the kill is between epochs.
    let run = temp_dir("between-kill");
    let mut argv = args(&run);
    let at = argv
        .iter()
        .position(|a| a == "--checkpoint-every")
        .unwrap_or(0)
        + 1;
    argv[at] = "1000".into();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoints(&run).is_empty() {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = child.try_wait().ok().flatten().is_some();
    child.kill().unwrap_or_default();
    let _ = child.wait();
    assert!(!finished, "the run finished before it could be killed");
    let resumed_from = newest(&run);
    let (stdout, _) = resume(&run, &[]);
    assert!(
        stdout.starts_with("Epoch "),
        "resumed at an epoch boundary ({}): {stdout}",
        resumed_from.display()
    );
    assert!(log.ends_with(&stdout), "{stdout}");
    same_file(
        &final_ckpt.join("model.safetensors"),
        &newest(&run).join("model.safetensors"),
    );
}

#[test]
fn corrupt_newest_checkpoint_is_skipped_with_a_warning() {
    let (_, final_ckpt) = reference("corrupt-ref");
    let run = killed_run("corrupt-kill", 70);
    let all = checkpoints(&run);
    let newest_dir = all.last().cloned().unwrap_or_default();
    // Truncate the newest checkpoint's weights and leave a half-written temp dir around.
    let model = newest_dir.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap_or_default();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap_or_default();
    std::fs::create_dir_all(run.join("checkpoints/.tmp-step-000000999-1")).unwrap_or_default();
    let (_, stderr) = resume(&run, &[]);
    assert!(
        stderr.contains("warning: skipping checkpoint") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    same_file(
        &final_ckpt.join("model.safetensors"),
        &newest(&run).join("model.safetensors"),
    );
    assert!(
        !run.join("checkpoints/.tmp-step-000000999-1").exists(),
        "temp leftovers are cleaned up"
    );
}

#[test]
fn resume_between_epochs_with_more_epochs() {
    let (log, final_ckpt) = reference("epochs-ref");
    let run = temp_dir("epochs-short");
    let mut argv = args(&run);
    let at = argv.iter().position(|a| a == "--epochs").unwrap_or(0) + 1;
    argv[at] = "1".into();
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);
    // Flags on the command line override the run's saved config.
    let (stdout, _) = resume(&run, &["--epochs", EPOCHS]);
    assert!(stdout.starts_with("Epoch 2\n"), "{stdout}");
    assert!(log.ends_with(&stdout), "{stdout}");
    same_file(
        &final_ckpt.join("model.safetensors"),
        &newest(&run).join("model.safetensors"),
    );
}

#[test]
fn a_run_without_checkpoints_resumes_from_its_start_and_a_non_run_is_refused() {
    // A run killed before its first checkpoint left only its config: resuming
    // trains it from the start, exactly as the original command would have.
    let reference = temp_dir("resume-empty-ref");
    let argv = args(&reference);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let (log, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run = temp_dir("resume-empty");
    std::fs::copy(reference.join("config.json"), run.join("config.json")).unwrap_or_default();
    let (stdout, stderr) = resume(&run, &[]);
    assert!(stderr.contains("has no checkpoint yet"), "{stderr}");
    assert_eq!(stdout, log);
    same_file(
        &newest(&reference).join("model.safetensors"),
        &newest(&run).join("model.safetensors"),
    );
    // A directory that is not a run is refused, naming what to do.
    let empty = temp_dir("resume-not-a-run");
    let out = kiln(&["train", "--resume", empty.to_str().unwrap_or("")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a kiln run directory") && stderr.contains("--run-dir"),
        "{stderr}"
    );
}

/// Stops a run at `stop` steps (mid-epoch), resumes it to the end, and
/// compares with an uninterrupted run; `extra` adds flags to both.
fn stop_resume_matches(name: &str, extra: &[&str], stop: usize) {
    let reference_run = temp_dir(&format!("{name}-ref"));
    let mut argv = args(&reference_run);
    argv.extend(extra.iter().map(|s| s.to_string()));
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let (log, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");

    let run = temp_dir(name);
    let mut argv = args(&run);
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv.extend(["--max-steps".to_string(), stop.to_string()]);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);
    let (stdout, _) = resume(&run, &["--max-steps", "1000000"]);
    assert!(log.ends_with(&stdout), "resumed:\n{stdout}\nfull:\n{log}");
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
    ] {
        same_file(&newest(&reference_run).join(file), &newest(&run).join(file));
    }
}

#[test]
fn onecycle_scheduler_state_resumes_exactly() {
    stop_resume_matches(
        "onecycle",
        &[
            "--scheduler",
            "onecycle:max_lr=0.05,total_steps=150",
            "--lr",
            "0.01",
        ],
        61,
    );
}

#[test]
fn accumulation_and_plateau_resume_exactly() {
    stop_resume_matches(
        "plateau",
        &[
            "--scheduler",
            "plateau:patience=0,factor=0.5",
            "--accumulate-grad-batches",
            "3",
            "--lr",
            "0.05",
        ],
        40,
    );
}

/// The `lr` column of `metrics_step.csv` for steps after `after`.
fn lrs_after(run: &Path, after: usize) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics_step.csv")).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let (step, lr) = (
        header.iter().position(|h| *h == "step"),
        header.iter().position(|h| *h == "lr"),
    );
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| {
            step.and_then(|i| c.get(i))
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|s| s > after)
        })
        .filter_map(|c| lr.and_then(|i| c.get(i)).map(|s| s.to_string()))
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn resume_with_new_hyperparameters_applies_them() {
    let run = temp_dir("newlr");
    let run_s = run.display().to_string();
    let first = [
        "train",
        "--seed",
        "0",
        "--epochs",
        "1",
        "--train-samples",
        "640",
        "--test-samples",
        "100",
        "--threads",
        "1",
        "--run-dir",
        &run_s,
    ];
    let out = kiln(&first);
    assert!(out.status.success(), "{}", text(&out).1);
    // 10 steps in epoch 1; epoch 2 trains with the new lr and weight decay.
    let (_, stderr) = resume(
        &run,
        &[
            "--lr",
            "0.1",
            "--optimizer",
            "sgd:weight_decay=0.01",
            "--epochs",
            "2",
        ],
    );
    assert!(
        stderr.contains(
            "resuming with new optimizer settings: lr 0.001 → 0.1, weight_decay 0.0 → 0.01"
        ),
        "{stderr}"
    );
    let lrs = lrs_after(&run, 10);
    assert_eq!(lrs.len(), 10, "{lrs:?}");
    assert!(lrs.iter().all(|lr| lr == "0.1"), "{lrs:?}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    let optimizer = saved["optimizer"].as_str().unwrap_or_default();
    assert!(
        optimizer.starts_with("sgd:lr=0.1,momentum=0.9,")
            && optimizer.contains("weight_decay=0.01"),
        "{saved}"
    );
    // The newest checkpoint's optimizer state holds what ran.
    let state = std::fs::read_to_string(newest(&run).join("optimizer.json")).unwrap_or_default();
    assert!(state.contains("\"lr\": 0.1"), "{state}");

    // A new lr under a scheduler is refused (the scheduler keeps its base lrs), nothing changes.
    let sched = temp_dir("newlr_sched");
    let sched_s = sched.display().to_string();
    let mut argv = first.to_vec();
    argv.truncate(argv.len() - 2);
    argv.extend(["--scheduler", "step:step_size=1", "--run-dir", &sched_s]);
    let out = kiln(&argv);
    assert!(out.status.success(), "{}", text(&out).1);
    let config_before = std::fs::read(sched.join("config.json")).unwrap_or_default();
    let out = kiln(&[
        "train", "--resume", &sched_s, "--lr", "0.1", "--epochs", "2",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--lr") && stderr.contains("scheduler"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(sched.join("config.json")).unwrap_or_default(),
        config_before
    );
}
