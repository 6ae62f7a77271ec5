//! What a run is: its settings ([`RunConfig`], merged from layers of
//! flags, resolved into a [`RunPlan`]), its directory ([`RunDir`]), its
//! seed, resuming it, and building every component it trains with from
//! the caller's [`Registries`]. [`train`], [`evaluate`] and [`predict`] are
//! what `kiln train`, `kiln eval` and `kiln predict` call; the CLI only turns flags into a
//! [`TrainRequest`], prints [`Notice`]s and maps errors to exit codes.
//!
//! A run goes through named phases ([`train_on`]): plan (seed and typed
//! settings), build (data, model, loss, optimizer, loaders, the Trainer —
//! every check, nothing written), open (the run directory and the
//! checkpoint to resume), attach (the outputs), fit, and finish (the
//! trained module, plots, the stop reason as a result).
mod build;
pub mod config;
pub mod dir;
#[cfg(feature = "plot")]
mod lr_find;
mod outputs;
pub mod plan;
mod predict;
mod registries;
pub mod signals;

pub use build::{
    build_loss, build_model, Components, RunData, RunLoaders, EVAL_BATCHES, TRAIN_EVAL,
};
pub use config::{Distributed, Layer, Loggers, RunConfig};
pub use dir::RunDir;
#[cfg(feature = "plot")]
pub use lr_find::{lr_find, LrFindReport, LrFindRequest};
pub use outputs::Display;
pub use plan::RunPlan;
pub use predict::{predict, PredictRequest, PredictSummary};
pub use registries::Registries;

use crate::checkpoint::{self, Checkpoint};
use crate::distributed::{Collective, DataParallel};
use crate::notice::{Notice, Notices};
use crate::step::LossStep;
use crate::{DataLoader, Error, FitSummary, Loaders, Model, Result, StopReason, Trainer};
use std::path::{Path, PathBuf};

/// How a run shows itself on stdout (the `--log-format` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The tutorial's lines (a progress bar on a terminal).
    #[default]
    Plain,
    /// One JSON object per event.
    Json,
}

/// What `kiln train` asks for.
#[derive(Debug, Default)]
pub struct TrainRequest {
    /// The flags given on the command line (a JSON object, only those given).
    pub flags: serde_json::Map<String, serde_json::Value>,
    /// `--config FILE`: flags from a JSON file (command-line flags win).
    pub config_file: Option<PathBuf>,
    /// `--resume DIR`: continue this run.
    pub resume: Option<PathBuf>,
    /// `--run-dir DIR`: where a new run goes (default `runs/YYYYMMDD-HHMMSS`).
    pub run_dir: Option<PathBuf>,
    /// What the run shows on stdout.
    pub display: Display,
    /// Where the run's notices go (run directory, seed, warnings…).
    pub notices: Notices,
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

/// The run's configuration from its layers: the saved `config.json` of
/// the run being resumed, `--config FILE`, the command line.
pub fn resolve_config(request: &TrainRequest, registries: &Registries) -> Result<RunConfig> {
    let mut layers = Vec::new();
    if let Some(dir) = &request.resume {
        dir::check_is_run(dir)?;
        layers.push(dir::read_config(dir, registries)?.as_layer(dir::CONFIG_FILE)?);
    }
    if let Some(file) = &request.config_file {
        layers.push(Layer::from_file(file)?);
    }
    layers.push(Layer::new("the command line", request.flags.clone()));
    RunConfig::from_layers(&layers, registries)
}

/// Trains as `request` asks with the components of `registries`: a new
/// run, or the continuation of one. Every flag is checked and every
/// component built before the run directory is touched; a resumed run's
/// overrides are checked against its checkpoint before its `config.json`
/// changes.
pub fn train(request: TrainRequest, registries: &Registries) -> Result<FitSummary> {
    #[allow(unused_mut)]
    let mut config = resolve_config(&request, registries)?;
    #[cfg(feature = "nccl")]
    if config.distributed == Some(Distributed::Nccl) {
        config.device = kiln_tensor::device::DeviceSpec::Cuda(nccl_device(&config)?);
    }
    // Before MPI starts: a singleton MPI sets the launcher's variables itself.
    let launched = crate::distributed::launched();
    let Some(comm) = connect(&config)? else {
        return train_on(request, registries, config, None);
    };
    comm.set_notices(request.notices.clone());
    if comm.world_size() == 1 && !launched {
        request.notices.warn(format!(
            "--distributed {}: this process is the only rank of its job (no mpirun or srun started it); it trains alone",
            config.distributed.map_or(String::new(), |d| d.to_string())
        ));
    }
    let dp = DataParallel::new(comm.as_ref()).buckets(
        crate::distributed::BucketConfig::from_cap_mb(config.bucket_cap_mb)?,
    );
    let notices = request.notices.clone();
    let result = train_on(request, registries, config, Some(dp));
    if let Err(err) = &result {
        end_job(comm.as_ref(), err, &notices);
    }
    result
}

/// One rank's error ends the whole job, after saying it once.
fn end_job(comm: &dyn Collective, err: &Error, notices: &Notices) {
    // When ranks disagree, the ones that differ say so: the others give
    // them a moment to end the job before saying it themselves.
    if let Error::RankMismatch { ranks, .. } = err {
        if !ranks.contains(&comm.rank()) {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    }
    notices.send(Notice::RankFailed {
        rank: comm.rank(),
        world: comm.world_size(),
        error: err
            .to_string()
            .lines()
            .next()
            .unwrap_or("unknown error")
            .to_string(),
    });
    comm.abort(err.exit_code());
}

/// The communicator `--distributed` names (`None` without it).
fn connect(config: &RunConfig) -> Result<Option<Box<dyn Collective>>> {
    let Some(kind) = config.distributed else {
        return Ok(None);
    };
    #[cfg(feature = "mpi")]
    let timeout = std::time::Duration::from_secs_f64(config.dist_timeout);
    match kind {
        #[cfg(feature = "mpi")]
        Distributed::Mpi => Ok(Some(Box::new(crate::distributed::mpi::Mpi::init(timeout)?))),
        #[cfg(not(feature = "mpi"))]
        Distributed::Mpi => Err(Error::Usage("--distributed mpi: this kiln was built without the `mpi` feature (cargo build --features kiln-cli/mpi)".into())),
        #[cfg(feature = "nccl")]
        Distributed::Nccl => {
            let device = nccl_device(config)?;
            Ok(Some(Box::new(crate::distributed::nccl::Nccl::init(timeout, device)?)))
        }
        #[cfg(not(feature = "nccl"))]
        Distributed::Nccl => Err(Error::Usage("--distributed nccl: this kiln was built without the `nccl` feature (cargo build --features kiln-cli/nccl)".into())),
    }
}

/// For `--distributed nccl`: this rank's GPU, `cuda:<local rank mod GPUs>`.
#[cfg(feature = "nccl")]
fn nccl_device(config: &RunConfig) -> Result<usize> {
    use kiln_tensor::device::DeviceSpec;
    if !matches!(config.device, DeviceSpec::Auto | DeviceSpec::Cuda(_)) {
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

/// The seed of the run: given, or drawn from the OS (PyTorch seeds its
/// generator from the OS when a program does not; kiln records the seed so
/// the run can be repeated). Ranks take rank 0's.
fn seed(config: &RunConfig, dp: Option<DataParallel<'_>>) -> Result<u64> {
    Ok(match (config.seed, dp) {
        (Some(seed), _) => seed,
        (None, Some(dp)) => dp.broadcast_u64(os_seed())?,
        (None, None) => os_seed(),
    })
}

/// Everything a run trains with, built and checked; nothing written yet.
struct Prepared<'a> {
    plan: RunPlan,
    parts: Components,
    loaders: RunLoaders,
    trainer: Trainer<'a>,
}

/// `train` on this process: alone, or as one rank of `dp`. The phases.
fn train_on(
    request: TrainRequest,
    registries: &Registries,
    config: RunConfig,
    dp: Option<DataParallel<'_>>,
) -> Result<FitSummary> {
    let main = dp.is_none_or(|dp| dp.is_main());
    // A run being resumed is locked before anything else happens to it.
    let resumed = match &request.resume {
        Some(path) if main => Some(RunDir::open(path)?),
        _ => None,
    };
    let seed = seed(&config, dp)?;
    let plan = RunPlan::new(config, seed)?;
    let Prepared {
        plan,
        mut parts,
        loaders,
        trainer,
    } = prepare(plan, registries, dp)?;
    if main {
        warn_on_setup(&plan, &parts, &request.notices);
    }
    let (run_dir, resume) = open_run(&request, resumed, &plan, &parts, dp)?;
    let written = run_dir.as_ref().filter(|_| !plan.config.dry_run);
    let trainer = with_outputs(
        trainer,
        (request.display, &request.notices),
        &plan,
        &parts,
        (&loaders, dp),
        written,
        resume.as_ref().map(|c| c.progress.step),
    )?;
    let summary = fit(
        trainer,
        &plan,
        &mut parts,
        &loaders,
        resume,
        run_dir.as_ref(),
    )?;
    if let Some(dp) = dp {
        dp.verify_replicas(parts.model.as_ref())?;
    }
    if main && plan.config.profile == Some(crate::profiler::Profile::Simple) {
        request
            .notices
            .send(Notice::Profile(crate::profiler::simple_report(
                &summary.timings,
            )));
    }
    finish_run(
        summary,
        parts.model.as_ref(),
        run_dir.as_ref().filter(|_| !plan.config.dry_run),
        &plan,
        &request.notices,
    )
}

/// The trainer with what a run shows and writes: on the main process the
/// model summary (after the run directory's line), the run's files when it
/// writes any (`written`), `--profile trace`, and the printed log; on every
/// process the interrupt flag.
fn with_outputs<'a>(
    trainer: Trainer<'a>,
    (display, notices): (Display, &Notices),
    plan: &RunPlan,
    parts: &Components,
    (loaders, dp): (&RunLoaders, Option<DataParallel<'_>>),
    written: Option<&'a RunDir>,
    resumed_at: Option<usize>,
) -> Result<Trainer<'a>> {
    let main = dp.is_none_or(|dp| dp.is_main());
    if main {
        let summary = crate::models::ModelSummary::of(parts.model.as_ref())?;
        notices.send(Notice::ModelSummary(summary.to_string()));
    }
    let mut trainer = trainer.interrupt_flag(signals::install()?);
    if let Some(dir) = written {
        trainer = outputs::attach(
            trainer.checkpoint_dir(dir.path()),
            plan,
            dir,
            resumed_at,
            notices,
        )?;
    }
    if main {
        trainer = outputs::profile(trainer, plan, written, parts.device, notices);
        trainer = outputs::show(
            trainer,
            display,
            dp.is_some(),
            (loaders.train.len(), loaders.train.is_random()),
            outputs::start_event(written, plan.seed, resumed_at.is_some()),
        );
    }
    Ok(trainer)
}

/// `trainer.fit` on the run's parts, under anomaly mode with
/// `--detect-anomaly` (a NaN in backward stops the run in one line).
fn fit(
    mut trainer: Trainer<'_>,
    plan: &RunPlan,
    parts: &mut Components,
    loaders: &RunLoaders,
    resume: Option<Checkpoint>,
    run_dir: Option<&RunDir>,
) -> Result<FitSummary> {
    let eval_sets = loaders.eval_sets();
    let anomaly = plan
        .config
        .detect_anomaly
        .then(|| kiln_tensor::autograd::DetectAnomaly::new(true));
    let summary = trainer.fit(
        parts.model.as_mut(),
        &LossStep::new(parts.loss.as_ref()),
        parts.optimizer.as_mut(),
        Loaders {
            train: &loaders.train,
            eval: &eval_sets,
        },
        resume,
    );
    match (summary, &anomaly) {
        (Err(err), Some(_)) => Err(anomaly_stop(err, run_dir)),
        (summary, _) => summary,
    }
}

/// The error anomaly mode raises in backward (`Function 'SqrtBackward0'
/// returned nan values in its 0th output.`) as a stop that says what was
/// kept, as a non-finite loss does; other errors as they are.
fn anomaly_stop(err: Error, run_dir: Option<&RunDir>) -> Error {
    let text = err.to_string();
    let Some(line) = text
        .find("Function '")
        .and_then(|start| text[start..].lines().next())
        .filter(|line| line.contains("returned nan values"))
    else {
        return err;
    };
    // Checkpoints are renamed into place whole: the newest listed is complete.
    let kept = run_dir
        .and_then(|dir| checkpoint::list(dir.path()).ok())
        .and_then(|all| all.last().cloned())
        .map_or("no checkpoint".into(), |p| {
            format!("last good checkpoint {}", p.display())
        });
    Error::NonFiniteLoss(format!(
        "--detect-anomaly: {}; stopped, {kept}",
        line.trim_end_matches('.')
    ))
}

/// What the user should know before the run starts: PyTorch's warning
/// when a loader starts more workers than the machine has CPUs (they
/// compete for the cores), and what a non-strict `--init` skipped.
fn warn_on_setup(plan: &RunPlan, parts: &Components, notices: &Notices) {
    let workers = plan.config.workers;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers > cpus {
        notices.warn(format!(
            "--workers {workers} starts more loader threads than this machine's {cpus} CPUs; excessive workers can slow the run down (PyTorch suggests at most {cpus})"
        ));
    }
    if let Some(crate::trainer::Averaging::Swa(_)) = &plan.trainer.averaging {
        let buffers = parts.model.buffers().unwrap_or_default();
        if let Some((name, _)) = buffers.iter().find(|(n, _)| n.ends_with("running_mean")) {
            notices.warn(format!(
                "--swa: the batch-norm statistics ({name}…) are not recomputed for the averaged weights; as torch.optim.swa_utils.update_bn leaves a scripted model's alone, the averaged model keeps those of its last update"
            ));
        }
    }
    if let (Some(init), false) = (&plan.config.init, parts.init_skipped.is_empty()) {
        notices.warn(format!(
            "--init {} (not strict): skipped {}",
            init.display(),
            parts.init_skipped.join("; ")
        ));
    }
}

/// The run directory phase (rank 0 opens or creates it; `--dry-run`
/// writes nothing, as Lightning's `fast_dev_run`, and only reads a resumed
/// run's) and the checkpoint a resumed run continues from, with the
/// optimizer hyperparameters given again applied to it.
fn open_run(
    request: &TrainRequest,
    resumed: Option<RunDir>,
    plan: &RunPlan,
    parts: &Components,
    dp: Option<DataParallel<'_>>,
) -> Result<(Option<RunDir>, Option<Checkpoint>)> {
    let main = dp.is_none_or(|dp| dp.is_main());
    let run_dir = match (main, plan.config.dry_run) {
        (true, false) => Some(open_run_dir(request, resumed, plan, &request.notices)?),
        (true, true) => {
            request.notices.send(Notice::Seed(plan.seed));
            resumed
        }
        (false, _) => None,
    };
    let resume = match (&request.resume, dp) {
        (Some(path), Some(dp)) => share_checkpoint(
            dp,
            find_checkpoint(run_dir.as_ref(), plan, &request.notices)?,
            path,
        )?,
        (Some(_), None) => find_checkpoint(run_dir.as_ref(), plan, &request.notices)?,
        (None, _) => None,
    };
    let resume = match resume {
        Some(mut ckpt) => {
            let changed = apply_new_hyperparameters(&mut ckpt, plan, parts.optimizer.as_ref())?;
            if main && !changed.is_empty() {
                request.notices.send(Notice::NewHyperparameters(changed));
            }
            Some(ckpt)
        }
        None => None,
    };
    Ok((run_dir, resume))
}

/// The build phase: components, loaders, the Trainer with its scheduler
/// and metrics, data-parallel agreement — every check before anything is
/// written. `config.json` records what runs, defaults included.
fn prepare<'a>(
    mut plan: RunPlan,
    registries: &Registries,
    dp: Option<DataParallel<'a>>,
) -> Result<Prepared<'a>> {
    let mut parts = Components::build(&plan, registries)?;
    plan.config.loss = Some(parts.loss_spec.clone());
    plan.config.model = Some(parts.model_spec.clone());
    let loaders = RunLoaders::build(&plan, &parts.data, parts.device, dp)?;
    if let Some(dp) = dp {
        check_ranks_agree(dp, &plan.config, &parts.data)?;
        dp.check_same_model(parts.model.as_ref())?;
    }
    let mut trainer = Trainer::new(plan.trainer.clone())
        .map_err(plan::flag_error)?
        .run_config(plan.config.to_json()?)
        .metrics(build::metrics(
            plan.config.top_k,
            parts.data.task,
            parts.data.sampling,
        )?);
    if let Some((scheduler, interval)) = build::scheduler(
        &plan,
        &registries.schedulers,
        parts.optimizer.as_mut(),
        &loaders.train,
    )? {
        trainer = trainer.scheduler(scheduler, interval);
    }
    if let Some(dp) = dp {
        trainer = trainer.data_parallel(dp);
    }
    let eval_names: Vec<&str> = loaders.eval.iter().map(|(n, _)| *n).collect();
    trainer
        .check(parts.model.as_ref(), parts.optimizer.as_ref(), &eval_names)
        .map_err(|e| match plan::flag_error(e) {
            Error::Usage(m) if parts.data.val.is_none() && m.contains("'val_") => {
                Error::Usage(format!("{m} (val_* metrics need --val-fraction)"))
            }
            other => other,
        })?;
    Ok(Prepared {
        plan,
        parts,
        loaders,
        trainer,
    })
}

/// The open phase (rank 0): the run directory — the resumed one, or a new
/// one — with what interrupted writes left removed.
fn open_run_dir(
    request: &TrainRequest,
    resumed: Option<RunDir>,
    plan: &RunPlan,
    notices: &Notices,
) -> Result<RunDir> {
    let dir = match resumed {
        Some(dir) => dir,
        None => RunDir::create(request.run_dir.as_deref())?,
    };
    for stale in dir.clean_stale()? {
        notices.send(Notice::Removed(stale));
    }
    if request.resume.is_none() {
        notices.send(Notice::RunDir(dir.path().to_path_buf()));
    }
    notices.send(Notice::Seed(plan.seed));
    Ok(dir)
}

/// The newest valid checkpoint of a resumed run (rank 0; `None` on other
/// ranks, which take rank 0's choice).
fn find_checkpoint(
    dir: Option<&RunDir>,
    plan: &RunPlan,
    notices: &Notices,
) -> Result<Option<Checkpoint>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    match dir.latest_checkpoint(&mut |w| notices.warn(w))? {
        Some((path, ckpt)) => {
            warn_on_new_horizon(&plan.config, &ckpt, notices);
            notices.send(Notice::Resuming {
                run: dir.path().to_path_buf(),
                checkpoint: path,
            });
            Ok(Some(ckpt))
        }
        None => {
            notices.send(Notice::NoCheckpointYet(dir.path().to_path_buf()));
            Ok(None)
        }
    }
}

/// The finish phase: the trained TorchScript module and the plots of a
/// run that ended well, and the stop reason as a result.
fn finish_run(
    summary: FitSummary,
    model: &dyn Model,
    dir: Option<&RunDir>,
    plan: &RunPlan,
    notices: &Notices,
) -> Result<FitSummary> {
    let Some(dir) = dir else {
        return finish(summary, None);
    };
    save_trained_module(model, &summary, dir.path(), notices)?;
    let averaged = dir.path().join(checkpoint::AVERAGED_FILE);
    if plan.trainer.averaging.is_some() && averaged.exists() {
        notices.send(Notice::Wrote(averaged));
    }
    #[cfg(feature = "plot")]
    if plan.config.plot {
        let plots = dir.path().join("plots");
        for path in crate::plot::plot_run(dir.path(), &plots, &mut |w| notices.warn(w))? {
            notices.send(Notice::Wrote(path));
        }
    }
    #[cfg(not(feature = "plot"))]
    if plan.config.plot {
        return Err(Error::Usage(
            "--plot: this kiln was built without the `plot` feature of kiln-loop".into(),
        ));
    }
    finish(summary, Some(dir.path()))
}

/// A TorchScript model that finished training is written back as
/// TorchScript, `RUN/model.pt` (`torch.jit.load` reads it); an interrupted
/// or failed run writes nothing (its checkpoints hold the weights).
fn save_trained_module(
    model: &dyn Model,
    summary: &FitSummary,
    run_dir: &Path,
    notices: &Notices,
) -> Result<()> {
    if matches!(
        summary.stop,
        StopReason::Interrupted { .. } | StopReason::NonFiniteLoss { .. }
    ) {
        return Ok(());
    }
    let path = run_dir.join(TORCHSCRIPT_FILE);
    if model.save_torchscript(&path)? {
        notices.send(Notice::Wrote(path));
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
fn check_ranks_agree(dp: DataParallel<'_>, config: &RunConfig, splits: &RunData) -> Result<()> {
    let mut same = config.clone();
    // The device is per rank (`cuda:N` with NCCL).
    same.device = kiln_tensor::device::DeviceSpec::Auto;
    let mine = same.to_json()?;
    let text = mine.to_string();
    let root = dp.broadcast_text(&text)?;
    dp.check_same_u64(
        "dataset sizes (train, validation, test)",
        &[
            splits.train.len() as u64,
            splits.val.as_ref().map_or(0, |v| v.len() as u64),
            splits.test.len() as u64,
        ],
    )?;
    // A rank whose flags differ names them, with rank 0's values.
    let what = if root == text {
        "their flags (each rank must get the same command line)".to_string()
    } else {
        format!("its flags: {}", flag_differences(&mine, &root))
    };
    dp.check_same_u64(&what, &[u64::from(root != text)])
}

/// The flags of `mine` that differ from rank 0's (`root`, a JSON object):
/// `--epochs 2 (rank 0: 1)`.
fn flag_differences(mine: &serde_json::Value, root: &str) -> String {
    let root: serde_json::Value = serde_json::from_str(root).unwrap_or_default();
    let empty = serde_json::Map::new();
    let (mine, root) = (
        mine.as_object().unwrap_or(&empty),
        root.as_object().unwrap_or(&empty),
    );
    let show = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "not given".into(),
        Some(other) => other.to_string(),
    };
    let mut keys: Vec<&String> = mine.keys().chain(root.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| mine.get(*k) != root.get(*k))
        .map(|k| {
            format!(
                "--{} {} (rank 0: {})",
                k.replace('_', "-"),
                show(mine.get(k)),
                show(root.get(k))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
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

/// Hyperparameters given again when resuming (`--lr 0.1`, `--optimizer
/// sgd:weight_decay=1e-4`) win over the checkpoint's: the options of the
/// run's optimizer spec that differ from the spec the checkpoint was
/// written with are copied, group by group, from the freshly built
/// optimizer into the checkpoint's param groups, which the Trainer then
/// restores (`optimizer.load_state_dict(...)` followed by setting
/// `param_group[key]`, as a PyTorch user lowers the lr of a resumed run).
/// Returns what changed (`lr 0.001 → 0.1`). A new lr under an lr
/// scheduler is refused: the restored scheduler would go on from its own
/// base lrs.
fn apply_new_hyperparameters(
    ckpt: &mut Checkpoint,
    plan: &RunPlan,
    fresh: &dyn kiln_optim::Optimizer,
) -> Result<Vec<String>> {
    let Some(saved) = ckpt.config.get("optimizer").and_then(|v| v.as_str()) else {
        return Ok(Vec::new());
    };
    let parse = |text: &str| {
        text.parse::<kiln_tensor::spec::Spec>()
            .map_err(|e| Error::Usage(format!("--optimizer: {e}")))
    };
    let (saved, new) = (parse(saved)?, parse(&plan.config.optimizer)?);
    if saved.name != new.name {
        // Another optimizer: refused when its state is restored.
        return Ok(Vec::new());
    }
    let changed: Vec<(String, String, String)> = new
        .options()
        .filter_map(|(key, value)| match saved.get(key) {
            Some(old) if old != value => {
                Some((key.to_string(), old.to_string(), value.to_string()))
            }
            _ => None,
        })
        .collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    if let (Some((spec, _)), true) = (&plan.scheduler, changed.iter().any(|(k, ..)| k == "lr")) {
        return Err(Error::Usage(format!(
            "--lr: the run being resumed has the lr scheduler '{spec}', which goes on from the lrs it was started with; resume without a new lr, or start a new run (--init from its checkpoint)"
        )));
    }
    let fresh_state = fresh.state_dict()?;
    let fresh_groups = fresh_state
        .scalars
        .get("param_groups")
        .and_then(|g| g.as_array())
        .cloned()
        .unwrap_or_default();
    let groups = ckpt
        .optimizer
        .scalars
        .get_mut("param_groups")
        .and_then(|g| g.as_array_mut());
    let Some(groups) = groups else {
        return Err(Error::Usage(format!(
            "--optimizer: {} cannot change when resuming this checkpoint (its optimizer state has no param groups)",
            changed.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>().join(", ")
        )));
    };
    for (key, ..) in &changed {
        for (group, fresh_group) in groups.iter_mut().zip(&fresh_groups) {
            match (group.as_object_mut(), fresh_group.get(key)) {
                (Some(group), Some(value)) if group.contains_key(key) => {
                    group.insert(key.clone(), value.clone());
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "--optimizer: {key} cannot change when resuming (it is not a hyperparameter of the restored param groups); start a new run (--init from its checkpoint)"
                    )))
                }
            }
        }
    }
    Ok(changed
        .into_iter()
        .map(|(key, old, new)| format!("{key} {old} → {new}"))
        .collect())
}

/// Warns when a resumed run's new length changes a scheduler's horizon (the
/// restored scheduler keeps the original one).
fn warn_on_new_horizon(config: &RunConfig, ckpt: &Checkpoint, notices: &Notices) {
    let Some(spec) = config.scheduler.as_deref() else {
        return;
    };
    let saved = |key: &str| ckpt.config.get(key).cloned().unwrap_or_default();
    let (epochs, max_steps) = (saved("epochs"), saved("max_steps"));
    if epochs != serde_json::json!(config.epochs)
        || max_steps != serde_json::json!(config.max_steps)
    {
        notices.warn(format!(
            "--epochs/--max-steps changed ({epochs} epochs, max steps {max_steps} → {} epochs, max steps {:?}); the restored '{spec}' scheduler keeps the horizon of the original run",
            config.epochs, config.max_steps
        ));
    }
}

/// `kiln summary`: the summary table of the model `flags` describe (a JSON
/// object of `kiln train` flags: `model`, `data`, `freeze`…), built as a
/// run would build it (for its data, with `--init` and `--freeze`
/// applied), without training or writing anything.
pub fn summarize(
    flags: serde_json::Map<String, serde_json::Value>,
    registries: &Registries,
) -> Result<crate::models::ModelSummary> {
    let config = RunConfig::from_layers(&[Layer::new("the command line", flags)], registries)?;
    let seed = config.seed.unwrap_or(0);
    let plan = RunPlan::new(config, seed)?;
    let parts = Components::build(&plan, registries)?;
    crate::models::ModelSummary::of(parts.model.as_ref())
}

/// What `kiln eval` asks for.
#[derive(Default)]
pub struct EvalRequest {
    /// A checkpoint directory, or a run directory.
    pub checkpoint: Option<PathBuf>,
    /// With a run directory: `last` (default) or `best`.
    pub which: Option<String>,
    /// A safetensors state dict (e.g. saved by PyTorch) of the default model.
    pub weights: Option<PathBuf>,
    /// The set to evaluate: `test` (default) or `val` (the run's
    /// `--val-fraction` split of its training samples, drawn as it was).
    pub split: Option<String>,
    /// Flags that override the run's (`data` or `data_dir`, test samples,
    /// batch size, device, `top_k`); another data source replaces the run's.
    pub flags: serde_json::Map<String, serde_json::Value>,
    /// Where the tutorial's `Test Error` block goes.
    pub output: Option<Box<dyn std::io::Write + Send>>,
    /// Where warnings go.
    pub notices: Notices,
}

impl std::fmt::Debug for EvalRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalRequest")
            .field("checkpoint", &self.checkpoint)
            .field("which", &self.which)
            .field("weights", &self.weights)
            .field("split", &self.split)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// `kiln eval`: the tutorial's test loop on a checkpoint's (or a weights
/// file's) model, on the run's test data (or its validation split, or
/// other data); writes the block `kiln train` prints after an evaluation
/// (with top-K accuracy when asked).
pub fn evaluate(mut request: EvalRequest, registries: &Registries) -> Result<crate::TestSummary> {
    use std::io::Write as _;
    let (plan, parts) = load_to_evaluate(
        &Source {
            checkpoint: request.checkpoint.as_deref(),
            which: request.which.as_deref(),
            weights: request.weights.as_deref(),
        },
        &request.flags,
        registries,
        &request.notices,
    )?;
    let Components {
        data,
        mut model,
        loss,
        device,
        ..
    } = parts;
    let (set, dataset) = evaluation_set(&data, request.split.as_deref())?;
    let mut metrics = build::metrics(plan.config.top_k, data.task, data.sampling)?;
    let loader = DataLoader::new(dataset, plan.config.batch_size, false)?.to_device(device);
    crate::eval::evaluate(
        &loader,
        model.as_mut(),
        &LossStep::new(loss.as_ref()),
        &mut metrics,
        None,
        kiln_tensor::amp::Precision::F32True,
    )?;
    let values: Vec<(String, f64)> = metrics
        .iter()
        .map(|m| (format!("{set}_{}", m.name()), m.value()))
        .collect();
    if let Some(out) = request.output.as_mut() {
        writeln!(out, "{}", crate::loggers::printer::eval_block(set, &values))?;
    }
    let get = |name: &str| {
        values
            .iter()
            .find(|(n, _)| *n == format!("{set}_{name}"))
            .map_or(f64::NAN, |(_, v)| *v)
    };
    Ok(crate::TestSummary {
        accuracy: get("accuracy"),
        avg_loss: get("loss"),
    })
}

/// Where the weights `kiln eval` and `kiln predict` use come from: a
/// checkpoint (or a run directory and `--which`) or a weights file.
#[derive(Debug, Clone, Copy)]
struct Source<'p> {
    checkpoint: Option<&'p Path>,
    which: Option<&'p str>,
    weights: Option<&'p Path>,
}

/// The run behind `source` rebuilt as it trained (its saved config, then
/// `flags`; another data source given replaces the run's) with the
/// weights loaded: what `kiln eval` and `kiln predict` evaluate.
fn load_to_evaluate(
    source: &Source<'_>,
    flags: &serde_json::Map<String, serde_json::Value>,
    registries: &Registries,
    notices: &Notices,
) -> Result<(RunPlan, Components)> {
    let (weights, saved) = match (source.checkpoint, source.weights) {
        (Some(path), _) => {
            let dir = checkpoint_to_evaluate(path, source.which, notices)?;
            let ckpt = checkpoint::load(&dir)?;
            let saved = match ckpt.config {
                serde_json::Value::Object(flags) => Layer::new("the checkpoint's config", flags),
                _ => {
                    return Err(Error::Data {
                        path: dir.clone(),
                        message: "the checkpoint's run config is unreadable".into(),
                    })
                }
            };
            (ckpt.model, Some(saved))
        }
        (None, Some(file)) => (checkpoint::read_weights(file)?, None),
        (None, None) => {
            return Err(Error::Usage(
                "give --checkpoint DIR or --weights FILE".into(),
            ))
        }
    };
    let mut saved = saved;
    // Data given on the command line replaces the run's source.
    if let Some(saved) = &mut saved {
        for (given, other) in [("data", "data_dir"), ("data_dir", "data")] {
            if flags.contains_key(given) {
                saved.flags.remove(other);
            }
        }
    }
    let mut layers: Vec<Layer> = saved.into_iter().collect();
    layers.push(Layer::new("the command line", flags.clone()));
    let config = RunConfig::from_layers(&layers, registries)?;
    let seed = config.seed.unwrap_or(0);
    let plan = RunPlan::new(config, seed)?;
    let parts = Components::build(&plan, registries)?;
    parts.model.load_state_dict(&weights)?;
    Ok((plan, parts))
}

/// The set `--split` names (`test` by default, or the run's `val` split)
/// with its name.
fn evaluation_set(
    data: &RunData,
    split: Option<&str>,
) -> Result<(&'static str, std::sync::Arc<dyn crate::Dataset>)> {
    match split.unwrap_or("test") {
        "test" => Ok(("test", data.test.clone())),
        "val" => match &data.val {
            Some(val) => Ok(("val", val.clone())),
            None => Err(Error::Usage(
                "--split val: this run has no validation split (it was trained without --val-fraction)".into(),
            )),
        },
        other => Err(Error::Usage(format!(
            "--split {other}: accepted: test, val"
        ))),
    }
}

/// The checkpoint `kiln eval --checkpoint PATH [--which last|best]` means.
fn checkpoint_to_evaluate(path: &Path, which: Option<&str>, notices: &Notices) -> Result<PathBuf> {
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
        "last" => checkpoint::latest_valid(path, &mut |w| notices.warn(w))?
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
