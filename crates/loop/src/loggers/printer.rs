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
