//! Weight averaging (`--ema`, `--swa`): the same numbers as
//! `torch.optim.swa_utils` driven by PyTorch's quickstart loop
//! (`scripts/reference/quickstart.py --ema/--swa`, run here at test time),
//! the averaged weights in `RUN/averaged.safetensors` equal to its
//! `averaged.module.state_dict()`, and a run killed mid-way resumes to the
//! same bits.
use crate::common;

use common::{
    assert_resumed_exactly, data_dir, kill_after_checkpoint, kiln, newest, pytorch,
    read_safetensors, same_file, temp_dir, text, train_args,
};
use std::path::Path;

const JOB: &str = "--epochs 3 --train-samples 3200 --test-samples 500 --threads 1";

/// kiln and the reference with `flags`: the same log, the same averaged weights.
fn matches_pytorch(name: &str, flags: &str) {
    let dir = temp_dir(name);
    let data = data_dir().display().to_string();
    let mut argv = vec!["--data-dir", data.as_str()];
    argv.extend(JOB.split_whitespace());
    argv.extend(flags.split_whitespace());
    let reference = dir.join("reference.safetensors");
    let reference_arg = reference.display().to_string();
    let mut py_argv = argv.clone();
    py_argv.extend(["--averaged-out", reference_arg.as_str()]);
    let expected = pytorch("scripts/reference/quickstart.py", &py_argv);
    let run = dir.join("run").display().to_string();
    let mut kiln_argv = vec!["train"];
    kiln_argv.extend(&argv);
    kiln_argv.extend(["--run-dir", run.as_str()]);
    let out = kiln(&kiln_argv);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}: {stderr}");
    assert_eq!(
        stdout, expected,
        "{name}: kiln's log differs from PyTorch's"
    );
    let averaged = dir.join("run/averaged.safetensors");
    assert!(
        stderr.contains(&format!("wrote {}", averaged.display())),
        "{stderr}"
    );
    let (ours, theirs) = (read_safetensors(&averaged), read_safetensors(&reference));
    assert_eq!(
        ours.len(),
        6,
        "{name}: {:?}",
        ours.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    // The same float32 bits: the same kernels in the same order.
    assert_eq!(
        ours, theirs,
        "{name}: averaged weights differ from PyTorch's"
    );
}

#[test]
fn ema_gives_pytorchs_numbers_and_weights() {
    matches_pytorch("ema", "--seed 0 --ema 0.9");
}

#[test]
fn swa_gives_pytorchs_numbers_and_weights() {
    matches_pytorch(
        "swa",
        "--seed 1 --swa 2:lr=0.05,anneal_epochs=1,anneal_strategy=linear",
    );
}

fn args(run: &Path, averaging: &[&str]) -> Vec<String> {
    let mut flags = vec![
        "--seed",
        "5",
        "--epochs",
        "3",
        "--train-samples",
        "3200",
        "--test-samples",
        "500",
        "--checkpoint-every",
        "7",
        "--keep-checkpoints",
        "100",
    ];
    flags.extend(averaging);
    train_args(run, &flags)
}

/// Killed after `step`, resumed: the log, the checkpoint (averaged weights
/// included) and `averaged.safetensors` of the run never stopped.
fn resumes_exactly(name: &str, averaging: &[&str], step: usize) {
    let reference = temp_dir(&format!("{name}-ref"));
    let argv = args(&reference, averaging);
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let (log, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let run = temp_dir(&format!("{name}-kill"));
    kill_after_checkpoint(&args(&run, averaging), &run, step);
    assert!(
        !run.join("averaged.safetensors").exists(),
        "a killed run wrote its averaged weights"
    );
    let run_arg = run.display().to_string();
    let out = kiln(&["train", "--resume", run_arg.as_str()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "resume failed: {stderr}");
    let (final_ref, final_run) = (newest(&reference), newest(&run));
    assert_resumed_exactly(&final_ref, &final_run, &log, &stdout);
    same_file(
        &final_ref.join("averaged.safetensors"),
        &final_run.join("averaged.safetensors"),
    );
    same_file(
        &reference.join("averaged.safetensors"),
        &run.join("averaged.safetensors"),
    );
}

#[test]
fn ema_run_killed_mid_epoch_resumes_exactly() {
    // 50 batches per epoch: step 63 is mid-epoch 2.
    resumes_exactly("ema-resume", &["--ema", "0.95"], 63);
}

#[test]
fn swa_run_killed_after_averaging_began_resumes_exactly() {
    // Averaging from epoch 2: at step 105 (epoch 3) SWA has one update and
    // SWALR one step behind it.
    resumes_exactly("swa-resume", &["--swa", "2:lr=0.05,anneal_epochs=2"], 105);
}

#[test]
fn bad_averaging_flags_get_one_line() {
    let run = temp_dir("averaging-errors");
    for (flags, wanted) in [
        (vec!["--ema", "1.5"], "--ema must be a decay in [0, 1]"),
        (
            vec!["--swa", "4:lr=0.1", "--epochs", "3"],
            "--swa starts at epoch 4, which this run of 3 epochs does not have",
        ),
        (vec!["--swa", "2"], "give SWALR's lr"),
        (vec!["--swa", "two:lr=0.1"], "expected START:lr=X"),
        (vec!["--swa", "1:lr=0.1,anneal=3"], "anneal"),
        (
            vec!["--ema", "0.9", "--swa", "1:lr=0.1"],
            "--ema and --swa average the weights in two ways; give one",
        ),
    ] {
        let argv = train_args(&run, &flags);
        let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{flags:?}: {stderr}");
        assert!(lines[0].contains(wanted), "{flags:?}: {stderr}");
    }
    assert!(
        !run.join("config.json").exists(),
        "a refused run wrote its directory"
    );
    // A dry run (one epoch) of a run averaging from a later epoch averages
    // from its one epoch.
    let argv = train_args(
        &run,
        &[
            "--dry-run",
            "--epochs",
            "5",
            "--swa",
            "3:lr=0.1",
            "--seed",
            "0",
        ],
    );
    let out = kiln(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out).1);
}

/// A TorchScript model with batch norm (scripts/reference/torchscript_cnn.py's
/// SmallNet): EMA averages its buffers too (`use_buffers=True`, the int64
/// `num_batches_tracked` included); SWA keeps the statistics of its last
/// update, since `update_bn` leaves a scripted model's alone — and kiln warns.
#[test]
fn batch_norm_model_averages_as_pytorch_does() {
    let dir = temp_dir("averaging-bn");
    let model = dir.join("small.pt").display().to_string();
    pytorch(
        "scripts/reference/torchscript_cnn.py",
        &["write", model.as_str(), "--seed", "3"],
    );
    let data = data_dir().display().to_string();
    let job = "--seed 4 --epochs 3 --train-samples 384 --test-samples 200 --threads 1";
    for (name, flags) in [
        ("ema", "--ema 0.8"),
        ("swa", "--swa 2:lr=0.005,anneal_epochs=1"),
    ] {
        let reference = dir
            .join(format!("{name}.safetensors"))
            .display()
            .to_string();
        let mut py_argv = vec!["train", model.as_str(), "--lr", "0.01", "--data-dir", &data];
        py_argv.extend(job.split_whitespace());
        py_argv.extend(flags.split_whitespace());
        py_argv.extend(["--averaged-out", reference.as_str()]);
        let expected = pytorch("scripts/reference/torchscript_cnn.py", &py_argv);
        let run = dir.join(name);
        let run_arg = run.display().to_string();
        let spec = format!("torchscript:{model}");
        let mut argv = vec!["train", "--model", &spec, "--optimizer", "adam:lr=0.01"];
        argv.extend(["--data-dir", &data, "--run-dir", &run_arg]);
        argv.extend(job.split_whitespace());
        argv.extend(flags.split_whitespace());
        let out = kiln(&argv);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(
            stdout, expected,
            "{name}: kiln's log differs from PyTorch's"
        );
        assert_eq!(
            stderr.contains("batch-norm statistics (bn1.running_mean…) are not recomputed"),
            name == "swa",
            "{name}: {stderr}"
        );
        let ours = read_safetensors(&run.join("averaged.safetensors"));
        assert_eq!(ours.len(), 9, "{name}: parameters and buffers");
        assert_eq!(
            ours,
            read_safetensors(Path::new(&reference)),
            "{name}: averaged weights differ from PyTorch's"
        );
    }
}
