//! The Trainer's settings.
use crate::{Error, Result};
use kiln_tensor::amp::Precision;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

/// Where and how often to write checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// The run directory (`checkpoints/` is created inside).
    pub run_dir: PathBuf,
    /// Also write one every this many optimizer steps (always at epoch ends).
    pub every_steps: Option<usize>,
    /// How many of the newest checkpoints to keep.
    pub keep_last: usize,
    /// Also keep the best checkpoint by this evaluation metric.
    pub keep_best: Option<(String, Mode)>,
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
    /// Checkpointing, if any.
    pub checkpoint: Option<CheckpointConfig>,
    /// Autocast around forward and loss, and a gradient scaler for
    /// `16-mixed` (Lightning's precision names).
    #[serde(with = "precision_name")]
    pub precision: Precision,
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
            checkpoint: None,
            precision: Precision::F32True,
        }
    }
}

impl TrainerConfig {
    /// One batch of training and one of evaluation, to check a setup quickly.
    pub fn dry_run(mut self) -> Self {
        self.epochs = 1;
        self.limit_train_batches = Some(1);
        self.limit_eval_batches = Some(1);
        self
    }

    /// Rejects settings that cannot work, naming them.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if self.accumulate_grad_batches == 0 {
            return bad("accumulate_grad_batches must be at least 1");
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1");
        }
        if self.eval_every_steps == Some(0) {
            return bad("eval_every_steps must be at least 1");
        }
        if let Some(c) = &self.checkpoint {
            if c.every_steps == Some(0) {
                return bad("checkpoint every_steps must be at least 1");
            }
            if c.keep_last == 0 {
                return bad(
                    "keep_last must be at least 1 (the newest checkpoint is what resume uses)",
                );
            }
        }
        if self
            .early_stopping
            .as_ref()
            .is_some_and(|e| e.patience == 0)
        {
            return bad("early stopping patience must be at least 1");
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(self.clip_grad_norm) || !positive(self.clip_grad_value) {
            return bad("gradient clipping thresholds must be finite and positive");
        }
        Ok(())
    }

    /// Every metric this configuration monitors, with what monitors it
    /// (`--early-stopping`, the plateau scheduler, `--keep-best`), for
    /// checking before training.
    pub fn monitored(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        out.extend(
            self.early_stopping
                .as_ref()
                .map(|e| ("--early-stopping", e.monitor.as_str())),
        );
        out.extend(
            self.monitor
                .as_deref()
                .map(|m| ("the plateau scheduler", m)),
        );
        out.extend(
            self.checkpoint
                .as_ref()
                .and_then(|c| c.keep_best.as_ref())
                .map(|(m, _)| ("--keep-best", m.as_str())),
        );
        out
    }
}
