//! A run directory a user can trust: it is its own identity (copies and
//! moves resume in place), one process at a time, a failed start changes
//! nothing, interrupts save the run, and every check that can happen before
//! the first step does.
use crate::common;

use common::{checkpoints, kiln, newest, temp_dir, text, train_args};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A small tutorial job into `run` (3 epochs of 20 steps, a checkpoint every 7).
fn args(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut argv = train_args(
        run,
        &[
            "--train-samples",
            "1280",
            "--test-samples",
            "300",
            "--epochs",
            "3",
            "--seed",
            "9",
            "--checkpoint-every",
            "7",
            "--keep-checkpoints",
            "100",
        ],
    );
    // A flag given in `extra` replaces the base's value.
    let mut rest = extra.iter();
    while let Some(flag) = rest.next() {
        let value = rest.clone().next().filter(|v| !v.starts_with("--"));
        match argv.iter().position(|a| a == flag) {
            Some(at) if value.is_some() => {
                argv[at + 1] = value.map(|v| v.to_string()).unwrap_or_default();
                rest.next();
            }
            _ => argv.push(flag.to_string()),
        }
    }
    argv
}

fn run_kiln(argv: &[String]) -> (std::process::Output, String, String) {
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let (stdout, stderr) = text(&out);
    (out, stdout, stderr)
}

fn model_bytes(checkpoint: &Path) -> Vec<u8> {
    std::fs::read(checkpoint.join("model.safetensors")).unwrap_or_default()
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// The uninterrupted run: its stdout and final model.
fn reference(name: &str) -> (String, Vec<u8>) {
    let run = temp_dir(name);
    let (out, stdout, stderr) = run_kiln(&args(&run, &[]));
    assert!(out.status.success(), "{stderr}");
    (stdout, model_bytes(&newest(&run)))
}

#[test]
fn a_copied_run_resumes_in_the_copy_from_any_directory() {
    let (log, final_model) = reference("copy-ref");
    let dir = temp_dir("copy");
    let r1 = dir.join("r1");
    let (out, first, stderr) = run_kiln(&args(&r1, &["--max-steps", "25"]));
    assert!(out.status.success(), "{stderr}");
    let copy = dir.join("moved/r1copy");
    std::fs::create_dir_all(copy.parent().unwrap_or(&dir)).unwrap_or_default();
    let status = Command::new("cp")
        .args(["-r", r1.to_str().unwrap_or(""), copy.to_str().unwrap_or("")])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let original = snapshot(&r1);
    // Resumed from another working directory, by a relative path.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&dir)
        .args(["train", "--resume", "moved/r1copy", "--max-steps", "1000"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (rest, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming moved/r1copy"), "{stderr}");
    assert_eq!(snapshot(&r1), original, "the original run is untouched");
    assert!(
        checkpoints(&copy)
            .last()
            .is_some_and(|c| c.ends_with("step-000000060")),
        "{:?}",
        checkpoints(&copy)
    );
    assert_eq!(model_bytes(&newest(&copy)), final_model);
    // The first part's log and the resumed part's make the whole log.
    // The first part ends with its final evaluation at step 25, which the
    // uninterrupted run does not make.
    let stopped = first
        .strip_suffix("Training stopped: reached max steps (25)\n")
        .unwrap_or_else(|| panic!("{first}"));
    let final_eval = stopped
        .rfind("Test Error: \n")
        .unwrap_or_else(|| panic!("no final evaluation: {first}"));
    assert_eq!(format!("{}{rest}", &stopped[..final_eval]), log);
}

#[test]
fn a_run_directory_holds_one_run_and_one_process() {
    let run = temp_dir("one-run");
    let (out, _, stderr) = run_kiln(&args(&run, &["--max-steps", "3"]));
    assert!(out.status.success(), "{stderr}");
    // A new run refuses it.
    let (out, _, stderr) = run_kiln(&args(&run, &[]));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already holds a run") && stderr.contains("--resume"),
        "{stderr}"
    );
    // A second process on a run in progress fails at once, naming the first.
    let busy = temp_dir("busy");
    let mut first = spawn(&args(&busy, &["--epochs", "50"]));
    wait_for(&mut first, || busy.join("config.json").exists());
    for argv in [
        vec![
            "train".to_string(),
            "--resume".into(),
            busy.display().to_string(),
        ],
        args(&busy, &[]),
    ] {
        let started = Instant::now();
        let (out, _, stderr) = run_kiln(&argv);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("in use by process {}", first.id()))
                || stderr.contains("already holds a run"),
            "{stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn a_failed_resume_changes_nothing() {
    let run = temp_dir("failed-resume");
    let (out, _, stderr) = run_kiln(&args(&run, &["--max-steps", "10"]));
    assert!(out.status.success(), "{stderr}");
    let before = snapshot(&run);
    for bad in [
        vec!["--optimizer", "adam"],
        vec!["--scheduler", "cosine"],
        vec!["--data", "csv:/nonexistent.csv,target=y"],
    ] {
        let mut argv = vec![
            "train".to_string(),
            "--resume".into(),
            run.display().to_string(),
        ];
        argv.extend(bad.iter().map(|s| s.to_string()));
        let (out, _, stderr) = run_kiln(&argv);
        assert!(!out.status.success(), "{bad:?} resumed: {stderr}");
        assert_eq!(snapshot(&run), before, "{bad:?} changed the run: {stderr}");
    }
}

fn spawn(argv: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kiln: {e}"))
}

fn wait_for(child: &mut Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the run ended too early"
        );
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn steps_logged(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"scope\":\"step\""))
        .count()
}

/// Interrupts a run mid-epoch with `signal`, checks the exit and the line it
/// prints, resumes it, and compares with the uninterrupted run.
fn interrupt_then_resume(name: &str, signal: &str, code: i32) {
    let (log, final_model) = reference(&format!("{name}-ref"));
    let run = temp_dir(name);
    let mut child = spawn(&args(&run, &[]));
    wait_for(&mut child, || steps_logged(&run) >= 25);
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (first, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: interrupted at epoch ")
            && last.ends_with(&format!(
                "resume with: kiln train --resume {}",
                run.display()
            )),
        "{stderr}"
    );
    // The step it stopped at was checkpointed, mid-epoch.
    let step: usize = last
        .split(" step ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(step >= 25 && !step.is_multiple_of(20), "{last}");
    assert!(
        checkpoints(&run)
            .last()
            .is_some_and(|c| c.ends_with(format!("step-{step:09}"))),
        "{:?}",
        checkpoints(&run)
    );
    let (out, rest, stderr) = run_kiln(&[
        "train".to_string(),
        "--resume".into(),
        run.display().to_string(),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(format!("{first}{rest}"), log);
    assert_eq!(model_bytes(&newest(&run)), final_model);
}

#[test]
fn sigint_mid_epoch_saves_the_run_and_resume_finishes_it_exactly() {
    interrupt_then_resume("sigint", "INT", 130);
}

#[test]
fn sigterm_mid_epoch_saves_the_run_and_resume_finishes_it_exactly() {
    interrupt_then_resume("sigterm", "TERM", 143);
}

#[test]
fn eval_picks_the_last_or_the_best_checkpoint() {
    let run = temp_dir("which");
    let (out, _, stderr) = run_kiln(&args(&run, &["--keep-best", "test_loss"]));
    assert!(out.status.success(), "{stderr}");
    let r = run.display().to_string();
    for which in ["last", "best"] {
        let out = kiln(&["eval", "--checkpoint", &r, "--which", which]);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && stdout.starts_with("Test Error:"),
            "{which}: {stderr}"
        );
    }
    let out = kiln(&["eval", "--checkpoint", &r, "--which", "worst"]);
    assert_eq!(out.status.code(), Some(2));
    let bare = temp_dir("which-none");
    let (out, _, _) = run_kiln(&args(&bare, &["--max-steps", "3"]));
    assert!(out.status.success());
    let out = kiln(&[
        "eval",
        "--checkpoint",
        bare.to_str().unwrap_or(""),
        "--which",
        "best",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--keep-best"), "{}", text(&out).1);
}

#[test]
fn the_run_says_where_it_is_why_it_stopped_and_what_it_recorded() {
    let run = temp_dir("says");
    let (out, stdout, stderr) = run_kiln(&args(
        &run,
        &[
            "--max-steps",
            "5",
            "--log-format",
            "json",
            "--scheduler",
            "CosineAnnealingLR",
        ],
    ));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("kiln: run directory {}", run.display())),
        "{stderr}"
    );
    assert!(stderr.contains("kiln: seed set to 9"), "{stderr}");
    let end: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_default();
    assert_eq!(end["event"], "end");
    assert_eq!(
        end["stop"],
        serde_json::json!({"reason": "max_steps", "max_steps": 5})
    );
    // config.json holds what ran: every spec resolved, the seed.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(saved["seed"], 9);
    let spec = |k: &str| saved[k].as_str().unwrap_or_default().to_string();
    assert!(
        spec("optimizer").starts_with("sgd:lr=0.001,momentum=0.9,dampening=0.0"),
        "{saved}"
    );
    assert!(spec("loss").starts_with("cross-entropy:"), "{saved}");
    assert!(spec("scheduler").starts_with("cosine:"), "{saved}");
    assert!(
        saved.get("lr").is_none() && saved.get("run_dir").is_none(),
        "{saved}"
    );
    // A longer resumed run warns that the restored scheduler keeps its horizon.
    let (out, _, stderr) = run_kiln(&[
        "train".to_string(),
        "--resume".into(),
        run.display().to_string(),
        "--epochs".into(),
        "4".into(),
        "--max-steps".into(),
        "6".into(),
    ]);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("keeps the horizon"), "{stderr}");
}

#[test]
fn checks_that_can_run_before_the_first_step_do() {
    let dir = temp_dir("upfront");
    let csv = dir.join("t.csv");
    let mut rows = String::from("x,y\n");
    for i in 0..40 {
        rows.push_str(&format!("{i},{}\n", 2 * i));
    }
    std::fs::write(&csv, rows).unwrap_or_default();
    let csv_spec = format!("csv:{},target=y", csv.display());
    for (extra, needles) in [
        (
            vec!["--loss", "bce"],
            vec!["--loss bce", "class labels", "cross-entropy"],
        ),
        (
            vec!["--data", csv_spec.as_str(), "--loss", "cross-entropy"],
            vec!["--loss cross-entropy", "regression", "mse"],
        ),
        (
            vec!["--optimizer", "sparse-adam"],
            vec!["--optimizer sparse-adam", "dense gradients"],
        ),
        (
            vec!["--optimizer", "muon"],
            vec!["--optimizer", "2D parameters"],
        ),
        (
            vec!["--early-stopping", "val_loss"],
            vec![
                "--early-stopping",
                "val_loss",
                "test_accuracy",
                "--val-fraction",
            ],
        ),
        (
            vec!["--keep-best", "val_acc"],
            vec!["--keep-best", "val_acc", "test_loss"],
        ),
        (vec!["--keep-checkpoints", "0"], vec!["--keep-checkpoints"]),
    ] {
        let run = dir.join("run");
        let mut argv = args(&run, &extra);
        if extra.contains(&"--data") {
            // --data replaces --data-dir.
            argv.drain(1..3);
        }
        let (out, _, stderr) = run_kiln(&argv);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{extra:?}: {stderr:?} lacks {n:?}");
        }
        assert!(!run.exists(), "{extra:?} left a run directory");
    }
}
