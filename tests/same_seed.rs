//! Same seed, same numbers: `kiln train` prints exactly what PyTorch's
//! quickstart (`scripts/reference/quickstart.py`, run on the torch the setup
//! installed) prints for the same arguments.
//!
//! The reference runs here, on this machine, at test time: libtorch picks its
//! matmul kernels by CPU (AVX2, AVX-512…), so a log written on another machine
//! can differ in the last printed digit although kiln and PyTorch agree on
//! every machine.
use crate::common;

use common::{data_dir, kiln, pytorch, text};

fn check(name: &str, args: &str) {
    let data = data_dir();
    let data = data.to_str().unwrap_or(".");
    let mut argv = vec!["--data-dir", data];
    argv.extend(args.split_whitespace());
    let expected = pytorch("scripts/reference/quickstart.py", &argv);
    let mut kiln_argv = vec!["train"];
    kiln_argv.extend(&argv);
    let out = kiln(&kiln_argv);
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
    check(
        "shuffled",
        "--seed 0 --epochs 2 --train-samples 12800 --test-samples 2000 --threads 2",
    );
}

#[test]
fn unshuffled_run_prints_pytorchs_numbers() {
    // No --threads on either side: libtorch's default thread count, as
    // `make train` runs (kiln's serial small kernels stay off then).
    check(
        "no_shuffle",
        "--seed 7 --epochs 2 --train-samples 12800 --test-samples 2000 --no-shuffle",
    );
}

#[test]
fn short_last_batch_run_prints_pytorchs_numbers() {
    check(
        "short_last_batch",
        "--seed 3 --epochs 1 --batch-size 50 --lr 0.01 --momentum 0.5 --train-samples 10025 --test-samples 1001 --threads 2",
    );
}

#[test]
fn bf16_mixed_precision_prints_pytorchs_numbers() {
    check(
        "bf16",
        "--seed 4 --epochs 1 --batch-size 32 --train-samples 6400 --test-samples 500 --threads 2 --precision bf16-mixed",
    );
}

#[test]
fn fp16_mixed_precision_with_grad_scaler_prints_pytorchs_numbers() {
    check(
        "fp16",
        "--seed 5 --epochs 1 --batch-size 32 --train-samples 6400 --test-samples 500 --threads 2 --precision 16-mixed",
    );
}
