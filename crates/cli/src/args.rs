//! The flags of each command, and how they become library requests.
//!
//! Defaults shown in `--help` are read from the library's
//! [`RunConfig::default`]; what a run actually uses is decided by
//! [`kiln_loop::run`], which merges only the flags given on the command line
//! over a resumed run's saved config and `--config FILE`.
use clap::parser::ValueSource;
use kiln_loop::lm::SampleConfig;
use kiln_loop::lr_find::LrFindConfig;
use kiln_loop::run::{
    Display, EvalRequest, LrFindRequest, PredictRequest, RunConfig, TrainRequest,
};
use kiln_loop::{Notice, Notices};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;

fn defaults() -> RunConfig {
    RunConfig::default()
}

/// Flags of `kiln train`; the defaults are the PyTorch quickstart's.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct TrainArgs {
    /// Passes over the training set.
    #[arg(long, default_value_t = defaults().epochs)]
    pub epochs: usize,
    /// Samples per batch (the last short batch is kept).
    #[arg(long, default_value_t = defaults().batch_size)]
    pub batch_size: usize,
    /// Learning rate, set on the optimizer spec unless it names one (sgd: 1e-3, as in the tutorial).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub lr: Option<f64>,
    /// Momentum, set on the optimizer spec unless it names one (sgd: 0.9, as in the tutorial).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub momentum: Option<f64>,
    /// Loss spec: NAME[:key=value,...], e.g. cross-entropy:label_smoothing=0.1 (see `kiln losses`);
    /// default: cross-entropy, or mse with --data csv:...
    #[arg(long)]
    pub loss: Option<String>,
    /// Optimizer spec: NAME[:key=value,...], e.g. adamw:lr=3e-4 (see `kiln optimizers`).
    #[arg(long, default_value_t = defaults().optimizer)]
    pub optimizer: String,
    /// Options of the parameters SELECTOR picks, a param group of their own (repeatable):
    /// SELECTOR:key=value,... with SELECTOR a name glob (*.bias) or ndim<N, ndim>=N…, e.g.
    /// 'ndim<2:weight_decay=0' (nanoGPT's groups); the others keep the optimizer's options.
    #[arg(long, value_name = "SELECTOR:OPTIONS")]
    pub param_group: Vec<String>,
    /// LR scheduler spec: NAME[:key=value,...], e.g. onecycle:max_lr=0.1 or
    /// warmup-cosine:warmup_steps=100,decay_steps=2000,min_lr=1e-4 (nanoGPT's get_lr; see
    /// `kiln schedulers`).
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Model spec: mlp[:hidden=512;512,...], cnn[:channels=32;64,...] or
    /// torchscript:PATH[,output=N|KEY] (a module saved with torch.jit.save; output= picks an
    /// element of a tuple or dict result; see `kiln models`); default: the quickstart MLP.
    #[arg(long)]
    pub model: Option<String>,
    /// When the scheduler steps: step or epoch (default: step for onecycle and cyclic, else epoch).
    #[arg(long, value_parser = ["step", "epoch"])]
    pub scheduler_interval: Option<String>,
    /// Seed libtorch's generator (torch.manual_seed); default: drawn from the OS and recorded.
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value_t = defaults().device.to_string())]
    pub device: String,
    /// libtorch intra-op threads (torch.set_num_threads); default: libtorch's choice.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Deterministic kernels (torch.use_deterministic_algorithms(True), cuDNN deterministic):
    /// reproducible GPU runs; with CUDA also set CUBLAS_WORKSPACE_CONFIG=:4096:8.
    #[arg(long)]
    pub deterministic: bool,
    /// Recompute each block's activations in backward instead of keeping them
    /// (torch.utils.checkpoint, use_reentrant=False): the same numbers, less memory; gpt models.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Directory with the four (Fashion)MNIST IDX files, gzipped or not.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Other data: csv:PATH,target=COLUMN[,test_fraction=0.2] (regression; the loss defaults to
    /// mse), tensors:PATH[,test=PATH,inputs=KEY[;KEY…],targets=KEY,test_fraction=0.2,classes=N] (a
    /// safetensors file; int targets are classes, [N] or [N, T], float targets values),
    /// images:DIR[,test=DIR,test_fraction=0.2] (an image folder as torchvision's ImageFolder reads
    /// it: one sub-directory per class), or tokens:DIR[,block_size=T,dtype=uint16|uint32,
    /// vocab_size=N] (nanoGPT's train.bin, val.bin and meta.pkl: random windows drawn as its
    /// get_batch; needs --max-steps). Splits use the seed.
    #[arg(long)]
    pub data: Option<String>,
    /// Image transform of the training samples, NAME[:key=value,...], repeatable, applied in
    /// order as torchvision's transforms.v2 (e.g. random-resized-crop:size=24,scale=0.5;1.0;
    /// see `kiln transforms`); ToDtype(float32, scale=True) goes before the first float
    /// transform (normalize, random-erasing) or at the end. With --data images: only.
    #[arg(long, value_name = "SPEC")]
    pub transform: Vec<String>,
    /// Image transform of the evaluation samples (e.g. center-crop:size=24), repeatable, as
    /// --transform.
    #[arg(long, value_name = "SPEC")]
    pub test_transform: Vec<String>,
    /// Data-loading worker threads (DataLoader's num_workers): batch b of an epoch is built by
    /// worker b mod N with its own generator seeded base_seed + worker_id, as PyTorch's workers;
    /// 0 builds batches on the training thread.
    #[arg(long, default_value_t = defaults().workers)]
    pub workers: usize,
    /// Batches in flight per worker (DataLoader's prefetch_factor).
    #[arg(long, default_value_t = defaults().prefetch_factor)]
    pub prefetch_factor: usize,
    /// Keep the training set in file order instead of reshuffling every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Train on the first N training samples only.
    #[arg(long)]
    pub train_samples: Option<usize>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Hold out this share of the training samples (seeded, as torch's random_split) and report
    /// val_loss/val_accuracy; early stopping, --keep-best and plateau schedulers can monitor them.
    #[arg(long)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub val_fraction: Option<f64>,
    /// Stop after N optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Train on at most N batches per epoch.
    #[arg(long)]
    pub limit_train_batches: Option<usize>,
    /// Evaluate on at most N batches.
    #[arg(long)]
    pub limit_test_batches: Option<usize>,
    /// Batches per evaluation (nanoGPT's eval_iters): with --data tokens:… each evaluation
    /// draws N random batches of train.bin and of val.bin (default 200); otherwise the same as
    /// --limit-test-batches.
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// One batch of training and one of evaluation, to check the setup.
    #[arg(long)]
    pub dry_run: bool,
    /// Sum gradients over N batches per optimizer step.
    #[arg(long, default_value_t = defaults().accumulate_grad_batches)]
    pub accumulate_grad_batches: usize,
    /// Also evaluate every N optimizer steps.
    #[arg(long)]
    pub eval_every_steps: Option<usize>,
    /// Evaluate after every N epochs (0: never at epoch ends).
    #[arg(long, default_value_t = defaults().eval_every_epochs)]
    pub eval_every_epochs: usize,
    /// Also report top-K accuracy (test_topK_accuracy) in evaluations.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Stop when a metric stops improving: METRIC[:patience=N,min_delta=X,mode=min|max]
    /// (METRIC: test_loss, test_accuracy, val_loss, val_accuracy…).
    #[arg(long)]
    pub early_stopping: Option<String>,
    /// Evaluate, checkpoint and write RUN/averaged.safetensors with an exponential moving
    /// average of the weights (and buffers) with this decay, updated after every optimizer step
    /// (AveragedModel + get_ema_multi_avg_fn).
    #[arg(long)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub ema: Option<f64>,
    /// Stochastic Weight Averaging from epoch START: START:lr=X[,anneal_epochs=10,
    /// anneal_strategy=cos|linear] (AveragedModel updated and SWALR stepped after each epoch from
    /// START on; evaluations report the averaged model).
    #[arg(long)]
    pub swa: Option<String>,
    /// Rescale gradients to a total 2-norm of at most X before each step (clip_grad_norm_).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub clip_grad_norm: Option<f64>,
    /// Clip every gradient element to [-X, X] before each step (clip_grad_value_).
    #[arg(long, allow_negative_numbers = true)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub clip_grad_value: Option<f64>,
    /// Draw loss/accuracy/lr curves (PNG and SVG) into RUN_DIR/plots at the end.
    #[arg(long)]
    pub plot: bool,
    /// Write a checkpoint every N optimizer steps (one is always written after each epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep the newest N checkpoints.
    #[arg(long, default_value_t = defaults().keep_checkpoints)]
    pub keep_checkpoints: usize,
    /// Also keep the best checkpoint by this metric (test_loss, val_accuracy…).
    #[arg(long)]
    pub keep_best: Option<String>,
    /// Start from these weights (a safetensors state dict, e.g. saved by PyTorch).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Freeze the parameters SELECTOR takes (repeatable): requires_grad=False, no gradient, no
    /// optimizer state, unchanged by training; SELECTOR as --param-group's, a name glob
    /// ('conv*', 'transformer.h.0.*') or ndim<N…; e.g. fine-tune a head on an --init backbone.
    #[arg(long, value_name = "SELECTOR")]
    pub freeze: Vec<String>,
    /// Autograd's anomaly mode (torch.autograd.set_detect_anomaly(True)): a NaN produced in
    /// backward stops the run with the operator that produced it named; slower.
    #[arg(long)]
    pub detect_anomaly: bool,
    /// false: --init loads the tensors that match the model by name and shape and names the
    /// missing, unexpected and mis-shaped ones (to fine-tune with a new head).
    #[arg(long, default_value_t = defaults().init_strict, action = clap::ArgAction::Set)]
    pub init_strict: bool,
    /// 32-true, bf16-mixed (autocast to bfloat16) or 16-mixed (autocast to float16 and a
    /// gradient scaler), as torch.autocast and torch.amp.GradScaler do (Lightning's names).
    #[arg(long, default_value_t = defaults().precision.to_string())]
    pub precision: String,
    /// Where metrics go, any combination: csv (metrics_*.csv), jsonl (metrics.jsonl),
    /// tensorboard (event files in the run directory: `tensorboard --logdir runs/`).
    #[arg(long, default_value_t = defaults().logger.to_string())]
    pub logger: String,
    /// TensorBoard: write the training loss, lr, samples/s every N optimizer steps.
    #[arg(long, default_value_t = defaults().log_every_n_steps)]
    pub log_every_n_steps: usize,
    /// TensorBoard: histograms of every parameter and its gradient at each epoch end.
    #[arg(long)]
    pub log_histograms: bool,
    /// Train data-parallel across the processes of an MPI job (`mpirun -n N kiln train
    /// --distributed mpi`; nccl: one GPU per rank); --batch-size is per rank.
    #[arg(long, value_parser = ["mpi", "nccl"])]
    pub distributed: Option<String>,
    /// Abort every rank when a collective has not completed after this many seconds.
    #[arg(long, default_value_t = defaults().dist_timeout)]
    #[serde(with = "kiln_loop::json_f64::plain")]
    pub dist_timeout: f64,
    /// Gradient bucket size in MiB, as DDP's bucket_cap_mb: each bucket's all-reduce starts
    /// during backward once its gradients are ready (default: DDP's 25, with a first bucket of
    /// 1 MiB; a value given caps every bucket, the first one included).
    #[arg(long)]
    #[serde(with = "kiln_loop::json_f64::option")]
    pub bucket_cap_mb: Option<f64>,
    /// Profile the run: simple (at the end, Lightning's SimpleProfiler table of data, forward,
    /// backward, optimizer, evaluation, checkpoint and logging time, on stderr) or
    /// trace[:steps=3,skip=2] (libtorch's profiler, as torch.profiler, over STEPS training
    /// batches after SKIP: a Chrome trace with ATen operators and their input shapes in
    /// RUN_DIR/profile/, for chrome://tracing, Perfetto or TensorBoard's profile plugin).
    #[arg(long, value_name = "simple|trace[:steps=N,skip=M]")]
    pub profile: Option<String>,

    /// Where checkpoints, metrics and the run's config go (default: runs/YYYYMMDD-HHMMSS, UTC).
    #[arg(long)]
    #[serde(skip)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its newest valid checkpoint (flags given again
    /// override its saved config).
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Take flags from this JSON file (flags given on the command line win).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print nothing on stdout.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
    /// plain: the tutorial's lines (a progress bar on a terminal); json: one JSON object per event.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    #[serde(skip)]
    pub log_format: String,
}

impl TrainArgs {
    /// The library request: the flags given on the command line (and only
    /// those, so saved and file configs keep theirs) and how to report.
    pub fn request(&self, matches: &clap::ArgMatches) -> anyhow::Result<TrainRequest> {
        let given = |key: &str| matches.value_source(key) == Some(ValueSource::CommandLine);
        let flags = match serde_json::to_value(self)? {
            serde_json::Value::Object(all) => all.into_iter().filter(|(k, _)| given(k)).collect(),
            _ => serde_json::Map::new(),
        };
        let stdout = || Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>;
        let display = if self.quiet {
            Display::Quiet
        } else if self.log_format == "json" {
            Display::Json(stdout())
        } else if std::io::stdout().is_terminal() {
            Display::Terminal(stdout())
        } else {
            Display::Tutorial(stdout())
        };
        Ok(TrainRequest {
            flags,
            config_file: self.config.clone(),
            resume: self.resume.clone(),
            run_dir: self.run_dir.clone(),
            display,
            notices: stderr_notices(self.quiet),
        })
    }
}

/// Flags of `kiln lr-find`: `kiln train`'s, and the finder's own (Lightning's
/// `lr_find` arguments and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct LrFindArgs {
    /// The first learning rate of the sweep.
    #[arg(long, default_value_t = LrFindConfig::default().min_lr)]
    pub min_lr: f64,
    /// The last learning rate of the sweep.
    #[arg(long, default_value_t = LrFindConfig::default().max_lr)]
    pub max_lr: f64,
    /// Optimizer steps of the sweep.
    #[arg(long, default_value_t = LrFindConfig::default().num_training)]
    pub num_training: usize,
    /// How the lr rises from step to step.
    #[arg(long, default_value = "exponential", value_parser = ["exponential", "linear"])]
    pub mode: String,
    /// Stop once the smoothed loss passes this many times its best (none: never).
    #[arg(long, default_value = "4", allow_negative_numbers = true)]
    pub early_stop_threshold: String,
    #[command(flatten)]
    pub train: TrainArgs,
}

impl LrFindArgs {
    /// The library request: the training flags as `kiln train` reads them,
    /// the finder's settings.
    pub fn request(&self, matches: &clap::ArgMatches) -> anyhow::Result<LrFindRequest> {
        let early_stop_threshold = match self.early_stop_threshold.as_str() {
            "none" => None,
            text => Some(text.parse::<f64>().map_err(|_| {
                kiln_loop::Error::Usage(format!(
                    "--early-stop-threshold {text}: not a number (or none)"
                ))
            })?),
        };
        Ok(LrFindRequest {
            train: self.train.request(matches)?,
            finder: LrFindConfig {
                min_lr: self.min_lr,
                max_lr: self.max_lr,
                num_training: self.num_training,
                mode: self.mode.parse()?,
                early_stop_threshold,
            },
        })
    }
}

/// Prints a run's notices on stderr, each in one write (MPI forwards the
/// ranks' output line by line): `kiln: …`, `warning: …`, and a failing
/// rank's `error: rank R of N: …`. `quiet` keeps only warnings and errors.
pub fn stderr_notices(quiet: bool) -> Notices {
    Notices::new(move |notice: &Notice| {
        let line = match notice {
            Notice::Warning(_) => format!("warning: {notice}\n"),
            Notice::RankFailed { .. } => format!("error: {notice}\n"),
            _ if quiet => return,
            Notice::Profile(_) => notice.to_string(),
            Notice::ModelSummary(_) => format!("{notice}\n"),
            _ => format!("kiln: {notice}\n"),
        };
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    })
}

/// What `kiln eval` and `kiln predict` run: a checkpoint (or a PyTorch
/// state dict) and the data set, with the run's settings as defaults.
#[derive(Debug, Clone, clap::Args, Serialize)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["checkpoint", "weights"])))]
pub struct CheckpointSource {
    /// A checkpoint directory, or a run directory (its newest valid checkpoint, see --which).
    #[arg(long)]
    #[serde(skip)]
    pub checkpoint: Option<PathBuf>,
    /// With a run directory: use its last or its best checkpoint.
    #[arg(long, value_parser = ["last", "best"])]
    #[serde(skip)]
    pub which: Option<String>,
    /// A safetensors state dict (e.g. saved by PyTorch) of the quickstart model, or of --model.
    #[arg(long)]
    #[serde(skip)]
    pub weights: Option<PathBuf>,
    /// The model of --weights (default: the quickstart MLP); see `kiln models`.
    #[arg(long)]
    pub model: Option<String>,
    /// Data directory (default: the run's, else the setup's FashionMNIST).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Another data source, as `kiln train --data` takes it (csv:…, tensors:…, idx:…): its
    /// test set is used instead of the run's.
    #[arg(long)]
    pub data: Option<String>,
    /// The set to use: test, or val (the run's --val-fraction split, drawn as in training).
    #[arg(long, value_parser = ["test", "val"])]
    #[serde(skip)]
    pub split: Option<String>,
    /// Use the first N test samples (default: the run's, else all).
    #[arg(long)]
    pub test_samples: Option<usize>,
    /// Samples per batch (default: the run's, else 64).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// auto, cpu, cuda or cuda:N (default: the run's, else auto).
    #[arg(long)]
    pub device: Option<String>,
}

/// Flags of `kiln eval`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct EvalArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub source: CheckpointSource,
    /// Also report top-K accuracy.
    #[arg(long)]
    pub top_k: Option<usize>,
}

impl EvalArgs {
    /// The library request.
    pub fn request(&self) -> anyhow::Result<EvalRequest> {
        let src = &self.source;
        Ok(EvalRequest {
            checkpoint: src.checkpoint.clone(),
            which: src.which.clone(),
            weights: src.weights.clone(),
            split: src.split.clone(),
            flags: given_flags(self)?,
            output: Some(Box::new(std::io::stdout())),
            notices: stderr_notices(false),
        })
    }
}

/// Flags of `kiln summary`: the model of a run, as `kiln train` builds it.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct SummaryArgs {
    /// Model spec, as for `kiln train` (see `kiln models`); default: the quickstart MLP.
    #[arg(long)]
    pub model: Option<String>,
    /// The data the model is built for, as for `kiln train` (input and output sizes).
    #[arg(long)]
    pub data: Option<String>,
    /// Directory with the four (Fashion)MNIST IDX files, gzipped or not.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Loss spec, as for `kiln train` (bce-with-logits makes one output of two classes).
    #[arg(long)]
    pub loss: Option<String>,
    /// Freeze the parameters SELECTOR takes (repeatable), as for `kiln train`.
    #[arg(long, value_name = "SELECTOR")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Start from these weights (a safetensors state dict), as for `kiln train`.
    #[arg(long)]
    pub init: Option<PathBuf>,
}

impl SummaryArgs {
    /// The flags given, as `kiln train` flags.
    pub fn flags(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        given_flags(self)
    }
}

/// Flags of `kiln predict`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct PredictArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub source: CheckpointSource,
    /// Where the predictions go: FILE.safetensors (outputs, and targets when the data has
    /// them) or FILE.csv (index, class and probability; or the values for regression).
    #[arg(long)]
    #[serde(skip)]
    pub output: PathBuf,
}

impl PredictArgs {
    /// The library request.
    pub fn request(&self) -> anyhow::Result<PredictRequest> {
        let src = &self.source;
        Ok(PredictRequest {
            checkpoint: src.checkpoint.clone(),
            which: src.which.clone(),
            weights: src.weights.clone(),
            split: src.split.clone(),
            flags: given_flags(self)?,
            output: self.output.clone(),
            progress: std::io::stderr().is_terminal(),
            notices: stderr_notices(false),
        })
    }
}

/// The flags a command line gave (those serialised and not null), as the
/// library's flag layer takes them.
fn given_flags(
    args: &impl Serialize,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    Ok(match serde_json::to_value(args)? {
        serde_json::Value::Object(all) => all.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => serde_json::Map::new(),
    })
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

/// Flags of `kiln prepare-text`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareTextArgs {
    /// The text file (UTF-8).
    pub input: PathBuf,
    /// The token directory to write (created if missing): train.bin, val.bin, meta.pkl.
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `kiln sample`; the defaults are sample.py's.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// A run directory (its newest valid checkpoint) or one of its checkpoints.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The prompt (default: a newline, as sample.py), or FILE:PATH to read it from a file.
    #[arg(long, default_value = "\n", hide_default_value = true)]
    pub start: String,
    /// Samples to draw.
    #[arg(long, default_value_t = SampleConfig::default().num_samples)]
    pub num_samples: usize,
    /// Tokens generated per sample.
    #[arg(long, default_value_t = SampleConfig::default().max_new_tokens)]
    pub max_new_tokens: i64,
    /// Logits are divided by it (below 1: less random).
    #[arg(long, default_value_t = SampleConfig::default().temperature)]
    pub temperature: f64,
    /// Keep only the K most likely tokens at each step, or none.
    #[arg(long, default_value = "200")]
    pub top_k: String,
    /// torch.manual_seed before the model is built.
    #[arg(long, default_value_t = SampleConfig::default().seed)]
    pub seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl SampleArgs {
    /// The library's settings.
    pub fn config(&self) -> anyhow::Result<SampleConfig> {
        let top_k = match self.top_k.as_str() {
            "none" | "None" => None,
            k => Some(k.parse::<i64>().map_err(|_| {
                kiln_loop::Error::Usage(format!(
                    "--top-k: expected a number of tokens or none, got '{k}'"
                ))
            })?),
        };
        Ok(SampleConfig {
            start: self.start.clone(),
            num_samples: self.num_samples,
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k,
            seed: self.seed,
        })
    }
}
