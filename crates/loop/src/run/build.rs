//! Every component of a run, built from its [`RunPlan`] through the
//! caller's [`Registries`] and checked against the data before the first
//! step: the data, the model, the loss, the optimizer, the loaders.
use super::plan::RunPlan;
use super::Registries;
use crate::checkpoint;
use crate::data::source::{DataContext, Sampling, Splits, Task};
use crate::data::{random_split, Batch, DataLoader, Dataset, DistributedSampler, Subset};
use crate::distributed::DataParallel;
use crate::models::registry::{self as model_registry, ModelData};
use crate::step::LossStep;
use crate::{Error, Model, Result};
use kiln_losses::Loss;
use kiln_optim::Optimizer;
use kiln_tensor::device::set_threads;
use kiln_tensor::spec::Spec;
use kiln_tensor::{Device, Kind, Tensor};
use std::sync::Arc;

/// The data, model, loss and optimizer of a run.
pub struct Components {
    /// Where training runs.
    pub device: Device,
    /// Train, validation and test sets.
    pub data: RunData,
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
    /// What a non-strict `--init` skipped (`missing: …`, `unexpected: …`,
    /// `mis-shaped: …`); empty when it loaded everything.
    pub init_skipped: Vec<String>,
}

/// The datasets of a run.
#[derive(Clone)]
pub struct RunData {
    /// Training samples (without the validation split).
    pub train: Arc<dyn Dataset>,
    /// The validation split of the training samples (`--val-fraction`).
    pub val: Option<Arc<dyn Dataset>>,
    /// Test samples.
    pub test: Arc<dyn Dataset>,
    /// What the targets ask for.
    pub task: Task,
    /// How batches are drawn (passes, or nanoGPT's random batches).
    pub sampling: Sampling,
}

impl std::fmt::Debug for RunData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunData")
            .field("train", &self.train.len())
            .field("val", &self.val.as_ref().map(|v| v.len()))
            .field("test", &self.test.len())
            .field("task", &self.task)
            .field("sampling", &self.sampling)
            .finish()
    }
}

pub use crate::loggers::printer::TRAIN_EVAL;

/// nanoGPT's `eval_iters`: batches per evaluation set with random batches
/// when neither `--eval-batches` nor `--limit-test-batches` says.
pub const EVAL_BATCHES: usize = 200;

impl RunData {
    /// The evaluation sets by name, in the order they are evaluated
    /// (`val` before `test`; with random batches nanoGPT's `train` and
    /// `val`: [`TRAIN_EVAL`] and `val`, the test split).
    pub fn eval_sets(&self) -> Vec<(&'static str, Arc<dyn Dataset>)> {
        if self.sampling == Sampling::RandomBatches {
            return vec![(TRAIN_EVAL, self.train.clone()), ("val", self.test.clone())];
        }
        let mut sets = Vec::new();
        if let Some(val) = &self.val {
            sets.push(("val", val.clone()));
        }
        sets.push(("test", self.test.clone()));
        sets
    }
}

fn usage(flag: &str, err: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{flag}: {err}"))
}

impl Components {
    /// Builds everything `plan` names, in PyTorch's order of random
    /// draws: the data (no draws; the validation split uses its own
    /// generator), `torch.manual_seed(seed)`, the model's initialisation,
    /// `--init` weights, `--freeze`, the loss and the optimizer.
    pub fn build(plan: &RunPlan, registries: &Registries) -> Result<Self> {
        let config = &plan.config;
        let device = config.device.resolve()?;
        if let Some(threads) = config.threads {
            set_threads(threads).map_err(|e| usage("--threads", e))?;
        }
        // Before the data and the model: their blocks come from the arenas.
        kiln_tensor::memory::install_from_env().map_err(|e| Error::Usage(e.to_string()))?;
        if config.deterministic {
            kiln_tensor::device::set_deterministic(true)?;
        }
        let mut data = load_data(plan, registries)?;
        data.task = binary_task(&registries.losses, config.loss.as_deref(), data.task)?;
        kiln_tensor::rng::manual_seed(plan.seed);
        let (model, model_spec) =
            build_model(&registries.models, config.model.as_deref(), &data, device)?;
        let init_skipped = match &config.init {
            Some(init) => checkpoint::load_weights(model.as_ref(), init, config.init_strict)?,
            None => Vec::new(),
        };
        crate::models::freeze(model.as_ref(), &config.freeze)?;
        let mut model = model;
        model.set_gradient_checkpointing(config.gradient_checkpointing)?;
        let (loss, loss_spec) = build_loss(
            &registries.losses,
            config.loss.as_deref(),
            data.task,
            model.default_loss(),
        )?;
        let optimizer = build_optimizer(
            &registries.optimizers,
            &config.optimizer,
            &config.param_group,
            model.as_ref(),
        )?;
        probe(
            model.as_mut(),
            &LossStep::new(loss.as_ref()),
            optimizer.as_ref(),
            &data,
            &model_spec,
        )?;
        Ok(Self {
            device,
            data,
            model,
            model_spec,
            loss,
            loss_spec,
            optimizer,
            init_skipped,
        })
    }
}

/// The loaders of a run: training (shuffled unless `--no-shuffle`) and one
/// per evaluation set, each on this rank's shard under data parallelism.
pub struct RunLoaders {
    /// Training batches.
    pub train: DataLoader,
    /// Evaluation sets by name, in order.
    pub eval: Vec<(&'static str, DataLoader)>,
}

impl RunLoaders {
    /// The loaders `plan` asks for over `data`, delivering to `device`.
    pub fn build(
        plan: &RunPlan,
        data: &RunData,
        device: Device,
        dp: Option<DataParallel<'_>>,
    ) -> Result<Self> {
        let config = &plan.config;
        if data.sampling == Sampling::RandomBatches {
            return Self::random(plan, data, device, dp);
        }
        let shuffle = !config.no_shuffle;
        let loader = |set: &Arc<dyn Dataset>, shuffle: bool| -> Result<DataLoader> {
            DataLoader::new(set.clone(), config.batch_size, shuffle)?
                .workers(config.workers, config.prefetch_factor)
                .map(|l| l.to_device(device))
                .map_err(|e| usage("--prefetch-factor", e))
        };
        let mut train = loader(&data.train, shuffle)?;
        let mut eval = data
            .eval_sets()
            .into_iter()
            .map(|(name, set)| Ok((name, loader(&set, false)?)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(dp) = dp {
            let sampler = DistributedSampler::new(dp.world_size(), dp.rank())?;
            train = train.distributed(sampler.clone().shuffle(shuffle).seed(plan.seed));
            let eval_sampler = sampler.shuffle(false).pad(false);
            eval = eval
                .into_iter()
                .map(|(name, l)| (name, l.distributed(eval_sampler.clone())))
                .collect();
        }
        Ok(Self { train, eval })
    }

    /// nanoGPT's loaders: random batches of the training data, endless;
    /// each evaluation set `--eval-batches` (default [`EVAL_BATCHES`])
    /// random batches per evaluation.
    fn random(
        plan: &RunPlan,
        data: &RunData,
        device: Device,
        dp: Option<DataParallel<'_>>,
    ) -> Result<Self> {
        let config = &plan.config;
        if dp.is_some() {
            return Err(Error::Usage(
                "--distributed: random batches (--data tokens:…, nanoGPT's get_batch) are not sharded over ranks yet; train on one process".into(),
            ));
        }
        if plan.trainer.max_steps.is_none() && plan.trainer.limit_train_batches.is_none() {
            return Err(Error::Usage(
                "--max-steps: random batches (--data tokens:…, nanoGPT's get_batch) have no epochs; give --max-steps N (nanoGPT's max_iters)".into(),
            ));
        }
        let eval_batches = plan.trainer.limit_eval_batches.unwrap_or(EVAL_BATCHES);
        let loader = |set: &Arc<dyn Dataset>| -> Result<DataLoader> {
            DataLoader::random_batches(set.clone(), config.batch_size)?
                .workers(config.workers, config.prefetch_factor)
                .map(|l| l.to_device(device))
                .map_err(|e| usage("--workers", e))
        };
        let train = loader(&data.train)?;
        let eval = data
            .eval_sets()
            .into_iter()
            .map(|(name, set)| Ok((name, loader(&set)?.batches_per_pass(eval_batches))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { train, eval })
    }

    /// The evaluation loaders as the Trainer takes them.
    pub fn eval_sets(&self) -> Vec<(&str, &DataLoader)> {
        self.eval.iter().map(|(n, l)| (*n, l)).collect()
    }
}

/// The run's datasets: loaded by the data registry, cut to
/// `--train-samples`/`--test-samples`, the validation split taken.
fn load_data(plan: &RunPlan, registries: &Registries) -> Result<RunData> {
    let config = &plan.config;
    let pipeline = |specs: &[String], flag: &str| -> Result<Arc<_>> {
        Ok(Arc::new(
            registries
                .transforms
                .pipeline(specs)
                .map_err(|e| usage(flag, e))?,
        ))
    };
    let context = DataContext {
        seed: plan.seed,
        transforms: pipeline(&config.transform, "--transform")?,
        test_transforms: pipeline(&config.test_transform, "--test-transform")?,
    };
    let Splits {
        train,
        test,
        task,
        sampling,
    } = registries.data.load(&config.data_spec()?, &context)?;
    if sampling == Sampling::RandomBatches && config.val_fraction.is_some() {
        return Err(Error::Usage(
            "--val-fraction: this data has its own validation split (val.bin), which evaluations read".into(),
        ));
    }
    let cut = |set: Arc<dyn Dataset>, n: Option<usize>| -> Arc<dyn Dataset> {
        match n {
            Some(n) => Arc::new(Subset::first(set, n)),
            None => set,
        }
    };
    let train = cut(train, config.train_samples);
    let test = cut(test, config.test_samples);
    if train.is_empty() {
        return Err(Error::Usage(
            "the training set is empty (--train-samples 0?)".into(),
        ));
    }
    let (train, val) = match config.val_fraction {
        Some(fraction) => {
            let (train, val) = random_split(train, fraction, plan.seed, "--val-fraction")?;
            let (train, val): (Arc<dyn Dataset>, Arc<dyn Dataset>) =
                (Arc::new(train), Arc::new(val));
            (train, Some(val))
        }
        None => (train, None),
    };
    Ok(RunData {
        train,
        val,
        test,
        task,
        sampling,
    })
}

/// The network `spec` names (default: the quickstart MLP for class labels,
/// a standardising `mlp:hidden=64;64` for regression), built for the data
/// from `registry`, and its resolved spec.
pub fn build_model(
    registry: &crate::models::ModelRegistry,
    spec: Option<&str>,
    data: &RunData,
    device: Device,
) -> Result<(Box<dyn Model>, String)> {
    let text = spec.unwrap_or(model_registry::default_spec(data.task));
    let spec = registry
        .resolve_text(text)
        .map_err(|e| usage("--model", e))?;
    let info = ModelData {
        train: data.train.as_ref(),
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

/// The loss that scores two classes with one logit.
const BINARY_LOSS: &str = "bce-with-logits";

/// The task of a run whose loss is `spec`: two-class labels, or one float
/// target per sample, become [`Task::Binary`] under `bce-with-logits`
/// (`BCEWithLogitsLoss` on one logit); more classes are refused.
fn binary_task(
    registry: &kiln_losses::LossRegistry,
    spec: Option<&str>,
    task: Task,
) -> Result<Task> {
    let Some(text) = spec else {
        return Ok(task);
    };
    let name = text
        .parse::<Spec>()
        .and_then(|s| registry.lookup(&s.name).map(|e| e.name.clone()))
        .map_err(|e| usage("--loss", e))?;
    if name != BINARY_LOSS {
        return Ok(task);
    }
    match task {
        Task::Classify { classes } if classes <= 2 => Ok(Task::Binary),
        Task::Regress { outputs: 1 } => Ok(Task::Binary),
        Task::Classify { classes } => Err(Error::Usage(format!(
            "--loss {BINARY_LOSS} scores two classes (labels 0 and 1) with one logit, but this data has {classes} classes; use cross-entropy"
        ))),
        other => Ok(other),
    }
}

/// Binary targets as `BCEWithLogitsLoss` takes them: labels 0/1 `[N]` (or
/// float values `[N]`) as float `[N, 1]`, like the one logit per sample.
struct BinaryTargets {
    loss: Box<dyn Loss>,
}

impl Loss for BinaryTargets {
    fn forward(&self, input: &Tensor, target: &Tensor) -> kiln_losses::Result<Tensor> {
        let target = if target.dim() == 1 {
            target.f_unsqueeze(1)?
        } else {
            target.shallow_clone()
        };
        self.loss.forward(input, &target.f_to_kind(input.kind())?)
    }

    fn name(&self) -> &str {
        self.loss.name()
    }

    fn targets(&self) -> kiln_losses::Targets {
        self.loss.targets()
    }
}

/// The loss `spec` names (default: the model's own, `model_default`, else
/// cross-entropy for class labels, mse for regression), adapted to the
/// data's targets, and its resolved spec; or an error naming the flag and
/// the losses that fit.
pub fn build_loss(
    registry: &kiln_losses::LossRegistry,
    spec: Option<&str>,
    task: Task,
    model_default: Option<&str>,
) -> Result<(Box<dyn Loss>, String)> {
    let default = model_default.unwrap_or(match task {
        Task::Classify { .. } => "cross-entropy",
        Task::Regress { .. } => "mse",
        Task::Binary => BINARY_LOSS,
    });
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
        // A model whose own loss is nll outputs log-probabilities
        // (`log_softmax`, as `--model cnn`): compared with one-hot labels
        // they train towards nothing sensible.
        Task::Classify { .. } if targets.one_hot_from_classes() && model_default == Some("nll") => {
            Err(Error::Usage(format!(
                "--loss {name} compares the model's outputs with one-hot labels, but this model outputs log-probabilities (log_softmax); use nll (its default) or cross-entropy"
            )))
        }
        Task::Binary => Ok((Box::new(BinaryTargets { loss }), resolved)),
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
/// shapes and the flag. The gradients are cleared afterwards. The sample is
/// read with a generator of its own: the global one does not move.
fn probe(
    model: &mut dyn Model,
    step: &LossStep<'_>,
    optimizer: &dyn Optimizer,
    data: &RunData,
    spec: &str,
) -> Result<()> {
    let sample = data
        .train
        .get(0, &mut kiln_tensor::rng::Generator::new(0)?)?;
    let fields = Arc::new(data.train.fields());
    let batch = crate::data::collate(vec![sample], fields)?.to_device(model.device(), false)?;
    let was_training = model.is_training();
    model.set_training(false)?;
    let checked = probe_eval(model, step, optimizer, data.task, &batch, spec);
    for p in model.parameters()? {
        kiln_tensor::ops::clear_grad(&p.tensor)?;
    }
    model.set_training(was_training)?;
    checked
}

fn probe_eval(
    model: &dyn Model,
    step: &LossStep<'_>,
    optimizer: &dyn Optimizer,
    task: Task,
    batch: &Batch,
    spec: &str,
) -> Result<()> {
    let inputs = batch.inputs()?;
    let shapes = inputs
        .iter()
        .map(|t| format!("{:?} {}", t.size(), kiln_tensor::amp::dtype_name(t.kind())))
        .collect::<Vec<_>>()
        .join(", ");
    let output = model.forward_all(&inputs).map_err(|e| match e {
        // The module file itself is at fault (it returns no tensor…).
        Error::Data { .. } => e,
        other => {
            let reason = other.to_string();
            let reason = reason
                .strip_prefix("model forward failed: ")
                .unwrap_or(&reason)
                .to_string();
            Error::Usage(format!(
                "--model {spec}: the model does not accept the data's inputs: one sample is {shapes} ({reason})"
            ))
        }
    })?;
    let out = output.size();
    let targets = batch.targets()?;
    let (wanted, what) = match task {
        // Class targets [1] or sequence targets [1, T]: a score per class
        // for each target position.
        Task::Classify { classes } => {
            let mut wanted = targets.size();
            wanted.push(classes);
            let what = if wanted.len() > 2 {
                format!(
                    "the data has {classes} classes and targets of shape {:?}",
                    targets.size()
                )
            } else {
                format!("the data has {classes} classes")
            };
            (wanted, what)
        }
        Task::Regress { outputs } => (
            vec![1, outputs],
            format!("the targets are {outputs} value(s) per sample"),
        ),
        Task::Binary => (
            vec![1, 1],
            "binary targets are scored by one logit".to_string(),
        ),
    };
    if out != wanted {
        return Err(Error::Usage(format!(
            "--model {spec}: the model's output for one sample of shape {shapes} has shape {out:?}, but {what}: it must be {wanted:?}"
        )));
    }
    let loss = step.loss();
    let output = output.f_to_kind(Kind::Float)?;
    let value = match crate::data::batch::flatten_sequences(&output, targets)? {
        Some((o, t)) => loss.forward(&o, &t),
        None => loss.forward(&output, targets),
    }
    .map_err(|e| Error::Usage(format!("--loss {}: {e}", loss.name())))?;
    if value.requires_grad() {
        value.f_backward()?;
        optimizer
            .check_gradients()
            .map_err(|e| Error::Usage(format!("--optimizer {}: {e}", optimizer.name())))?;
    }
    Ok(())
}

/// The optimizer `spec` names over the model's parameters, with a param
/// group of its own per `--param-group SELECTOR:options` (parsed and
/// checked by [`RunConfig`](super::RunConfig)); a non-finite lr is refused
/// (PyTorch lets NaN through; a run with it can only produce NaN). Frozen
/// parameters (`requires_grad=False`) are left out, as
/// `filter(lambda p: p.requires_grad, model.parameters())` leaves them out;
/// none left is PyTorch's "optimizer got an empty parameter list".
fn build_optimizer(
    registry: &kiln_optim::OptimizerRegistry,
    spec: &str,
    param_groups: &[String],
    model: &dyn Model,
) -> Result<Box<dyn Optimizer>> {
    let overrides = param_groups
        .iter()
        .map(|g| g.parse::<kiln_optim::GroupOverride>())
        .collect::<kiln_optim::Result<Vec<_>>>()
        .map_err(|e| usage("--param-group", e))?;
    let params = model.parameters()?;
    let any = !params.is_empty();
    let trainable: Vec<_> = params
        .into_iter()
        .filter(|p| p.tensor.requires_grad())
        .collect();
    if any && trainable.is_empty() {
        return Err(Error::Usage(
            "--freeze: optimizer got an empty parameter list (every parameter is frozen); freeze fewer".into(),
        ));
    }
    let optimizer = registry
        .build_with_overrides(spec, trainable, &overrides)
        .map_err(|e| {
            let flag = if overrides.is_empty() || !e.to_string().contains("param group") {
                "--optimizer"
            } else {
                "--param-group"
            };
            usage(flag, e)
        })?;
    for group in 0..optimizer.num_groups() {
        if let Some(lr) = optimizer.lr(group).filter(|lr| !lr.is_finite()) {
            return Err(Error::Usage(format!(
                "--optimizer: Invalid learning rate: {lr} (it must be a finite number)"
            )));
        }
    }
    Ok(optimizer)
}

/// The evaluation metrics of a run: loss and accuracy (and top-K) for
/// classes, the loss alone for regression and for random batches.
/// `--top-k` needs class labels and at most as many as there are classes
/// (more would always be 1.0).
pub(crate) fn metrics(
    top_k: Option<usize>,
    task: Task,
    sampling: Sampling,
) -> Result<Vec<Box<dyn crate::metrics::Metric>>> {
    use crate::metrics::{Accuracy, MeanLoss, TopK};
    if sampling == Sampling::RandomBatches {
        // nanoGPT's estimate_loss reports the loss alone, a float32 mean.
        return Ok(vec![Box::new(MeanLoss::float32())]);
    }
    let mut metrics: Vec<Box<dyn crate::metrics::Metric>> = vec![Box::new(MeanLoss::default())];
    match (task, top_k) {
        (Task::Regress { .. } | Task::Binary, Some(k)) => {
            return Err(Error::Usage(format!(
                "--top-k {k}: top-K accuracy needs class labels scored by one output each, but this data has {}",
                if task == Task::Binary { "binary targets scored by one logit" } else { "regression targets" }
            )))
        }
        (Task::Classify { classes }, Some(k)) if k as i64 > classes => {
            return Err(Error::Usage(format!(
                "--top-k {k}: the data has {classes} classes, so top-{k} accuracy would always be 1.0; give at most {classes}"
            )))
        }
        _ => {}
    }
    if let Task::Classify { .. } | Task::Binary = task {
        metrics.push(Box::new(Accuracy::default()));
        if let Some(k) = top_k {
            metrics.push(Box::new(TopK::new(k)));
        }
    }
    Ok(metrics)
}

/// The lr scheduler the plan names over `optimizer`, with its horizon from
/// the training loader's length.
pub(crate) fn scheduler(
    plan: &RunPlan,
    registry: &kiln_optim::scheduler::SchedulerRegistry,
    optimizer: &mut dyn Optimizer,
    train: &DataLoader,
) -> Result<Option<(Box<dyn kiln_optim::scheduler::LrScheduler>, crate::Interval)>> {
    let Some((spec, interval)) = &plan.scheduler else {
        return Ok(None);
    };
    let scheduler = registry
        .build(spec, optimizer, plan.scheduler_horizon(train.len()))
        .map_err(|e| usage("--scheduler", e))?;
    Ok(Some((scheduler, *interval)))
}
