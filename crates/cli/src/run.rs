//! `kiln train` and `kiln eval`: flags to library calls.
use crate::models::{QuickstartMlp, TabularMlp};
use crate::report::{JsonLines, ProgressPrinter};
use crate::UsageError;
use anyhow::{Context, Result};
use clap::parser::ValueSource;
use kiln_loop::checkpoint::{self, Checkpoint};
use kiln_loop::distributed::DataParallel;
use kiln_loop::metrics_log::MetricsLogger;
use kiln_loop::trainer::{CheckpointConfig, EarlyStopping, Interval, Mode};
use kiln_loop::{DataLoader, Dataset, Trainer, TrainerConfig, TutorialPrinter};
use kiln_losses::Loss;
use kiln_optim::Optimizer;
use kiln_tensor::device::{set_threads, DeviceSpec};
use kiln_tensor::nn::ModuleT;
use kiln_tensor::nn::VarStore;
use kiln_tensor::params::named_parameters;
use kiln_tensor::spec::Spec;
use kiln_tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Flags of `kiln train`; the defaults are the PyTorch quickstart's.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Samples per batch (the last short batch is kept).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Learning rate (default: 1e-3 for sgd, as in the tutorial; the optimizer's PyTorch default otherwise).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Momentum (default: 0.9 for sgd, as in the tutorial; only for optimizers that have one).
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// Loss spec: NAME[:key=value,...], e.g. cross-entropy:label_smoothing=0.1 (see `kiln losses`);
    /// default: cross-entropy, or mse with --data csv:...
    #[arg(long)]
    pub loss: Option<String>,
    /// Optimizer spec: NAME[:key=value,...], e.g. sgd:nesterov=true (see `kiln optimizers`).
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Seed libtorch's generator (torch.manual_seed). Without it a fresh seed is drawn from the
    /// operating system, as PyTorch does at start-up, and recorded in the run's config.json.
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads (torch.set_num_threads); default: libtorch's choice.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory with the four (Fashion)MNIST IDX files, gzipped or not.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Tabular data instead: csv:PATH,target=COLUMN[,test_fraction=0.2] (regression with a
    /// standardising MLP; the split is seeded by --seed, else 0; the loss defaults to mse).
    #[arg(long)]
    pub data: Option<String>,
    /// Keep the training set in file order instead of reshuffling every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Stop after N optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Train on at most N batches per epoch.
    #[arg(long)]
    pub limit_train_batches: Option<usize>,
    /// Evaluate on at most N batches.
    #[arg(long)]
    pub limit_test_batches: Option<usize>,
    /// One batch of training and one of evaluation, to check the setup.
    #[arg(long)]
    pub dry_run: bool,
    /// Sum gradients over N batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub accumulate_grad_batches: usize,
    /// Also evaluate every N optimizer steps.
    #[arg(long)]
    pub eval_every_steps: Option<usize>,
    /// Evaluate after every N epochs (0: never at epoch ends).
    #[arg(long, default_value_t = 1)]
    pub eval_every_epochs: usize,
    /// Also report top-K accuracy (`topK_accuracy`) in evaluations.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Stop when a metric stops improving: METRIC[:patience=N,min_delta=X,mode=min|max]
    /// (METRIC: test_loss, accuracy; mode defaults to min for losses, max otherwise).
    #[arg(long)]
    pub early_stopping: Option<String>,
    /// LR scheduler spec: NAME[:key=value,...], e.g. onecycle:max_lr=0.1 or step:step_size=2 (see `kiln schedulers`).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// When the scheduler steps: step (every optimizer step) or epoch; default: step for onecycle and cyclic, epoch otherwise.
    #[arg(long, value_parser = ["step", "epoch"])]
    pub scheduler_interval: Option<String>,
    /// Rescale gradients to a total 2-norm of at most X before each step (clip_grad_norm_).
    #[arg(long, allow_negative_numbers = true)]
    pub clip_grad_norm: Option<f64>,
    /// Clip every gradient element to [-X, X] before each step (clip_grad_value_).
    #[arg(long, allow_negative_numbers = true)]
    pub clip_grad_value: Option<f64>,
    /// Draw loss/accuracy/lr curves (PNG and SVG) into RUN_DIR/plots at the end.
    #[arg(long)]
    pub plot: bool,
    /// Where checkpoints, metrics and the run's config go (default: `runs/YYYYMMDD-HHMMSS`, UTC).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Write a checkpoint every N optimizer steps (one is always written after each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Also keep the best checkpoint by this metric (test_loss or accuracy).
    #[arg(long)]
    pub keep_best: Option<String>,
    /// Start from these weights (a safetensors state dict, e.g. saved by PyTorch).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Print nothing on stdout.
    #[arg(long)]
    pub quiet: bool,
    /// plain: the tutorial's lines (a progress bar on a terminal); json: one JSON object per event.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    pub log_format: String,
    /// Continue the run in this directory from its newest valid checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Train data-parallel across the processes of an MPI job (`mpirun -n N kiln train --distributed mpi`;
    /// nccl: one GPU per rank); --batch-size is per rank. See docs/scale-out.md.
    #[arg(long, value_parser = ["mpi", "nccl"])]
    pub distributed: Option<String>,
    /// Abort every rank when a collective has not completed after this many seconds.
    #[arg(long, default_value_t = crate::dist::DEFAULT_TIMEOUT_SECS)]
    #[serde(default = "crate::dist::default_timeout")]
    pub dist_timeout: f64,
    /// Take flags from this JSON file (flags given on the command line win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Flags of `kiln eval`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["checkpoint", "weights"])))]
pub struct EvalArgs {
    /// A checkpoint directory, or a run directory (its newest valid checkpoint).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// A safetensors state dict of the quickstart model (e.g. saved by PyTorch).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Data directory (default: the run's, else the setup's FashionMNIST).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on the first N test samples (default: the run's, else all).
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Samples per batch (default: the run's, else 64).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Flags of `kiln plot`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// The run directory (with metrics.jsonl).
    pub run_dir: PathBuf,
    /// Where the charts go (default: RUN_DIR/plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `kiln plot`: loss, accuracy and lr curves of a run as PNG and SVG.
pub fn plot(args: &PlotArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("plots"));
    for path in kiln_loop::plot::plot_run(&args.run_dir, &out)? {
        println!("{}", path.display());
    }
    Ok(())
}

const CLASSES: i64 = 10;
const CONFIG_FILE: &str = "config.json";

fn usage(err: impl std::fmt::Display) -> anyhow::Error {
    UsageError(err.to_string()).into()
}

/// Fills every flag not given on the command line from `--config FILE` or,
/// with `--resume RUN`, from the run's saved config.
pub fn merge_config(mut args: TrainArgs, matches: &clap::ArgMatches) -> Result<TrainArgs> {
    let base_path = match (&args.resume, &args.config) {
        (Some(run), _) => run.join(CONFIG_FILE),
        (None, Some(file)) => file.clone(),
        (None, None) => return Ok(args),
    };
    let text = std::fs::read_to_string(&base_path)
        .map_err(|e| usage(format!("{}: {e}", base_path.display())))?;
    let base: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "{}: not a JSON object of flags: {e}",
                base_path.display()
            ))
        })?;
    let mut merged = serde_json::to_value(&args)?;
    let known: Vec<String> = merged
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for (key, value) in base {
        let key = key.replace('-', "_");
        if !known.contains(&key) {
            return Err(usage(format!(
                "{}: unknown flag '{key}'; accepted: {}",
                base_path.display(),
                known.join(", ")
            )));
        }
        if matches.value_source(&key) != Some(ValueSource::CommandLine) {
            merged[&key] = value;
        }
    }
    let (resume, config) = (args.resume.take(), args.config.take());
    let mut args: TrainArgs = serde_json::from_value(merged)
        .map_err(|e| usage(format!("{}: {e}", base_path.display())))?;
    args.resume = resume;
    args.config = config;
    if args.resume.is_some() && args.run_dir.is_none() {
        args.run_dir = args.resume.clone();
    }
    Ok(args)
}

/// Where the data is when --data-dir is not given.
fn default_data_dir() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(option_env!("KILN_DEFAULT_DATA_DIR").map(PathBuf::from))
        .chain([PathBuf::from("/usr/share/datasets/fashion-mnist")])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            anyhow::anyhow!(
                "no FashionMNIST found (tried {}); run `make setup` or pass --data-dir DIR",
                tried.join(", ")
            )
        })
}

/// A seed from the operating system's entropy (`/dev/urandom`), like
/// PyTorch's default generator seed; falls back on the hasher's random keys.
fn os_seed() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    match read {
        Ok(()) => u64::from_le_bytes(bytes) >> 1,
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                >> 1
        }
    }
}

/// A new directory `runs/YYYYMMDD-HHMMSS` (UTC; `-2`, `-3`… when runs start
/// in the same second), created here so two runs never share one.
fn default_run_dir() -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from the Unix day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let stamp = format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    std::fs::create_dir_all("runs").context("creating runs/")?;
    let mut n = 1;
    loop {
        let dir = match n {
            1 => PathBuf::from(format!("runs/{stamp}")),
            n => PathBuf::from(format!("runs/{stamp}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

/// One-hot float targets for regression losses (MSE) on class labels.
struct OneHot(Box<dyn Loss>);

impl Loss for OneHot {
    fn forward(&self, input: &Tensor, target: &Tensor) -> kiln_losses::Result<Tensor> {
        let one_hot = target.f_one_hot(CLASSES)?.f_to_kind(input.kind())?;
        self.0.forward(input, &one_hot)
    }

    fn name(&self) -> &str {
        self.0.name()
    }
}

/// What the data asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// (Fashion)MNIST: 10 classes.
    Classify,
    /// Tabular data: one regression target.
    Regress,
}

fn build_loss(spec: Option<&str>, task: Task) -> Result<Box<dyn Loss>> {
    let default = match task {
        Task::Classify => "cross-entropy",
        Task::Regress => "mse",
    };
    let loss = kiln_losses::registry()
        .build(spec.unwrap_or(default))
        .map_err(usage)?;
    // Class-label data: regression losses compare against one-hot vectors.
    Ok(match (task, loss.name()) {
        (Task::Classify, "mse" | "l1" | "huber" | "smooth-l1") => Box::new(OneHot(loss)),
        _ => loss,
    })
}

/// The train and test sets `args` name (IDX directory or `csv:` spec).
fn prepare_data(
    data: Option<&str>,
    data_dir: Option<&Path>,
    train_samples: Option<usize>,
    test_samples: Option<usize>,
    seed: Option<u64>,
    device: Device,
) -> Result<(Dataset, Dataset, Task)> {
    let Some(spec) = data else {
        let (train, test) = load_data(data_dir, train_samples, test_samples, device)?;
        return Ok((train, test, Task::Classify));
    };
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    if kind != "csv" {
        return Err(usage(format!(
            "--data {spec}: accepted: csv:PATH,target=COLUMN[,test_fraction=X]"
        )));
    }
    let mut parts = rest.split(',');
    let path = PathBuf::from(parts.next().unwrap_or_default());
    let mut options: Spec = format!("csv:{}", parts.collect::<Vec<_>>().join(","))
        .parse()
        .map_err(usage)?;
    let target = options.raw("target").ok_or_else(|| {
        usage(format!(
            "--data {spec}: name the target column with target=COLUMN"
        ))
    })?;
    let fraction = options.f64("test_fraction").map_err(usage)?.unwrap_or(0.2);
    options
        .finish(&["target", "test_fraction"])
        .map_err(usage)?;
    let split = kiln_loop::tabular::CsvData::load(&path, &target, fraction, seed.unwrap_or(0))?;
    let cut = |inputs: Tensor, targets: Tensor, n: Option<usize>, name: &str| -> Result<Dataset> {
        let set = Dataset::from_tensors(inputs, targets, &format!("{} ({name})", path.display()))?;
        let set = match n {
            Some(n) => set.take(n)?,
            None => set,
        };
        Ok(set.to_device(device)?)
    };
    let train = cut(
        split.train_inputs,
        split.train_targets,
        train_samples,
        "train split",
    )?;
    let test = cut(
        split.test_inputs,
        split.test_targets,
        test_samples,
        "test split",
    )?;
    Ok((train, test, Task::Regress))
}

fn build_model(task: Task, vs: &VarStore, train: &Dataset) -> Result<Box<dyn ModuleT>> {
    Ok(match task {
        Task::Classify => Box::new(QuickstartMlp::new(&vs.root(), train.features(), CLASSES)?),
        Task::Regress => Box::new(TabularMlp::new(&vs.root(), &train.inputs)?),
    })
}

/// `kiln optimizers`.
pub fn describe_optimizers() -> String {
    kiln_optim::optimizers().describe()
}

/// The optimizer spec with --lr and --momentum folded in (options written in
/// the spec win); plain `sgd` gets the tutorial's lr=1e-3, momentum=0.9.
fn optimizer_spec(args: &TrainArgs) -> Result<String> {
    let spec: Spec = args.optimizer.parse().map_err(usage)?;
    let tutorial = spec.name == "sgd";
    let mut text = args.optimizer.trim().to_string();
    let mut add = |key: &str, value: Option<f64>, default: Option<f64>| {
        if let Some(v) = value.or(default).filter(|_| !spec.contains(key)) {
            text.push(if text.contains(':') { ',' } else { ':' });
            text.push_str(&format!("{key}={v:?}"));
        }
    };
    add("lr", args.lr, tutorial.then_some(1e-3));
    add("momentum", args.momentum, tutorial.then_some(0.9));
    Ok(text)
}

fn build_optimizer(args: &TrainArgs, vs: &VarStore) -> Result<Box<dyn Optimizer>> {
    let spec = optimizer_spec(args)?;
    let optimizer = kiln_optim::optimizers()
        .build(&spec, named_parameters(vs)?)
        .map_err(usage)?;
    // PyTorch lets a NaN learning rate through (`nan < 0` is false); a run
    // with one can only produce NaN, so kiln refuses it up front.
    for group in 0..optimizer.num_groups() {
        if let Some(lr) = optimizer.lr(group).filter(|lr| !lr.is_finite()) {
            return Err(usage(format!(
                "Invalid learning rate: {lr} (it must be a finite number)"
            )));
        }
    }
    Ok(optimizer)
}

fn metric_mode(metric: &str) -> Mode {
    if metric.ends_with("loss") {
        Mode::Min
    } else {
        Mode::Max
    }
}

fn early_stopping(spec: &str) -> Result<EarlyStopping> {
    let mut spec: Spec = spec.parse().map_err(usage)?;
    let mode = match spec
        .choice("mode", &["min", "max"])
        .map_err(usage)?
        .as_deref()
    {
        Some("min") => Mode::Min,
        Some(_) => Mode::Max,
        None => metric_mode(&spec.name),
    };
    let patience = spec.i64("patience").map_err(usage)?.unwrap_or(3);
    let min_delta = spec.f64("min_delta").map_err(usage)?.unwrap_or(0.0);
    spec.finish(&["patience", "min_delta", "mode"])
        .map_err(usage)?;
    let patience = usize::try_from(patience)
        .map_err(|_| usage("--early-stopping patience must be at least 1"))?;
    Ok(EarlyStopping {
        monitor: spec.name.clone(),
        mode,
        patience,
        min_delta,
    })
}

fn trainer_config(args: &TrainArgs) -> Result<TrainerConfig> {
    let mut cfg = TrainerConfig {
        epochs: args.epochs,
        max_steps: args.max_steps,
        limit_train_batches: args.limit_train_batches,
        limit_test_batches: args.limit_test_batches,
        accumulate_grad_batches: args.accumulate_grad_batches,
        clip_grad_norm: args.clip_grad_norm,
        clip_grad_value: args.clip_grad_value,
        eval_every_steps: args.eval_every_steps,
        eval_every_epochs: args.eval_every_epochs,
        early_stopping: args
            .early_stopping
            .as_deref()
            .map(early_stopping)
            .transpose()?,
        ..TrainerConfig::default()
    };
    if args.dry_run {
        cfg = cfg.dry_run();
    }
    cfg.validate().map_err(usage)?;
    Ok(cfg)
}

/// Where and how `args` asks checkpoints to be kept in `run_dir`.
fn checkpoint_config(args: &TrainArgs, run_dir: &Path) -> CheckpointConfig {
    CheckpointConfig {
        run_dir: run_dir.to_path_buf(),
        every_steps: args.checkpoint_every,
        keep_last: args.keep_checkpoints,
        keep_best: args.keep_best.as_ref().map(|m| (m.clone(), metric_mode(m))),
    }
}

/// Loads the data `args` names, cut and checked, on `device`.
fn load_data(
    args_dir: Option<&Path>,
    train_samples: Option<usize>,
    test_samples: Option<usize>,
    device: Device,
) -> Result<(Dataset, Dataset)> {
    let data_dir = match args_dir {
        Some(dir) => dir.to_path_buf(),
        None => default_data_dir()?,
    };
    let (train_set, test_set) = Dataset::load_mnist_dir(&data_dir)?;
    let train_set = match train_samples {
        Some(n) => train_set.take(n)?,
        None => train_set,
    };
    let test_set = match test_samples {
        Some(n) => test_set.take(n)?,
        None => test_set,
    };
    train_set.check_labels(CLASSES)?;
    test_set.check_labels(CLASSES)?;
    Ok((train_set.to_device(device)?, test_set.to_device(device)?))
}

fn write_config(run_dir: &Path, args: &TrainArgs) -> Result<()> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    let path = run_dir.join(CONFIG_FILE);
    let tmp = run_dir.join(format!(".{CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(args)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `kiln train`.
pub fn train(args: &TrainArgs) -> Result<()> {
    crate::dist::run(args, train_on)
}

/// `kiln train` on this process, alone or as one rank of `dp`.
fn train_on(args: &TrainArgs, dp: Option<DataParallel<'_>>) -> Result<()> {
    let main = dp.is_none_or(|dp| dp.is_main());
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1, got 0"));
    }
    let device = args
        .device
        .parse::<DeviceSpec>()
        .map_err(usage)?
        .resolve()?;
    if let Some(threads) = args.threads {
        set_threads(threads).map_err(usage)?;
    }
    // Every flag is checked before anything touches the disk.
    let mut config = trainer_config(args)?;
    config.checkpoint = Some(checkpoint_config(args, Path::new("runs")));
    config.validate().map_err(usage)?;
    let resume = match &args.resume {
        Some(run) => {
            let found =
                checkpoint::latest_valid(run, &mut |warning| eprintln!("warning: {warning}"))?;
            let (path, ckpt) = found.ok_or_else(|| {
                anyhow::anyhow!("{}: no valid checkpoint to resume from", run.display())
            })?;
            if main {
                eprintln!("kiln: resuming {} from {}", run.display(), path.display());
            }
            Some(ckpt)
        }
        None => None,
    };
    let (train_set, test_set, task) = prepare_data(
        args.data.as_deref(),
        args.data_dir.as_deref(),
        args.train_samples,
        args.test_samples,
        args.seed,
        device,
    )?;
    let loss_fn = build_loss(args.loss.as_deref(), task)?;
    if train_set.is_empty() {
        return Err(usage("the training set is empty (--train-samples 0?)"));
    }
    // PyTorch seeds its generator from the OS when a program does not; kiln
    // does the same but records the seed, so every run can be repeated.
    // Data-parallel ranks all take rank 0's.
    let mut args = args.clone();
    let seed = match (args.seed, dp) {
        (Some(seed), _) => seed,
        (None, Some(dp)) => dp.broadcast_u64(os_seed())?,
        (None, None) => os_seed(),
    };
    args.seed = Some(seed);
    let args = &args;
    kiln_tensor::rng::manual_seed(seed);
    let vs = VarStore::new(device);
    let model = build_model(task, &vs, &train_set)?;
    if let Some(init) = &args.init {
        checkpoint::load_weights(&vs, init)?;
    }
    let mut optimizer = build_optimizer(args, &vs)?;
    // Shuffling the training set and not the test set is the tutorial's setup.
    let mut train_loader = DataLoader::new(&train_set, args.batch_size, !args.no_shuffle)?;
    let mut test_loader = DataLoader::new(&test_set, args.batch_size, false)?;
    if let Some(dp) = dp {
        (train_loader, test_loader) =
            crate::dist::shard(dp, args, device, train_loader, test_loader)?;
    }

    let batches_per_epoch = train_loader
        .len()
        .min(config.limit_train_batches.unwrap_or(usize::MAX));
    let scheduler = if let Some(spec) = &args.scheduler {
        let name = spec.split(':').next().unwrap_or_default();
        let interval = match args.scheduler_interval.as_deref() {
            Some("step") => Interval::Step,
            Some(_) => Interval::Epoch,
            None if matches!(name, "onecycle" | "cyclic") => Interval::Step,
            None => Interval::Epoch,
        };
        // Total scheduler steps, for schedules that need it (onecycle's total_steps).
        let total = match interval {
            Interval::Step => args
                .epochs
                .saturating_mul(batches_per_epoch.div_ceil(args.accumulate_grad_batches.max(1))),
            Interval::Epoch => args.epochs,
        };
        let total = args
            .max_steps
            .filter(|_| interval == Interval::Step)
            .map_or(total, |m| m.min(total));
        let scheduler = kiln_optim::scheduler::schedulers()
            .build(spec, optimizer.as_mut(), Some(total))
            .map_err(usage)?;
        Some((scheduler, interval))
    } else {
        None
    };
    // Rank 0 (or the only process) owns the run directory: config,
    // checkpoints and metrics files; every rank holds the same state.
    let run_dir = match (&args.run_dir, main) {
        (Some(dir), _) => dir.clone(),
        (None, true) => default_run_dir()?,
        (None, false) => PathBuf::new(),
    };
    config.checkpoint = if main {
        write_config(&run_dir, args)?;
        Some(checkpoint_config(args, &run_dir))
    } else {
        None
    };
    let resume_step = resume.as_ref().map(|c| c.progress.step);
    let mut trainer = Trainer::new(config)?.run_config(serde_json::to_value(args)?);
    if task == Task::Regress {
        trainer = trainer.metrics(vec![Box::new(kiln_loop::metrics::MeanLoss::default())]);
    } else if let Some(k) = args.top_k {
        if k == 0 {
            return Err(usage("--top-k must be at least 1"));
        }
        trainer = trainer.metric(kiln_loop::metrics::TopK::new(k));
    }
    if main {
        // Evaluations are reduced over ranks before they reach the callbacks.
        trainer = trainer.callback(match resume_step {
            Some(step) => MetricsLogger::resume(&run_dir, step)?,
            None => MetricsLogger::create(&run_dir)?,
        });
    }
    if let Some((scheduler, interval)) = scheduler {
        trainer = trainer.scheduler(scheduler, interval);
    }
    if let Some(dp) = dp {
        trainer = trainer.data_parallel(dp);
    }
    if !args.quiet && main {
        let stdout = std::io::stdout();
        trainer = match args.log_format.as_str() {
            "json" => trainer.callback(JsonLines::new(stdout.lock())),
            // Open MPI gives ranks a pseudo-terminal: no progress bar there.
            _ if stdout.is_terminal() && dp.is_none() => {
                trainer.callback(ProgressPrinter::new(train_loader.len()))
            }
            _ => trainer.callback(TutorialPrinter::new(stdout.lock())),
        };
    }
    let summary = trainer.fit(
        model.as_ref(),
        &vs,
        loss_fn.as_ref(),
        optimizer.as_mut(),
        &train_loader,
        &test_loader,
        resume,
    )?;
    if let Some(dp) = dp {
        dp.verify_replicas(&vs)?;
    }
    if args.plot && main {
        for path in kiln_loop::plot::plot_run(&run_dir, &run_dir.join("plots"))? {
            eprintln!("kiln: wrote {}", path.display());
        }
    }
    if let kiln_loop::StopReason::NonFiniteLoss {
        epoch,
        batch,
        step,
        loss,
    } = summary.stop
    {
        let kept = summary
            .last_checkpoint
            .as_ref()
            .map_or("no checkpoint".into(), |p| {
                format!("last good checkpoint {}", p.display())
            });
        anyhow::bail!("training loss became {loss} at epoch {epoch}, batch {batch} (after {step} steps); stopped, {kept}");
    }
    Ok(())
}

/// `kiln eval`: the test loop on a checkpoint's or a weights file's parameters.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let device = args
        .device
        .parse::<DeviceSpec>()
        .map_err(usage)?
        .resolve()?;
    let (weights, run): (Vec<(String, Tensor)>, Option<TrainArgs>) =
        match (&args.checkpoint, &args.weights) {
            (Some(path), _) => {
                let (dir, ckpt): (PathBuf, Checkpoint) = if path.join("manifest.json").exists() {
                    (path.clone(), checkpoint::load(path)?)
                } else {
                    checkpoint::latest_valid(path, &mut |w| eprintln!("warning: {w}"))?.ok_or_else(
                        || anyhow::anyhow!("{}: no valid checkpoint here", path.display()),
                    )?
                };
                let run: TrainArgs =
                    serde_json::from_value(ckpt.config.clone()).with_context(|| {
                        format!(
                            "{}: the checkpoint's run config is unreadable",
                            dir.display()
                        )
                    })?;
                (ckpt.model, Some(run))
            }
            (None, Some(file)) => (checkpoint::read_weights(file)?, None),
            (None, None) => return Err(usage("give --checkpoint DIR or --weights FILE")),
        };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| run.as_ref().and_then(|r| r.data_dir.clone()));
    let test_samples = args
        .test_samples
        .or_else(|| run.as_ref().and_then(|r| r.test_samples));
    let batch_size = args
        .batch_size
        .or(run.as_ref().map(|r| r.batch_size))
        .unwrap_or(64);
    if batch_size == 0 {
        return Err(usage("--batch-size must be at least 1, got 0"));
    }
    let data = run.as_ref().and_then(|r| r.data.clone());
    let seed = run.as_ref().and_then(|r| r.seed);
    let (train_set, test_set, task) = prepare_data(
        data.as_deref(),
        data_dir.as_deref(),
        None,
        test_samples,
        seed,
        device,
    )?;
    let vs = VarStore::new(device);
    let model = build_model(task, &vs, &train_set)?;
    kiln_tensor::params::load_state_dict(&vs, &weights)?;
    let loss_fn = build_loss(run.as_ref().and_then(|r| r.loss.as_deref()), task)?;
    let loader = DataLoader::new(&test_set, batch_size, false)?;
    kiln_loop::test(
        &loader,
        model.as_ref(),
        loss_fn.as_ref(),
        &mut std::io::stdout().lock(),
    )?;
    Ok(())
}
