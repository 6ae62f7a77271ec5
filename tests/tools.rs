//! The tools around a run (issue 24): the model summary (Lightning's
//! `ModelSummary` table, counts equal to PyTorch's `sum(p.numel())`),
//! `--freeze` (frozen parameters unchanged, no optimizer state, fine-tuning
//! from `--init`) and `--detect-anomaly` (a NaN in backward stops the run
//! naming the operator, the last checkpoint intact).
//!
//! PyTorch's side runs here at test time (tests/tools/make_fixtures.py): the
//! modules, their tables and the fixtures.
use crate::common;

use common::{checkpoints, data_dir, kiln, newest, pytorch, read_safetensors, temp_dir, text};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The fixtures of tests/tools/make_fixtures.py, written once per test process.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("tools-fixtures");
        pytorch("tests/tools/make_fixtures.py", &[s(&dir).as_str()]);
        dir
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn fixture(name: &str) -> String {
    s(&fixtures().join(name))
}

/// PyTorch's summary of a case of summaries.json.
fn expected(case: &str) -> serde_json::Value {
    let path = fixtures().join("summaries.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("summaries.json: {e}"));
    all[case].clone()
}

/// Runs `kiln` with `args`; asserts success and returns (stdout, stderr).
fn kiln_ok(args: &[&str]) -> (String, String) {
    let out = kiln(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// `kiln args` fails with exit code `code` and one line containing `needle`.
fn refused(args: &[&str], code: i32, needle: &str) {
    let out = kiln(args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(code), "kiln {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
}

#[test]
fn summary_tables_count_what_pytorch_counts() {
    let data = s(&data_dir());
    let tokens = format!("tokens:{},block_size=8,vocab_size=11", fixture("tokens"));
    let torchscript = format!("torchscript:{}", fixture("small.pt"));
    let cases: [(&str, Vec<&str>); 4] = [
        ("mlp", vec!["--model", "mlp", "--data-dir", &data]),
        (
            "cnn_frozen_convs",
            vec!["--model", "cnn", "--data-dir", &data, "--freeze", "conv*"],
        ),
        (
            "torchscript",
            vec!["--model", &torchscript, "--data-dir", &data],
        ),
        (
            "gpt",
            vec![
                "--model",
                "gpt:n_layer=2,n_head=2,n_embd=16",
                "--data",
                &tokens,
            ],
        ),
    ];
    for (case, flags) in cases {
        let mut args = vec!["summary"];
        args.extend(flags);
        let (stdout, _) = kiln_ok(&args);
        let want = expected(case);
        assert_eq!(
            stdout.trim_end_matches('\n'),
            want["table"].as_str().unwrap_or_else(|| panic!("no table")),
            "{case}"
        );
    }
}

#[test]
fn a_run_shows_its_summary_on_stderr_unless_quiet() {
    let run = temp_dir("summary-run");
    let data = s(&data_dir());
    let base = |quiet: bool| {
        let mut args = vec![
            "train".to_string(),
            "--data-dir".into(),
            data.clone(),
            "--train-samples".into(),
            "64".into(),
            "--test-samples".into(),
            "16".into(),
            "--epochs".into(),
            "1".into(),
            "--seed".into(),
            "1".into(),
            "--dry-run".into(),
            "--run-dir".into(),
            s(&run.join(if quiet { "quiet" } else { "loud" })),
        ];
        if quiet {
            args.push("--quiet".into());
        }
        args
    };
    let args = base(false);
    let (_, stderr) = kiln_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let table = expected("mlp")["table"]
        .as_str()
        .unwrap_or_else(|| panic!("no table"))
        .to_string();
    assert!(stderr.contains(&table), "no summary in:\n{stderr}");
    let args = base(true);
    let (_, stderr) = kiln_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !stderr.contains("Trainable params"),
        "--quiet shows:\n{stderr}"
    );
}

/// The names of the tensors of a checkpoint's optimizer state.
fn optimizer_tensors(ckpt: &Path) -> Vec<String> {
    let path = ckpt.join("optimizer.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("optimizer.json: {e}"));
    doc["tensors"]
        .as_array()
        .unwrap_or_else(|| panic!("no tensors"))
        .iter()
        .map(|t| {
            t[0].as_str()
                .unwrap_or_else(|| panic!("no name"))
                .to_string()
        })
        .collect()
}

#[test]
fn fine_tuning_a_frozen_backbone_from_init_changes_only_the_head() {
    let dir = temp_dir("freeze");
    let data = s(&data_dir());
    let train = |run: &Path, extra: &[&str]| {
        let run = s(run);
        let mut args = vec![
            "train",
            "--data-dir",
            &data,
            "--model",
            "mlp:hidden=32;32",
            "--train-samples",
            "128",
            "--test-samples",
            "32",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--run-dir",
            &run,
        ];
        args.extend(extra);
        kiln_ok(&args)
    };
    let pretrained = dir.join("pretrained");
    train(&pretrained, &[]);
    let init = newest(&pretrained).join("model.safetensors");
    let tuned = dir.join("tuned");
    let init_arg = s(&init);
    let (_, stderr) = train(
        &tuned,
        &[
            "--init",
            &init_arg,
            "--freeze",
            "linear_relu_stack.0.*",
            "--freeze",
            "linear_relu_stack.2.*",
        ],
    );
    // 784*32+32 + 32*32+32 frozen; 32*10+10 trained.
    assert!(stderr.contains("330       Trainable params"), "{stderr}");
    assert!(
        stderr.contains("26.2 K    Non-trainable params"),
        "{stderr}"
    );
    let before = read_safetensors(&init);
    let ckpt = newest(&tuned);
    let after = read_safetensors(&ckpt.join("model.safetensors"));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.name, a.name);
        let frozen = !b.name.starts_with("linear_relu_stack.4.");
        assert_eq!(b.bytes == a.bytes, frozen, "{}: frozen {frozen}", b.name);
    }
    let state = optimizer_tensors(&ckpt);
    assert!(!state.is_empty());
    assert!(
        state.iter().all(|n| n.contains("linear_relu_stack.4.")),
        "state for frozen parameters: {state:?}"
    );
}

#[test]
fn freezing_everything_or_nothing_is_a_usage_error() {
    let data = s(&data_dir());
    let base = [
        "train",
        "--data-dir",
        &data,
        "--train-samples",
        "64",
        "--test-samples",
        "16",
        "--dry-run",
    ];
    let with = |extra: &[&'static str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        args
    };
    refused(&with(&["--freeze", "*"]), 2, "empty parameter list");
    refused(
        &with(&["--freeze", "backbone.*"]),
        2,
        "--freeze backbone.*: no parameter of the model matches it",
    );
    refused(&with(&["--freeze", "a:b"]), 2, "--freeze");
}

#[test]
fn detect_anomaly_names_the_backward_operator_and_keeps_the_last_checkpoint() {
    let dir = temp_dir("anomaly");
    let data = format!(
        "tensors:{},test={}",
        fixture("anomaly_train.safetensors"),
        fixture("anomaly_test.safetensors")
    );
    let model = format!("torchscript:{}", fixture("nan_grad.pt"));
    let train = |run: &Path, extra: &[&str]| {
        let run = s(run);
        let mut args = vec![
            "train",
            "--data",
            &data,
            "--model",
            &model,
            "--batch-size",
            "16",
            "--no-shuffle",
            "--epochs",
            "1",
            "--seed",
            "0",
            "--checkpoint-every",
            "1",
            "--keep-checkpoints",
            "10",
            "--run-dir",
            &run,
        ];
        args.extend(extra);
        kiln(&args)
    };
    // Batch 4 holds the samples whose square root backward divides by NaN.
    let run = dir.join("detect");
    let out = train(&run, &["--detect-anomaly"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].starts_with(
            "error: --detect-anomaly: Function 'SqrtBackward0' returned nan values in its 0th output; stopped, last good checkpoint "
        ),
        "{stderr}"
    );
    // libtorch's own warning (a C++ backtrace) is not shown.
    assert!(!stderr.contains("frame #"), "{stderr}");
    let kept = checkpoints(&run);
    assert_eq!(
        kept.iter()
            .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>(),
        (1..=3)
            .map(|i| Some(format!("step-{i:09}")))
            .collect::<Vec<_>>(),
        "{stderr}"
    );
    assert!(error[0].ends_with(&s(&kept[2])), "{stderr}");
    let last = s(&kept[2]);
    let (stdout, _) = kiln_ok(&["eval", "--checkpoint", &last]);
    assert!(stdout.contains("Test Error"), "{stdout}");
    // Without anomaly mode nothing stops: the NaN gradient goes into
    // `scale`, which the forward pass leaves out where it would show.
    let run = dir.join("plain");
    let out = train(&run, &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let weights = read_safetensors(&newest(&run).join("model.safetensors"));
    let scale = weights
        .iter()
        .find(|t| t.name == "scale")
        .unwrap_or_else(|| panic!("no scale"));
    assert!(scale.f32s()[0].is_nan(), "{scale:?}");
}
