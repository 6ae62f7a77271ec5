//! The Trainer at library level: every setting with an ordinary optimizer
//! (SGD) and with a closure optimizer (LBFGS), on a tiny model and generated
//! data. A recording callback sees what the loop did.
use crate::common;

use anyhow::{ensure, Result};
use common::TempDir;
use kiln_loop::checkpoint::{self, Progress};
use kiln_loop::data::TensorDataset;
use kiln_loop::models::mlp::{self, MlpConfig};
use kiln_loop::trainer::{CheckpointConfig, EarlyStopping, Mode};
use kiln_loop::{
    BeforeStep, Callback, DataLoader, EvalInfo, FitSummary, Interval, Loaders, LossStep, Model,
    StepInfo, StopReason, Trainer, TrainerConfig,
};
use kiln_losses::Loss;
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Device, Kind, Tensor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// libtorch's generator is global: tests that seed and draw from it run one
/// at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    common::global_state()
}

const OPTIMIZERS: [&str; 2] = ["sgd:lr=0.1,momentum=0.9", "lbfgs:lr=0.1,max_iter=3"];

/// 40 training and 24 test samples of 4 features in 3 classes.
fn data() -> Result<(Arc<TensorDataset>, Arc<TensorDataset>)> {
    kiln_tensor::rng::manual_seed(11);
    let make = |n: i64| -> Result<Arc<TensorDataset>> {
        let x = Tensor::f_randn([n, 4], (Kind::Float, Device::Cpu))?;
        let y = x
            .f_narrow(1, 0, 3)?
            .f_argmax(1, false)?
            .f_to_kind(Kind::Int64)?;
        Ok(Arc::new(TensorDataset::new(x, y, "generated")?))
    };
    Ok((make(40)?, make(24)?))
}

fn model() -> Result<Box<dyn Model>> {
    kiln_tensor::rng::manual_seed(5);
    let cfg = MlpConfig {
        hidden: vec![8],
        ..MlpConfig::default()
    };
    Ok(Box::new(mlp::build(&cfg, 4, 3, None, Device::Cpu)?))
}

/// Everything the loop reported.
#[derive(Default)]
struct Log {
    steps: Vec<StepInfo>,
    evals: Vec<EvalInfo>,
    checkpoints: Vec<(PathBuf, usize)>,
    /// Largest total gradient norm and element the optimizer was given.
    max_norm: f64,
    max_abs: f64,
    epochs_started: usize,
    summary: Option<FitSummary>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Callback for Recorder {
    fn on_epoch_start(&mut self, _epoch: usize) -> kiln_loop::Result<()> {
        self.log().epochs_started += 1;
        Ok(())
    }
    fn on_before_optimizer_step(
        &mut self,
        _info: &BeforeStep,
        params: &[NamedParameter],
    ) -> kiln_loop::Result<()> {
        let mut sq = 0.0;
        let mut max_abs = 0.0f64;
        for p in params {
            let g = p.tensor.grad();
            sq += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            max_abs = max_abs.max(g.f_abs()?.f_max()?.f_double_value(&[])?);
        }
        let mut log = self.log();
        log.max_norm = log.max_norm.max(sq.sqrt());
        log.max_abs = log.max_abs.max(max_abs);
        Ok(())
    }
    fn on_batch_end(&mut self, info: &StepInfo) -> kiln_loop::Result<()> {
        self.log().steps.push(info.clone());
        Ok(())
    }
    fn on_eval_end(&mut self, info: &EvalInfo) -> kiln_loop::Result<()> {
        self.log().evals.push(info.clone());
        Ok(())
    }
    fn on_checkpoint(&mut self, path: &Path, progress: &Progress) -> kiln_loop::Result<()> {
        self.log()
            .checkpoints
            .push((path.to_path_buf(), progress.step));
        Ok(())
    }
    fn on_run_end(&mut self, summary: &FitSummary) -> kiln_loop::Result<()> {
        self.log().summary = Some(summary.clone());
        Ok(())
    }
}

/// Trains `optimizer` with `cfg` (and `setup` on the trainer); returns the
/// log, the summary or error, and the final parameters.
fn fit(
    optimizer: &str,
    cfg: TrainerConfig,
    loss: &dyn Loss,
    setup: impl for<'t> FnOnce(Trainer<'t>, &mut dyn kiln_optim::Optimizer) -> Result<Trainer<'t>>,
) -> Result<(Recorder, kiln_loop::Result<FitSummary>, Vec<f64>)> {
    let (train, test) = data()?;
    let mut model = model()?;
    let mut opt = kiln_optim::optimizers().build(optimizer, model.parameters()?)?;
    let recorder = Recorder::default();
    let trainer = Trainer::new(cfg)?.callback(recorder.clone());
    let mut trainer = setup(trainer, opt.as_mut())?;
    kiln_tensor::rng::manual_seed(3);
    let train_loader = DataLoader::new(train, 8, true)?;
    let test_loader = DataLoader::new(test, 8, false)?;
    let result = trainer.fit(
        model.as_mut(),
        &LossStep::new(loss),
        opt.as_mut(),
        Loaders {
            train: &train_loader,
            eval: &[("test", &test_loader)],
        },
        None,
    );
    Ok((recorder, result, flat(model.as_ref())?))
}

fn flat(model: &dyn Model) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for p in model.parameters()? {
        let v: Vec<f64> = Vec::try_from(&p.tensor.f_to_kind(Kind::Double)?.f_reshape([-1])?)?;
        out.extend(v);
    }
    Ok(out)
}

fn ce() -> Box<dyn Loss> {
    Box::new(kiln_losses::CrossEntropyLoss::default())
}

fn base() -> TrainerConfig {
    TrainerConfig {
        epochs: 2,
        ..TrainerConfig::default()
    }
}

fn keep<'t>(t: Trainer<'t>, _: &mut dyn kiln_optim::Optimizer) -> Result<Trainer<'t>> {
    Ok(t)
}

#[test]
fn max_steps_is_exact_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let cfg = TrainerConfig {
            max_steps: Some(7),
            epochs: 5,
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), keep)?;
        let summary = result?;
        ensure!(summary.steps == 7, "{opt}: {} steps", summary.steps);
        ensure!(
            summary.stop == StopReason::MaxSteps { max_steps: 7 },
            "{opt}"
        );
        ensure!(
            rec.log().steps.iter().filter(|s| s.stepped).count() == 7,
            "{opt}"
        );
    }
    Ok(())
}

#[test]
fn batch_limits_and_epochs_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let cfg = TrainerConfig {
            epochs: 3,
            limit_train_batches: Some(2),
            limit_eval_batches: Some(1),
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), keep)?;
        ensure!(result?.steps == 6, "{opt}");
        let log = rec.log();
        ensure!(log.epochs_started == 3 && log.evals.len() == 3, "{opt}");
        ensure!(log.steps.iter().all(|s| s.batch < 2), "{opt}");
    }
    Ok(())
}

#[test]
fn accumulation_steps_every_n_batches_and_closure_optimizers_refuse_it() -> Result<()> {
    let _serial = serial();
    let cfg = TrainerConfig {
        accumulate_grad_batches: 2,
        ..base()
    };
    // 40 samples / 8 = 5 batches per epoch: steps after batches 2, 4 and 5.
    let (rec, result, _) = fit(OPTIMIZERS[0], cfg.clone(), ce().as_ref(), keep)?;
    ensure!(result?.steps == 6);
    let stepped: Vec<bool> = rec.log().steps.iter().take(5).map(|s| s.stepped).collect();
    ensure!(stepped == [false, true, false, true, true], "{stepped:?}");
    let (rec, result, _) = fit(OPTIMIZERS[1], cfg, ce().as_ref(), keep)?;
    let err = result.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        err.contains("accumulate_grad_batches cannot be used with lbfgs"),
        "{err}"
    );
    ensure!(rec.log().steps.is_empty(), "nothing ran");
    Ok(())
}

#[test]
fn clipping_bounds_what_every_optimizer_sees() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let cfg = TrainerConfig {
            clip_grad_norm: Some(0.05),
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), keep)?;
        result?;
        let log = rec.log();
        ensure!(
            log.max_norm <= 0.05 * (1.0 + 1e-5),
            "{opt}: norm {}",
            log.max_norm
        );
        ensure!(
            log.steps
                .iter()
                .all(|s| s.grad_norm.is_some_and(|n| n > 0.05)),
            "{opt}: the norm before clipping is reported"
        );
        drop(log);
        let cfg = TrainerConfig {
            clip_grad_value: Some(0.01),
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), keep)?;
        result?;
        ensure!(rec.log().max_abs <= 0.01, "{opt}: {}", rec.log().max_abs);
    }
    Ok(())
}

#[test]
fn schedulers_step_per_step_or_per_epoch_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        for interval in [Interval::Step, Interval::Epoch] {
            let (rec, result, _) = fit(opt, base(), ce().as_ref(), |t, o| {
                let s = kiln_optim::scheduler::schedulers().build(
                    "step:step_size=1,gamma=0.5",
                    o,
                    None,
                )?;
                Ok(t.scheduler(s, interval))
            })?;
            result?;
            let log = rec.log();
            let lrs: Vec<f64> = log.steps.iter().filter_map(|s| s.lr).collect();
            let want: Vec<f64> = (1..=lrs.len())
                .map(|k| {
                    // The lr each batch trained with: per step, the
                    // scheduler stepped after each earlier batch; per
                    // epoch, after each earlier epoch (5 batches each).
                    let done = match interval {
                        Interval::Step => k - 1,
                        Interval::Epoch => (k - 1) / 5,
                    };
                    0.1 * 0.5f64.powi(done as i32)
                })
                .collect();
            ensure!(lrs.len() == 10, "{opt}");
            let close = lrs
                .iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() <= 1e-12 * b);
            ensure!(close, "{opt} {interval:?}: {lrs:?} vs {want:?}");
        }
    }
    Ok(())
}

#[test]
fn evaluation_and_checkpoints_every_n_steps_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let dir = TempDir::new(&format!("every-{}", &opt[..3]))?;
        let cfg = TrainerConfig {
            eval_every_steps: Some(3),
            checkpoint: CheckpointConfig {
                every_steps: Some(4),
                keep_last: 100,
                keep_best: None,
            },
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), |t, _| {
            Ok(t.checkpoint_dir(dir.path()))
        })?;
        ensure!(result?.steps == 10);
        let log = rec.log();
        let mid: Vec<usize> = log
            .evals
            .iter()
            .filter(|e| !e.end_of_epoch)
            .map(|e| e.step)
            .collect();
        ensure!(mid == [3, 6, 9], "{opt}: {mid:?}");
        let at: Vec<usize> = log.checkpoints.iter().map(|(_, s)| *s).collect();
        ensure!(at == [4, 5, 8, 10], "{opt}: {at:?}");
        ensure!(checkpoint::list(dir.path())?.len() == 4);
    }
    Ok(())
}

#[test]
fn early_stopping_and_unknown_monitors_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        // lr = 0: the test loss never improves after the first epoch.
        let frozen = opt.replace("lr=0.1", "lr=0");
        let cfg = TrainerConfig {
            epochs: 10,
            early_stopping: Some(EarlyStopping {
                monitor: "test_loss".into(),
                mode: Mode::Min,
                patience: 2,
                min_delta: 0.0,
            }),
            ..base()
        };
        let (_, result, _) = fit(&frozen, cfg.clone(), ce().as_ref(), keep)?;
        let stop = result?.stop;
        ensure!(
            matches!(&stop, StopReason::EarlyStopped { epoch: 3, monitor, .. } if monitor == "test_loss"),
            "{opt}: {stop:?}"
        );
        let mut bad = cfg;
        if let Some(es) = bad.early_stopping.as_mut() {
            es.monitor = "val_acc".into();
        }
        let (rec, result, _) = fit(opt, bad, ce().as_ref(), keep)?;
        let err = result.err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(
            err.contains("monitors 'val_acc', which this run does not report")
                && err.contains("test_accuracy"),
            "{err}"
        );
        ensure!(rec.log().steps.is_empty());
    }
    Ok(())
}

#[test]
fn a_non_finite_loss_stops_before_stepping_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        // The 5th evaluation of the loss is NaN.
        let calls = AtomicUsize::new(0);
        let nan_on_fifth = |input: &Tensor, target: &Tensor| -> kiln_losses::Result<Tensor> {
            let loss = input.f_cross_entropy_loss::<Tensor>(
                target,
                None,
                kiln_tensor::Reduction::Mean,
                -100,
                0.0,
            )?;
            if calls.fetch_add(1, Ordering::SeqCst) == 4 {
                Ok(loss.f_mul_scalar(f64::NAN)?)
            } else {
                Ok(loss)
            }
        };
        let (rec, result, _) = fit(opt, base(), &nan_on_fifth, keep)?;
        let summary = result?;
        ensure!(
            matches!(summary.stop, StopReason::NonFiniteLoss { .. }),
            "{opt}: {:?}",
            summary.stop
        );
        let stepped = rec.log().steps.iter().filter(|s| s.stepped).count();
        ensure!(stepped == summary.steps, "{opt}");
        ensure!(summary.steps < 5, "{opt}: {} steps", summary.steps);
    }
    Ok(())
}

#[test]
fn resuming_a_checkpoint_ends_where_an_uninterrupted_fit_ends_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let (_, full, want) = fit(opt, base(), ce().as_ref(), keep)?;
        full?;
        let dir = TempDir::new(&format!("resume-{}", &opt[..3]))?;
        let first = TrainerConfig {
            max_steps: Some(7),
            ..base()
        };
        fit(opt, first, ce().as_ref(), |t, _| {
            Ok(t.checkpoint_dir(dir.path()))
        })?
        .1?;
        let ckpt =
            checkpoint::load(&checkpoint::checkpoints_dir(dir.path()).join("step-000000007"))?;
        // A new process: everything rebuilt, the checkpoint restored.
        let (train, test) = data()?;
        let mut model = model()?;
        let mut o = kiln_optim::optimizers().build(opt, model.parameters()?)?;
        let mut trainer = Trainer::new(base())?;
        kiln_tensor::rng::manual_seed(999);
        let train_loader = DataLoader::new(train, 8, true)?;
        let test_loader = DataLoader::new(test, 8, false)?;
        let loss = ce();
        let summary = trainer.fit(
            model.as_mut(),
            &LossStep::new(loss.as_ref()),
            o.as_mut(),
            Loaders {
                train: &train_loader,
                eval: &[("test", &test_loader)],
            },
            Some(ckpt),
        )?;
        ensure!(summary.steps == 10);
        ensure!(
            flat(model.as_ref())? == want,
            "{opt}: resumed parameters differ"
        );
    }
    Ok(())
}

#[test]
fn an_interrupt_finishes_the_step_and_checkpoints_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    for opt in OPTIMIZERS {
        let dir = TempDir::new(&format!("interrupt-{}", &opt[..3]))?;
        let flag = Arc::new(AtomicUsize::new(15));
        let (rec, result, _) = fit(opt, base(), ce().as_ref(), |t, _| {
            Ok(t.checkpoint_dir(dir.path()).interrupt_flag(flag))
        })?;
        let summary = result?;
        ensure!(
            summary.stop
                == StopReason::Interrupted {
                    signal: 15,
                    epoch: 1,
                    step: 1
                },
            "{opt}: {:?}",
            summary.stop
        );
        ensure!(
            rec.log()
                .checkpoints
                .iter()
                .map(|(_, s)| *s)
                .collect::<Vec<_>>()
                == [1]
        );
    }
    Ok(())
}

#[test]
fn a_plateau_scheduler_per_step_follows_every_evaluation_for_every_optimizer() -> Result<()> {
    let _serial = serial();
    // mode=max on a falling test loss: each evaluation after the first is
    // "no improvement", so the lr halves after each one (patience 0).
    let spec = "plateau:mode=max,patience=0,factor=0.5";
    for opt in OPTIMIZERS {
        let cfg = TrainerConfig {
            eval_every_steps: Some(2),
            eval_every_epochs: 0,
            ..base()
        };
        let (rec, result, _) = fit(opt, cfg, ce().as_ref(), |t, o| {
            let s = kiln_optim::scheduler::schedulers().build(spec, o, None)?;
            Ok(t.scheduler(s, Interval::Step))
        })?;
        result?;
        let log = rec.log();
        // Replay the evaluations through a fresh scheduler: the lr of the
        // batch after each evaluation is what it gives.
        let replay_model = model()?;
        let mut o = kiln_optim::optimizers().build(opt, replay_model.parameters()?)?;
        let mut s = kiln_optim::scheduler::schedulers().build(spec, o.as_mut(), None)?;
        let mut want = Vec::new();
        for eval in &log.evals {
            let value = eval.get("test_loss").unwrap_or(f64::NAN);
            s.step_with_metric(o.as_mut(), value)?;
            want.push((eval.step, o.lr(0).unwrap_or(f64::NAN)));
        }
        ensure!(
            log.evals.len() == 5,
            "{opt}: {} evaluations",
            log.evals.len()
        );
        for (step, lr) in &want {
            // The batch that makes step `step + 1` trains with it.
            if let Some(info) = log.steps.iter().find(|s| s.step == step + 1) {
                ensure!(
                    info.lr == Some(*lr),
                    "{opt}: step {}: {:?} vs {lr}",
                    step + 1,
                    info.lr
                );
            }
        }
        let lrs: Vec<f64> = want.iter().map(|(_, lr)| *lr).collect();
        ensure!(
            lrs.windows(2).any(|w| w[1] < w[0]),
            "{opt}: the lr never changed: {lrs:?}"
        );
    }
    Ok(())
}

#[path = "../examples/shared/aux.rs"]
#[allow(dead_code)]
mod aux;

/// Sets the interrupt flag once `at` optimizer steps are done.
struct InterruptAt {
    at: usize,
    flag: Arc<AtomicUsize>,
}

impl Callback for InterruptAt {
    fn on_batch_end(&mut self, info: &StepInfo) -> kiln_loop::Result<()> {
        if info.stepped && info.step == self.at {
            self.flag.store(2, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Fits the two-headed model with its own step (main + auxiliary loss) for
/// 2 epochs, from `resume` or from scratch, optionally interrupted after
/// `interrupt_at` steps; returns the parameters, the recorder and the summary.
fn fit_aux(
    dir: &Path,
    interrupt_at: Option<usize>,
    resume: Option<checkpoint::Checkpoint>,
) -> Result<(Vec<f64>, Recorder, FitSummary)> {
    kiln_tensor::rng::manual_seed(21);
    let train = Arc::new(aux::RingsWithRadius::new(96)?);
    let test = Arc::new(aux::RingsWithRadius::new(32)?);
    let mut model = aux::two_heads(8)?;
    let mut opt =
        kiln_optim::optimizers().build("adam:lr=0.01", kiln_loop::Model::parameters(&model)?)?;
    let recorder = Recorder::default();
    let flag = Arc::new(AtomicUsize::new(0));
    let mut trainer = Trainer::new(base())?
        .step_metrics(&["aux_loss"])
        .checkpoint_dir(dir)
        .interrupt_flag(flag.clone())
        .callback(recorder.clone());
    if let Some(at) = interrupt_at {
        trainer = trainer.callback(InterruptAt { at, flag });
    }
    kiln_tensor::rng::manual_seed(4);
    let train_loader = DataLoader::new(train, 16, true)?;
    let test_loader = DataLoader::new(test, 16, false)?;
    let summary = trainer.fit(
        &mut model,
        &aux::AuxStep { weight: 0.5 },
        opt.as_mut(),
        Loaders {
            train: &train_loader,
            eval: &[("test", &test_loader)],
        },
        resume,
    )?;
    drop(trainer);
    Ok((flat(&model)?, recorder, summary))
}

#[test]
fn a_step_of_ones_own_with_two_losses_resumes_bit_exactly_after_an_interrupt() -> Result<()> {
    let _serial = serial();
    let whole = TempDir::new("aux-whole")?;
    let (want, rec, summary) = fit_aux(whole.path(), None, None)?;
    ensure!(summary.stop == StopReason::Completed);
    // The step's extra metric: logged per step and averaged in evaluations.
    let log = rec.log();
    ensure!(log.steps.iter().all(|s| s
        .metrics
        .iter()
        .any(|(n, v)| n == "aux_loss" && v.is_finite())));
    ensure!(log
        .evals
        .iter()
        .all(|e| e.get("test_aux_loss").is_some() && e.get("test_accuracy").is_some()));
    drop(log);
    let cut = TempDir::new("aux-cut")?;
    let (_, _, stopped) = fit_aux(cut.path(), Some(4), None)?;
    ensure!(
        matches!(stopped.stop, StopReason::Interrupted { step: 4, .. }),
        "{:?}",
        stopped.stop
    );
    let newest = checkpoint::list(cut.path())?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
    let (got, _, resumed) = fit_aux(cut.path(), None, Some(checkpoint::load(&newest)?))?;
    ensure!(resumed.steps == summary.steps);
    ensure!(
        got == want,
        "the resumed parameters differ from the uninterrupted run's"
    );
    Ok(())
}
