//! Every component of a run, built from its [`RunConfig`] and checked
//! against the data before the first step.
use super::RunConfig;
use crate::checkpoint;
use crate::data::source::{self, Splits, Task};
use crate::models::registry::{self as model_registry, ModelData};
use crate::trainer::{CheckpointConfig, EarlyStopping, Interval, Mode, TrainerConfig};
use crate::{DataLoader, Dataset, Error, Model, Result, Trainer};
use kiln_losses::Loss;
use kiln_optim::scheduler::LrScheduler;
use kiln_optim::Optimizer;
use kiln_tensor::device::{set_threads, DeviceSpec};
use kiln_tensor::spec::Spec;
use kiln_tensor::{Device, Kind, Tensor};
use std::path::Path;

/// The data, model, loss and optimizer of a run.
pub struct Components {
    /// Where training runs.
    pub device: Device,
    /// Train, validation and test sets, on `device`.
    pub splits: RunData,
    /// The network.
    pub model: Box<dyn Model>,
    /// The model's spec, resolved (the data's default when none was given).
    pub model_spec: String,
    /// The loss (adapted to the data's targets).
    pub loss: Box<dyn Loss>,
    /// The loss's spec, resolved (the data's default when none was given).
    pub loss_spec: String,
    /// The optimizer over the model's parameters.
    pub optimizer: Box<dyn Optimizer>,
}

/// The datasets of a run.
#[derive(Debug)]
pub struct RunData {
    /// Training samples (without the validation split).
    pub train: Dataset,
    /// The validation split of the training samples (`--val-fraction`).
    pub val: Option<Dataset>,
    /// Test samples.
    pub test: Dataset,
    /// What the targets ask for.
    pub task: Task,
}

fn usage(flag: &str, err: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{flag}: {err}"))
}

impl Components {
    /// Builds everything `config` names, in PyTorch's order of random
    /// draws: the data (no draws; the validation split uses its own
    /// generator), `torch.manual_seed(seed)`, the model's initialisation,
    /// `--init` weights, the loss and the optimizer.
    pub fn build(config: &RunConfig, seed: u64) -> Result<Self> {
        let device = config
            .device
            .parse::<DeviceSpec>()
            .map_err(|e| usage("--device", e))?
            .resolve()?;
        if let Some(threads) = config.threads {
            set_threads(threads).map_err(|e| usage("--threads", e))?;
        }
        // Before the data and the model: their blocks come from the arenas.
        kiln_tensor::memory::install_from_env().map_err(|e| Error::Usage(e.to_string()))?;
        if config.deterministic {
            kiln_tensor::device::set_deterministic(true)?;
        }
        // A precision this device cannot run is refused before anything loads.
        config
            .precision_value()?
            .check(device)
            .map_err(|e| usage("--precision", e))?;
        let splits = load_data(config, seed, device)?;
        kiln_tensor::rng::manual_seed(seed);
        let (model, model_spec) = build_model(config, &splits, device)?;
        if let Some(init) = &config.init {
            checkpoint::load_weights(model.as_ref(), init)?;
        }
        let mut model = model;
        let (loss, loss_spec) =
            build_loss(config.loss.as_deref(), splits.task, model.default_loss())?;
        let optimizer = build_optimizer(&config.optimizer, model.as_ref())?;
        probe(
            model.as_mut(),
            loss.as_ref(),
            optimizer.as_ref(),
            &splits,
            &model_spec,
        )?;
        let precision = config.precision_value()?;
        if let Some(scaler) = kiln_optim::amp::GradScaler::for_precision(precision, device)
            .map_err(|e| usage("--precision", e))?
        {
            scaler.check_optimizer(optimizer.as_ref()).map_err(|e| {
                Error::Usage(format!(
                    "--precision {precision} scales gradients, which --optimizer {} does not allow: {e}",
                    optimizer.name()
                ))
            })?;
        }
        Ok(Self {
            device,
            splits,
            model,
            model_spec,
            loss,
            loss_spec,
            optimizer,
        })
    }
}

/// The run's datasets: loaded, cut to `--train-samples`/`--test-samples`,
/// the validation split taken, moved to `device`.
fn load_data(config: &RunConfig, seed: u64, device: Device) -> Result<RunData> {
    let Splits { train, test, task } =
        source::load(config.data.as_ref(), config.data_dir.as_deref(), seed)?;
    let cut = |set: Dataset, n: Option<usize>| match n {
        Some(n) => set.take(n),
        None => Ok(set),
    };
    let train = cut(train, config.train_samples)?;
    let test = cut(test, config.test_samples)?;
    if train.is_empty() {
        return Err(Error::Usage(
            "the training set is empty (--train-samples 0?)".into(),
        ));
    }
    let (train, val) = match config.val_fraction {
        Some(fraction) => {
            let (train, val) = train.random_split(fraction, seed)?;
            (train, Some(val))
        }
        None => (train, None),
    };
    Ok(RunData {
        train: train.to_device(device)?,
        val: val.map(|v| v.to_device(device)).transpose()?,
        test: test.to_device(device)?,
        task,
    })
}

/// The network `--model` names, built for the data (default: the
/// quickstart MLP for class labels, a standardising `mlp:hidden=64;64` for
/// regression), and its resolved spec.
pub fn build_model(
    config: &RunConfig,
    data: &RunData,
    device: Device,
) -> Result<(Box<dyn Model>, String)> {
    let registry = crate::models::models();
    let text = config
        .model
        .as_deref()
        .unwrap_or(model_registry::default_spec(data.task));
    let spec = registry
        .resolve_text(text)
        .map_err(|e| usage("--model", e))?;
    let info = ModelData {
        train: &data.train,
        task: data.task,
        device,
    };
    // A spec the network refuses (sizes, probabilities) is a usage error.
    let model = registry.build(&spec, &info).map_err(|e| match e {
        Error::Tensor(kiln_tensor::Error::InvalidArgument(m)) | Error::InvalidArgument(m) => {
            usage("--model", m)
        }
        other => other,
    })?;
    Ok((model, spec))
}

/// Class labels as one-hot float vectors, for a regression loss trained on
/// a classification set.
struct OneHot {
    loss: Box<dyn Loss>,
    classes: i64,
}

impl Loss for OneHot {
    fn forward(&self, input: &Tensor, target: &Tensor) -> kiln_losses::Result<Tensor> {
        let one_hot = target.f_one_hot(self.classes)?.f_to_kind(input.kind())?;
        self.loss.forward(input, &one_hot)
    }

    fn name(&self) -> &str {
        self.loss.name()
    }

    fn targets(&self) -> kiln_losses::Targets {
        // Class indices go in; the wrapped loss sees one-hot values.
        kiln_losses::Targets::new(kiln_losses::TargetKind::ClassIndices {
            probabilities: false,
        })
    }
}

/// The loss `spec` names (default: the model's own, `model_default`, else
/// cross-entropy for class labels, mse for regression), adapted to the
/// data's targets, and its resolved spec; or an error naming the flag and
/// the losses that fit.
pub fn build_loss(
    spec: Option<&str>,
    task: Task,
    model_default: Option<&str>,
) -> Result<(Box<dyn Loss>, String)> {
    let default = model_default.unwrap_or(match task {
        Task::Classify { .. } => "cross-entropy",
        Task::Regress { .. } => "mse",
    });
    let registry = kiln_losses::registry();
    let text = spec.unwrap_or(default);
    let resolved = text
        .parse::<Spec>()
        .and_then(|s| registry.resolve(&s))
        .map_err(|e| usage("--loss", e))?
        .to_string();
    let loss = registry.build(&resolved).map_err(|e| usage("--loss", e))?;
    let name = loss.name().to_string();
    let targets = loss.targets();
    match task {
        Task::Classify { classes } if targets.one_hot_from_classes() => {
            Ok((Box::new(OneHot { loss, classes }), resolved))
        }
        Task::Classify { .. } if !targets.takes_class_indices() || !targets.is_plain() => {
            Err(Error::Usage(format!(
                "--loss {name} takes {}, but this data has class labels; use cross-entropy or nll (or mse, l1, huber, smooth-l1, which compare with one-hot labels)",
                targets.kind
            )))
        }
        Task::Regress { .. } if !targets.takes_values() || !targets.is_plain() => {
            Err(Error::Usage(format!(
                "--loss {name} takes {}, but this data has float regression targets; use mse, l1, huber or smooth-l1",
                targets.kind
            )))
        }
        _ => Ok((loss, resolved)),
    }
}

/// One forward and backward pass on the first training sample, in eval mode
/// (no random draws, no statistics updated), before anything is written:
/// the model must accept the data's input shape and give the outputs the
/// targets need, the loss must accept both, and the optimizer must be able
/// to step on the gradients (SparseAdam: sparse ones). Errors name the
/// shapes and the flag. The gradients are cleared afterwards.
fn probe(
    model: &mut dyn Model,
    loss: &dyn Loss,
    optimizer: &dyn Optimizer,
    data: &RunData,
    spec: &str,
) -> Result<()> {
    let stored = data.train.inputs.f_narrow(0, 0, 1)?;
    let inputs = data.train.model_inputs(&stored)?;
    let targets = data.train.targets.f_narrow(0, 0, 1)?;
    let was_training = model.is_training();
    model.set_training(false)?;
    let checked = probe_eval(model, loss, optimizer, data.task, &inputs, &targets, spec);
    for p in model.parameters()? {
        kiln_tensor::ops::clear_grad(&p.tensor)?;
    }
    model.set_training(was_training)?;
    checked
}

fn probe_eval(
    model: &dyn Model,
    loss: &dyn Loss,
    optimizer: &dyn Optimizer,
    task: Task,
    inputs: &Tensor,
    targets: &Tensor,
    spec: &str,
) -> Result<()> {
    let output = model.forward(inputs).map_err(|e| match e {
        // The module file itself is at fault (it returns no tensor…).
        Error::Data { .. } => e,
        other => {
            let reason = other.to_string();
            let reason = reason
                .strip_prefix("model forward failed: ")
                .unwrap_or(&reason)
                .to_string();
            Error::Usage(format!(
                "--model {spec}: the model does not accept the data's inputs: one sample is {:?} {} ({reason})",
                inputs.size(),
                kiln_tensor::amp::dtype_name(inputs.kind())
            ))
        }
    })?;
    let out = output.size();
    let (wanted, what) = match task {
        Task::Classify { classes } => (classes, format!("the data has {classes} classes")),
        Task::Regress { outputs } => (
            outputs,
            format!("the targets are {outputs} value(s) per sample"),
        ),
    };
    if out.len() != 2 || out[1] != wanted {
        return Err(Error::Usage(format!(
            "--model {spec}: the model's output for one sample of shape {:?} has shape {out:?}, but {what}: it must be [1, {wanted}]",
            inputs.size()
        )));
    }
    let value = loss
        .forward(&output.f_to_kind(Kind::Float)?, targets)
        .map_err(|e| Error::Usage(format!("--loss {}: {e}", loss.name())))?;
    if value.requires_grad() {
        value.f_backward()?;
        optimizer
            .check_gradients()
            .map_err(|e| Error::Usage(format!("--optimizer {}: {e}", optimizer.name())))?;
    }
    Ok(())
}

/// The optimizer `spec` names over the model's parameters; a non-finite lr
/// is refused (PyTorch lets NaN through; a run with it can only produce NaN).
fn build_optimizer(spec: &str, model: &dyn Model) -> Result<Box<dyn Optimizer>> {
    let optimizer = kiln_optim::optimizers()
        .build(spec, model.parameters()?)
        .map_err(|e| usage("--optimizer", e))?;
    for group in 0..optimizer.num_groups() {
        if let Some(lr) = optimizer.lr(group).filter(|lr| !lr.is_finite()) {
            return Err(Error::Usage(format!(
                "--optimizer: Invalid learning rate: {lr} (it must be a finite number)"
            )));
        }
    }
    Ok(optimizer)
}

/// `--early-stopping METRIC[:patience=3,min_delta=0,mode=min|max]`.
pub fn early_stopping(spec: &str) -> Result<EarlyStopping> {
    let bad = |e: kiln_tensor::Error| usage("--early-stopping", e);
    let mut spec: Spec = spec.parse().map_err(bad)?;
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
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| Error::Usage("--early-stopping: patience must be at least 1".into()))?;
    Ok(EarlyStopping {
        monitor: spec.name.clone(),
        mode,
        patience,
        min_delta,
    })
}

/// The Trainer's settings from the run's (checkpointing is set by the caller).
pub(crate) fn trainer_config(config: &RunConfig) -> Result<TrainerConfig> {
    let mut cfg = TrainerConfig {
        epochs: config.epochs,
        max_steps: config.max_steps,
        limit_train_batches: config.limit_train_batches,
        limit_eval_batches: config.limit_test_batches,
        accumulate_grad_batches: config.accumulate_grad_batches,
        clip_grad_norm: config.clip_grad_norm,
        clip_grad_value: config.clip_grad_value,
        eval_every_steps: config.eval_every_steps,
        eval_every_epochs: config.eval_every_epochs,
        early_stopping: config
            .early_stopping
            .as_deref()
            .map(early_stopping)
            .transpose()?,
        precision: config.precision_value()?,
        ..TrainerConfig::default()
    };
    // With a validation split, plateau schedulers follow the validation loss.
    if config.val_fraction.is_some() && cfg.early_stopping.is_none() {
        cfg.monitor = Some(crate::loggers::metrics_log::VAL_LOSS.into());
    }
    if config.dry_run {
        cfg = cfg.dry_run();
    }
    cfg.validate().map_err(|e| Error::Usage(e.to_string()))?;
    Ok(cfg)
}

/// Where and how the run keeps checkpoints.
pub(crate) fn checkpoint_config(config: &RunConfig, run_dir: &Path) -> CheckpointConfig {
    CheckpointConfig {
        run_dir: run_dir.to_path_buf(),
        every_steps: config.checkpoint_every,
        keep_last: config.keep_checkpoints,
        keep_best: config
            .keep_best
            .as_ref()
            .map(|m| (m.clone(), Mode::for_metric(m))),
    }
}

/// The evaluation metrics: loss and accuracy (and top-K) for classes, the
/// loss alone for regression.
pub(crate) fn metrics<'a>(
    trainer: Trainer<'a>,
    config: &RunConfig,
    data: &RunData,
) -> Result<Trainer<'a>> {
    Ok(match (data.task, config.top_k) {
        (Task::Regress { .. }, _) => {
            trainer.metrics(vec![Box::new(crate::metrics::MeanLoss::default())])
        }
        (Task::Classify { .. }, Some(k)) => trainer.metric(crate::metrics::TopK::new(k)),
        (Task::Classify { .. }, None) => trainer,
    })
}

/// The lr scheduler `--scheduler` names, when it steps (every step for
/// onecycle and cyclic unless `--scheduler-interval` says otherwise) and the
/// number of scheduler steps the run will make (its default horizon).
pub(crate) fn scheduler<'a>(
    config: &RunConfig,
    optimizer: &mut dyn Optimizer,
    train: &DataLoader<'_>,
) -> Result<Option<(Box<dyn LrScheduler + 'a>, Interval)>> {
    let Some(text) = &config.scheduler else {
        return Ok(None);
    };
    // The spec is resolved: its name is canonical (`OneCycleLR` is `onecycle`).
    let spec: Spec = text.parse().map_err(|e| usage("--scheduler", e))?;
    let interval = config.scheduler_interval.unwrap_or(
        if matches!(spec.name.as_str(), "onecycle" | "cyclic") {
            Interval::Step
        } else {
            Interval::Epoch
        },
    );
    let epochs = if config.dry_run { 1 } else { config.epochs };
    let limit = if config.dry_run {
        Some(1)
    } else {
        config.limit_train_batches
    };
    let per_epoch = train.len().min(limit.unwrap_or(usize::MAX));
    let total = match interval {
        Interval::Step => {
            let steps = epochs.saturating_mul(per_epoch.div_ceil(config.accumulate_grad_batches));
            config.max_steps.map_or(steps, |m| m.min(steps))
        }
        Interval::Epoch => epochs,
    };
    let scheduler = kiln_optim::scheduler::schedulers()
        .build(text, optimizer, Some(total))
        .map_err(|e| usage("--scheduler", e))?;
    Ok(Some((scheduler, interval)))
}
