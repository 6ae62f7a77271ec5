//! nanoGPT parity: kiln's `gpt` model, token data, prepare-text and
//! sampling against scripts/reference/nanogpt.py (nanoGPT's model.py,
//! train.py, sample.py and prepare.py), run at test time on the setup's
//! PyTorch. Small sizes; values compared bit for bit.
use crate::common;

use anyhow::{bail, ensure, Context, Result};
use common::TempDir;
use kiln_loop::data::meta::Meta;
use kiln_loop::data::tokens::{Split, TokenData, TokenDataset, TokensSource};
use kiln_loop::lm::sample::{sample, SampleConfig, SEPARATOR};
use kiln_loop::lm::{prepare_text, PreparedText};
use kiln_loop::models::gpt::{Gpt, GptConfig};
use kiln_loop::DataLoader;
use kiln_loop::Model;
use kiln_optim::rule::ParamGroup;
use kiln_optim::{AdamW, AdamWConfig, Optimizer};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `python3 scripts/reference/nanogpt.py args…` on the setup's PyTorch: stdout.
fn nanogpt(args: &[String]) -> Result<String> {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(root().join("scripts/reference/nanogpt.py"))
        .args(args)
        .env("PYTHONPATH", root().join(".libtorch"))
        // Text files and stdout in UTF-8 whatever the locale (kiln reads UTF-8).
        .env("PYTHONUTF8", "1")
        .output()
        .context("running python3 (scripts/setup.sh installs the reference's torch)")?;
    ensure!(
        out.status.success(),
        "nanogpt.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `--key=value` flags of a model configuration.
fn model_flags(cfg: &GptConfig) -> Vec<String> {
    vec![
        format!("--block_size={}", cfg.block_size),
        format!("--vocab_size={}", cfg.vocab_size),
        format!("--n_layer={}", cfg.n_layer),
        format!("--n_head={}", cfg.n_head),
        format!("--n_embd={}", cfg.n_embd),
        format!("--dropout={:?}", cfg.dropout),
        format!("--bias={}", if cfg.bias { "True" } else { "False" }),
    ]
}

fn tiny(dropout: f64, bias: bool) -> GptConfig {
    GptConfig {
        block_size: 16,
        vocab_size: 37,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout,
        bias,
    }
}

/// Same shape, dtype and bits (floats compared as integers: -0.0 ≠ 0.0, NaN = NaN).
fn same_bits(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.size() != b.size() || a.kind() != b.kind() {
        return Ok(false);
    }
    let bits = |t: &Tensor| -> Result<Tensor> {
        let t = t.f_contiguous()?;
        Ok(match t.kind() {
            Kind::Float => t.f_view_dtype(Kind::Int)?,
            Kind::Double => t.f_view_dtype(Kind::Int64)?,
            _ => t,
        })
    };
    Ok(bits(a)?.f_equal(&bits(b)?)?)
}

fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Ok(kiln_tensor::io::read_safetensors(path)?)
}

fn find<'a>(tensors: &'a [(String, Tensor)], name: &str) -> Result<&'a Tensor> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .with_context(|| format!("the reference wrote no {name}"))
}

fn check_same(what: &str, kiln: &Tensor, torch: &Tensor) -> Result<()> {
    if !same_bits(kiln, torch)? {
        let diff = kiln
            .f_to_kind(Kind::Double)?
            .f_sub(&torch.f_to_kind(Kind::Double)?)?
            .f_abs()?
            .f_max()?
            .f_double_value(&[])
            .unwrap_or(f64::NAN);
        bail!(
            "{what}: kiln {:?} differs from nanoGPT's {:?} (max abs diff {diff:e})",
            kiln.size(),
            torch.size()
        );
    }
    Ok(())
}

#[test]
fn initial_state_dict_is_nanogpts_bit_for_bit() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-init")?;
    for (seed, cfg) in [
        (1337, tiny(0.0, true)),
        (
            7,
            GptConfig {
                n_layer: 3,
                n_head: 4,
                ..tiny(0.1, false)
            },
        ),
    ] {
        let file = dir.path().join(format!("init-{seed}.safetensors"));
        let mut args = vec![
            "init".into(),
            format!("--seed={seed}"),
            format!("--out={}", file.display()),
        ];
        args.extend(model_flags(&cfg));
        let names: serde_json::Value = serde_json::from_str(&nanogpt(&args)?)?;
        let torch = read(&file)?;

        kiln_tensor::rng::manual_seed(seed);
        let model = Gpt::new(&cfg, Device::Cpu)?;
        let params: Vec<String> = model.parameters()?.into_iter().map(|p| p.name).collect();
        assert_eq!(serde_json::json!(params), names["parameters"], "{cfg:?}");
        let state = model.state_dict()?;
        let keys: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(serde_json::json!(keys), names["state_dict"], "{cfg:?}");
        assert_eq!(
            serde_json::json!(model.num_params(true)),
            names["num_params"]
        );
        for (name, tensor) in &state {
            check_same(&format!("{name} of {cfg:?}"), tensor, find(&torch, name)?)?;
        }
        // The generator is where GPT.__init__ leaves it.
        check_same(
            "the generator's state after __init__",
            &kiln_tensor::rng::cpu_rng_state()?,
            find(&torch, "rng_state")?,
        )?;
    }
    Ok(())
}

/// Parameters with at least two dimensions decay, the rest do not
/// (nanoGPT's `configure_optimizers`).
fn nanogpt_adamw(model: &Gpt, lr: f64, weight_decay: f64) -> Result<AdamW> {
    let (decay, no_decay): (Vec<_>, Vec<_>) = model
        .parameters()?
        .into_iter()
        .partition(|p| p.tensor.dim() >= 2);
    let cfg = |weight_decay| AdamWConfig {
        lr,
        betas: (0.9, 0.99),
        weight_decay,
        ..AdamWConfig::default()
    };
    Ok(AdamW::with_groups(vec![
        ParamGroup {
            config: cfg(weight_decay),
            params: decay,
        },
        ParamGroup {
            config: cfg(0.0),
            params: no_decay,
        },
    ])?)
}

#[test]
fn a_training_step_matches_nanogpts() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-step")?;
    let loss_fn = kiln_losses::registry().build("cross-entropy:ignore_index=-1")?;
    let (batch, seed) = (3, 11);
    // The last run checkpoints every block (--gradient-checkpointing):
    // the same numbers as the one before, which does not.
    let runs = [
        (tiny(0.0, true), false),
        (tiny(0.1, false), false),
        (tiny(0.1, false), true),
    ];
    let mut plain_reference: Vec<(String, Tensor)> = Vec::new();
    for (cfg, checkpointing) in runs {
        let file = dir.path().join(format!("step-{checkpointing}.safetensors"));
        let mut args = vec![
            "step".into(),
            format!("--seed={seed}"),
            format!("--batch_size={batch}"),
            format!(
                "--checkpointing={}",
                if checkpointing { "True" } else { "False" }
            ),
        ];
        args.push(format!("--out={}", file.display()));
        args.extend(model_flags(&cfg));
        nanogpt(&args)?;
        let torch = read(&file)?;
        if checkpointing {
            for (name, tensor) in &plain_reference {
                check_same(
                    &format!("PyTorch's {name} with and without checkpointing"),
                    find(&torch, name)?,
                    tensor,
                )?;
            }
        } else {
            plain_reference = torch
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect();
        }

        kiln_tensor::rng::manual_seed(seed);
        let mut model = Gpt::new(&cfg, Device::Cpu)?;
        model.set_gradient_checkpointing(checkpointing);
        let (b, t, v) = (batch, cfg.block_size, cfg.vocab_size);
        let x = Tensor::f_randint(v, [b, t], (Kind::Int64, Device::Cpu))?;
        let y = Tensor::f_randint(v, [b, t], (Kind::Int64, Device::Cpu))?;
        let _ = y.f_select(0, 0)?.f_select(0, 0)?.f_fill_(-1)?;
        check_same("X", &x, find(&torch, "X")?)?;
        check_same("Y", &y, find(&torch, "Y")?)?;
        let mut optimizer = nanogpt_adamw(&model, 1e-3, 0.1)?;
        model.set_training(true)?;
        let logits = model.forward(&x)?;
        check_same(
            &format!("logits {cfg:?} {checkpointing}"),
            &logits,
            find(&torch, "logits")?,
        )?;
        let loss = loss_fn.forward(&logits.f_view([-1, v])?, &y.f_view([-1])?)?;
        check_same("loss", &loss, find(&torch, "loss")?)?;
        loss.f_backward()?;
        check_same(
            "the generator after backward",
            &kiln_tensor::rng::cpu_rng_state()?,
            find(&torch, "rng_state_after_backward")?,
        )?;
        let params = model.parameters()?;
        for p in &params {
            check_same(
                &format!("grad of {} {cfg:?} checkpointing={checkpointing}", p.name),
                &p.tensor.f_grad()?,
                find(&torch, &format!("grad.{}", p.name))?,
            )?;
        }
        let _ = kiln_optim::clip_grad_norm_(params.iter().map(|p| &p.tensor), 1.0, 2.0, false)?;
        optimizer.step()?;
        for p in &params {
            check_same(
                &format!("{} after AdamW {cfg:?}", p.name),
                &p.tensor,
                find(&torch, &format!("param.{}", p.name))?,
            )?;
        }
        model.set_training(false)?;
        let last = kiln_tensor::tch::no_grad(|| model.last_logits(&x))?;
        check_same("last-position logits", &last, find(&torch, "last_logits")?)?;
    }
    Ok(())
}

/// A text with `\r\n`, non-ASCII and astral characters.
fn small_text() -> String {
    let mut s = String::new();
    for i in 0..400 {
        s.push_str(match i % 5 {
            0 => "To be, or not to be: that is the question.\r\n",
            1 => "Whether 'tis nobler in the mind — to suffer\n",
            2 => "The slings and arrows of outrageous fortune, été 😀\r",
            3 => "Or to take arms against a sea of troubles;\n",
            _ => "And by opposing end them? ",
        });
    }
    s
}

/// A text of `n` distinct characters (skipping surrogates), each used a
/// few times, astral ones past the BMP's end.
fn wide_text(n: u32) -> String {
    let chars: Vec<char> = (0x20u32..)
        .filter_map(char::from_u32)
        .filter(|c| !matches!(u32::from(*c), 0x7f..=0x9f))
        .take(n as usize)
        .collect();
    let mut s: String = chars.iter().collect();
    s.extend(chars.iter().rev().step_by(3));
    s
}

fn prepare_both(
    dir: &Path,
    name: &str,
    text: &str,
) -> Result<(PathBuf, PathBuf, PreparedText, String)> {
    let input = dir.join(format!("{name}.txt"));
    std::fs::write(&input, text)?;
    let (kiln_dir, torch_dir) = (
        dir.join(format!("{name}-kiln")),
        dir.join(format!("{name}-torch")),
    );
    let report = prepare_text(&input, &kiln_dir)?;
    let printed = nanogpt(&[
        "prepare".into(),
        input.display().to_string(),
        torch_dir.display().to_string(),
    ])?;
    Ok((kiln_dir, torch_dir, report, printed))
}

/// A token directory of `text` written by kiln's prepare-text (whose
/// files are prepare.py's, as the test above shows).
fn token_dir(dir: &Path, text: &str) -> Result<PathBuf> {
    let input = dir.join("text.txt");
    std::fs::write(&input, text)?;
    let out = dir.join("tokens");
    prepare_text(&input, &out)?;
    Ok(out)
}

#[test]
fn prepare_text_writes_prepare_pys_bytes() -> Result<()> {
    let dir = TempDir::new("gpt-prepare")?;
    // 1000 and 3000 characters: CPython's empty trailing SETITEMS batch;
    // 9000 (astral ones too): memo indices past 255 and 64 KiB frames.
    for (name, text) in [
        ("small", small_text()),
        ("thousand", wide_text(1000)),
        ("three-thousand", wide_text(3000)),
        ("wide", wide_text(9000) + "\u{1F600}\u{10FFFF}"),
        ("empty", String::new()),
    ] {
        let (kiln_dir, torch_dir, report, printed) = prepare_both(dir.path(), name, &text)?;
        for file in ["train.bin", "val.bin", "meta.pkl"] {
            let (k, t) = (
                std::fs::read(kiln_dir.join(file))?,
                std::fs::read(torch_dir.join(file))?,
            );
            ensure!(
                k == t,
                "{name}: {file} differs from prepare.py's ({} vs {} bytes, first difference at {:?})",
                k.len(),
                t.len(),
                k.iter().zip(&t).position(|(a, b)| a != b)
            );
        }
        assert_eq!(
            format!("{report}\n"),
            printed,
            "{name}: prepare.py's report"
        );
        let meta = Meta::read(&torch_dir.join("meta.pkl"))?;
        assert_eq!(meta.vocab_size as usize, report.chars.len());
        assert_eq!(meta.decode(&meta.encode("")?)?, "");
    }
    Ok(())
}

#[test]
fn get_batch_draws_nanogpts_windows() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-batches")?;
    let data_dir = token_dir(dir.path(), &small_text())?;
    let (seed, block, batch, draws) = (5, 12, 4, 3);
    let file = dir.path().join("batches.safetensors");
    nanogpt(&[
        "batches".into(),
        format!("--out={}", file.display()),
        format!("--data_dir={}", data_dir.display()),
        format!("--seed={seed}"),
        format!("--block_size={block}"),
        format!("--batch_size={batch}"),
        format!("--draws={draws}"),
    ])?;
    let torch = read(&file)?;
    let data = TokenData::open(&format!("{},block_size={block}", data_dir.display()).parse()?)?;
    assert_eq!(
        data.vocab_size(),
        Meta::read(&data_dir.join("meta.pkl"))?.vocab_size
    );
    kiln_tensor::rng::manual_seed(seed);
    for k in 0..draws {
        for split in [Split::Train, Split::Val] {
            let (x, y) = data.get_batch(split, batch)?;
            let name = split.name();
            check_same(
                &format!("{name} x {k}"),
                &x,
                find(&torch, &format!("{name}.{k}.x"))?,
            )?;
            check_same(
                &format!("{name} y {k}"),
                &y,
                find(&torch, &format!("{name}.{k}.y"))?,
            )?;
        }
    }
    Ok(())
}

#[test]
fn a_loader_of_random_batches_draws_get_batchs_windows() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-random-loader")?;
    let data_dir = token_dir(dir.path(), &small_text())?;
    let data = std::sync::Arc::new(TokenData::open(
        &format!("{},block_size=12", data_dir.display()).parse()?,
    )?);
    // get_batch, four times: the reference (itself nanoGPT's, above).
    kiln_tensor::rng::manual_seed(9);
    let expected = (0..4)
        .map(|_| data.get_batch(Split::Val, 5))
        .collect::<kiln_loop::Result<Vec<_>>>()?;
    let after = kiln_tensor::rng::cpu_rng_state()?;
    // The loader draws the same windows, drawn ahead or not, across passes.
    let set = TokenDataset::new(data.clone(), Split::Val);
    assert_eq!(
        kiln_loop::data::Dataset::len(&set),
        data.file(Split::Val).len() - 12
    );
    let loader = DataLoader::random_batches(std::sync::Arc::new(set), 5)?.batches_per_pass(3);
    assert!(loader.is_random() && loader.len() == 3);
    kiln_tensor::rng::manual_seed(9);
    loader.draw_ahead()?;
    let first = loader.pending().context("a batch drawn ahead")?;
    let mut batches = loader.iter()?;
    let mut got = Vec::new();
    while let Some(b) = batches.next() {
        got.push(b?);
        batches.draw_ahead()?;
    }
    assert_eq!(got.len(), 3);
    // The fourth was drawn ahead: the next pass starts with it.
    got.extend(
        loader
            .iter()?
            .take(1)
            .collect::<kiln_loop::Result<Vec<_>>>()?,
    );
    for (k, (batch, (x, y))) in got.iter().zip(&expected).enumerate() {
        check_same(&format!("x of batch {k}"), batch.input()?, x)?;
        check_same(&format!("y of batch {k}"), batch.targets()?, y)?;
    }
    check_same(
        "the generator after four batches",
        &kiln_tensor::rng::cpu_rng_state()?,
        &after,
    )?;
    // A resumed loader rebuilds the batch drawn ahead from its indices.
    let again = DataLoader::random_batches(loader.dataset().clone(), 5)?;
    again.set_pending(Some(first))?;
    let rebuilt = again.iter()?.next().context("one batch")??;
    check_same("a rebuilt batch", rebuilt.input()?, &expected[0].0)?;
    let workers = DataLoader::random_batches(loader.dataset().clone(), 5)?
        .workers(2, 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(workers.contains("training thread"), "{workers}");
    Ok(())
}

#[test]
fn sampling_prints_what_sample_py_prints() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-sample")?;
    let data_dir = token_dir(dir.path(), &small_text())?;
    let meta = Meta::read(&data_dir.join("meta.pkl"))?;
    let cfg = GptConfig {
        block_size: 8,
        vocab_size: meta.vocab_size,
        ..tiny(0.1, true)
    };
    kiln_tensor::rng::manual_seed(99);
    let weights = Gpt::new(&cfg, Device::Cpu)?.state_dict()?;
    let weights_file = dir.path().join("weights.safetensors");
    kiln_tensor::io::write_safetensors(&weights_file, &weights)?;
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(&prompt, "To be,\r\nor")?;
    // Longer than block_size: the context is cropped.
    for (start, temperature, top_k) in [
        (format!("FILE:{}", prompt.display()), 0.8, Some(5)),
        ("\n".to_string(), 1.3, None),
        ("Th".to_string(), 0.5, Some(1000)),
    ] {
        let opts = SampleConfig {
            start: start.clone(),
            num_samples: 3,
            max_new_tokens: 20,
            temperature,
            top_k,
            seed: 1337,
        };
        let samples = sample(&cfg, &weights, &meta, &opts, Device::Cpu)?;
        let mut args = vec![
            "sample".into(),
            format!("--weights={}", weights_file.display()),
            format!("--meta={}", data_dir.join("meta.pkl").display()),
            format!("--start={start}"),
            "--num_samples=3".into(),
            "--max_new_tokens=20".into(),
            format!("--temperature={temperature:?}"),
            format!(
                "--top_k={}",
                top_k.map_or("None".to_string(), |k| k.to_string())
            ),
            "--seed=1337".into(),
        ];
        args.extend(model_flags(&cfg));
        let printed = nanogpt(&args)?;
        let (_, samples_printed) = printed
            .split_once("...\n")
            .context("sample.py's 'Loading meta from …...' line")?;
        let expected: String = samples
            .iter()
            .map(|s| format!("{s}\n{SEPARATOR}\n"))
            .collect();
        assert_eq!(expected, samples_printed, "start {start:?}");
        assert!(samples.iter().all(|s| s.chars().count() > 20));
    }
    Ok(())
}

#[test]
fn bad_token_data_is_refused_in_one_line() -> Result<()> {
    let _rng = common::global_state();
    let dir = TempDir::new("gpt-bad-tokens")?;
    let data_dir = token_dir(dir.path(), &small_text())?;
    let open = |spec: String| -> String {
        match spec
            .parse::<TokensSource>()
            .and_then(|s| TokenData::open(&s))
        {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let one_line = |m: &str, needle: &str| {
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        assert!(!m.contains('\n'), "{m:?}");
    };
    let d = data_dir.display();
    one_line(
        &open(format!("{d},block_size=100000")),
        "needs more than 100000",
    );
    one_line(&open(format!("{d},dtype=int8")), "dtype");
    one_line(&open(format!("{d},blocksize=8")), "blocksize");
    one_line(
        &open(format!("{d},block_size=0")),
        "block_size must be at least 1",
    );
    std::fs::write(data_dir.join("val.bin"), [1u8, 0, 7])?;
    one_line(
        &open(format!("{d},block_size=1")),
        "3 bytes is not a whole number of uint16 ids",
    );
    std::fs::write(data_dir.join("val.bin"), [1u8, 0, 7, 0, 2, 0])?;
    one_line(
        &open(format!("{d},block_size=1,dtype=uint32")),
        "6 bytes is not a whole number of uint32 ids",
    );
    std::fs::remove_file(data_dir.join("val.bin"))?;
    one_line(&open(format!("{d}")), "val.bin: no such file");
    one_line(
        &open(format!("{}", dir.path().join("nowhere").display())),
        "no such directory",
    );

    // Ids past the vocabulary: nanoGPT would index out of the embedding.
    std::fs::write(data_dir.join("val.bin"), [3u8, 0].repeat(40))?;
    let data = TokenData::open(&format!("{d},block_size=8,vocab_size=3").parse()?)?;
    let err = data
        .get_batch(Split::Val, 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    one_line(&err, "token id 3 at position");
    one_line(&err, "is not below vocab_size 3");

    let too_wide = dir.path().join("too-wide.txt");
    std::fs::write(&too_wide, wide_text(70000))?;
    let err = prepare_text(&too_wide, &dir.path().join("out"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    one_line(&err, "70000 distinct characters");
    Ok(())
}

#[test]
fn gpt_is_in_the_model_registry_with_nanogpts_defaults() -> Result<()> {
    let r = kiln_loop::models::models();
    assert_eq!(
        r.resolve_text("gpt")?,
        "gpt:n_layer=12,n_head=12,n_embd=768,dropout=0.0,bias=true"
    );
    assert_eq!(
        r.resolve_text("GPT:n_layer=4,n_head=4,n_embd=128,bias=false")?,
        "gpt:n_layer=4,n_head=4,n_embd=128,dropout=0.0,bias=false"
    );
    let unknown = r.resolve_text("resnet").err().map(|e| e.to_string());
    assert!(
        unknown
            .as_deref()
            .is_some_and(|m| m.ends_with("accepted: mlp, cnn, gpt, torchscript")),
        "{unknown:?}"
    );
    Ok(())
}

/// Bytes the forward pass leaves held for backward (kiln's arena
/// allocator counts tensors of 256 KiB and more: every activation here),
/// and the gradients after backward.
fn forward_memory(cfg: &GptConfig, checkpointing: bool) -> Result<(u64, Vec<Tensor>)> {
    let live = || -> Result<u64> {
        Ok(kiln_tensor::memory::arena_stats()
            .context("the arena allocator is installed")?
            .live)
    };
    kiln_tensor::rng::manual_seed(3);
    let mut model = Gpt::new(cfg, Device::Cpu)?;
    model.set_gradient_checkpointing(checkpointing);
    let x = Tensor::f_randint(
        cfg.vocab_size,
        [4, cfg.block_size],
        (Kind::Int64, Device::Cpu),
    )?;
    let before = live()?;
    let logits = model.forward(&x)?;
    let held = live()?.saturating_sub(before);
    logits.f_square()?.f_mean(Kind::Float)?.f_backward()?;
    let grads = model
        .parameters()?
        .iter()
        .map(|p| p.tensor.f_grad())
        .collect::<Result<Vec<_>, _>>()?;
    Ok((held, grads))
}

#[test]
fn gradient_checkpointing_keeps_less_memory_for_the_same_gradients() -> Result<()> {
    // It measures what the process allocates: no other test may run beside it.
    if common::in_own_process(
        "gpt::gradient_checkpointing_keeps_less_memory_for_the_same_gradients",
    )? {
        return Ok(());
    }
    let _rng = common::global_state();
    kiln_tensor::memory::install_arena_allocator();
    // Activations of [4, 64, 256] floats: 256 KiB, the arena's smallest block.
    let cfg = GptConfig {
        block_size: 64,
        vocab_size: 64,
        n_layer: 4,
        n_head: 4,
        n_embd: 256,
        dropout: 0.1,
        bias: true,
    };
    let (plain, plain_grads) = forward_memory(&cfg, false)?;
    let (checkpointed, grads) = forward_memory(&cfg, true)?;
    println!("forward held {plain} bytes, {checkpointed} with checkpoints");
    for (a, b) in plain_grads.iter().zip(&grads) {
        check_same("a gradient with and without checkpointing", b, a)?;
    }
    // Without checkpoints each block keeps a dozen activations (layer-norm
    // outputs, q/k/v, the attention output, 4x-wide MLP activations,
    // dropout masks); with them, only its input.
    ensure!(
        checkpointed * 8 < plain,
        "the forward held {checkpointed} bytes with checkpoints, {plain} without"
    );
    Ok(())
}

#[test]
fn meta_pkl_of_every_protocol_reads() -> Result<()> {
    let dir = TempDir::new("gpt-protocols")?;
    // 300 characters: memo indices past 255 (LONG_BINPUT / LONG_BINGET).
    let chars: Vec<char> = wide_text(300).chars().take(300).collect();
    let text: String = chars.iter().collect();
    let input = dir.path().join("chars.txt");
    std::fs::write(&input, &text)?;
    let script = "import pickle, sys\n\
        chars = sorted(set(open(sys.argv[1], encoding='utf-8').read()))\n\
        meta = {'vocab_size': len(chars), 'itos': dict(enumerate(chars)), 'stoi': {c: i for i, c in enumerate(chars)}}\n\
        for p in range(2, pickle.HIGHEST_PROTOCOL + 1):\n    \
            pickle.dump(meta, open(f'{sys.argv[2]}/meta{p}.pkl', 'wb'), protocol=p)\n";
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", script])
        .arg(&input)
        .arg(dir.path())
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sorted = chars.clone();
    sorted.sort_unstable();
    let expected = Meta::from_chars(&sorted);
    for protocol in 2..=5 {
        let meta = Meta::read(&dir.path().join(format!("meta{protocol}.pkl")))?;
        assert_eq!(meta.vocab_size, expected.vocab_size, "protocol {protocol}");
        assert_eq!(meta.itos, expected.itos, "protocol {protocol}");
        assert_eq!(meta.stoi, expected.stoi, "protocol {protocol}");
    }
    Ok(())
}
