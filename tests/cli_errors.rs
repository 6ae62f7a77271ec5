//! Bad input: one line naming the problem, exit 2 for usage errors and 1
//! otherwise, never a panic or a libtorch abort. Argument errors keep clap's
//! suggestion on that line and add clap's usage line and a pointer to the
//! subcommand's help.
use crate::common;

use common::{data_dir, idx_bytes, kiln, temp_dir, text, write_dataset};

/// Runs kiln, expects `code`, one stderr line containing every `needle`.
fn expect_error(args: &[&str], code: i32, needles: &[&str]) {
    let out = kiln(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stderr {stderr:?} stdout {stdout:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    let clap_report = lines.len() == 3
        && lines[1].starts_with("Usage: kiln")
        && lines[2].starts_with("For more information, try 'kiln");
    assert!(
        lines.len() == 1 || clap_report,
        "{args:?}: not one line: {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
    }
}

fn data() -> String {
    data_dir().display().to_string()
}

#[test]
fn unknown_flag_is_a_usage_error() {
    expect_error(&["train", "--bogus"], 2, &["--bogus"]);
    expect_error(&["fly"], 2, &["fly"]);
    expect_error(&["train", "--epochs", "two"], 2, &["two", "--epochs"]);
}

#[test]
fn bad_hyperparameters_are_usage_errors() {
    let d = data();
    expect_error(
        &["train", "--data-dir", &d, "--lr", "NaN"],
        2,
        &["Invalid learning rate"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--lr", "-0.5"],
        2,
        &["Invalid learning rate", "-0.5"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--batch-size", "0"],
        2,
        &["batch-size", "0"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--device", "tpu"],
        2,
        &["tpu", "auto, cpu, cuda"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--threads", "0"],
        2,
        &["thread"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--loss", "bogus-loss"],
        2,
        &["bogus-loss"],
    );
    expect_error(
        &["train", "--data-dir", &d, "--optimizer", "sgd:lr=1,bogus=2"],
        2,
        &["bogus"],
    );
}

#[test]
fn bad_precisions_are_usage_errors_that_leave_no_run_directory() {
    let d = data();
    let dir = temp_dir("precision");
    let run = dir.join("run");
    let r = run.to_str().unwrap_or("");
    expect_error(
        &[
            "train",
            "--data-dir",
            &d,
            "--run-dir",
            r,
            "--precision",
            "fp16",
        ],
        2,
        &["fp16", "32-true, bf16-mixed, 16-mixed"],
    );
    // A gradient scaler cannot drive a closure optimizer (as in PyTorch).
    expect_error(
        &[
            "train",
            "--data-dir",
            &d,
            "--run-dir",
            r,
            "--precision",
            "16-mixed",
            "--optimizer",
            "lbfgs",
        ],
        2,
        &["--precision 16-mixed", "lbfgs"],
    );
    assert!(!run.exists(), "a failed start leaves no run directory");
}

#[test]
fn missing_data_dir_names_it() {
    expect_error(
        &["train", "--data-dir", "/nonexistent/kiln-data"],
        1,
        &["/nonexistent/kiln-data", "--data-dir"],
    );
    let empty = temp_dir("empty");
    expect_error(
        &["train", "--data-dir", empty.to_str().unwrap_or("")],
        1,
        &["train-images-idx3-ubyte"],
    );
}

#[test]
fn corrupt_and_truncated_idx_files_are_named() {
    let dir = temp_dir("corrupt");
    write_dataset(&dir, 20, 28, |i| (i % 10) as u8);
    let images = dir.join("train-images-idx3-ubyte");
    let d = dir.to_str().unwrap_or("");
    // Truncated: header promises 20 images, data holds fewer bytes.
    let full = std::fs::read(&images).unwrap_or_default();
    std::fs::write(&images, &full[..full.len() - 100]).unwrap_or_default();
    expect_error(
        &["train", "--data-dir", d],
        1,
        &["train-images-idx3-ubyte", "truncated"],
    );
    // Wrong magic.
    std::fs::write(&images, b"\x12\x34\x08\x03junk").unwrap_or_default();
    expect_error(
        &["train", "--data-dir", d],
        1,
        &["train-images-idx3-ubyte", "magic"],
    );
    // A .gz that is not gzip.
    std::fs::remove_file(&images).unwrap_or_default();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), b"garbage").unwrap_or_default();
    expect_error(
        &["train", "--data-dir", d],
        1,
        &["train-images-idx3-ubyte.gz", "gzip"],
    );
    // Labels and images disagree in count.
    std::fs::remove_file(dir.join("train-images-idx3-ubyte.gz")).unwrap_or_default();
    std::fs::write(&images, idx_bytes(&[3, 28, 28], &[0; 3 * 784])).unwrap_or_default();
    expect_error(&["train", "--data-dir", d], 1, &["20 labels for 3 images"]);
}

#[test]
fn label_out_of_range_is_named() {
    let dir = temp_dir("labels");
    write_dataset(&dir, 30, 28, |i| if i == 17 { 12 } else { (i % 10) as u8 });
    expect_error(
        &["train", "--data-dir", dir.to_str().unwrap_or("")],
        1,
        &["label 12", "sample 17", "10 classes"],
    );
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    let probe = kiln(&[
        "train",
        "--device",
        "cuda:0",
        "--epochs",
        "0",
        "--data-dir",
        &data(),
    ]);
    if probe.status.success() {
        return; // a GPU is present: nothing to refuse
    }
    expect_error(
        &["train", "--device", "cuda", "--data-dir", &data()],
        1,
        &["no CUDA device", "--device cpu"],
    );
}

#[test]
fn unknown_cpu_allocator_is_a_usage_error() {
    let d = data();
    let run = temp_dir("cli-errors-allocator");
    let run = run.join("run");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", "--data-dir", &d, "--run-dir"])
        .arg(&run)
        .env("KILN_CPU_ALLOCATOR", "jemalloc")
        .output()
        .unwrap_or_else(|e| panic!("cannot run kiln: {e}"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in ["error: ", "KILN_CPU_ALLOCATOR", "\"jemalloc\"", "libtorch"] {
        assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    }
}

/// What used to be accepted without a word (issue 25, item 16).
#[test]
fn settings_that_cannot_mean_anything_are_refused() {
    let d = data();
    let small = [
        "train",
        "--data-dir",
        &d,
        "--train-samples",
        "64",
        "--test-samples",
        "64",
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        small
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>, code: i32, needles: &[&str]| {
        expect_error(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            code,
            needles,
        )
    };
    run(with(&["--top-k", "20"]), 2, &["--top-k 20", "10 classes"]);
    run(with(&["--epochs", "0"]), 2, &["--epochs", "at least 1"]);
    run(
        with(&["--max-steps", "0"]),
        2,
        &["--max-steps", "at least 1"],
    );
    run(
        with(&["--model", "cnn", "--loss", "mse"]),
        2,
        &["--loss mse", "log-probabilities", "nll"],
    );
    // Regression data (a CSV of numbers) has no classes to rank.
    let dir = temp_dir("topk_regress");
    let csv = dir.join("r.csv");
    let rows: String = (0..20).map(|i| format!("{i},{}\n", 2 * i)).collect();
    std::fs::write(&csv, format!("x,y\n{rows}")).unwrap_or_default();
    let spec = format!("csv:{},target=y", csv.display());
    expect_error(
        &["train", "--data", &spec, "--top-k", "2"],
        2,
        &["--top-k 2", "regression"],
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = temp_dir("dry_nothing");
    let run = dir.join("run");
    let run_s = run.display().to_string();
    let d = data();
    let out = kiln(&[
        "train",
        "--data-dir",
        &d,
        "--train-samples",
        "128",
        "--test-samples",
        "64",
        "--dry-run",
        "--run-dir",
        &run_s,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("Test Error").count(), 1, "{stdout}");
    assert!(!run.exists(), "--dry-run wrote {}", run.display());
    assert!(!stderr.contains("run directory"), "{stderr}");
}

#[test]
fn a_missing_weights_file_is_no_such_file_named_once() {
    let d = data();
    let dir = temp_dir("missing_init");
    let missing = dir.join("nope.safetensors");
    let m = missing.display().to_string();
    for args in [
        vec![
            "train",
            "--data-dir",
            &d,
            "--init",
            &m,
            "--run-dir",
            dir.to_str().unwrap_or("."),
        ],
        vec!["eval", "--weights", &m],
    ] {
        expect_error(&args, 1, &[&format!("{m}: no such file")]);
        let (_, stderr) = text(&kiln(&args));
        assert_eq!(stderr.matches("nope.safetensors").count(), 1, "{stderr}");
    }
}
