//! What a run is: its settings ([`RunConfig`], merged from layers of
//! flags), its directory ([`RunDir`]), its seed, resuming it, and building
//! every component it trains with. [`train`] and [`evaluate`] are what
//! `kiln train` and `kiln eval` call; the CLI only turns flags into a
//! [`TrainRequest`] and errors into exit codes.
mod build;
pub mod config;
pub mod dir;
pub mod signals;

pub use build::{build_loss, build_model, early_stopping, Components};
pub use config::{Layer, RunConfig};
pub use dir::RunDir;

use crate::checkpoint::{self, Checkpoint, Progress};
use crate::distributed::{Collective, DataParallel, DistributedSampler};
use crate::loggers::metrics_log::Formats;
use crate::loggers::tensorboard::{TensorBoardConfig, TensorBoardLogger};
use crate::loggers::{JsonLines, MetricsLogger, ProgressPrinter, TutorialPrinter};
use crate::{Callback, DataLoader, Error, FitSummary, Loaders, Model, Result, StopReason, Trainer};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// How a run shows itself on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The tutorial's lines (a progress bar on a terminal).
    #[default]
    Plain,
    /// One JSON object per event.
    Json,
}

/// What `kiln train` asks for.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// The flags given on the command line (a JSON object, only those given).
    pub flags: serde_json::Map<String, serde_json::Value>,
    /// `--config FILE`: flags from a JSON file (command-line flags win).
    pub config_file: Option<PathBuf>,
    /// `--resume DIR`: continue this run.
    pub resume: Option<PathBuf>,
    /// `--run-dir DIR`: where a new run goes (default `runs/YYYYMMDD-HHMMSS`).
    pub run_dir: Option<PathBuf>,
    /// No stdout at all.
    pub quiet: bool,
    /// The stdout format.
    pub format: LogFormat,
}

/// A seed from the operating system's entropy, like PyTorch's default
/// generator seed at start-up.
pub fn os_seed() -> u64 {
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

/// Writes the run's `config.json` when training actually starts (after a
/// resumed checkpoint was restored), so a start that fails changes nothing.
struct ConfigWriter<'r> {
    dir: &'r RunDir,
    config: RunConfig,
}

impl Callback for ConfigWriter<'_> {
    fn on_run_start(&mut self, _start: &Progress) -> Result<()> {
        self.dir.write_config(&self.config)
    }
}

/// The communicator `--distributed` names (`None` without it).
fn connect(config: &RunConfig) -> Result<Option<Box<dyn Collective>>> {
    let Some(kind) = config.distributed.as_deref() else {
        return Ok(None);
    };
    #[cfg(feature = "mpi")]
    let timeout = std::time::Duration::from_secs_f64(config.dist_timeout);
    match kind {
        #[cfg(feature = "mpi")]
        "mpi" => Ok(Some(Box::new(crate::distributed::mpi::Mpi::init(timeout)?))),
        #[cfg(not(feature = "mpi"))]
        "mpi" => Err(Error::Usage("--distributed mpi: this kiln was built without the `mpi` feature (cargo build --features kiln-cli/mpi)".into())),
        #[cfg(feature = "nccl")]
        "nccl" => {
            let device = nccl_device(config)?;
            Ok(Some(Box::new(crate::distributed::nccl::Nccl::init(timeout, device)?)))
        }
        #[cfg(not(feature = "nccl"))]
        "nccl" => Err(Error::Usage("--distributed nccl: this kiln was built without the `nccl` feature (cargo build --features kiln-cli/nccl)".into())),
        other => Err(Error::Usage(format!(
            "unknown --distributed '{other}'; accepted: mpi, nccl"
        ))),
    }
}

/// For `--distributed nccl`: this rank's GPU, `cuda:<local rank mod GPUs>`.
#[cfg(feature = "nccl")]
fn nccl_device(config: &RunConfig) -> Result<usize> {
    if !matches!(config.device.as_str(), "auto" | "cuda") {
        return Err(Error::Usage(format!(
            "--distributed nccl puts each rank on its own GPU; pass --device cuda or auto, not '{}'",
            config.device
        )));
    }
    let gpus = kiln_tensor::device::cuda_device_count();
    if gpus == 0 {
        return Err(Error::Usage("--distributed nccl needs a CUDA device; none is available (use --distributed mpi on CPUs)".into()));
    }
    Ok(crate::distributed::nccl::local_rank() % gpus)
}

/// Trains as `request` asks: a new run, or the continuation of one. Every
/// flag is checked and every component built before the run directory is
/// touched; a resumed run's overrides are checked against its checkpoint
/// before its `config.json` changes.
pub fn train(request: &TrainRequest) -> Result<FitSummary> {
    let mut layers = Vec::new();
    if let Some(dir) = &request.resume {
        dir::check_is_run(dir)?;
        layers.push(dir::read_config(dir)?.as_layer(dir::CONFIG_FILE)?);
    }
    if let Some(file) = &request.config_file {
        layers.push(Layer::from_file(file)?);
    }
    layers.push(Layer::new("the command line", request.flags.clone()));
    #[allow(unused_mut)]
    let mut config = RunConfig::from_layers(&layers)?;
    #[cfg(feature = "nccl")]
    if config.distributed.as_deref() == Some("nccl") {
        config.device = format!("cuda:{}", nccl_device(&config)?);
    }
    let Some(comm) = connect(&config)? else {
        return train_on(request, config, None);
    };
    let dp = DataParallel::new(comm.as_ref()).buckets(
        crate::distributed::BucketConfig::from_cap_mb(config.bucket_cap_mb)?,
    );
    let result = train_on(request, config, Some(dp));
    if let Err(err) = &result {
        // When ranks disagree, the ones that differ say so: the others give
        // them a moment to end the job before saying it themselves.
        if let Error::RankMismatch { ranks, .. } = err {
            if !ranks.contains(&comm.rank()) {
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
        }
        // One write, so that MPI's forwarding does not split the line.
        let line = format!(
            "error: rank {} of {}: {}\n",
            comm.rank(),
            comm.world_size(),
            err.to_string().lines().next().unwrap_or("unknown error")
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        comm.abort(err.exit_code());
    }
    result
}

/// `train` on this process: alone, or as one rank of `dp`.
fn train_on(
    request: &TrainRequest,
    mut config: RunConfig,
    dp: Option<DataParallel<'_>>,
) -> Result<FitSummary> {
    let main = dp.is_none_or(|dp| dp.is_main());
    // A run being resumed is locked before anything else happens to it.
    let resumed = match &request.resume {
        Some(path) if main => Some(RunDir::open(path)?),
        _ => None,
    };
    // PyTorch seeds its generator from the OS when a program does not; kiln
    // does too, and records the seed so the run can be repeated. Ranks take
    // rank 0's.
    let seed = match (config.seed, dp) {
        (Some(seed), _) => seed,
        (None, Some(dp)) => dp.broadcast_u64(os_seed())?,
        (None, None) => os_seed(),
    };
    config.seed = Some(seed);
    let mut parts = Components::build(&config, seed)?;
    // config.json records what runs, defaults included.
    config.loss = Some(parts.loss_spec.clone());
    config.model = Some(parts.model_spec.clone());
    let Components {
        ref splits,
        ref mut model,
        ref loss,
        ref mut optimizer,
        ..
    } = parts;
    let shuffle = !config.no_shuffle;
    let mut train_loader = DataLoader::new(&splits.train, config.batch_size, shuffle)?;
    let mut val_loader = splits
        .val
        .as_ref()
        .map(|v| DataLoader::new(v, config.batch_size, false))
        .transpose()?;
    let mut test_loader = DataLoader::new(&splits.test, config.batch_size, false)?;
    if let Some(dp) = dp {
        check_ranks_agree(dp, &config, splits)?;
        dp.check_same_model(model.as_ref())?;
        let sampler = DistributedSampler::new(dp.world_size(), dp.rank())?;
        train_loader = train_loader.distributed(sampler.clone().shuffle(shuffle).seed(seed));
        let eval_sampler = sampler.shuffle(false).pad(false);
        val_loader = val_loader.map(|l| l.distributed(eval_sampler.clone()));
        test_loader = test_loader.distributed(eval_sampler);
    }
    let trainer_config = build::trainer_config(&config)?;
    let scheduler = build::scheduler(&config, optimizer.as_mut(), &train_loader)?;
    // Declared before the trainer, whose callbacks borrow it.
    let run_dir: Option<RunDir>;
    let mut trainer = Trainer::new(trainer_config)?.run_config(config.to_json()?);
    trainer = build::metrics(trainer, &config, splits)?;
    let mut eval_names = Vec::new();
    if val_loader.is_some() {
        eval_names.push("val");
    }
    eval_names.push("test");
    let reported = trainer.metric_names(&eval_names);
    let keep_best_reported = config
        .keep_best
        .as_ref()
        .is_none_or(|m| reported.contains(m));
    let checked = trainer.check_monitors(&eval_names).and_then(|()| {
        if keep_best_reported {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "--keep-best monitors '{}', which this run does not report; it reports {}",
                config.keep_best.as_deref().unwrap_or_default(),
                reported.join(", ")
            )))
        }
    });
    checked.map_err(|e| {
        let hint = if val_loader.is_none() && e.to_string().contains("'val_") {
            " (val_* metrics need --val-fraction)"
        } else {
            ""
        };
        Error::Usage(format!("{e}{hint}"))
    })?;

    // Everything is built and checked: now the run directory.
    run_dir = if main {
        Some(match resumed {
            Some(dir) => dir,
            None => RunDir::create(request.run_dir.as_deref())?,
        })
    } else {
        None
    };
    let mut resume: Option<Checkpoint> = None;
    if let Some(dir) = &run_dir {
        for stale in dir.clean_stale()? {
            eprintln!(
                "kiln: removed {} (left by an interrupted write)",
                stale.display()
            );
        }
        if request.resume.is_some() {
            match dir.latest_checkpoint(&mut |w| eprintln!("warning: {w}"))? {
                Some((path, ckpt)) => {
                    warn_on_new_horizon(&config, &ckpt);
                    eprintln!("kiln: resuming {} from {}", dir.path().display(), path.display());
                    resume = Some(ckpt);
                }
                None => eprintln!(
                    "kiln: {} has no checkpoint yet; starting it from the beginning with its saved config",
                    dir.path().display()
                ),
            }
        } else {
            eprintln!("kiln: run directory {}", dir.path().display());
        }
        eprintln!("kiln: seed set to {seed}");
    }
    // Other ranks resume from the checkpoint rank 0 chose.
    if let (Some(dp), Some(path)) = (dp, &request.resume) {
        resume = share_checkpoint(dp, resume, path)?;
    }
    let resume_step = resume.as_ref().map(|c| c.progress.step);
    if let Some(dir) = &run_dir {
        trainer = trainer.checkpoints(build::checkpoint_config(&config, dir.path()))?;
        trainer = trainer.callback(ConfigWriter {
            dir,
            config: config.clone(),
        });
        let loggers = config.loggers()?;
        if loggers.jsonl || loggers.csv {
            let formats = Formats {
                jsonl: loggers.jsonl,
                csv: loggers.csv,
            };
            trainer = trainer.callback(match resume_step {
                Some(step) => MetricsLogger::resume(dir.path(), formats, step),
                None => MetricsLogger::create(dir.path(), formats),
            });
        }
        if loggers.tensorboard {
            let tb = TensorBoardConfig {
                log_every_n_steps: config.log_every_n_steps as u64,
                flags: Some(config.to_json()?),
                histograms: config.log_histograms,
                ..TensorBoardConfig::default()
            };
            trainer = trainer.callback(match resume_step {
                Some(step) => TensorBoardLogger::resume(dir.path(), step as u64, tb)?,
                None => TensorBoardLogger::create(dir.path(), tb)?,
            });
        }
        if !request.quiet {
            let stdout = std::io::stdout();
            trainer = match request.format {
                LogFormat::Json => trainer.callback(JsonLines::new(stdout.lock())),
                // Open MPI gives ranks a pseudo-terminal: no progress bar there.
                LogFormat::Plain if stdout.is_terminal() && dp.is_none() => {
                    trainer.callback(ProgressPrinter::new(train_loader.len()))
                }
                LogFormat::Plain => trainer.callback(TutorialPrinter::new(stdout.lock())),
            };
        }
    }
    if let Some((scheduler, interval)) = scheduler {
        trainer = trainer.scheduler(scheduler, interval);
    }
    if let Some(dp) = dp {
        trainer = trainer.data_parallel(dp);
    }
    trainer = trainer.interrupt_flag(signals::install()?);
    let mut eval_sets: Vec<(&str, &DataLoader<'_>)> = Vec::new();
    if let Some(val) = &val_loader {
        eval_sets.push(("val", val));
    }
    eval_sets.push(("test", &test_loader));
    debug_assert_eq!(eval_sets.len(), eval_names.len());
    let summary = trainer.fit(
        model.as_mut(),
        loss.as_ref(),
        optimizer.as_mut(),
        Loaders {
            train: &train_loader,
            eval: &eval_sets,
        },
        resume,
    )?;
    drop(trainer);
    if let Some(dp) = dp {
        dp.verify_replicas(model.as_ref())?;
    }
    let Some(dir) = &run_dir else {
        return finish(summary, None);
    };
    save_trained_module(model.as_ref(), &summary, dir.path())?;
    if config.plot {
        for path in crate::plot::plot_run(dir.path(), &dir.path().join("plots"))? {
            eprintln!("kiln: wrote {}", path.display());
        }
    }
    finish(summary, Some(dir.path()))
}

/// A TorchScript model that finished training is written back as
/// TorchScript, `RUN/model.pt` (`torch.jit.load` reads it); an interrupted
/// or failed run writes nothing (its checkpoints hold the weights).
fn save_trained_module(model: &dyn Model, summary: &FitSummary, run_dir: &Path) -> Result<()> {
    if matches!(
        summary.stop,
        StopReason::Interrupted { .. } | StopReason::NonFiniteLoss { .. }
    ) {
        return Ok(());
    }
    let path = run_dir.join(TORCHSCRIPT_FILE);
    if model.save_torchscript(&path)? {
        eprintln!("kiln: wrote {}", path.display());
    }
    Ok(())
}

/// The trained TorchScript module of a run (`--model torchscript:…`), in its directory.
pub const TORCHSCRIPT_FILE: &str = "model.pt";

/// The run's outcome as a result: interrupts and non-finite losses are
/// errors (non-zero exit codes) that say what was kept.
fn finish(summary: FitSummary, run_dir: Option<&Path>) -> Result<FitSummary> {
    match &summary.stop {
        StopReason::Interrupted {
            signal,
            epoch,
            step,
        } => {
            let resume = run_dir.map_or(String::new(), |dir| {
                format!("; resume with: kiln train --resume {}", dir.display())
            });
            Err(Error::Interrupted {
                signal: *signal,
                message: format!("interrupted at epoch {epoch} step {step}{resume}"),
            })
        }
        StopReason::NonFiniteLoss { .. } => {
            let kept = summary
                .last_checkpoint
                .as_ref()
                .map_or("no checkpoint".into(), |p| {
                    format!("last good checkpoint {}", p.display())
                });
            Err(Error::NonFiniteLoss(format!(
                "{}; stopped, {kept}",
                summary.stop
            )))
        }
        _ => Ok(summary),
    }
}

/// Ranks that would take different numbers of steps, or train different
/// things, would wait on each other forever: refuse them up front.
fn check_ranks_agree(
    dp: DataParallel<'_>,
    config: &RunConfig,
    splits: &build::RunData,
) -> Result<()> {
    let mut same = config.clone();
    // The device is per rank (`cuda:N` with NCCL).
    same.device = String::new();
    let text = same.to_json()?.to_string();
    // FNV-1a: the same on every rank and every build.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    dp.check_same_u64(
        "dataset sizes (train, validation, test)",
        &[
            splits.train.len() as u64,
            splits.val.as_ref().map_or(0, |v| v.len() as u64),
            splits.test.len() as u64,
        ],
    )?;
    dp.check_same_u64(
        "their flags (each rank must get the same command line)",
        &[hash],
    )
}

/// Rank 0 chose the checkpoint to resume from; every other rank loads the
/// same one from the run directory (all ranks see it: one machine, or a
/// shared filesystem), or starts fresh when rank 0 does.
fn share_checkpoint(
    dp: DataParallel<'_>,
    mine: Option<Checkpoint>,
    run_dir: &Path,
) -> Result<Option<Checkpoint>> {
    let none = u64::MAX;
    let step = dp.broadcast_u64(mine.as_ref().map_or(none, |c| c.progress.step as u64))?;
    if dp.is_main() || step == none {
        return Ok(mine);
    }
    let dir = checkpoint::checkpoints_dir(run_dir).join(format!("step-{step:09}"));
    Ok(Some(checkpoint::load(&dir)?))
}

/// Warns when a resumed run's new length changes a scheduler's horizon (the
/// restored scheduler keeps the original one).
fn warn_on_new_horizon(config: &RunConfig, ckpt: &Checkpoint) {
    let Some(spec) = config.scheduler.as_deref() else {
        return;
    };
    let saved: Option<RunConfig> = serde_json::from_value(ckpt.config.clone()).ok();
    let Some(saved) = saved else {
        return;
    };
    if saved.epochs != config.epochs || saved.max_steps != config.max_steps {
        eprintln!(
            "warning: --epochs/--max-steps changed ({} epochs, max steps {:?} → {} epochs, max steps {:?}); the restored '{spec}' scheduler keeps the horizon of the original run",
            saved.epochs, saved.max_steps, config.epochs, config.max_steps
        );
    }
}

/// What `kiln eval` asks for.
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// A checkpoint directory, or a run directory.
    pub checkpoint: Option<PathBuf>,
    /// With a run directory: `last` (default) or `best`.
    pub which: Option<String>,
    /// A safetensors state dict (e.g. saved by PyTorch) of the default model.
    pub weights: Option<PathBuf>,
    /// Flags that override the run's (data directory, test samples, batch size, device).
    pub flags: serde_json::Map<String, serde_json::Value>,
}

/// `kiln eval`: the tutorial's test loop on a checkpoint's (or a weights
/// file's) model, on the run's test data; prints the tutorial's block.
pub fn evaluate(request: &EvalRequest) -> Result<crate::TestSummary> {
    let (weights, saved) = match (&request.checkpoint, &request.weights) {
        (Some(path), _) => {
            let dir = checkpoint_to_evaluate(path, request.which.as_deref())?;
            let ckpt = checkpoint::load(&dir)?;
            let saved: RunConfig =
                serde_json::from_value(ckpt.config.clone()).map_err(|e| Error::Data {
                    path: dir.clone(),
                    message: format!("the checkpoint's run config is unreadable: {e}"),
                })?;
            (ckpt.model, Some(saved))
        }
        (None, Some(file)) => (checkpoint::read_weights(file)?, None),
        (None, None) => {
            return Err(Error::Usage(
                "give --checkpoint DIR or --weights FILE".into(),
            ))
        }
    };
    let mut layers = Vec::new();
    if let Some(saved) = &saved {
        layers.push(saved.as_layer("the checkpoint's config")?);
    }
    layers.push(Layer::new("the command line", request.flags.clone()));
    let config = RunConfig::from_layers(&layers)?;
    let seed = config.seed.unwrap_or(0);
    let parts = Components::build(&config, seed)?;
    let Components {
        splits,
        mut model,
        loss,
        ..
    } = parts;
    model.load_state_dict(&weights)?;
    let loader = DataLoader::new(&splits.test, config.batch_size, false)?;
    crate::tutorial::test(
        &loader,
        model.as_mut(),
        loss.as_ref(),
        &mut std::io::stdout().lock(),
    )
}

/// The checkpoint `kiln eval --checkpoint PATH [--which last|best]` means.
fn checkpoint_to_evaluate(path: &Path, which: Option<&str>) -> Result<PathBuf> {
    if path.join("manifest.json").exists() {
        if which.is_some() {
            return Err(Error::Usage(format!(
                "--which picks a checkpoint of a run directory; {} is a checkpoint",
                path.display()
            )));
        }
        return Ok(path.to_path_buf());
    }
    match which.unwrap_or("last") {
        "last" => checkpoint::latest_valid(path, &mut |w| eprintln!("warning: {w}"))?
            .map(|(dir, _)| dir)
            .ok_or_else(|| Error::Data {
                path: path.to_path_buf(),
                message: "no valid checkpoint here".into(),
            }),
        "best" => checkpoint::best(path)?.ok_or_else(|| {
            Error::Usage(format!(
                "{} has no best checkpoint (train with --keep-best METRIC); use --which last",
                path.display()
            ))
        }),
        other => Err(Error::Usage(format!(
            "--which {other}: accepted: last, best"
        ))),
    }
}
