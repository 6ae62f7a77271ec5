//! The tutorial's lines.
use crate::tutorial::{loss_line, test_report};
use crate::{Callback, EvalInfo, FitSummary, Result, StepInfo, StopReason};

/// Writes the tutorial's lines: `Epoch N` and its rule, `loss: … [current/size]`
/// at each log interval, and the `Test Error` block after each evaluation
/// (a `Validation Error` block first when there is a validation split);
/// `Training completed` at the end, or why training stopped.
pub struct TutorialPrinter<W: std::io::Write> {
    out: W,
}

impl<W: std::io::Write> TutorialPrinter<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: std::io::Write> Callback for TutorialPrinter<W> {
    fn on_epoch_start(&mut self, epoch: usize) -> Result<()> {
        writeln!(self.out, "Epoch {epoch}\n-------------------------------")?;
        Ok(())
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        if info.log {
            writeln!(
                self.out,
                "{}",
                loss_line(info.loss, info.batch * info.batch_len, info.dataset_len)
            )?;
        }
        Ok(())
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        for set in super::eval_sets(info) {
            writeln!(self.out, "{}", eval_block(set, &info.metrics))?;
        }
        Ok(())
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        match &summary.stop {
            StopReason::Completed => writeln!(self.out, "Training completed")?,
            // The error (exit 1) reports a non-finite loss; an interrupt is reported on stderr.
            StopReason::NonFiniteLoss { .. } | StopReason::Interrupted { .. } => {}
            other => writeln!(self.out, "Training stopped: {other}")?,
        }
        self.out.flush()?;
        Ok(())
    }
}

/// The tutorial's evaluation block of `set` from `metrics` named
/// `{set}_{metric}`: `Test Error: \n Accuracy: …%, Avg loss: … \n` (no
/// accuracy for regression), a ` Top-K accuracy: …%` line per top-K
/// metric, `Validation Error` for `val`. What `kiln train` prints after
/// each evaluation and `kiln eval` prints once.
pub fn eval_block(set: &str, metrics: &[(String, f64)]) -> String {
    let get = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| *n == format!("{set}_{name}"))
            .map(|(_, v)| *v)
    };
    let loss = get("loss").unwrap_or(f64::NAN);
    let mut block = match get("accuracy") {
        Some(accuracy) => test_report(accuracy, loss),
        // Regression: no accuracy to report.
        None => format!("Test Error: \n Avg loss: {loss:>8.6} \n"),
    };
    let prefix = format!("{set}_top");
    for (name, value) in metrics {
        if let Some(k) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("_accuracy"))
        {
            block.push_str(&format!(" Top-{k} accuracy: {:>0.1}% \n", 100.0 * value));
        }
    }
    match set {
        "test" => block,
        "val" => block.replacen("Test", "Validation", 1),
        other => format!("{other} {}", block.replacen("Test ", "", 1)),
    }
}

/// The evaluation set of random batches of the training data (nanoGPT's
/// `estimate_loss()['train']`), reported as `train_eval_loss` so that it
/// is not the step's `train_loss`; [`NanoGptPrinter`] prints it as
/// `train loss`.
pub const TRAIN_EVAL: &str = "train_eval";

/// nanoGPT's `train.py` lines, for training on random batches: `step N:
/// train loss X.XXXX, val loss Y.YYYY` after each evaluation (N: optimizer
/// steps taken) and `iter N: loss X.XXXX, time T.TTms` after each
/// optimizer step (N: nanoGPT's 0-based iteration; the loss of the step's
/// last batch; the time is kiln's own, from the end of the previous step).
/// Nothing at the end of a run that completed or reached its step limit,
/// as nanoGPT; why it stopped otherwise.
pub struct NanoGptPrinter<W: std::io::Write> {
    out: W,
}

impl<W: std::io::Write> NanoGptPrinter<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: std::io::Write> Callback for NanoGptPrinter<W> {
    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        if info.stepped {
            writeln!(
                self.out,
                "iter {}: loss {:.4}, time {:.2}ms",
                info.step.saturating_sub(1),
                info.loss,
                info.timings.total * 1000.0
            )?;
        }
        Ok(())
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        let mut sets: Vec<&str> = info
            .metrics
            .iter()
            .filter_map(|(name, _)| name.strip_suffix("_loss"))
            .collect();
        // nanoGPT's order: train, then val.
        sets.sort_by_key(|s| (*s != TRAIN_EVAL, *s != "val", s.to_string()));
        let parts: Vec<String> = sets
            .iter()
            .map(|set| {
                let loss = info.get(&format!("{set}_loss")).unwrap_or(f64::NAN);
                let name = if *set == TRAIN_EVAL { "train" } else { set };
                format!("{name} loss {loss:.4}")
            })
            .collect();
        writeln!(self.out, "step {}: {}", info.step, parts.join(", "))?;
        Ok(())
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        match &summary.stop {
            StopReason::Completed
            | StopReason::MaxSteps { .. }
            | StopReason::NonFiniteLoss { .. }
            | StopReason::Interrupted { .. } => {}
            other => writeln!(self.out, "Training stopped: {other}")?,
        }
        self.out.flush()?;
        Ok(())
    }
}
