//! Same seed, same numbers: `kiln train` prints exactly what PyTorch's
//! quickstart prints (golden logs from tests/golden/make_golden_logs.py).
mod common;

use common::{data_dir, kiln, root, text};

fn check_golden(name: &str) {
    let path = root().join(format!("tests/golden/quickstart/{name}.txt"));
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (header, expected) = golden.split_once('\n').unwrap_or(("", ""));
    let args = header
        .strip_prefix("# args: ")
        .unwrap_or_else(|| panic!("{name}: no args header"));
    let data = data_dir();
    let mut argv = vec!["train", "--data-dir", data.to_str().unwrap_or(".")];
    argv.extend(args.split_whitespace());
    let out = kiln(&argv);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}: kiln failed: {stderr}");
    if stdout != expected {
        let first = stdout
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b);
        panic!("{name}: kiln's log differs from PyTorch's at line {first:?}\n--- kiln\n{stdout}\n--- pytorch\n{expected}");
    }
}

#[test]
fn shuffled_run_prints_pytorchs_numbers() {
    check_golden("shuffled");
}

#[test]
fn unshuffled_run_prints_pytorchs_numbers() {
    check_golden("no_shuffle");
}

#[test]
fn short_last_batch_run_prints_pytorchs_numbers() {
    check_golden("short_last_batch");
}
