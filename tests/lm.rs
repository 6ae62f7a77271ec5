//! Language models from the command line against nanoGPT
//! (scripts/reference/nanogpt.py: its prepare.py, train.py and sample.py,
//! run at test time on the setup's PyTorch): `kiln prepare-text` writes
//! prepare.py's bytes, `kiln train --data tokens:… --model gpt:…` prints
//! train.py's `step`/`iter` numbers and ends with its weights, `kiln
//! sample` prints what sample.py prints from the same weights, a resumed
//! run (stopped, or killed with SIGKILL) ends where an uninterrupted one
//! does, `--gradient-checkpointing` changes no number, and bad input is one
//! line.
use crate::common;

use common::{
    kill_after_checkpoint, kiln, read_safetensors, same_file, temp_dir, text, write_dataset,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `python3 scripts/reference/nanogpt.py args…` on the setup's torch
/// (`PYTHONUTF8=1`: text files in UTF-8 whatever the locale, as kiln
/// reads them): its stdout.
fn nanogpt(cwd: &Path, args: &[String]) -> String {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .current_dir(cwd)
        .env("PYTHONPATH", common::root().join(".libtorch"))
        .env("PYTHONUTF8", "1")
        .args(["-W", "ignore"])
        .arg(common::root().join("scripts/reference/nanogpt.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "nanogpt.py {args:?} failed: {stderr}");
    stdout
}

/// Runs kiln, which must succeed: its stdout.
fn kiln_ok<S: AsRef<str>>(args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = kiln(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    stdout
}

/// A text with `\r\n` and lone `\r` line ends, accents and an astral
/// character: what prepare.py's universal newlines and sorted code points
/// must agree on.
fn small_text() -> String {
    let lines = [
        "To be, or not to be: that is the question.\r\n",
        "Whether 'tis nobler in the mind to suffer\n",
        "The slings and arrows of outrageous fortune, été 😀\r",
        "Or to take arms against a sea of troubles;\n",
        "And by opposing end them? ",
    ];
    (0..300).map(|i| lines[i % lines.len()]).collect()
}

/// `kiln prepare-text` on `text` into `DIR/tokens`: the token directory.
fn prepare(dir: &Path, text: &str) -> PathBuf {
    let input = dir.join("input.txt");
    std::fs::write(&input, text).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("tokens");
    kiln_ok(&[
        "prepare-text",
        &input.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    out
}

#[test]
fn prepare_text_writes_prepare_pys_bytes_and_report() {
    let dir = temp_dir("lm-prepare");
    let input = dir.join("input.txt");
    std::fs::write(&input, small_text()).unwrap_or_else(|e| panic!("{e}"));
    let (ours, theirs) = (dir.join("kiln"), dir.join("nanogpt"));
    let printed = kiln_ok(&[
        "prepare-text",
        &input.display().to_string(),
        "--out",
        &ours.display().to_string(),
    ]);
    let reference = nanogpt(
        &dir,
        &[
            "prepare".into(),
            input.display().to_string(),
            theirs.display().to_string(),
        ],
    );
    assert_eq!(printed, reference, "prepare.py's report");
    for file in ["train.bin", "val.bin", "meta.pkl"] {
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let (k, t) = (read(&ours), read(&theirs));
        assert!(
            k == t,
            "{file}: {} bytes differ from prepare.py's {} (first difference at {:?})",
            k.len(),
            t.len(),
            k.iter().zip(&t).position(|(a, b)| a != b)
        );
    }
}

/// The sizes of the parity runs: nanoGPT's CPU recipe made tiny.
struct Recipe {
    /// A TorchScript module returning logits `[B, T, V]` in gpt's place.
    torchscript: Option<PathBuf>,
    n_layer: usize,
    dropout: f64,
    bias: bool,
    /// `--gradient-checkpointing` (nanogpt.py: `--gradient_checkpointing=True`).
    gradient_checkpointing: bool,
    steps: usize,
    eval_every: usize,
}

const BLOCK: usize = 8;
const BATCH: usize = 4;
const EVAL_BATCHES: usize = 3;

impl Recipe {
    /// A gpt run of `n_layer` blocks (no TorchScript, no checkpointing).
    fn gpt(n_layer: usize, dropout: f64, bias: bool, steps: usize, eval_every: usize) -> Self {
        Self {
            torchscript: None,
            n_layer,
            dropout,
            bias,
            gradient_checkpointing: false,
            steps,
            eval_every,
        }
    }

    fn model(&self) -> String {
        if let Some(path) = &self.torchscript {
            return format!("torchscript:{}", path.display());
        }
        format!(
            "gpt:n_layer={},n_head=2,n_embd=16,dropout={:?},bias={}",
            self.n_layer, self.dropout, self.bias
        )
    }

    /// `kiln train` flags (the issue's command line, made small).
    fn kiln(&self, data: &Path, run: &Path, steps: usize) -> Vec<String> {
        [
            "train",
            "--data",
            &format!("tokens:{},block_size={BLOCK}", data.display()),
            "--model",
            &self.model(),
            "--batch-size",
            &BATCH.to_string(),
            "--max-steps",
            &steps.to_string(),
            "--optimizer",
            "adamw:lr=1e-3,betas=0.9;0.99,weight_decay=0.1",
            "--param-group",
            "ndim<2:weight_decay=0",
            "--scheduler",
            &format!(
                "warmup-cosine:warmup_steps=4,decay_steps={},min_lr=1e-4",
                self.steps
            ),
            "--clip-grad-norm",
            "1.0",
            "--eval-every-steps",
            &self.eval_every.to_string(),
            "--eval-batches",
            &EVAL_BATCHES.to_string(),
            "--seed",
            "1337",
            "--device",
            "cpu",
            "--run-dir",
            &run.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            // nanoGPT's loss (gpt's default; a TorchScript module has none).
            self.torchscript
                .iter()
                .flat_map(|_| ["--loss".to_string(), "cross-entropy:ignore_index=-1".into()]),
        )
        .chain(
            self.gradient_checkpointing
                .then(|| "--gradient-checkpointing".to_string()),
        )
        .collect()
    }

    /// nanoGPT's train.py on the same settings, `self.steps` optimizer
    /// steps (its iterations 0..=max_iters), writing the final weights.
    fn nanogpt(&self, data: &Path, weights: &Path) -> Vec<String> {
        vec![
            "train".into(),
            format!("--data_dir={}", data.display()),
            "--device=cpu".into(),
            "--compile=False".into(),
            format!("--eval_iters={EVAL_BATCHES}"),
            format!("--eval_interval={}", self.eval_every),
            "--log_interval=1".into(),
            format!("--block_size={BLOCK}"),
            format!("--batch_size={BATCH}"),
            format!("--n_layer={}", self.n_layer),
            "--n_head=2".into(),
            "--n_embd=16".into(),
            format!("--dropout={:?}", self.dropout),
            format!("--bias={}", if self.bias { "True" } else { "False" }),
            format!("--max_iters={}", self.steps - 1),
            format!("--lr_decay_iters={}", self.steps),
            "--warmup_iters=4".into(),
            "--learning_rate=1e-3".into(),
            "--min_lr=1e-4".into(),
            "--weight_decay=0.1".into(),
            "--beta1=0.9".into(),
            "--beta2=0.99".into(),
            "--grad_clip=1.0".into(),
            "--seed=1337".into(),
            "--out_dir=".into(),
            format!("--weights_out={}", weights.display()),
        ]
        .into_iter()
        .chain(
            self.torchscript
                .iter()
                .map(|p| format!("--torchscript={}", p.display())),
        )
        .chain(
            self.gradient_checkpointing
                .then(|| "--gradient_checkpointing=True".to_string()),
        )
        .collect()
    }
}

/// The numbers of train.py's lines: `step N: train loss X, val loss Y` →
/// ("step N", [X, Y]); `iter N: loss X, time T` → ("iter N", [X]) (the
/// time is each program's own).
fn numbers(stdout: &str) -> Vec<(String, Vec<f64>)> {
    stdout
        .lines()
        .filter(|l| l.starts_with("step ") || l.starts_with("iter "))
        .map(|line| {
            let (head, rest) = line.split_once(": ").unwrap_or((line, ""));
            let values = rest
                .split(", ")
                .filter(|part| !part.starts_with("time "))
                .map(|part| {
                    let value = part.rsplit(' ').next().unwrap_or_default();
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("not a number in {line:?}"))
                })
                .collect();
            (head.to_string(), values)
        })
        .collect()
}

/// Printed losses agree to within one unit of their last printed digit
/// (they are the same float32 computations on the same machine; the
/// tolerance only covers a tie rounded differently when printing).
const LOSS_TOLERANCE: f64 = 1.0001e-4;
/// Final weights: the same kernels in the same order, so the same bits;
/// the tolerance is for libtorch builds whose GEMMs round differently.
const WEIGHT_TOLERANCE: f32 = 1e-5;

/// The checkpoint directory of `run` with the most steps.
fn last_checkpoint(run: &Path) -> PathBuf {
    common::checkpoints(run)
        .pop()
        .unwrap_or_else(|| panic!("{} has no checkpoint", run.display()))
}

fn parity(name: &str, dir: &Path, recipe: &Recipe) {
    let data = prepare(dir, &small_text());
    let run = dir.join("run");
    let ours = numbers(&kiln_ok(&recipe.kiln(&data, &run, recipe.steps)));
    let weights = dir.join("nanogpt.safetensors");
    let theirs = numbers(&nanogpt(dir, &recipe.nanogpt(&data, &weights)));
    // kiln evaluates once more at its step limit (nanoGPT would at the top
    // of an iteration it does not run): every other line is nanoGPT's.
    let last = format!("step {}", recipe.steps);
    let ours: Vec<_> = ours.into_iter().filter(|(head, _)| *head != last).collect();
    let heads = |v: &[(String, Vec<f64>)]| v.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>();
    assert_eq!(heads(&ours), heads(&theirs), "{name}: the lines printed");
    assert_eq!(
        ours.len(),
        recipe.steps + recipe.steps.div_ceil(recipe.eval_every)
    );
    let mut exact = true;
    for ((head, a), (_, b)) in ours.iter().zip(&theirs) {
        for (x, y) in a.iter().zip(b) {
            exact &= x == y;
            assert!(
                (x - y).abs() <= LOSS_TOLERANCE,
                "{name}: {head}: kiln {a:?}, nanoGPT {b:?}"
            );
        }
    }
    // The checkpoint's weights are nanoGPT's state dict (its names, the
    // tied lm_head included) after the same steps.
    let ckpt = read_safetensors(&last_checkpoint(&run).join("model.safetensors"));
    let mut reference = read_safetensors(&weights);
    // The reference wraps a TorchScript module as `module` (to add the loss).
    for t in &mut reference {
        if let Some(name) = t.name.strip_prefix("module.") {
            t.name = name.to_string();
        }
    }
    let names = |v: &[common::StoredTensor]| {
        let mut n: Vec<String> = v.iter().map(|t| t.name.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&ckpt), names(&reference), "{name}: state-dict names");
    let mut worst = 0.0f32;
    for t in &ckpt {
        let r = reference
            .iter()
            .find(|r| r.name == t.name)
            .unwrap_or_else(|| panic!("no {}", t.name));
        assert_eq!(t.shape, r.shape, "{name}: {}", t.name);
        for (x, y) in t.f32s().iter().zip(r.f32s()) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!(
        "{name}: printed losses {}; largest weight difference {worst:e}",
        if exact {
            "identical"
        } else {
            "within tolerance"
        }
    );
    assert!(
        worst <= WEIGHT_TOLERANCE,
        "{name}: weights differ from nanoGPT's by {worst:e}"
    );
}

#[test]
fn training_prints_nanogpts_numbers_without_dropout() {
    parity(
        "lm-parity-0",
        &temp_dir("lm-parity-0"),
        &Recipe::gpt(1, 0.0, false, 20, 5),
    );
}

#[test]
fn training_prints_nanogpts_numbers_with_dropout() {
    // Dropout draws from the global generator between the batch draws:
    // the next batch is drawn after the forward pass, as nanoGPT does.
    parity(
        "lm-parity-1",
        &temp_dir("lm-parity-1"),
        &Recipe::gpt(2, 0.1, true, 12, 4),
    );
}

#[test]
fn gradient_checkpointing_prints_nanogpts_numbers() {
    // Each block recomputed in backward, its dropout masks redrawn from the
    // generator state of the forward: nanoGPT's numbers without it.
    parity(
        "lm-parity-checkpointing",
        &temp_dir("lm-parity-checkpointing"),
        &Recipe {
            gradient_checkpointing: true,
            ..Recipe::gpt(2, 0.1, true, 12, 4)
        },
    );
}

/// A TorchScript language model (nanogpt.py's `TokenMLP`) for the
/// vocabulary of `small_text`, written into `dir`.
fn token_mlp(dir: &Path) -> PathBuf {
    let path = dir.join("token_mlp.pt");
    nanogpt(
        dir,
        &[
            "script".into(),
            format!("--out={}", path.display()),
            format!("--vocab_size={}", vocab(dir)),
            "--n_embd=16".into(),
            "--seed=3".into(),
        ],
    );
    path
}

#[test]
fn a_torchscript_module_trains_on_tokens_with_nanogpts_numbers() {
    // Logits [B, T, V] against targets [B, T], flattened as nanoGPT's loss
    // compares them: for any model, not only gpt.
    let dir = temp_dir("lm-parity-ts");
    prepare(&dir, &small_text());
    let module = token_mlp(&dir);
    parity(
        "lm-parity-ts",
        &dir,
        &Recipe {
            torchscript: Some(module),
            ..Recipe::gpt(0, 0.0, false, 10, 5)
        },
    );
}

#[test]
fn tensors_files_with_sequence_targets_train() {
    // tensors: with targets [N, T] (refused before as `class-index targets
    // must be [N]`): a TorchScript module's logits [B, T, V] against them.
    let dir = temp_dir("lm-tensors");
    prepare(&dir, &small_text());
    let module = token_mlp(&dir);
    let file = dir.join("windows.safetensors");
    let script = "import sys, numpy as np, torch\n\
        from safetensors.torch import save_file\n\
        ids = torch.from_numpy(np.fromfile(sys.argv[1], dtype=np.uint16).astype(np.int64))\n\
        starts = torch.arange(0, len(ids) - 9, 7)\n\
        x = torch.stack([ids[i:i + 8] for i in starts])\n\
        y = torch.stack([ids[i + 1:i + 9] for i in starts])\n\
        save_file({'inputs': x, 'targets': y}, sys.argv[2])\n";
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .env("PYTHONPATH", common::root().join(".libtorch"))
        .args(["-c", script])
        .arg(dir.join("tokens/train.bin"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
    assert!(out.status.success(), "{}", text(&out).1);
    let printed = kiln_ok(&[
        "train",
        "--data",
        &format!("tensors:{}", file.display()),
        "--model",
        &format!("torchscript:{}", module.display()),
        "--optimizer",
        "adam:lr=0.01",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--seed",
        "0",
        "--run-dir",
        &dir.join("run").display().to_string(),
    ]);
    let losses: Vec<f64> = printed
        .lines()
        .filter_map(|l| l.split("Avg loss: ").nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(losses.len(), 3, "{printed}");
    assert!(losses[2] < losses[0], "{printed}");
    // Accuracy is over every position of the sequences.
    assert!(printed.contains("Accuracy:"), "{printed}");
}

/// `kiln sample` flags for `run`.
fn sample_args(run: &Path, start: &str) -> Vec<String> {
    [
        "sample",
        "--checkpoint",
        &run.display().to_string(),
        "--num-samples",
        "3",
        "--max-new-tokens",
        "25",
        "--temperature",
        "0.9",
        "--top-k",
        "5",
        "--seed",
        "42",
        "--start",
        start,
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn sampling_prints_what_sample_py_prints_from_the_checkpoint() {
    let dir = temp_dir("lm-sample");
    let data = prepare(&dir, &small_text());
    let recipe = Recipe::gpt(2, 0.1, true, 6, 3);
    let run = dir.join("run");
    let args = recipe.kiln(&data, &run, recipe.steps);
    kiln_ok(&args);
    let prompt = dir.join("prompt.txt");
    std::fs::write(&prompt, "To be,\r\nor not").unwrap_or_else(|e| panic!("{e}"));
    // The context is longer than block_size: it is cropped as nanoGPT crops it.
    for start in ["th", "\n", &format!("FILE:{}", prompt.display())] {
        let args = sample_args(&run, start);
        let first = kiln_ok(&args);
        assert_eq!(first, kiln_ok(&args), "the same seed samples the same");
        assert_eq!(first.matches("\n---------------\n").count(), 3);
        // sample.py on the checkpoint's weights, loaded with load_state_dict.
        let weights = last_checkpoint(&run).join("model.safetensors");
        let reference = nanogpt(
            &dir,
            &[
                "sample".into(),
                format!("--weights={}", weights.display()),
                format!("--meta={}", data.join("meta.pkl").display()),
                format!("--start={start}"),
                "--num_samples=3".into(),
                "--max_new_tokens=25".into(),
                "--temperature=0.9".into(),
                "--top_k=5".into(),
                "--seed=42".into(),
                format!("--block_size={BLOCK}"),
                format!("--vocab_size={}", vocab(&dir)),
                "--n_layer=2".into(),
                "--n_head=2".into(),
                "--n_embd=16".into(),
                "--dropout=0.1".into(),
                "--bias=True".into(),
            ],
        );
        let (_, samples) = reference
            .split_once("...\n")
            .unwrap_or_else(|| panic!("no 'Loading meta from …' line in {reference:?}"));
        assert_eq!(first, samples, "start {start:?}");
    }
}

/// The vocabulary size prepare-text printed (`vocab size: N`) for
/// `dir/input.txt`.
fn vocab(dir: &Path) -> usize {
    let input = dir.join("input.txt").display().to_string();
    let report = kiln_ok(&[
        "prepare-text",
        &input,
        "--out",
        &dir.join("again").display().to_string(),
    ]);
    report
        .lines()
        .find_map(|l| l.strip_prefix("vocab size: "))
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no vocab size in {report:?}"))
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = temp_dir("lm-resume");
    let data = prepare(&dir, &small_text());
    let recipe = Recipe::gpt(1, 0.1, false, 12, 4);
    let whole = dir.join("whole");
    let args = recipe.kiln(&data, &whole, recipe.steps);
    let all = numbers(&kiln_ok(&args));
    // Stopped at step 7 (its checkpoint holds the batch drawn ahead), then
    // resumed to step 12.
    let parts = dir.join("parts");
    let args = recipe.kiln(&data, &parts, 7);
    kiln_ok(&args);
    let resumed = numbers(&kiln_ok(&[
        "train",
        "--resume",
        &parts.display().to_string(),
        "--max-steps",
        &recipe.steps.to_string(),
    ]));
    let tail: Vec<_> = all
        .iter()
        .skip_while(|(head, _)| head != "iter 7")
        .cloned()
        .collect();
    assert_eq!(resumed, tail, "the lines after step 7");
    let bytes = |run: &Path| {
        std::fs::read(last_checkpoint(run).join("model.safetensors"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(
        bytes(&whole) == bytes(&parts),
        "the resumed run's weights differ"
    );
}

#[test]
fn a_run_killed_and_resumed_ends_bit_identical() {
    let dir = temp_dir("lm-kill");
    let data = prepare(&dir, &small_text());
    let recipe = Recipe::gpt(1, 0.1, false, 30, 10);
    let with_checkpoints = |run: &Path| {
        let mut args = recipe.kiln(&data, run, recipe.steps);
        args.extend(["--checkpoint-every", "2", "--keep-checkpoints", "2"].map(String::from));
        args
    };
    let whole = dir.join("whole");
    let log = kiln_ok(&with_checkpoints(&whole));
    // SIGKILL mid-run, once a checkpoint at step 6 or later is on disk.
    let killed = dir.join("killed");
    kill_after_checkpoint(&with_checkpoints(&killed), &killed, 6);
    let stdout = kiln_ok(&["train", "--resume", &killed.display().to_string()]);
    let resumed = numbers(&stdout);
    let all = numbers(&log);
    assert!(
        !resumed.is_empty() && all.ends_with(&resumed),
        "the resumed run printed lines the uninterrupted one did not:\n{stdout}"
    );
    let (reference, ours) = (last_checkpoint(&whole), last_checkpoint(&killed));
    assert_eq!(reference.file_name(), ours.file_name());
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
    ] {
        same_file(&reference.join(file), &ours.join(file));
    }
}

/// Runs kiln, expects failure with exit `code` and one stderr line
/// containing every needle.
fn one_line_error(args: &[&str], code: i32, needles: &[&str]) {
    let out = kiln(args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    }
}

#[test]
fn bad_language_model_input_is_one_line() {
    let dir = temp_dir("lm-errors");
    let data = prepare(&dir, &small_text());
    let d = data.display().to_string();
    let tokens = |extra: &str| format!("tokens:{d}{extra}");
    let train = |data: &str, more: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "--data",
            data,
            "--model",
            "gpt:n_layer=1,n_head=2,n_embd=8",
            "--max-steps",
            "2",
            "--run-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(dir.join("run").display().to_string());
        args.extend(more.iter().map(|s| s.to_string()));
        args
    };
    let check = |args: Vec<String>, code: i32, needles: &[&str]| {
        one_line_error(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            code,
            needles,
        );
    };
    let nowhere = dir.join("nowhere").display().to_string();
    check(
        train(&format!("tokens:{nowhere}"), &[]),
        1,
        &["no such directory"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    check(
        train(&format!("tokens:{}", empty.display()), &[]),
        1,
        &["train.bin: no such file"],
    );
    check(
        train(&tokens(",block_size=100000"), &[]),
        1,
        &["needs more than 100000", "block_size"],
    );
    check(train(&tokens(",block_sise=8"), &[]), 2, &["block_sise"]);
    check(
        train(&tokens(",block_size=8,vocab_size=3"), &[]),
        1,
        &["train.bin", "is not below vocab_size 3"],
    );
    // gpt on data that is not token ids.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap_or_else(|e| panic!("{e}"));
    write_dataset(&images, 8, 4, |i| (i % 3) as u8);
    check(
        train(&format!("idx:{}", images.display()), &[]),
        2,
        &["--model gpt trains on token ids"],
    );
    check(
        train(
            &tokens(",block_size=8"),
            &["--param-group", "ndim<<2:weight_decay=0"],
        ),
        2,
        &["--param-group", "selector 'ndim<<2' is unknown"],
    );
    check(
        train(
            &tokens(",block_size=8"),
            &["--param-group", "*.nothing:weight_decay=0"],
        ),
        2,
        &["--param-group", "selects no parameter"],
    );
    // Only gpt has blocks to checkpoint.
    check(
        vec![
            "train".into(),
            "--data".into(),
            format!("idx:{}", images.display()),
            "--gradient-checkpointing".into(),
            "--run-dir".into(),
            dir.join("run").display().to_string(),
        ],
        2,
        &["--gradient-checkpointing", "--model gpt"],
    );
    // Random batches have no epochs.
    let mut no_limit = train(&tokens(",block_size=8"), &[]);
    let at = no_limit
        .iter()
        .position(|a| a == "--max-steps")
        .unwrap_or_default();
    no_limit.drain(at..at + 2);
    check(no_limit, 2, &["--max-steps"]);
    check(
        vec![
            "sample".into(),
            "--checkpoint".into(),
            dir.join("nowhere").display().to_string(),
        ],
        1,
        &["no valid checkpoint"],
    );
}
