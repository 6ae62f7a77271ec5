//! `kiln train --distributed mpi` under `mpirun`: the same bits as
//! `torchrun` with DistributedDataParallel (gloo) on 2, 3 and 4 ranks,
//! replicas stay identical, N ranks × batch B train like one process with
//! batch N×B on the same sample order, resume is exact, and a failed,
//! killed (even in the middle of a gradient bucket) or stalled rank, a rank
//! whose model or flags differ, end the whole job with a non-zero status
//! and one line naming the rank instead of a hang.
//! (Built with the `mpi` feature only: `make test` enables it.)
use crate::common;

use common::{data_dir, newest, read_safetensors, temp_dir, text, write_dataset};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun` as root on an oversubscribed small machine, `n` ranks of `kiln args`.
fn mpirun_cmd(n: usize, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--bind-to", "none", "-n", &n.to_string()]);
    for (k, v) in extra_env {
        cmd.env(k, v).args(["-x", k]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_kiln")).args(args);
    cmd
}

fn mpirun(n: usize, args: &[&str]) -> Output {
    mpirun_cmd(n, args, &[])
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"))
}

/// `kiln train` as every rank runs it here: MPI, CPU, one thread; then `rest`.
fn rank_args<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--distributed",
        "mpi",
        "--device",
        "cpu",
        "--threads",
        "1",
    ];
    v.extend_from_slice(rest);
    v
}

/// Common flags: CPU, one thread per rank, a fixed seed.
fn train_args<'a>(data: &'a str, run: &'a str, batch: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = rank_args(&[
        "--seed",
        "5",
        "--lr",
        "0.05",
        "--data-dir",
        data,
        "--run-dir",
        run,
        "--batch-size",
        batch,
        "--dist-timeout",
        "60",
    ]);
    v.extend_from_slice(rest);
    v
}

/// The parameters of the newest checkpoint in `run` (float32 ones; others
/// empty), by name.
fn final_params(run: &Path) -> Vec<(String, Vec<f32>)> {
    let mut params: Vec<(String, Vec<f32>)> =
        read_safetensors(&newest(run).join("model.safetensors"))
            .into_iter()
            .map(|t| {
                let values = if t.dtype == "F32" {
                    t.f32s()
                } else {
                    Vec::new()
                };
                (t.name, values)
            })
            .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Largest |a - b| / max|b| over tensors (relative to each tensor's scale).
fn max_rel_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len(), "{na}");
        assert!(!va.is_empty(), "{na}");
        let scale = vb.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
        let diff = va.iter().zip(vb).fold(0.0f64, |m, (&x, &y)| {
            m.max((f64::from(x) - f64::from(y)).abs())
        });
        worst = worst.max(diff / scale);
    }
    worst
}

fn dataset(name: &str, n: u32) -> PathBuf {
    let dir = temp_dir(name);
    write_dataset(&dir, n, 28, |i| (i * 7 % 10) as u8);
    dir
}

fn run_ok(n: usize, args: &[&str]) -> String {
    let out = mpirun(n, args);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{n} ranks failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// `ranks` × `batch / ranks` against one process × `batch`, same seed.
fn matches_one_process(name: &str, ranks: usize, per_rank: &str, global: &str) {
    // 456 samples: not a multiple of 4 × 16, so the padded last batch is tested too.
    let data = dataset(name, 456);
    let d = data.to_str().unwrap_or(".");
    let (many, one) = (data.join("many"), data.join("one"));
    let rest = ["--epochs", "2", "--test-samples", "100"];
    let log = run_ok(
        ranks,
        &train_args(d, many.to_str().unwrap_or("."), per_rank, &rest),
    );
    // Only rank 0 prints; every rank agreed on its parameters at the end
    // (the run checks it and fails otherwise).
    assert_eq!(log.matches("Training completed").count(), 1, "{log}");
    assert_eq!(log.matches("Test Error").count(), 2, "{log}");
    run_ok(
        1,
        &train_args(d, one.to_str().unwrap_or("."), global, &rest),
    );
    let (a, b) = (final_params(&many), final_params(&one));
    let rel = max_rel_diff(&a, &b);
    eprintln!("{ranks} ranks vs one process: max relative difference {rel:e}");
    assert!(
        rel <= 1e-6,
        "{ranks} ranks vs one process: max relative difference {rel:e}"
    );
    // It did train: the parameters moved away from the initial ones.
    let init = data.join("init");
    run_ok(
        1,
        &train_args(
            d,
            init.to_str().unwrap_or("."),
            global,
            &["--max-steps", "1", "--optimizer", "sgd:lr=0"],
        ),
    );
    assert!(max_rel_diff(&final_params(&init), &b) > 1e-3);
}

#[test]
fn two_ranks_train_like_one_process_with_the_global_batch() {
    matches_one_process("dist2", 2, "32", "64");
}

#[test]
fn four_ranks_train_like_one_process_with_the_global_batch() {
    matches_one_process("dist4", 4, "16", "64");
}

#[test]
fn resuming_a_distributed_run_is_exact() {
    let data = dataset("distresume", 256);
    let d = data.to_str().unwrap_or(".");
    let (full, part) = (data.join("full"), data.join("part"));
    let (full_s, part_s) = (full.to_str().unwrap_or("."), part.to_str().unwrap_or("."));
    run_ok(
        2,
        &train_args(d, full_s, "16", &["--epochs", "2", "--test-samples", "50"]),
    );
    // Stop mid-epoch 2 (8 steps per epoch), then resume to the end.
    run_ok(
        2,
        &train_args(
            d,
            part_s,
            "16",
            &["--epochs", "2", "--test-samples", "50", "--max-steps", "11"],
        ),
    );
    let resumed = ["train", "--resume", part_s, "--max-steps", "1000"];
    let out = mpirun(2, &resumed);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("kiln: resuming").count(), 1, "{stderr}");
    assert_eq!(
        max_rel_diff(&final_params(&part), &final_params(&full)),
        0.0
    );
}

#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let data = dataset("disterr", 64);
    let d = data.to_str().unwrap_or(".");
    let missing = data.join("no-such-dir");
    let run = data.join("run");
    // MPMD: rank 1 reads a directory that does not exist.
    let mut cmd = mpirun_cmd(
        1,
        &train_args(d, run.to_str().unwrap_or("."), "16", &[]),
        &[],
    );
    cmd.args([":", "-n", "1", env!("CARGO_BIN_EXE_kiln")]);
    cmd.args(train_args(
        missing.to_str().unwrap_or("."),
        run.to_str().unwrap_or("."),
        "16",
        &[],
    ));
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("error: rank 1 of 2: "), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    // Ranks that disagree on the data are stopped before training.
    let out = mpirun_cmd(
        1,
        &train_args(d, run.to_str().unwrap_or("."), "16", &[]),
        &[],
    )
    .args([":", "-n", "1", env!("CARGO_BIN_EXE_kiln")])
    .args(train_args(
        d,
        run.to_str().unwrap_or("."),
        "16",
        &["--train-samples", "32"],
    ))
    .output()
    .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: rank 1 of 2 differs from rank 0 in dataset sizes"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
}

/// Pids of the ranks of the job whose environment holds `marker`, by rank.
fn rank_pids(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars
            .iter()
            .any(|v| v == &format!("KILN_TEST_MARKER={marker}"))
        {
            continue;
        }
        if let Some(rank) = vars
            .iter()
            .find_map(|v| v.strip_prefix("OMPI_COMM_WORLD_RANK="))
        {
            found.push((pid, rank.to_string()));
        }
    }
    found
}

/// Starts a long 3-rank run, waits for its first log line, sends `signal`
/// to rank 1 and returns how the job ended and how long that took.
fn hurt_rank_one(name: &str, signal: &str, timeout: &str) -> (Output, Duration) {
    let data = dataset(name, 2048);
    let run = data.join("run");
    let marker = format!("{name}-{}", std::process::id());
    let args = train_args(
        data.to_str().unwrap_or("."),
        run.to_str().unwrap_or("."),
        "8",
        &["--epochs", "100"],
    );
    let mut args: Vec<&str> = args;
    let pos = args
        .iter()
        .position(|a| *a == "--dist-timeout")
        .unwrap_or(0);
    args[pos + 1] = timeout;
    let mut child: Child = mpirun_cmd(3, &args, &[("KILN_TEST_MARKER", &marker)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let victim = loop {
        let pids = rank_pids(&marker);
        if pids.len() == 3 && run.join("config.json").exists() {
            break pids.into_iter().find(|(_, r)| r == "1").map(|(p, _)| p);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(victim) = victim else {
        let _ = child.kill();
        panic!("the 3 ranks did not start");
    };
    // Let training get going, then hurt rank 1.
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    let status = Command::new("kill")
        .args([signal, &victim.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (out, start.elapsed())
}

#[test]
fn a_killed_rank_ends_every_rank() {
    let (out, took) = hurt_rank_one("distkill", "-KILL", "60");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(!stdout.contains("Training completed"), "{stdout}");
}

#[test]
fn a_stalled_rank_is_caught_by_the_collective_timeout() {
    // SIGSTOP: rank 1 neither dies nor answers; the others' watchdogs abort.
    let (out, took) = hurt_rank_one("diststop", "-STOP", "3");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("did not complete within 3 s"), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn without_a_seed_every_rank_takes_rank_zeros() {
    // Each process would draw its own seed from the OS; rank 0's is shared
    // (else the ranks' settings check fails) and recorded.
    let data = dataset("distseed", 128);
    let run = data.join("run");
    let args = rank_args(&[
        "--epochs",
        "1",
        "--data-dir",
        data.to_str().unwrap_or("."),
        "--run-dir",
        run.to_str().unwrap_or("."),
        "--batch-size",
        "16",
        "--dist-timeout",
        "60",
    ]);
    run_ok(2, &args);
    let config = std::fs::read_to_string(run.join("config.json")).unwrap_or_default();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    assert!(config["seed"].is_u64(), "{config}");
}

/// Runs `scripts/reference/ddp_quickstart.py` under `torchrun
/// --nproc-per-node n` (DDP, gloo, loopback) on the torch the setup
/// installed; rank 0 saves the final state dict to `out`. Returns stdout.
fn torchrun(n: usize, args: &[&str], out: &Path) -> String {
    let out = out.to_str().unwrap_or(".");
    let mut argv = args.to_vec();
    argv.extend(["--threads", "1", "--out", out]);
    let output = common::torchrun("scripts/reference/ddp_quickstart.py", n, &argv);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "torchrun failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Each float32 tensor of a safetensors file as its bit patterns (others
/// empty), by name.
fn bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = read_safetensors(path)
        .into_iter()
        .map(|t| {
            let words = if t.dtype == "F32" {
                t.f32s()
            } else {
                Vec::new()
            };
            (t.name, words.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `mpirun -n ranks kiln train --distributed mpi ARGS` against `torchrun
/// --nproc-per-node ranks` of the DDP reference with the same ARGS: the
/// same log and the same final weights, bit for bit.
fn equals_torchrun(name: &str, ranks: usize, args: &str) {
    let dir = temp_dir(name);
    let data = data_dir();
    let mut argv = vec!["--data-dir", data.to_str().unwrap_or(".")];
    argv.extend(args.split_whitespace());
    let reference = dir.join("torchrun.safetensors");
    let expected = torchrun(ranks, &argv, &reference);
    let run = dir.join("run");
    let mut kiln_argv = rank_args(&[
        "--dist-timeout",
        "120",
        "--run-dir",
        run.to_str().unwrap_or("."),
    ]);
    kiln_argv.extend(&argv);
    let log = run_ok(ranks, &kiln_argv);
    assert_eq!(
        log, expected,
        "{ranks} ranks: kiln's log differs from torchrun's"
    );
    let ours = bits(&newest(&run).join("model.safetensors"));
    let theirs = bits(&reference);
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (other, b)) in ours.iter().zip(&theirs) {
        assert_eq!(name, other);
        let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differing,
            0,
            "{ranks} ranks: {differing} of {} elements of {name} differ from torchrun's",
            a.len()
        );
    }
}

#[test]
fn two_ranks_equal_torchrun_ddp_bit_for_bit() {
    equals_torchrun(
        "torchrun2",
        2,
        "--seed 3 --epochs 1 --train-samples 1000 --test-samples 200 --batch-size 32",
    );
}

#[test]
fn three_ranks_equal_torchrun_ddp_bit_for_bit_with_accumulation_and_small_buckets() {
    // Three ranks: gloo's ring groups the additions differently per chunk;
    // no_sync batches, several buckets rebuilt after the first step.
    equals_torchrun(
        "torchrun3",
        3,
        "--seed 4 --epochs 2 --train-samples 700 --test-samples 100 --batch-size 16 \
         --accumulate-grad-batches 3 --bucket-cap-mb 0.3 --lr 0.01",
    );
}

#[test]
fn four_ranks_equal_torchrun_ddp_bit_for_bit() {
    equals_torchrun(
        "torchrun4",
        4,
        "--seed 5 --epochs 1 --train-samples 600 --test-samples 100 --batch-size 16",
    );
}

#[test]
fn a_rank_killed_in_the_middle_of_a_gradient_bucket_ends_every_rank() {
    // Rank 1 kills itself (SIGKILL) inside its 6th bucket sum, after the
    // exchange and before the gather: ranks 0 and 2 are waiting for it.
    let data = dataset("distbucket", 512);
    let run = data.join("run");
    let args = train_args(
        data.to_str().unwrap_or("."),
        run.to_str().unwrap_or("."),
        "16",
        &["--epochs", "5"],
    );
    let start = Instant::now();
    let out = mpirun_cmd(3, &args, &[("KILN_TEST_KILL_IN_BUCKET", "1:5")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let took = start.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr.contains("middle of a gradient bucket"), "{stderr}");
    assert!(
        stderr.contains("process rank 1 ") && stderr.contains("(Killed)"),
        "{stderr}"
    );
    assert!(!stdout.contains("Training completed"), "{stdout}");
}

#[test]
fn a_rank_whose_model_differs_is_refused_before_training() {
    // The same command line, but rank 1's default data directory holds
    // 20×20 images: its first layer has another shape.
    let (big, small) = (temp_dir("model28"), temp_dir("model20"));
    write_dataset(&big, 64, 28, |i| (i % 10) as u8);
    write_dataset(&small, 64, 20, |i| (i % 10) as u8);
    let run = big.join("run");
    let args = rank_args(&[
        "--seed",
        "1",
        "--run-dir",
        run.to_str().unwrap_or("."),
        "--dist-timeout",
        "60",
    ]);
    let kiln = env!("CARGO_BIN_EXE_kiln");
    // Two app contexts, one per data directory.
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--bind-to", "none"]);
    for (i, dir) in [&big, &small].iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-n", "1", "-x"])
            .arg(format!("KILN_DATA_DIR={}", dir.display()))
            .arg(kiln)
            .args(&args);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        stderr.contains(
            "error: rank 1 of 2 differs from rank 0 in its model (parameter and buffer names, shapes and dtypes)"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    // Refused before the run directory was made.
    assert!(!run.exists());
}

#[test]
fn mismatched_flags_are_refused_naming_the_rank() {
    let data = dataset("distflags", 64);
    let d = data.to_str().unwrap_or(".");
    let run = data.join("run");
    let r = run.to_str().unwrap_or(".");
    let start = Instant::now();
    let out = mpirun_cmd(2, &train_args(d, r, "16", &[]), &[])
        .args([":", "-n", "1", env!("CARGO_BIN_EXE_kiln")])
        .args(train_args(d, r, "16", &["--bucket-cap-mb", "1"]))
        .output()
        .unwrap_or_else(|e| panic!("cannot run mpirun: {e}"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        stderr.contains(
            "error: rank 2 of 3 differs from rank 0 in its flags: --bucket-cap-mb 1.0 (rank 0: not given)"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    assert!(!run.exists());
}

#[test]
fn distributed_without_a_launcher_says_it_trains_alone() {
    let data = dataset("distalone", 64);
    let d = data.to_str().unwrap_or(".");
    let run = data.join("run");
    let r = run.to_str().unwrap_or(".");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("PMI_SIZE")
        .env_remove("PMIX_RANK")
        .env_remove("MPI_LOCALRANKID")
        .env_remove("SLURM_PROCID")
        .args(train_args(d, r, "16", &["--epochs", "1"]))
        .output()
        .unwrap_or_else(|e| panic!("cannot run kiln: {e}"));
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: --distributed mpi: this process is the only rank of its job"),
        "{stderr}"
    );
}

#[test]
fn one_rank_under_mpirun_trains_without_a_warning() {
    let data = dataset("distone", 64);
    let d = data.to_str().unwrap_or(".");
    let run = data.join("run");
    let out = mpirun(
        1,
        &train_args(d, run.to_str().unwrap_or("."), "16", &["--epochs", "1"]),
    );
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("trains alone"), "{stderr}");
}
