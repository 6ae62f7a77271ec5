//! `kiln lr-find`: the learning-rate finder ([`crate::lr_find`]) on the
//! model, optimizer and data that `kiln train`'s flags build, its curve
//! drawn into a run directory of its own.
use super::{dir, prepare, resolve_config, seed, Prepared, Registries, RunPlan, TrainRequest};
use crate::lr_find::{LrFindConfig, LrFindResult, SweepMode};
use crate::notice::Notice;
use crate::step::LossStep;
use crate::{Error, Result};
use std::path::PathBuf;

/// What `kiln lr-find` asks for.
#[derive(Debug, Default)]
pub struct LrFindRequest {
    /// `kiln train`'s flags (model, optimizer, data, precision…), the
    /// directory (`run_dir`) and where notices go; `resume` is refused.
    pub train: TrainRequest,
    /// The finder's own settings.
    pub finder: LrFindConfig,
}

/// What `kiln lr-find` found and wrote.
#[derive(Debug)]
pub struct LrFindReport {
    /// The curve and the suggestion.
    pub result: LrFindResult,
    /// The directory the chart went into.
    pub run_dir: PathBuf,
    /// The chart, PNG then SVG (`lr_find.png`, `lr_find.svg`).
    pub files: Vec<PathBuf>,
}

/// Runs Lightning's lr finder on what `request`'s training flags build:
/// every flag checked and every component built first; then the sweep,
/// and its chart written into the run directory (`--run-dir`, or a new
/// `runs/YYYYMMDD-HHMMSS`), the only files it writes. No checkpoint is
/// read or written: `--resume` and `--distributed` are refused, and the
/// settings that only matter to training (epochs, evaluation, schedulers,
/// checkpoints, loggers) are ignored.
pub fn lr_find(request: LrFindRequest, registries: &Registries) -> Result<LrFindReport> {
    let LrFindRequest {
        train: request,
        finder,
    } = request;
    finder.validate()?;
    if let Some(path) = &request.resume {
        return Err(Error::Usage(format!(
            "--resume {}: kiln lr-find starts from the model's initial weights (or --init), never from a checkpoint",
            path.display()
        )));
    }
    let mut config = resolve_config(&request, registries)?;
    if config.distributed.is_some() {
        return Err(Error::Usage(
            "--distributed: kiln lr-find runs in one process; drop the flag".into(),
        ));
    }
    // What only training uses: no schedule, evaluation or early stop to check.
    config.scheduler = None;
    config.early_stopping = None;
    config.keep_best = None;
    config.dry_run = false;
    let seed = seed(&config, None)?;
    let Prepared {
        plan,
        mut parts,
        loaders,
        trainer,
    } = prepare(RunPlan::new(config, seed)?, registries, None)?;
    drop(trainer);
    let run_dir = dir::create_output_dir(request.run_dir.as_deref())?;
    request.notices.send(Notice::RunDir(run_dir.clone()));
    request.notices.send(Notice::Seed(plan.seed));
    let result = crate::lr_find::lr_find(
        &plan.trainer,
        parts.model.as_mut(),
        &LossStep::new(parts.loss.as_ref()),
        parts.optimizer.as_mut(),
        &loaders.train,
        &finder,
    )?;
    let files = crate::plot::plot_lr_find(
        &result.curve.lrs,
        &result.curve.losses,
        result.suggestion_index,
        finder.mode == SweepMode::Exponential,
        &run_dir,
    )?;
    for file in &files {
        request.notices.send(Notice::Wrote(file.clone()));
    }
    Ok(LrFindReport {
        result,
        run_dir,
        files,
    })
}
