//! A run's settings: [`RunConfig`], built from layers of flags.
//!
//! A run's configuration comes from up to three layers, later ones winning:
//! the saved `config.json` of the run being resumed, a `--config FILE`, and
//! the flags given on the command line. Each layer is a JSON object of
//! flags (`"epochs": 3`, `"optimizer": "adam:lr=0.01"`); keys may be written
//! with `-` or `_`. `lr` and `momentum` are not settings of their own: they
//! set the optimizer spec's option of that name unless the same layer's
//! `optimizer` spec names it. The merged object is read into a
//! [`RunConfig`], whose `Default` is the PyTorch tutorial's job: every
//! setting typed (a device, a precision, the set of loggers…), every spec
//! resolved by the caller's [`Registries`], so nothing downstream parses a
//! setting again.
use super::Registries;
use crate::data::source::absolute;
use crate::profiler::Profile;
use crate::trainer::{EarlyStopping, Interval};
use crate::{Error, Result};
use kiln_tensor::amp::Precision;
use kiln_tensor::device::DeviceSpec;
use kiln_tensor::spec::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Serde for a typed setting written as text (`"bf16-mixed"`), through its
/// `FromStr` and `Display`; a bad value names the flag. `option` for an
/// `Option` of one (JSON `null` when absent).
macro_rules! text_setting {
    ($module:ident, $flag:literal) => {
        mod $module {
            use serde::{Deserialize, Deserializer, Serializer};
            use std::fmt::Display;
            use std::str::FromStr;

            pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(v)
            }

            pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
            where
                T: FromStr,
                T::Err: Display,
                D: Deserializer<'de>,
            {
                let text = String::deserialize(d)?;
                text.parse()
                    .map_err(|e| serde::de::Error::custom(format!("{}: {e}", $flag)))
            }
        }
    };
    (option $module:ident, $flag:literal) => {
        mod $module {
            use serde::{Deserialize, Deserializer, Serializer};
            use std::fmt::Display;
            use std::str::FromStr;

            pub fn serialize<T: Display, S: Serializer>(
                v: &Option<T>,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                match v {
                    Some(v) => s.collect_str(v),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
            where
                T: FromStr,
                T::Err: Display,
                D: Deserializer<'de>,
            {
                Option::<String>::deserialize(d)?
                    .map(|text| {
                        text.parse()
                            .map_err(|e| serde::de::Error::custom(format!("{}: {e}", $flag)))
                    })
                    .transpose()
            }
        }
    };
}

text_setting!(device_text, "--device");
text_setting!(precision_text, "--precision");
text_setting!(logger_text, "--logger");
text_setting!(option distributed_text, "--distributed");
text_setting!(option early_stopping_text, "--early-stopping");
text_setting!(option profile_text, "--profile");
text_setting!(option swa_text, "--swa");

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
    /// Param groups with options of their own, `SELECTOR:key=value,…`
    /// (`ndim<2:weight_decay=0`, `*.bias:lr=0.01`), in order; the
    /// parameters none selects keep the optimizer's.
    pub param_group: Vec<String>,
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
    #[serde(with = "device_text")]
    pub device: DeviceSpec,
    /// libtorch intra-op threads.
    pub threads: Option<usize>,
    /// `torch.use_deterministic_algorithms(True)` (and cuDNN's deterministic
    /// mode): reproducible GPU runs.
    pub deterministic: bool,
    /// Recompute each block's activations in backward instead of keeping
    /// them (`torch.utils.checkpoint`, non-reentrant): the same numbers,
    /// less memory, for models with blocks (`gpt`).
    pub gradient_checkpointing: bool,
    /// Directory of the four (Fashion)MNIST IDX files (`idx:DIR`).
    pub data_dir: Option<PathBuf>,
    /// The data source spec (`csv:PATH,target=COLUMN`, `tensors:PATH`…),
    /// resolved by the data registry; default: the setup's FashionMNIST.
    pub data: Option<String>,
    /// Image transforms of the training samples, in order
    /// (`random-resized-crop:size=24`; see `kiln transforms`), resolved by
    /// the transform registry: torchvision's canonical pipeline, for data
    /// sources of images (`images:DIR`).
    pub transform: Vec<String>,
    /// Image transforms of the evaluation samples, in order.
    pub test_transform: Vec<String>,
    /// Data-loading worker threads (`num_workers`; 0: the training thread).
    pub workers: usize,
    /// Batches in flight per worker (`prefetch_factor`).
    pub prefetch_factor: usize,
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
    /// Batches per evaluation set (nanoGPT's `eval_iters`): with random
    /// batches (`--data tokens:…`) each evaluation draws this many of each
    /// split (default 200); otherwise the same as `limit_test_batches`.
    pub eval_batches: Option<usize>,
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
    #[serde(with = "early_stopping_text")]
    pub early_stopping: Option<EarlyStopping>,
    /// Exponential moving average of the weights with this decay
    /// (`AveragedModel` + `get_ema_multi_avg_fn`, buffers averaged too).
    #[serde(with = "crate::json_f64::option")]
    pub ema: Option<f64>,
    /// Stochastic Weight Averaging from an epoch:
    /// `START:lr=X[,anneal_epochs=10,anneal_strategy=cos]`.
    #[serde(with = "swa_text")]
    pub swa: Option<crate::trainer::Swa>,
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
    /// Freeze the parameters these selectors take (`requires_grad=False`;
    /// `--param-group`'s selectors: a name glob `conv*`, or `ndim<2`): no
    /// gradient, no optimizer state, unchanged by training.
    pub freeze: Vec<String>,
    /// `torch.autograd.set_detect_anomaly(True)`: a NaN produced in
    /// backward stops the run, naming the operator that produced it.
    pub detect_anomaly: bool,
    /// `--init` loads every tensor of the model (`load_state_dict(strict=True)`);
    /// `false`: what matches by name and shape, naming what it skipped.
    pub init_strict: bool,
    /// `32-true`, `bf16-mixed` or `16-mixed` (Lightning's names).
    #[serde(with = "precision_text")]
    pub precision: Precision,
    /// Where metrics go: any of `csv`, `jsonl`, `tensorboard`, comma-separated.
    #[serde(with = "logger_text")]
    pub logger: Loggers,
    /// Write training scalars to TensorBoard every N optimizer steps.
    pub log_every_n_steps: usize,
    /// Histograms of every parameter and its gradient in TensorBoard at each epoch end.
    pub log_histograms: bool,
    /// `mpi` or `nccl`: data-parallel over the ranks of an MPI job.
    #[serde(with = "distributed_text")]
    pub distributed: Option<Distributed>,
    /// Seconds before a stuck collective aborts every rank.
    #[serde(with = "crate::json_f64::plain")]
    pub dist_timeout: f64,
    /// Gradient bucket cap in MiB (DDP's `bucket_cap_mb`; default 25 with a
    /// 1 MiB first bucket).
    #[serde(with = "crate::json_f64::option")]
    pub bucket_cap_mb: Option<f64>,
    /// `simple` (Lightning's profiler table at the end) or
    /// `trace[:steps=3,skip=2]` (libtorch's profiler: a Chrome trace in
    /// `RUN/profile`); see [`crate::profiler`].
    #[serde(with = "profile_text")]
    pub profile: Option<Profile>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            loss: None,
            optimizer: "sgd".into(),
            param_group: Vec::new(),
            scheduler: None,
            model: None,
            scheduler_interval: None,
            seed: None,
            device: DeviceSpec::Auto,
            threads: None,
            deterministic: false,
            gradient_checkpointing: false,
            data_dir: None,
            data: None,
            transform: Vec::new(),
            test_transform: Vec::new(),
            workers: 0,
            prefetch_factor: crate::data::loader::PREFETCH_FACTOR,
            no_shuffle: false,
            train_samples: None,
            test_samples: None,
            val_fraction: None,
            max_steps: None,
            limit_train_batches: None,
            limit_test_batches: None,
            eval_batches: None,
            dry_run: false,
            accumulate_grad_batches: 1,
            eval_every_steps: None,
            eval_every_epochs: 1,
            top_k: None,
            early_stopping: None,
            ema: None,
            swa: None,
            clip_grad_norm: None,
            clip_grad_value: None,
            plot: false,
            checkpoint_every: None,
            keep_checkpoints: 3,
            keep_best: None,
            init: None,
            freeze: Vec::new(),
            detect_anomaly: false,
            init_strict: true,
            precision: Precision::F32True,
            logger: Loggers {
                csv: true,
                jsonl: true,
                tensorboard: false,
            },
            log_every_n_steps: 50,
            log_histograms: false,
            distributed: None,
            dist_timeout: 300.0,
            bucket_cap_mb: None,
            profile: None,
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

impl std::str::FromStr for Loggers {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let mut out = Loggers::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "csv" => out.csv = true,
                "jsonl" => out.jsonl = true,
                "tensorboard" => out.tensorboard = true,
                other => {
                    return Err(Error::Usage(format!(
                    "unknown logger '{other}'; accepted: csv, jsonl, tensorboard (comma-separated)"
                )))
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Loggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.csv, "csv"),
            (self.jsonl, "jsonl"),
            (self.tensorboard, "tensorboard"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&names.join(","))
    }
}

/// How `--distributed` connects the ranks of a data-parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distributed {
    /// MPI collectives on the CPU (gloo's reduction order).
    Mpi,
    /// NCCL on CUDA tensors, MPI for the rest.
    Nccl,
}

impl std::str::FromStr for Distributed {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "mpi" => Ok(Distributed::Mpi),
            "nccl" => Ok(Distributed::Nccl),
            other => Err(Error::Usage(format!(
                "unknown kind '{other}'; accepted: mpi, nccl"
            ))),
        }
    }
}

impl std::fmt::Display for Distributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distributed::Mpi => "mpi",
            Distributed::Nccl => "nccl",
        })
    }
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

    /// Merges `layers` in order over the defaults; specs are resolved by
    /// `registries`.
    pub fn from_layers(layers: &[Layer], registries: &Registries) -> Result<Self> {
        let known = Self::flag_names();
        let mut merged = Map::new();
        let mut optimizer: Option<Spec> = None;
        for layer in layers {
            let mut sugar: Vec<(&str, f64)> = Vec::new();
            let mut layer_spec: Option<Spec> = None;
            for (key, value) in &layer.flags {
                let key = key.replace('-', "_");
                if !known.contains(&key) {
                    let hint = kiln_tensor::spec::suggest(&key, known.iter().map(String::as_str))
                        .map_or(String::new(), |near| format!(" (did you mean '{near}'?)"));
                    return Err(Error::Usage(format!(
                        "{}: unknown flag '{key}'{hint}; accepted: {}",
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
        let mut cfg: RunConfig = serde_json::from_value(Value::Object(merged)).map_err(|e| {
            let text = e.to_string();
            // A typed setting's error names its flag already.
            if text.starts_with("--") {
                Error::Usage(text)
            } else {
                Error::Usage(format!("{source}: {text}"))
            }
        })?;
        cfg.normalize(registries)?;
        Ok(cfg)
    }

    /// Every spec resolved by its registry (canonical name, every option
    /// with its effective value; a plain `sgd` is the tutorial's SGD), paths
    /// made absolute (so a run resumes from any working directory), and
    /// every value checked.
    fn normalize(&mut self, registries: &Registries) -> Result<()> {
        let flag =
            |name: &'static str| move |e: kiln_tensor::Error| Error::Usage(format!("{name}: {e}"));
        let mut spec: Spec = self.optimizer.parse().map_err(flag("--optimizer"))?;
        let optimizers = &registries.optimizers;
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
        self.param_group = self
            .param_group
            .iter()
            .map(|g| {
                g.parse::<kiln_optim::GroupOverride>()
                    .map(|o| o.to_string())
                    .map_err(|e| Error::Usage(format!("--param-group: {e}")))
            })
            .collect::<Result<_>>()?;
        for selector in &self.freeze {
            selector
                .parse::<kiln_optim::Selector>()
                .map_err(|e| Error::Usage(format!("--freeze: {e}")))?;
        }
        if let Some(text) = &self.loss {
            let spec: Spec = text.parse().map_err(flag("--loss"))?;
            self.loss = Some(
                registries
                    .losses
                    .resolve(&spec)
                    .map_err(flag("--loss"))?
                    .to_string(),
            );
        }
        if let Some(text) = &self.scheduler {
            let spec: Spec = text.parse().map_err(flag("--scheduler"))?;
            self.scheduler = Some(
                registries
                    .schedulers
                    .resolve(&spec)
                    .map_err(flag("--scheduler"))?
                    .to_string(),
            );
        }
        if let Some(text) = &self.model {
            self.model = Some(
                registries
                    .models
                    .resolve_text(text)
                    .map_err(flag("--model"))?,
            );
        }
        if self.data.is_some() && self.data_dir.is_some() {
            return Err(Error::Usage(
                "--data and --data-dir name two data sources; give one".into(),
            ));
        }
        if let Some(text) = &self.data {
            self.data = Some(registries.data.resolve_text(text).map_err(flag("--data"))?);
        }
        self.normalize_transforms(registries)?;
        self.data_dir = self.data_dir.as_deref().map(absolute);
        self.init = self.init.as_deref().map(absolute);
        self.validate()
    }

    /// `--transform` and `--test-transform` resolved (canonical names, every
    /// option with its value) and built once, so that a spec torchvision's
    /// constructor refuses fails here; both only for a source of images.
    fn normalize_transforms(&mut self, registries: &Registries) -> Result<()> {
        let registry = &registries.transforms;
        for (flag, specs) in [
            ("--transform", &mut self.transform),
            ("--test-transform", &mut self.test_transform),
        ] {
            for text in specs.iter_mut() {
                let resolved = text
                    .parse::<Spec>()
                    .and_then(|spec| registry.resolve(&spec))
                    .map_err(|e| Error::Usage(format!("{flag}: {e}")))?;
                *text = resolved.to_string();
            }
            registry
                .pipeline(specs)
                .map_err(|e| Error::Usage(format!("{flag}: {e}")))?;
        }
        let given = [
            ("--transform", self.transform.is_empty()),
            ("--test-transform", self.test_transform.is_empty()),
        ]
        .into_iter()
        .find_map(|(flag, empty)| (!empty).then_some(flag));
        if let Some(flag) = given {
            let source = match &self.data {
                Some(spec) => spec.split(':').next().unwrap_or_default().to_string(),
                None => "idx".to_string(),
            };
            if !registries.data.takes_transforms(&source) {
                return Err(Error::Usage(format!(
                    "{flag} transforms images, but --data {source} has none; use it with --data images:DIR"
                )));
            }
        }
        Ok(())
    }

    /// Checks the values that are the run's own (the Trainer checks its
    /// settings itself: [`crate::TrainerConfig::validate`]), naming the flag.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = [
            ("--batch-size", Some(self.batch_size)),
            ("--top-k", self.top_k),
            ("--threads", self.threads),
            ("--prefetch-factor", Some(self.prefetch_factor)),
            ("--log-every-n-steps", Some(self.log_every_n_steps)),
        ];
        for (flag, value) in at_least_one {
            if value == Some(0) {
                return Err(Error::Usage(format!("{flag} must be at least 1, got 0")));
            }
        }
        if self.workers > crate::data::loader::MAX_WORKERS {
            return Err(Error::Usage(format!(
                "--workers {} is more threads than a loader starts (at most {}); PyTorch suggests at most one per CPU",
                self.workers,
                crate::data::loader::MAX_WORKERS
            )));
        }
        if self.eval_batches.is_some() && self.limit_test_batches.is_some() {
            return Err(Error::Usage(
                "--eval-batches and --limit-test-batches both set the batches per evaluation; give one".into(),
            ));
        }
        if self.eval_batches == Some(0) {
            return Err(Error::Usage(
                "--eval-batches must be at least 1, got 0".into(),
            ));
        }
        if let Some(f) = self.val_fraction {
            crate::data::source::check_fraction("--val-fraction", f)?;
        }
        if !(self.dist_timeout.is_finite() && self.dist_timeout > 0.0) {
            return Err(Error::Usage(format!(
                "--dist-timeout must be a positive number of seconds, got {}",
                self.dist_timeout
            )));
        }
        crate::distributed::BucketConfig::from_cap_mb(self.bucket_cap_mb)?;
        Ok(())
    }

    /// The data source spec: `--data`, or `idx:DIR` for `--data-dir DIR`
    /// or the setup's FashionMNIST.
    pub fn data_spec(&self) -> Result<String> {
        match (&self.data, &self.data_dir) {
            (Some(spec), _) => Ok(spec.clone()),
            (None, Some(dir)) => Ok(format!("idx:path={}", dir.display())),
            (None, None) => Ok(format!(
                "idx:path={}",
                crate::data::source::default_data_dir()?.display()
            )),
        }
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
        let cfg = RunConfig::from_layers(&[], &Registries::default())?;
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
        let cfg = RunConfig::from_layers(&[saved, cli], &Registries::default())?;
        assert_eq!(cfg.epochs, 3);
        assert!(
            cfg.optimizer.starts_with("sgd:lr=0.01,momentum=0.5,"),
            "{}",
            cfg.optimizer
        );
        // A spec that names lr in the same layer wins over --lr.
        let cli = layer("cli", json!({"optimizer": "AdamW:lr=0.3", "lr": 0.01}));
        let cfg = RunConfig::from_layers(&[cli], &Registries::default())?;
        assert!(
            cfg.optimizer.starts_with("adamw:lr=0.3,"),
            "{}",
            cfg.optimizer
        );
        // PyTorch's class name is the same optimizer: the tutorial's SGD.
        let cfg = RunConfig::from_layers(
            &[layer("cli", json!({"optimizer": "SGD"}))],
            &Registries::default(),
        )?;
        assert!(
            cfg.optimizer.starts_with("sgd:lr=0.001,momentum=0.9,"),
            "{}",
            cfg.optimizer
        );
        // --momentum where the optimizer has none is an error naming the options.
        let cli = layer("cli", json!({"optimizer": "adam", "momentum": 0.2}));
        let err = RunConfig::from_layers(&[cli], &Registries::default())
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("momentum") && e.contains("betas")));
        Ok(())
    }

    #[test]
    fn unknown_flags_and_bad_values_are_named() {
        let err = |v: Value| {
            RunConfig::from_layers(&[layer("f.json", v)], &Registries::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(json!({"epoch": 1}))
            .starts_with("f.json: unknown flag 'epoch' (did you mean 'epochs'?); accepted:"));
        assert!(err(json!({"zzzz": 1})).starts_with("f.json: unknown flag 'zzzz'; accepted:"));
        assert!(err(json!({"batch-size": 0})).contains("--batch-size must be at least 1"));
        assert!(err(json!({"val_fraction": 1.5})).contains("--val-fraction"));
        assert!(err(json!({"epochs": "x"})).starts_with("f.json: invalid type"));
    }

    #[test]
    fn transforms_are_resolved_and_need_a_source_of_images() -> Result<()> {
        let cfg = RunConfig::from_layers(
            &[layer(
                "cli",
                json!({"data": "images:/d", "transform": ["RandomHorizontalFlip", "center-crop:size=3"],
                       "test_transform": ["normalize:mean=0.5,std=0.5"]}),
            )],
            &Registries::default(),
        )?;
        assert_eq!(
            cfg.transform,
            ["random-horizontal-flip:p=0.5", "center-crop:size=3"]
        );
        assert_eq!(
            cfg.test_transform,
            ["normalize:mean=0.5,std=0.5,inplace=false"]
        );
        let err = |v: Value| {
            RunConfig::from_layers(&[layer("cli", v)], &Registries::default())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            err(json!({"transform": ["random-horizontal-flip"]})),
            "--transform transforms images, but --data idx has none; use it with --data images:DIR"
        );
        assert!(
            err(json!({"data": "images:/d", "test_transform": ["centre-crop:size=2"]}))
                .starts_with(
                "--test-transform: unknown transform 'centre-crop' (did you mean 'center-crop'?)"
            )
        );
        // What torchvision's constructor refuses is refused up front too.
        assert!(
            err(json!({"data": "images:/d", "transform": ["random-vertical-flip:p=3"]}))
                .starts_with("--transform: random-vertical-flip: `p` should be")
        );
        Ok(())
    }
}
