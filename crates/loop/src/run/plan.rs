//! The run plan: a run's [`RunConfig`] with its seed, turned once into the
//! typed settings the parts of a run use — the Trainer's configuration and
//! the scheduler's spec and interval. Nothing after it parses a setting.
use super::RunConfig;
use crate::trainer::{Averaging, CheckpointConfig, Interval, Mode, TrainerConfig};
use crate::{Error, Result};

/// What a run will do, decided before anything is built.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The settings as `config.json` records them (specs resolved, the seed in).
    pub config: RunConfig,
    /// `torch.manual_seed` of the run.
    pub seed: u64,
    /// The Trainer's settings (checked).
    pub trainer: TrainerConfig,
    /// The lr scheduler's resolved spec and when it steps.
    pub scheduler: Option<(String, Interval)>,
}

impl RunPlan {
    /// The plan of `config` with `seed`; the Trainer's checks run here,
    /// their errors naming the flag.
    pub fn new(mut config: RunConfig, seed: u64) -> Result<Self> {
        config.seed = Some(seed);
        let mut trainer = TrainerConfig {
            epochs: config.epochs,
            max_steps: config.max_steps,
            limit_train_batches: config.limit_train_batches,
            limit_eval_batches: config.eval_batches.or(config.limit_test_batches),
            accumulate_grad_batches: config.accumulate_grad_batches,
            clip_grad_norm: config.clip_grad_norm,
            clip_grad_value: config.clip_grad_value,
            eval_every_steps: config.eval_every_steps,
            eval_every_epochs: config.eval_every_epochs,
            early_stopping: config.early_stopping.clone(),
            precision: config.precision,
            checkpoint: CheckpointConfig {
                every_steps: config.checkpoint_every,
                keep_last: config.keep_checkpoints,
                keep_best: config
                    .keep_best
                    .as_ref()
                    .map(|m| (m.clone(), Mode::for_metric(m))),
            },
            ..TrainerConfig::default()
        };
        trainer.averaging = match (config.ema, &config.swa) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "--ema and --swa average the weights in two ways; give one".into(),
                ))
            }
            (Some(decay), None) => Some(Averaging::Ema { decay }),
            (None, Some(swa)) => Some(Averaging::Swa(swa.clone())),
            (None, None) => None,
        };
        if config.dry_run {
            trainer = trainer.dry_run();
        }
        trainer.validate().map_err(flag_error)?;
        let scheduler = config.scheduler.as_ref().map(|spec| {
            // The spec is resolved: its name is canonical (`OneCycleLR` is
            // `onecycle`). Schedules written per optimizer step (onecycle,
            // cyclic, warmup-cosine, a sequential holding one) step so.
            let per_step = spec
                .parse::<kiln_tensor::spec::Spec>()
                .is_ok_and(|s| kiln_optim::scheduler::steps_per_batch(&s));
            let interval = config.scheduler_interval.unwrap_or(if per_step {
                Interval::Step
            } else {
                Interval::Epoch
            });
            (spec.clone(), interval)
        });
        Ok(Self {
            config,
            seed,
            trainer,
            scheduler,
        })
    }

    /// The number of scheduler steps a run from the start makes with
    /// `batches_per_epoch` training batches per epoch: what a scheduler
    /// with no horizon of its own (`onecycle`, `cosine`) spans.
    pub fn scheduler_horizon(&self, batches_per_epoch: usize) -> Option<usize> {
        self.scheduler.as_ref().map(|(_, interval)| match interval {
            Interval::Step => self.trainer.total_steps(batches_per_epoch),
            Interval::Epoch => self.trainer.epochs,
        })
    }
}

/// The flag that sets a Trainer setting.
pub fn flag_of(setting: &str) -> String {
    match setting {
        "limit_eval_batches" => "--limit-test-batches".into(),
        "monitor" => "--scheduler (its monitored metric)".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

/// A Trainer's [`Error::Setting`] as a usage error naming the flag; other
/// errors unchanged.
pub fn flag_error(err: Error) -> Error {
    match err {
        Error::Setting { setting, message } => {
            Error::Usage(format!("{} {message}", flag_of(setting)))
        }
        other => other,
    }
}
