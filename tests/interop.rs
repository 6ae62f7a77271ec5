//! Checkpoints cross between kiln and PyTorch (fixtures and golden reports
//! from tests/golden/interop/make_interop.py): PyTorch's saved weights give
//! kiln PyTorch's test report, and kiln's weights give PyTorch kiln's.
use crate::common;

use common::{data_dir, kiln, root, text};

fn eval_matches(fixture: &str) {
    let dir = root().join("tests/golden/interop");
    let weights = dir.join(format!("{fixture}.safetensors"));
    let expected =
        std::fs::read_to_string(dir.join(format!("{fixture}.expected"))).unwrap_or_default();
    assert!(
        expected.starts_with("Test Error:"),
        "{fixture}.expected is missing"
    );
    let data = data_dir().display().to_string();
    let out = kiln(&[
        "eval",
        "--weights",
        weights.to_str().unwrap_or(""),
        "--data-dir",
        &data,
        "--test-samples",
        "1000",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, expected);
}

#[test]
fn pytorch_weights_give_pytorchs_test_report_in_kiln() {
    eval_matches("pytorch_model");
}

#[test]
fn kiln_weights_give_kilns_test_report_in_pytorch() {
    eval_matches("kiln_model");
}

#[test]
fn init_from_pytorch_weights_and_mismatches_are_named() {
    let weights = root().join("tests/golden/interop/pytorch_model.safetensors");
    let data = data_dir().display().to_string();
    let run = common::temp_dir("init").display().to_string();
    let w = weights.to_str().unwrap_or("");
    let out = kiln(&[
        "train",
        "--init",
        w,
        "--dry-run",
        "--data-dir",
        &data,
        "--run-dir",
        &run,
    ]);
    assert!(out.status.success(), "{}", text(&out).1);
    // Weights of another shape: PyTorch's load_state_dict wording, one line.
    let dir = common::temp_dir("init-bad");
    common::write_dataset(&dir, 64, 12, |i| (i % 10) as u8);
    let out = kiln(&[
        "train",
        "--init",
        w,
        "--data-dir",
        dir.to_str().unwrap_or(""),
        "--run-dir",
        &run,
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("size mismatch for linear_relu_stack.0.weight"),
        "{stderr}"
    );
}
