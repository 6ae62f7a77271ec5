//! Your own model on your own data, end to end: `--model cnn` prints what
//! PyTorch's MNIST example network prints for the same seed; a TorchScript
//! module trains bit for bit as PyTorch trains it, checkpoints, survives
//! `kill -9` + `--resume`, evaluates with `kiln eval` and goes back to
//! PyTorch; `--data tensors:` trains on files written from Python; bad
//! models and data are one-line errors that create no run.
//!
//! PyTorch's side runs here at test time (committed scripts:
//! scripts/reference/mnist_cnn.py, scripts/reference/torchscript_cnn.py,
//! tests/models/make_fixtures.py): matmul kernels differ between CPUs.
use crate::common;

use common::{
    assert_resumed_exactly, data_dir, kill_after_checkpoint, kiln, newest, pytorch,
    read_safetensors, temp_dir, text, StoredTensor,
};
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

/// The fixtures of tests/models/make_fixtures.py, written once per test process.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("model-fixtures");
        let data = data_dir();
        pytorch(
            "tests/models/make_fixtures.py",
            &[s(&dir).as_str(), s(&data).as_str()],
        );
        dir
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn fixture(name: &str) -> String {
    s(&fixtures().join(name))
}

/// Runs `kiln` with `args`; asserts success and returns stdout.
fn kiln_ok(args: &[&str]) -> String {
    let out = kiln(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    stdout
}

fn same_log(what: &str, kiln_log: &str, pytorch_log: &str) {
    if kiln_log != pytorch_log {
        let first = kiln_log
            .lines()
            .zip(pytorch_log.lines())
            .position(|(a, b)| a != b);
        panic!("{what}: kiln's log differs from PyTorch's at line {first:?}\n--- kiln\n{kiln_log}\n--- pytorch\n{pytorch_log}");
    }
}

/// Every tensor of two safetensors files: same names, dtypes, shapes, bits.
fn same_tensors(a: &Path, b: &Path) {
    let by_name = |p: &Path| {
        let mut v = read_safetensors(p);
        v.sort_by(|x, y| x.name.cmp(&y.name));
        v
    };
    let (x, y) = (by_name(a), by_name(b));
    let names = |v: &[StoredTensor]| v.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&x), names(&y), "{} vs {}", a.display(), b.display());
    for (t, u) in x.iter().zip(&y) {
        assert_eq!((&t.dtype, &t.shape), (&u.dtype, &u.shape), "{}", t.name);
        assert!(
            t.bytes == u.bytes,
            "{} differs: {} vs {}",
            t.name,
            a.display(),
            b.display()
        );
    }
}

fn config(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("config.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

/// Whitespace-separated words (paths here have no spaces).
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn cnn_prints_what_the_pytorch_example_network_prints() {
    let data = s(&data_dir());
    // A slice: 6 Adadelta steps per epoch, the StepLR decay between epochs.
    let args = format!(
        "--seed 1 --epochs 2 --batch-size 16 --train-samples 96 --test-samples 48 --threads 2 --data-dir {data}"
    );
    let expected = pytorch("scripts/reference/mnist_cnn.py", &words(&args));
    let run = temp_dir("cnn-same-seed");
    let cmd = format!(
        "train --model cnn --optimizer adadelta:lr=1.0 --scheduler step:step_size=1,gamma=0.7 --run-dir {} {args}",
        s(&run)
    );
    same_log("cnn", &kiln_ok(&words(&cmd)), &expected);
    // The run records the resolved model and the loss it defaulted to.
    let cfg = config(&run);
    assert_eq!(
        cfg["model"],
        "cnn:channels=32;64,kernel_size=3,pool=2,hidden=128,dropout1=0.25,dropout2=0.5"
    );
    assert!(
        cfg["loss"].as_str().is_some_and(|l| l.starts_with("nll:")),
        "{cfg}"
    );
}

#[test]
fn torchscript_trains_bit_for_bit_like_pytorch_and_goes_back() {
    let data = s(&data_dir());
    let small = fixture("small.pt");
    let dir = temp_dir("ts-parity");
    let py_weights = s(&dir.join("pytorch.safetensors"));
    let common = format!(
        "--seed 4 --epochs 2 --train-samples 384 --test-samples 200 --threads 2 --data-dir {data}"
    );
    let expected = pytorch(
        "scripts/reference/torchscript_cnn.py",
        &words(&format!(
            "train {small} --lr 0.01 --out {py_weights} {common}"
        )),
    );
    let run = dir.join("run");
    let run_s = s(&run);
    let model = format!("torchscript:{small}");
    let cmd = format!("train --model {model} --optimizer adam:lr=0.01 --run-dir {run_s} {common}");
    same_log("torchscript", &kiln_ok(&words(&cmd)), &expected);
    // Parameters and buffers (batch-norm statistics, num_batches_tracked), bit for bit.
    let ckpt = newest(&run);
    same_tensors(&ckpt.join("model.safetensors"), Path::new(&py_weights));
    assert_eq!(
        config(&run)["model"],
        format!("torchscript:path={small},output=none")
    );

    // kiln eval of the checkpoint = PyTorch's report on the module kiln wrote
    // back (RUN/model.pt) = PyTorch's report on the original module with
    // kiln's weights loaded by load_state_dict; and kiln evaluates PyTorch's
    // weights (kiln eval --weights --model) as PyTorch does.
    let report = kiln_ok(&["eval", "--checkpoint", run_s.as_str()]);
    assert!(report.starts_with("Test Error:"), "{report}");
    let kiln_eval = kiln_ok(&words(&format!(
        "eval --weights {py_weights} --model {model} --test-samples 200 --data-dir {data}"
    )));
    let reports = pytorch(
        "scripts/reference/torchscript_cnn.py",
        &words(&format!(
            "eval {} {small}+{} {small}+{py_weights} --test-samples 200 --data-dir {data}",
            s(&run.join("model.pt")),
            s(&ckpt.join("model.safetensors")),
        )),
    );
    assert_eq!(reports, format!("{report}{report}{kiln_eval}"));
}

fn resume_args(run: &Path, small: &str, data: &str) -> Vec<String> {
    let cmd = format!(
        "train --model torchscript:{small} --optimizer adam:lr=0.01 --seed 5 --epochs 3 --train-samples 640 --test-samples 100 --threads 1 --checkpoint-every 3 --keep-checkpoints 100 --data-dir {data} --run-dir {}",
        s(run)
    );
    words(&cmd).into_iter().map(String::from).collect()
}

#[test]
fn torchscript_run_survives_sigkill_and_resumes_bit_exactly() {
    let data = s(&data_dir());
    let small = fixture("small.pt");
    let reference = temp_dir("ts-resume-ref");
    let argv = resume_args(&reference, &small, &data);
    let log = kiln_ok(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let final_ckpt = newest(&reference);

    // 10 steps per epoch: kill once a checkpoint inside epoch 2 exists.
    let run = temp_dir("ts-resume-kill");
    kill_after_checkpoint(&resume_args(&run, &small, &data), &run, 12);

    let run_s = s(&run);
    let out = kiln(&["train", "--resume", run_s.as_str()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "resume failed: {stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_resumed_exactly(&final_ckpt, &newest(&run), &log, &stdout);
}

#[test]
fn tensors_files_from_python_train_models() {
    let data = s(&data_dir());
    // FashionMNIST's first samples as uint8 tensors: converted per batch as
    // ToTensor does, they print exactly what the PyTorch tutorial prints.
    let spec = format!(
        "tensors:{},test={}",
        fixture("mnist_train.safetensors"),
        fixture("mnist_test.safetensors")
    );
    let run = temp_dir("tensors-mnist");
    let common = "--seed 2 --epochs 1 --threads 2";
    let log = kiln_ok(&words(&format!(
        "train --data {spec} --run-dir {} {common}",
        s(&run)
    )));
    let reference = pytorch(
        "scripts/reference/quickstart.py",
        &words(&format!(
            "--data-dir {data} --train-samples 640 --test-samples 200 {common}"
        )),
    );
    same_log("tensors:", &log, &reference);
    assert_eq!(
        config(&run)["data"],
        // Resolved by the data registry: every option with its value.
        format!(
            "{},inputs=inputs,targets=targets,test_fraction=0.2,classes=none",
            spec.replacen("tensors:", "tensors:path=", 1)
        )
    );

    // float64 points with int32 labels, a seeded test split: 3 classes learnt.
    let points = format!("tensors:{}", fixture("points.safetensors"));
    let run = temp_dir("tensors-points");
    let log = kiln_ok(&words(&format!(
        "train --data {points} --model mlp:hidden=64 --optimizer adam:lr=0.02 --epochs 10 --batch-size 16 --seed 0 --threads 2 --run-dir {}",
        s(&run)
    )));
    let accuracy: f64 = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Accuracy: "))
        .filter_map(|l| l.split('%').next()?.parse().ok())
        .next_back()
        .unwrap_or(0.0);
    assert!(accuracy >= 90.0, "{log}");
    assert_eq!(
        config(&run)["data"],
        format!(
            "{},test=none,inputs=inputs,targets=targets,test_fraction=0.2,classes=none",
            points.replacen("tensors:", "tensors:path=", 1)
        )
    );

    // Float targets [N] under other keys: regression with the standardising MLP.
    let values = format!(
        "tensors:{},inputs=x,targets=y",
        fixture("values.safetensors")
    );
    let run = temp_dir("tensors-values");
    let log = kiln_ok(&words(&format!(
        "train --data {values} --optimizer adam:lr=0.02 --epochs 10 --batch-size 16 --seed 0 --threads 2 --run-dir {}",
        s(&run)
    )));
    let losses: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("Avg loss: ").nth(1)?.trim().parse().ok())
        .collect();
    let (first, last) = (
        losses.first().copied().unwrap_or(0.0),
        losses.last().copied().unwrap_or(1.0),
    );
    assert!(losses.len() == 10 && last < first / 20.0, "{log}");
    let cfg = config(&run);
    assert_eq!(
        cfg["model"],
        "mlp:hidden=64;64,activation=relu,dropout=0.0,standardize=true"
    );
    assert!(
        cfg["loss"].as_str().is_some_and(|l| l.starts_with("mse:")),
        "{cfg}"
    );
}

/// `kiln train ARGS` fails with `code`, one line on stderr holding every
/// needle, and no run directory.
fn refused(args: &[&str], code: i32, needles: &[&str]) {
    let run = temp_dir("refused").join("run");
    let run_s = s(&run);
    let mut argv = vec!["train", "--dry-run", "--run-dir", run_s.as_str()];
    argv.extend(args);
    let out = kiln(&argv);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "{args:?}: {stderr:?}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
    }
    assert!(!run.exists(), "{args:?} created {}", run.display());
}

#[test]
fn bad_models_and_data_are_one_line_errors_that_create_nothing() {
    // A small generated 28x28 dataset: no FashionMNIST to unpack per run.
    let small_data = temp_dir("refused-data");
    common::write_dataset(&small_data, 64, 28, |i| (i % 10) as u8);
    let data = s(&small_data);
    let mnist = ["--data-dir", data.as_str()];
    let model = |name: &str| format!("torchscript:{}", fixture(name));
    let with_model = |name: &str| -> Vec<String> {
        let mut v = vec!["--model".to_string(), model(name)];
        v.extend(mnist.iter().map(|a| a.to_string()));
        v
    };
    let check = |args: Vec<String>, code: i32, needles: &[&str]| {
        refused(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            code,
            needles,
        )
    };
    check(
        with_model("missing.pt"),
        1,
        &["missing.pt: no such TorchScript file", "torch.jit.save"],
    );
    check(
        with_model("corrupt.pt"),
        1,
        &["corrupt.pt: not a TorchScript module"],
    );
    check(
        with_model("state_dict.pt"),
        1,
        &["state_dict.pt: a PyTorch archive without TorchScript code"],
    );
    check(
        with_model("no_params.pt"),
        1,
        &["no_params.pt: the TorchScript module has no parameters"],
    );
    check(
        with_model("tuple.pt"),
        1,
        &["tuple.pt: the TorchScript module's forward returned a Tuple, not a tensor"],
    );
    // The model's side (a 100 -> 10 Linear) and the data's side, before any step.
    check(
        with_model("linear100.pt"),
        2,
        &["the model does not accept the data's inputs: one sample is [1, 1, 28, 28] torch.float32", "100x10"],
    );
    let plain = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    check(
        plain(&["--model", "resnet"]),
        2,
        &["--model: unknown model 'resnet'; accepted: mlp, cnn, gpt, torchscript"],
    );
    check(
        plain(&["--model", "cnn:chanels=8"]),
        2,
        &["did you mean channels?"],
    );
    check(
        plain(&["--model", "torchscript"]),
        2,
        &["option path is required"],
    );
    check(
        plain(&["--model", "mlp:dropout=1.5"]),
        2,
        &["--model: mlp: dropout probability"],
    );
    let tensors = |file: &str, extra: &str| {
        vec![
            "--data".to_string(),
            format!("tensors:{}{extra}", fixture(file)),
        ]
    };
    check(
        tensors("missing_key.safetensors", ""),
        1,
        &["no tensor 'targets'", "holds inputs"],
    );
    check(
        tensors("points.safetensors", ",inputs=x"),
        1,
        &["no tensor 'x' for the inputs"],
    );
    check(
        tensors("mismatch.safetensors", ""),
        1,
        &["[100, 4]", "[99]", "same number of samples"],
    );
    check(
        tensors("out_of_range.safetensors", ",classes=3"),
        1,
        &["label 3 of sample 3", "3 classes"],
    );
    check(
        tensors("negative.safetensors", ""),
        1,
        &["label -1 of sample 7 is negative"],
    );
    check(
        tensors("nonfinite.safetensors", ""),
        1,
        &["nonfinite.safetensors: sample 7 has a non-finite input (NaN)"],
    );
    check(
        tensors("int_inputs.safetensors", ""),
        2,
        &[
            "--model mlp needs floating-point inputs, but the data's are int64",
            "float32",
        ],
    );
    check(
        tensors("nothere.safetensors", ""),
        1,
        &["nothere.safetensors: no such file"],
    );
    check(
        tensors("values.safetensors", ",test_fraction=1.5"),
        2,
        &["test_fraction must be between 0 and 1"],
    );
    let mut cnn_on_values = tensors("values.safetensors", ",inputs=x,targets=y");
    cnn_on_values.extend(["--model".to_string(), "cnn".to_string()]);
    check(cnn_on_values, 2, &["--model cnn classifies"]);
}

/// A path holding `,` is given in brackets, with or without `path=`, and
/// `config.json` records it so (issue 25, item 15).
#[test]
fn a_data_path_with_a_comma_is_given_in_brackets() {
    let dir = temp_dir("comma-path");
    let file = dir.join("a,b.safetensors");
    std::fs::copy(fixture("points.safetensors"), &file).unwrap_or_else(|e| panic!("{e}"));
    for (i, spec) in [
        format!("tensors:[{}]", s(&file)),
        format!("tensors:path=[{}],test_fraction=0.5", s(&file)),
    ]
    .into_iter()
    .enumerate()
    {
        let run = dir.join(format!("run{i}"));
        kiln_ok(&[
            "train",
            "--data",
            &spec,
            "--epochs",
            "1",
            "--run-dir",
            &s(&run),
        ]);
        let data = config(&run)["data"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            data.starts_with(&format!("tensors:path=[{}],", s(&file))),
            "{data}"
        );
    }
}

/// Binary classification: one logit and `bce-with-logits`, on 0/1 labels
/// or on float `[N, 1]` targets, reports binary accuracy (`logit > 0`)
/// (issue 25, item 6).
#[test]
fn binary_classification_with_one_logit_reports_accuracy() {
    for file in ["binary.safetensors", "binary_float.safetensors"] {
        let run = temp_dir(&format!("binary-{file}"));
        let log = kiln_ok(&[
            "train",
            "--data",
            &format!("tensors:{}", fixture(file)),
            "--loss",
            "bce-with-logits",
            "--optimizer",
            "adam:lr=0.01",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--seed",
            "0",
            "--threads",
            "1",
            "--run-dir",
            &s(&run),
        ]);
        let accuracy: f64 = log
            .rsplit("Accuracy: ")
            .next()
            .and_then(|t| t.split('%').next())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(accuracy > 90.0, "{file}: {log}");
        let cfg = config(&run);
        assert!(
            cfg["loss"]
                .as_str()
                .is_some_and(|l| l.starts_with("bce-with-logits")),
            "{cfg}"
        );
        // The model ends in one logit.
        let model = common::read_safetensors(&common::newest(&run).join("model.safetensors"));
        let last = model.iter().rfind(|t| t.name.ends_with(".weight"));
        let shapes: Vec<_> = model.iter().map(|t| (&t.name, &t.shape)).collect();
        assert_eq!(last.map(|t| t.shape[0]), Some(1), "{shapes:?}");
    }
}

/// scripts/reference/multi_input.py's fixtures: two TorchScript modules
/// taking `(ids, mask)` (one returning a dict, one a tuple) and their data.
fn multi_input_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("multi-input-fixtures");
        pytorch("scripts/reference/multi_input.py", &["write", &s(&dir)]);
        dir
    })
}

#[test]
fn several_inputs_and_one_output_of_many_train_like_pytorch() {
    let fx = multi_input_fixtures();
    let (train, test) = (
        s(&fx.join("train.safetensors")),
        s(&fx.join("test.safetensors")),
    );
    // The bool mask (allowed beside other inputs) gives the float mask's numbers.
    for (module, output, mask) in [
        ("dict.pt", "logits", "mask"),
        ("tuple.pt", "1", "mask"),
        ("dict.pt", "logits", "mask_bool"),
    ] {
        let model = s(&fx.join(module));
        let dir = temp_dir(&format!("multi-input-{output}-{mask}"));
        let weights = s(&dir.join("pytorch.safetensors"));
        let expected = pytorch(
            "scripts/reference/multi_input.py",
            &words(&format!(
                "train {model} --output {output} --data {train} --test {test} --seed 3 --epochs 3 --batch-size 16 --lr 0.1 --out {weights}"
            )),
        );
        let run = dir.join("run");
        let log = kiln_ok(&words(&format!(
            "train --data tensors:{train},test={test},inputs=ids;{mask} --model torchscript:{model},output={output} --optimizer sgd:lr=0.1,momentum=0.9 --seed 3 --epochs 3 --batch-size 16 --threads 1 --run-dir {}",
            s(&run)
        )));
        same_log(&format!("{module} output={output} {mask}"), &log, &expected);
        same_tensors(&newest(&run).join("model.safetensors"), Path::new(&weights));
        assert_eq!(
            config(&run)["model"],
            format!("torchscript:path={model},output={output}")
        );
    }
}

#[test]
fn bad_inputs_and_outputs_are_one_line_errors() {
    let fx = multi_input_fixtures();
    let data = |inputs: &str| {
        format!(
            "tensors:{},test={},inputs={inputs}",
            s(&fx.join("train.safetensors")),
            s(&fx.join("test.safetensors"))
        )
    };
    let model = |module: &str, output: &str| {
        let path = s(&fx.join(module));
        match output {
            "" => format!("torchscript:{path}"),
            o => format!("torchscript:{path},output={o}"),
        }
    };
    let check = |inputs: &str, module: String, code: i32, needles: &[&str]| {
        let data = data(inputs);
        refused(&["--data", &data, "--model", &module], code, needles);
    };
    check(
        "ids;mask",
        model("tuple.pt", "2"),
        1,
        &["output=2: the TorchScript module returns a Tuple of 2 elements; pick one with output=0..1"],
    );
    check(
        "ids;mask",
        model("dict.pt", "scores"),
        1,
        &["output=scores: the TorchScript module returns a dict with keys logits, pooled"],
    );
    check(
        "ids;mask",
        model("dict.pt", ""),
        1,
        &["returned a dict, not a tensor; pick the tensor to train on with output=KEY"],
    );
    check(
        "ids",
        model("dict.pt", "logits"),
        2,
        &["forward() is missing value for argument 'mask'"],
    );
    check(
        "ids;ids",
        model("dict.pt", "logits"),
        2,
        &["'ids' is named twice among inputs and targets"],
    );
    check(
        "ids;nothing",
        model("dict.pt", "logits"),
        1,
        &["no tensor 'nothing' for the inputs; the file holds"],
    );
    // A module returning a tensor has nothing to select.
    let small = format!("torchscript:{},output=0", fixture("small.pt"));
    let mnist = s(&data_dir());
    refused(
        &["--model", &small, "--data-dir", &mnist, "--train-samples", "64"],
        1,
        &["output=0: the TorchScript module returns a Tensor, not a tuple, list or dict; drop output="],
    );
}
