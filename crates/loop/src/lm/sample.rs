//! `kiln sample`: nanoGPT's `sample.py` as a library call.
//!
//! sample.py's order matters for the numbers: `torch.manual_seed(seed)`
//! comes *before* the model is built, so `GPT(config)`'s initialisation
//! draws advance the generator before `load_state_dict` replaces the
//! weights; [`sample`] therefore seeds, builds [`Gpt`] (same draws), loads
//! the weights, switches to eval mode, encodes the start text with
//! `meta.pkl`'s `stoi`, and for each sample calls [`Gpt::generate`] on the
//! prompt and decodes the whole sequence (prompt included) with `itos`.
//! The caller prints each string and then [`SEPARATOR`], as sample.py does.
use crate::checkpoint;
use crate::data::meta::Meta;
use crate::data::tokens::TokensConfig;
use crate::lm::prepare::read_text;
use crate::models::gpt::{Gpt, GptConfig};
use crate::{Error, Model, Result};
use kiln_tensor::spec::Spec;
use kiln_tensor::{Device, Tensor};
use std::path::{Path, PathBuf};

/// The line sample.py prints after each sample (15 dashes).
pub const SEPARATOR: &str = "---------------";

/// sample.py's settings; `Default` is its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleConfig {
    /// The prompt, or `FILE:path` to read it from a file (UTF-8).
    pub start: String,
    /// Samples drawn, one after the other from the same generator.
    pub num_samples: usize,
    /// Tokens generated per sample.
    pub max_new_tokens: i64,
    /// Logits are divided by it (`< 1`: less random).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (`None`: all).
    pub top_k: Option<i64>,
    /// `torch.manual_seed(seed)`.
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            start: "\n".into(),
            num_samples: 10,
            max_new_tokens: 500,
            temperature: 0.8,
            top_k: Some(200),
            seed: 1337,
        }
    }
}

/// The prompt `start` stands for: the text itself, or the contents of the
/// file after `FILE:` (read as sample.py's `open(path, 'r',
/// encoding='utf-8')`).
pub fn start_text(start: &str) -> Result<String> {
    match start.strip_prefix("FILE:") {
        Some(path) => read_text(Path::new(path)),
        None => Ok(start.to_string()),
    }
}

/// sample.py with the weights `weights` of a `gpt` model of configuration
/// `model` (a checkpoint's state dict) and the vocabulary `meta`, on
/// `device`: the strings sample.py prints, prompt included, one per sample.
pub fn sample(
    model: &GptConfig,
    weights: &[(String, Tensor)],
    meta: &Meta,
    cfg: &SampleConfig,
    device: Device,
) -> Result<Vec<String>> {
    if cfg.max_new_tokens < 0 {
        return Err(Error::Usage(format!(
            "max_new_tokens must be at least 0, got {}",
            cfg.max_new_tokens
        )));
    }
    let ids = meta.encode(&start_text(&cfg.start)?)?;
    if ids.is_empty() {
        return Err(Error::Usage(
            "the start text is empty: generation needs at least one token to start from".into(),
        ));
    }
    kiln_tensor::rng::manual_seed(cfg.seed);
    let mut gpt = Gpt::new(model, device)?;
    gpt.load_state_dict(weights)?;
    gpt.set_training(false)?;
    let x = Tensor::from_slice(&ids)
        .f_view([1, ids.len() as i64])?
        .f_to(device)?;
    let mut out = Vec::with_capacity(cfg.num_samples);
    for _ in 0..cfg.num_samples {
        let y = gpt.generate(&x, cfg.max_new_tokens, cfg.temperature, cfg.top_k)?;
        let tokens = Vec::<i64>::try_from(&y.f_select(0, 0)?.f_to(Device::Cpu)?)?;
        out.push(meta.decode(&tokens)?);
    }
    Ok(out)
}

/// What [`sample_checkpoint`] sampled from, and the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSamples {
    /// The checkpoint directory whose weights were used.
    pub checkpoint: PathBuf,
    /// The vocabulary (`meta.pkl` of the run's token directory).
    pub meta: PathBuf,
    /// What sample.py prints for each sample (each followed by [`SEPARATOR`]).
    pub samples: Vec<String>,
}

/// `kiln sample --checkpoint PATH`: sample.py on a run's newest valid
/// checkpoint (`PATH` a run directory; newer checkpoints that do not
/// verify are skipped and reported through `warn`) or on the checkpoint
/// directory `PATH`. The model is the run's `gpt` spec (its `config.json`,
/// kept in the checkpoint) with the vocabulary and context sizes of the
/// trained weights (`transformer.wte.weight`, `transformer.wpe.weight`);
/// the vocabulary is `meta.pkl` of the run's `tokens:` directory.
pub fn sample_checkpoint(
    path: &Path,
    cfg: &SampleConfig,
    device: Device,
    warn: &mut dyn FnMut(String),
) -> Result<CheckpointSamples> {
    let dir = if path.join("manifest.json").is_file() {
        path.to_path_buf()
    } else {
        match checkpoint::latest_valid(path, warn)? {
            Some((dir, _)) => dir,
            None => {
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    message: "no valid checkpoint here: give a run directory of `kiln train` or one of its checkpoints".into(),
                })
            }
        }
    };
    let ckpt = checkpoint::load(&dir)?;
    let setting = |key: &str| -> Result<String> {
        ckpt.config
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Data {
                path: dir.clone(),
                message: format!("the checkpoint's run config names no {key}"),
            })
    };
    let data: Spec = setting("data")?.parse()?;
    if data.name != "tokens" {
        return Err(Error::Usage(format!(
            "the run trained on '{}' data: kiln sample decodes with the vocabulary of a token directory (--data tokens:DIR, meta.pkl)",
            data.name
        )));
    }
    let mut tokens = TokensConfig::default();
    data.clone().apply(&mut tokens)?;
    let meta_path = Path::new(&tokens.path).join("meta.pkl");
    if !meta_path.is_file() {
        return Err(Error::Data {
            path: meta_path,
            message: "no such file: kiln sample decodes ids with a character vocabulary (the meta.pkl prepare-text writes); GPT-2's tokenizer is not part of kiln".into(),
        });
    }
    let meta = Meta::read(&meta_path)?;
    let rows = |name: &str| -> Result<i64> {
        ckpt.model
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, t)| t.size().first().copied())
            .ok_or_else(|| Error::Data {
                path: dir.clone(),
                message: format!("the checkpoint's model has no {name}: it is not a gpt model"),
            })
    };
    let model = GptConfig::from_spec(
        &setting("model")?,
        rows("transformer.wte.weight")?,
        rows("transformer.wpe.weight")?,
    )?;
    if model.vocab_size < meta.vocab_size {
        return Err(Error::Data {
            path: meta_path,
            message: format!(
                "holds {} tokens, but the model knows {}",
                meta.vocab_size, model.vocab_size
            ),
        });
    }
    let samples = sample(&model, &ckpt.model, &meta, cfg, device)?;
    Ok(CheckpointSamples {
        checkpoint: dir,
        meta: meta_path,
        samples,
    })
}
