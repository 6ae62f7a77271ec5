//! The Trainer's settings.
use crate::{Error, Result};
use kiln_tensor::amp::Precision;
use serde::{Deserialize, Serialize};

/// Whether a smaller or a larger value of a monitored metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Mode {
    /// The natural direction for a metric name: `min` for losses, `max` otherwise.
    pub fn for_metric(name: &str) -> Self {
        if name.ends_with("loss") {
            Mode::Min
        } else {
            Mode::Max
        }
    }

    /// Whether `value` improves on `best` by more than `min_delta`.
    pub fn improves(self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => value.is_finite(),
            Some(best) => match self {
                Mode::Min => value < best - min_delta,
                Mode::Max => value > best + min_delta,
            },
        }
    }
}

/// When the lr scheduler steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// After every optimizer step.
    Step,
    /// After every epoch (after its evaluation; ReduceLROnPlateau gets the
    /// monitored metric).
    Epoch,
}

/// Stop when a monitored evaluation metric has not improved by more than
/// `min_delta` for `patience` evaluations (Lightning's `EarlyStopping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Metric name: `test_loss`, `val_accuracy`, `test_top5_accuracy`…
    pub monitor: String,
    /// Direction of improvement.
    pub mode: Mode,
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl std::str::FromStr for EarlyStopping {
    type Err = Error;

    /// `METRIC[:patience=3,min_delta=0,mode=min|max]`; the mode defaults to
    /// `min` for losses and `max` otherwise ([`Mode::for_metric`]).
    fn from_str(text: &str) -> Result<Self> {
        let bad = |e: kiln_tensor::Error| Error::Usage(e.to_string());
        let mut spec: kiln_tensor::spec::Spec = text.parse().map_err(bad)?;
        let mode = match spec
            .choice("mode", &["min", "max"])
            .map_err(bad)?
            .as_deref()
        {
            Some("min") => Mode::Min,
            Some(_) => Mode::Max,
            None => Mode::for_metric(&spec.name),
        };
        let patience = spec.i64("patience").map_err(bad)?.unwrap_or(3);
        let min_delta = spec.f64("min_delta").map_err(bad)?.unwrap_or(0.0);
        spec.finish(&["patience", "min_delta", "mode"])
            .map_err(bad)?;
        let patience = usize::try_from(patience)
            .map_err(|_| Error::Usage(format!("patience must be at least 1, got {patience}")))?;
        Ok(EarlyStopping {
            monitor: spec.name.clone(),
            mode,
            patience,
            min_delta,
        })
    }
}

impl std::fmt::Display for EarlyStopping {
    /// The spec that parses back to the same value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:patience={},min_delta={:?},mode={}",
            self.monitor,
            self.patience,
            self.min_delta,
            match self.mode {
                Mode::Min => "min",
                Mode::Max => "max",
            }
        )
    }
}

/// Weight averaging (`torch.optim.swa_utils`): evaluations, the
/// checkpoints and the run's `averaged.safetensors` hold the averaged
/// weights next to the trained ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Averaging {
    /// `AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
    /// use_buffers=True)` updated after every optimizer step.
    Ema {
        /// The decay, in [0, 1].
        decay: f64,
    },
    /// `AveragedModel(model)` updated at the end of every epoch from
    /// `start_epoch` on, with `SWALR` stepping the lr instead of the run's
    /// scheduler in those epochs (PyTorch's SWA recipe).
    Swa(Swa),
}

/// Stochastic Weight Averaging: `START[:lr=X,anneal_epochs=10,anneal_strategy=cos]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Swa {
    /// The first epoch (1-based) whose weights are averaged.
    pub start_epoch: usize,
    /// `SWALR`'s `swa_lr`, the lr annealed to (required, as in PyTorch).
    pub lr: f64,
    /// `SWALR`'s `anneal_epochs` (default 10).
    pub anneal_epochs: i64,
    /// `SWALR`'s `anneal_strategy` (default `cos`).
    pub anneal_strategy: kiln_optim::scheduler::AnnealStrategy,
}

impl std::str::FromStr for Swa {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |e: kiln_tensor::Error| Error::Usage(format!("'{text}': {e}"));
        let mut spec: kiln_tensor::spec::Spec = text.parse().map_err(bad)?;
        let start_epoch = spec.name.parse::<usize>().map_err(|_| {
            Error::Usage(format!(
                "'{text}': expected START:lr=X with START the first epoch to average, e.g. 5:lr=0.05"
            ))
        })?;
        let lr = spec.f64("lr").map_err(bad)?.ok_or_else(|| {
            Error::Usage(format!(
                "'{text}': give SWALR's lr, the lr annealed to, e.g. {start_epoch}:lr=0.05"
            ))
        })?;
        let anneal_epochs = spec.i64("anneal_epochs").map_err(bad)?.unwrap_or(10);
        let anneal_strategy = match spec
            .choice("anneal_strategy", &["cos", "linear"])
            .map_err(bad)?
            .as_deref()
        {
            Some("linear") => kiln_optim::scheduler::AnnealStrategy::Linear,
            _ => kiln_optim::scheduler::AnnealStrategy::Cos,
        };
        spec.finish(&["lr", "anneal_epochs", "anneal_strategy"])
            .map_err(bad)?;
        Ok(Swa {
            start_epoch,
            lr,
            anneal_epochs,
            anneal_strategy,
        })
    }
}

impl std::fmt::Display for Swa {
    /// The spec that parses back to the same value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:lr={:?},anneal_epochs={},anneal_strategy={}",
            self.start_epoch,
            self.lr,
            self.anneal_epochs,
            self.anneal_strategy.as_str()
        )
    }
}

impl From<Swa> for String {
    fn from(swa: Swa) -> String {
        swa.to_string()
    }
}

impl TryFrom<String> for Swa {
    type Error = Error;
    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

/// How often to write checkpoints and which to keep (where: the
/// directory given to [`crate::Trainer::checkpoint_dir`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// Also write one every this many optimizer steps (always at epoch ends).
    pub every_steps: Option<usize>,
    /// How many of the newest checkpoints to keep.
    pub keep_last: usize,
    /// Also keep the best checkpoint by this evaluation metric.
    pub keep_best: Option<(String, Mode)>,
}

impl Default for CheckpointConfig {
    /// At epoch ends, the newest 3 kept.
    fn default() -> Self {
        Self {
            every_steps: None,
            keep_last: 3,
            keep_best: None,
        }
    }
}

/// The Trainer's settings; `Default` is the tutorial's job (5 epochs, a log
/// line every 100 batches, evaluation after every epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Train on at most this many batches per epoch.
    pub limit_train_batches: Option<usize>,
    /// Evaluate on at most this many batches of each evaluation set.
    pub limit_eval_batches: Option<usize>,
    /// Batches whose gradients are summed per optimizer step (1 = none);
    /// each batch's loss is divided by this before `backward`.
    pub accumulate_grad_batches: usize,
    /// Report the training loss every this many batches.
    pub log_every: usize,
    /// Evaluate after every this many epochs (0 = never at epoch ends).
    pub eval_every_epochs: usize,
    /// Also evaluate every this many optimizer steps.
    pub eval_every_steps: Option<usize>,
    /// Early stopping, if any.
    pub early_stopping: Option<EarlyStopping>,
    /// The metric ReduceLROnPlateau follows (default: early stopping's, else
    /// the first evaluation set's loss).
    pub monitor: Option<String>,
    /// Stop at the first NaN or infinite training loss (without stepping on it).
    pub stop_on_nonfinite: bool,
    /// Clip each gradient element to [-v, v] before stepping (`clip_grad_value_`).
    pub clip_grad_value: Option<f64>,
    /// Rescale gradients so their total 2-norm is at most this (`clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// When to write checkpoints and which to keep (written when the
    /// Trainer has a checkpoint directory).
    pub checkpoint: CheckpointConfig,
    /// Autocast around forward and loss, and a gradient scaler for
    /// `16-mixed` (Lightning's precision names).
    #[serde(with = "precision_name")]
    pub precision: Precision,
    /// Weight averaging (EMA or SWA), if any.
    #[serde(default)]
    pub averaging: Option<Averaging>,
}

/// A precision as its name in JSON.
mod precision_name {
    use kiln_tensor::amp::Precision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            max_steps: None,
            limit_train_batches: None,
            limit_eval_batches: None,
            accumulate_grad_batches: 1,
            log_every: 100,
            eval_every_epochs: 1,
            eval_every_steps: None,
            early_stopping: None,
            monitor: None,
            stop_on_nonfinite: true,
            clip_grad_value: None,
            clip_grad_norm: None,
            checkpoint: CheckpointConfig::default(),
            precision: Precision::F32True,
            averaging: None,
        }
    }
}

impl TrainerConfig {
    /// One batch of training and one of evaluation, to check a setup
    /// quickly (SWA averaging from that one epoch, so its path runs too).
    pub fn dry_run(mut self) -> Self {
        self.epochs = 1;
        if let Some(Averaging::Swa(swa)) = &mut self.averaging {
            swa.start_epoch = 1;
        }
        self.limit_train_batches = Some(1);
        self.limit_eval_batches = Some(1);
        self
    }

    /// Rejects settings that cannot work, naming them ([`Error::Setting`]
    /// with the field's name): the one place these conditions are written.
    pub fn validate(&self) -> Result<()> {
        let at_least_one = [
            ("epochs", Some(self.epochs)),
            ("max_steps", self.max_steps),
            (
                "accumulate_grad_batches",
                Some(self.accumulate_grad_batches),
            ),
            ("log_every", Some(self.log_every)),
            ("eval_every_steps", self.eval_every_steps),
            ("checkpoint_every", self.checkpoint.every_steps),
            ("keep_checkpoints", Some(self.checkpoint.keep_last)),
            ("limit_train_batches", self.limit_train_batches),
            ("limit_eval_batches", self.limit_eval_batches),
            (
                "early_stopping",
                self.early_stopping.as_ref().map(|e| e.patience),
            ),
        ];
        for (setting, value) in at_least_one {
            if value == Some(0) {
                let what = if setting == "early_stopping" {
                    "patience must be at least 1, got 0"
                } else {
                    "must be at least 1, got 0"
                };
                return Err(Error::setting(setting, what));
            }
        }
        for (setting, value) in [
            ("clip_grad_norm", self.clip_grad_norm),
            ("clip_grad_value", self.clip_grad_value),
        ] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(Error::setting(
                    setting,
                    format!("must be a finite, positive clipping threshold, got {v}"),
                ));
            }
        }
        match &self.averaging {
            Some(Averaging::Ema { decay }) if !(0.0..=1.0).contains(decay) => {
                return Err(Error::setting(
                    "ema",
                    format!("must be a decay in [0, 1] (0.999 is usual), got {decay}"),
                ));
            }
            Some(Averaging::Swa(swa)) if swa.start_epoch == 0 || swa.start_epoch > self.epochs => {
                return Err(Error::setting(
                    "swa",
                    format!(
                        "starts at epoch {}, which this run of {} epochs does not have (epochs count from 1)",
                        swa.start_epoch, self.epochs
                    ),
                ));
            }
            Some(Averaging::Swa(swa)) if swa.anneal_epochs < 0 || !swa.lr.is_finite() => {
                return Err(Error::setting(
                    "swa",
                    format!(
                        "needs a finite lr and anneal_epochs >= 0, got lr={} anneal_epochs={}",
                        swa.lr, swa.anneal_epochs
                    ),
                ));
            }
            _ => {}
        }
        if let Some(e) = self
            .early_stopping
            .as_ref()
            .filter(|e| !e.min_delta.is_finite())
        {
            return Err(Error::setting(
                "early_stopping",
                format!("min_delta must be a finite number, got {}", e.min_delta),
            ));
        }
        Ok(())
    }

    /// The optimizer steps a fit makes from the start with
    /// `batches_per_epoch` batches in each epoch: what a per-step lr
    /// scheduler's horizon is.
    pub fn total_steps(&self, batches_per_epoch: usize) -> usize {
        let per_epoch = batches_per_epoch
            .min(self.limit_train_batches.unwrap_or(usize::MAX))
            .div_ceil(self.accumulate_grad_batches.max(1));
        let steps = self.epochs.saturating_mul(per_epoch);
        self.max_steps.map_or(steps, |m| m.min(steps))
    }

    /// The metric a metric-driven lr scheduler (ReduceLROnPlateau) follows:
    /// `monitor`, else early stopping's, else the first evaluation set's
    /// loss (`val_loss` with a validation split, else `test_loss`).
    pub fn plateau_monitor(&self, eval_sets: &[&str]) -> String {
        self.monitor
            .clone()
            .or_else(|| self.early_stopping.as_ref().map(|e| e.monitor.clone()))
            .unwrap_or_else(|| format!("{}_loss", eval_sets.first().copied().unwrap_or("test")))
    }

    /// Every metric this configuration monitors, with the setting that
    /// monitors it (`early_stopping`, `monitor` for a metric-driven lr
    /// scheduler, `keep_best`), for checking before training.
    pub fn monitored(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        out.extend(
            self.early_stopping
                .as_ref()
                .map(|e| ("early_stopping", e.monitor.as_str())),
        );
        out.extend(self.monitor.as_deref().map(|m| ("monitor", m)));
        out.extend(
            self.checkpoint
                .keep_best
                .as_ref()
                .map(|(m, _)| ("keep_best", m.as_str())),
        );
        out
    }
}
