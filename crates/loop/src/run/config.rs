//! A run's settings: [`RunConfig`], built from layers of flags.
//!
//! A run's configuration comes from up to three layers, later ones winning:
//! the saved `config.json` of the run being resumed, a `--config FILE`, and
//! the flags given on the command line. Each layer is a JSON object of
//! flags (`"epochs": 3`, `"optimizer": "adam:lr=0.01"`); keys may be written
//! with `-` or `_`. `lr` and `momentum` are not settings of their own: they
//! set the optimizer spec's option of that name unless the same layer's
//! `optimizer` spec names it. The merged object is read into a
//! [`RunConfig`], whose `Default` is the PyTorch tutorial's job.
use crate::data::source::{absolute, DataSource};
use crate::trainer::Interval;
use crate::{Error, Result};
use kiln_tensor::spec::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Every setting of a run; `Default` is the tutorial's job. This is what a
/// run's `config.json` holds, with the seed it drew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per batch (the last short batch is kept).
    pub batch_size: usize,
    /// Loss spec (`cross-entropy:label_smoothing=0.1`); default:
    /// cross-entropy for class labels, mse for regression targets.
    pub loss: Option<String>,
    /// Optimizer spec; plain `sgd` is the tutorial's `SGD(lr=1e-3, momentum=0.9)`.
    pub optimizer: String,
    /// Lr scheduler spec, if any.
    pub scheduler: Option<String>,
    /// Model spec (`mlp`, `cnn:dropout1=0.1`, `torchscript:PATH`; see
    /// `kiln models`); default: the quickstart MLP for class labels, a
    /// standardising `mlp:hidden=64;64` for regression targets.
    pub model: Option<String>,
    /// When the scheduler steps; default: every step for onecycle and
    /// cyclic, every epoch otherwise.
    pub scheduler_interval: Option<Interval>,
    /// `torch.manual_seed`; drawn from the OS (and recorded) when absent.
    pub seed: Option<u64>,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads.
    pub threads: Option<usize>,
    /// `torch.use_deterministic_algorithms(True)` (and cuDNN's deterministic
    /// mode): reproducible GPU runs.
    pub deterministic: bool,
    /// Directory of the four (Fashion)MNIST IDX files.
    pub data_dir: Option<PathBuf>,
    /// Other data (`csv:PATH,target=COLUMN`).
    pub data: Option<DataSource>,
    /// Keep the training set in file order.
    pub no_shuffle: bool,
    /// The first N training samples only.
    pub train_samples: Option<usize>,
    /// The first N test samples only.
    pub test_samples: Option<usize>,
    /// Hold out this share of the training set (seeded) for validation.
    #[serde(with = "crate::json_f64::option")]
    pub val_fraction: Option<f64>,
    /// Stop after N optimizer steps.
    pub max_steps: Option<usize>,
    /// At most N training batches per epoch.
    pub limit_train_batches: Option<usize>,
    /// At most N batches per evaluation.
    pub limit_test_batches: Option<usize>,
    /// One batch of training and one of evaluation.
    pub dry_run: bool,
    /// Sum gradients over N batches per optimizer step.
    pub accumulate_grad_batches: usize,
    /// Also evaluate every N optimizer steps.
    pub eval_every_steps: Option<usize>,
    /// Evaluate after every N epochs (0: never at epoch ends).
    pub eval_every_epochs: usize,
    /// Also report top-K accuracy.
    pub top_k: Option<usize>,
    /// `METRIC[:patience=3,min_delta=0,mode=min|max]`.
    pub early_stopping: Option<String>,
    /// `clip_grad_norm_` before each step.
    #[serde(with = "crate::json_f64::option")]
    pub clip_grad_norm: Option<f64>,
    /// `clip_grad_value_` before each step.
    #[serde(with = "crate::json_f64::option")]
    pub clip_grad_value: Option<f64>,
    /// Draw the curves into `RUN_DIR/plots` at the end.
    pub plot: bool,
    /// Also checkpoint every N optimizer steps.
    pub checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints.
    pub keep_checkpoints: usize,
    /// Also keep the best checkpoint by this metric.
    pub keep_best: Option<String>,
    /// Start from these weights (a safetensors state dict).
    pub init: Option<PathBuf>,
    /// `32-true`, `bf16-mixed` or `16-mixed` (Lightning's names).
    pub precision: String,
    /// Where metrics go: any of `csv`, `jsonl`, `tensorboard`, comma-separated.
    pub logger: String,
    /// Write training scalars to TensorBoard every N optimizer steps.
    pub log_every_n_steps: usize,
    /// Histograms of every parameter and its gradient in TensorBoard at each epoch end.
    pub log_histograms: bool,
    /// `mpi` or `nccl`: data-parallel over the ranks of an MPI job.
    pub distributed: Option<String>,
    /// Seconds before a stuck collective aborts every rank.
    #[serde(with = "crate::json_f64::plain")]
    pub dist_timeout: f64,
    /// Gradient bucket cap in MiB (DDP's `bucket_cap_mb`; default 25 with a
    /// 1 MiB first bucket).
    #[serde(with = "crate::json_f64::option")]
    pub bucket_cap_mb: Option<f64>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            loss: None,
            optimizer: "sgd".into(),
            scheduler: None,
            model: None,
            scheduler_interval: None,
            seed: None,
            device: "auto".into(),
            threads: None,
            deterministic: false,
            data_dir: None,
            data: None,
            no_shuffle: false,
            train_samples: None,
            test_samples: None,
            val_fraction: None,
            max_steps: None,
            limit_train_batches: None,
            limit_test_batches: None,
            dry_run: false,
            accumulate_grad_batches: 1,
            eval_every_steps: None,
            eval_every_epochs: 1,
            top_k: None,
            early_stopping: None,
            clip_grad_norm: None,
            clip_grad_value: None,
            plot: false,
            checkpoint_every: None,
            keep_checkpoints: 3,
            keep_best: None,
            init: None,
            precision: "32-true".into(),
            logger: "csv,jsonl".into(),
            log_every_n_steps: 50,
            log_histograms: false,
            distributed: None,
            dist_timeout: 300.0,
            bucket_cap_mb: None,
        }
    }
}

/// Which loggers `--logger` turns on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loggers {
    /// `metrics_step.csv` and `metrics_epoch.csv`.
    pub csv: bool,
    /// `metrics.jsonl`.
    pub jsonl: bool,
    /// TensorBoard event files.
    pub tensorboard: bool,
}

/// The flags that are not settings of their own (see the module docs).
const OPTIMIZER_SUGAR: [&str; 2] = ["lr", "momentum"];

/// One layer of flags and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Layer {
    /// `the command line`, a file name…
    pub source: String,
    /// Flags by name.
    pub flags: Map<String, Value>,
}

impl Layer {
    /// A layer from a JSON object.
    pub fn new(source: impl Into<String>, flags: Map<String, Value>) -> Self {
        Self {
            source: source.into(),
            flags,
        }
    }

    /// A layer read from a JSON file of flags.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let flags: Map<String, Value> = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "{}: not a JSON object of flags: {e}",
                path.display()
            ))
        })?;
        Ok(Self::new(path.display().to_string(), flags))
    }
}

impl RunConfig {
    /// The names every layer may use.
    pub fn flag_names() -> Vec<String> {
        let mut names: Vec<String> = match serde_json::to_value(RunConfig::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        names.extend(OPTIMIZER_SUGAR.iter().map(|s| s.to_string()));
        names.sort();
        names
    }

    /// Merges `layers` in order over the defaults.
    pub fn from_layers(layers: &[Layer]) -> Result<Self> {
        let known = Self::flag_names();
        let mut merged = Map::new();
        let mut optimizer: Option<Spec> = None;
        for layer in layers {
            let mut sugar: Vec<(&str, f64)> = Vec::new();
            let mut layer_spec: Option<Spec> = None;
            for (key, value) in &layer.flags {
                let key = key.replace('-', "_");
                if !known.contains(&key) {
                    return Err(Error::Usage(format!(
                        "{}: unknown flag '{key}'; accepted: {}",
                        layer.source,
                        known.join(", ")
                    )));
                }
                if let Some(name) = OPTIMIZER_SUGAR.iter().find(|n| **n == key) {
                    let number: Option<crate::json_f64::JsonF64> =
                        serde_json::from_value(value.clone()).map_err(|_| {
                            Error::Usage(format!(
                                "{}: {key} must be a number, got {value}",
                                layer.source
                            ))
                        })?;
                    sugar.extend(number.map(|n| (*name, n.0)));
                } else if key == "optimizer" {
                    let text = value.as_str().ok_or_else(|| {
                        Error::Usage(format!(
                            "{}: optimizer must be a spec string, got {value}",
                            layer.source
                        ))
                    })?;
                    layer_spec = Some(text.parse().map_err(usage)?);
                } else {
                    merged.insert(key, value.clone());
                }
            }
            if let Some(spec) = &layer_spec {
                optimizer = Some(spec.clone());
            }
            for (name, value) in sugar {
                let spec = match &mut optimizer {
                    Some(spec) => spec,
                    None => {
                        optimizer.insert(RunConfig::default().optimizer.parse().map_err(usage)?)
                    }
                };
                // An option the same layer's spec writes wins over the flag.
                if layer_spec.as_ref().is_none_or(|s| !s.contains(name)) {
                    spec.set(name, format!("{value:?}")).map_err(usage)?;
                }
            }
        }
        if let Some(spec) = optimizer {
            merged.insert("optimizer".into(), Value::String(spec.to_string()));
        }
        let source = layers
            .iter()
            .map(|l| l.source.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        let mut cfg: RunConfig = serde_json::from_value(Value::Object(merged))
            .map_err(|e| Error::Usage(format!("{source}: {e}")))?;
        cfg.normalize()?;
        Ok(cfg)
    }

    /// Every spec resolved by its registry (canonical name, every option
    /// with its effective value; a plain `sgd` is the tutorial's SGD), paths
    /// made absolute (so a run resumes from any working directory), and
    /// every value checked.
    fn normalize(&mut self) -> Result<()> {
        let flag =
            |name: &'static str| move |e: kiln_tensor::Error| Error::Usage(format!("{name}: {e}"));
        let mut spec: Spec = self.optimizer.parse().map_err(flag("--optimizer"))?;
        let optimizers = kiln_optim::optimizers();
        // `SGD` and `sgd` are one optimizer: decide by the canonical name.
        spec.name = optimizers
            .lookup(&spec.name)
            .map_err(flag("--optimizer"))?
            .name
            .clone();
        if spec.name == "sgd" {
            // The tutorial's SGD(lr=1e-3, momentum=0.9) (torch's own default momentum is 0).
            for (key, value) in [("lr", "0.001"), ("momentum", "0.9")] {
                if !spec.contains(key) {
                    spec.set(key, value).map_err(flag("--optimizer"))?;
                }
            }
        }
        self.optimizer = optimizers
            .resolve(&spec)
            .map_err(flag("--optimizer"))?
            .to_string();
        if let Some(text) = &self.loss {
            let spec: Spec = text.parse().map_err(flag("--loss"))?;
            self.loss = Some(
                kiln_losses::registry()
                    .resolve(&spec)
                    .map_err(flag("--loss"))?
                    .to_string(),
            );
        }
        if let Some(text) = &self.scheduler {
            let spec: Spec = text.parse().map_err(flag("--scheduler"))?;
            self.scheduler = Some(
                kiln_optim::scheduler::schedulers()
                    .resolve(&spec)
                    .map_err(flag("--scheduler"))?
                    .to_string(),
            );
        }
        if let Some(text) = &self.model {
            self.model = Some(
                crate::models::models()
                    .resolve_text(text)
                    .map_err(flag("--model"))?,
            );
        }
        self.data_dir = self.data_dir.as_deref().map(absolute);
        self.init = self.init.as_deref().map(absolute);
        self.data = self.data.take().map(DataSource::absolute);
        self.validate()
    }

    /// Checks values that no component checks itself, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = [
            ("--batch-size", Some(self.batch_size)),
            (
                "--accumulate-grad-batches",
                Some(self.accumulate_grad_batches),
            ),
            ("--keep-checkpoints", Some(self.keep_checkpoints)),
            ("--eval-every-steps", self.eval_every_steps),
            ("--checkpoint-every", self.checkpoint_every),
            ("--top-k", self.top_k),
            ("--threads", self.threads),
        ];
        for (flag, value) in at_least_one {
            if value == Some(0) {
                return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
            }
        }
        if let Some(f) = self.val_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::Usage(format!(
                    "--val-fraction must be between 0 and 1 (exclusive), got {f}"
                )));
            }
        }
        for (flag, value) in [
            ("--clip-grad-norm", self.clip_grad_norm),
            ("--clip-grad-value", self.clip_grad_value),
        ] {
            if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(Error::Usage(format!(
                    "{flag}: gradient clipping thresholds must be finite and positive, got {}",
                    value.unwrap_or_default()
                )));
            }
        }
        if !(self.dist_timeout.is_finite() && self.dist_timeout > 0.0) {
            return Err(Error::Usage(format!(
                "--dist-timeout must be a positive number of seconds, got {}",
                self.dist_timeout
            )));
        }
        crate::distributed::BucketConfig::from_cap_mb(self.bucket_cap_mb)?;
        self.precision_value()?;
        self.loggers()?;
        if self.log_every_n_steps == 0 {
            return Err(Error::Usage(
                "--log-every-n-steps must be at least 1, got 0".into(),
            ));
        }
        if self.data.is_some() && self.data_dir.is_some() {
            return Err(Error::Usage(
                "--data and --data-dir name two data sources; give one".into(),
            ));
        }
        Ok(())
    }

    /// `--precision` as a value.
    pub fn precision_value(&self) -> Result<kiln_tensor::amp::Precision> {
        self.precision
            .parse()
            .map_err(|e| Error::Usage(format!("--precision: {e}")))
    }

    /// `--logger` as the set of loggers it names.
    pub fn loggers(&self) -> Result<Loggers> {
        let mut out = Loggers::default();
        for name in self
            .logger
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            match name {
                "csv" => out.csv = true,
                "jsonl" => out.jsonl = true,
                "tensorboard" => out.tensorboard = true,
                other => {
                    return Err(Error::Usage(format!(
                        "--logger: unknown logger '{other}'; accepted: csv, jsonl, tensorboard (comma-separated)"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The configuration as the JSON object `config.json` holds.
    pub fn to_json(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// The layer a saved `config.json` gives, as JSON flags.
    pub fn as_layer(&self, source: &str) -> Result<Layer> {
        match self.to_json()? {
            Value::Object(flags) => Ok(Layer::new(source, flags)),
            _ => Err(Error::InvalidArgument(
                "a run config is a JSON object".into(),
            )),
        }
    }
}

fn usage(err: impl std::fmt::Display) -> Error {
    Error::Usage(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(source: &str, v: Value) -> Layer {
        match v {
            Value::Object(m) => Layer::new(source, m),
            _ => Layer::new(source, Map::new()),
        }
    }

    #[test]
    fn defaults_are_the_tutorial() -> Result<()> {
        let cfg = RunConfig::from_layers(&[])?;
        assert_eq!(cfg.epochs, 5);
        assert_eq!(cfg.batch_size, 64);
        // Resolved: every option with its value, as config.json records it.
        assert_eq!(
            cfg.optimizer,
            "sgd:lr=0.001,momentum=0.9,dampening=0.0,weight_decay=0.0,nesterov=false,maximize=false,fused=false"
        );
        Ok(())
    }

    #[test]
    fn later_layers_win_and_lr_folds_into_the_optimizer() -> Result<()> {
        let saved = layer(
            "saved",
            json!({"epochs": 2, "optimizer": "sgd:lr=0.1,momentum=0.5"}),
        );
        let cli = layer("cli", json!({"epochs": 3, "lr": 0.01}));
        let cfg = RunConfig::from_layers(&[saved, cli])?;
        assert_eq!(cfg.epochs, 3);
        assert!(
            cfg.optimizer.starts_with("sgd:lr=0.01,momentum=0.5,"),
            "{}",
            cfg.optimizer
        );
        // A spec that names lr in the same layer wins over --lr.
        let cli = layer("cli", json!({"optimizer": "AdamW:lr=0.3", "lr": 0.01}));
        let cfg = RunConfig::from_layers(&[cli])?;
        assert!(
            cfg.optimizer.starts_with("adamw:lr=0.3,"),
            "{}",
            cfg.optimizer
        );
        // PyTorch's class name is the same optimizer: the tutorial's SGD.
        let cfg = RunConfig::from_layers(&[layer("cli", json!({"optimizer": "SGD"}))])?;
        assert!(
            cfg.optimizer.starts_with("sgd:lr=0.001,momentum=0.9,"),
            "{}",
            cfg.optimizer
        );
        // --momentum where the optimizer has none is an error naming the options.
        let cli = layer("cli", json!({"optimizer": "adam", "momentum": 0.2}));
        let err = RunConfig::from_layers(&[cli]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("momentum") && e.contains("betas")));
        Ok(())
    }

    #[test]
    fn unknown_flags_and_bad_values_are_named() {
        let err = |v: Value| {
            RunConfig::from_layers(&[layer("f.json", v)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(json!({"epoch": 1})).starts_with("f.json: unknown flag 'epoch'; accepted:"));
        assert!(err(json!({"batch-size": 0})).contains("--batch-size must be at least 1"));
        assert!(err(json!({"val_fraction": 1.5})).contains("--val-fraction"));
        assert!(err(json!({"epochs": "x"})).starts_with("f.json: invalid type"));
    }
}
