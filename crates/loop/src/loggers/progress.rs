//! A progress bar for terminals.
use crate::checkpoint::Progress;
use crate::{Callback, EvalInfo, FitSummary, Result, StepInfo, StopReason};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;

/// A progress bar per epoch with the loss, samples/s and ETA; evaluation
/// results are printed above it; cleared at the end (and before an
/// interrupt is reported).
pub struct ProgressPrinter {
    batches: usize,
    bar: Option<ProgressBar>,
    samples_per_sec: f64,
    out: Box<dyn std::io::Write + Send>,
}

/// kiln's bar over `batches` batches, named by `prefix` (`epoch 3`,
/// `predict`), with the position, a message and the ETA; indicatif hides it
/// when its stream (stderr) is not a terminal.
pub fn styled_bar(batches: usize, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(batches as u64);
    let style = ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar
}

impl ProgressPrinter {
    /// For epochs of `batches` batches; lines without a bar on screen
    /// (the final one) go to `out`, the terminal's stdout.
    pub fn new(batches: usize, out: Box<dyn std::io::Write + Send>) -> Self {
        Self {
            batches,
            bar: None,
            samples_per_sec: f64::NAN,
            out,
        }
    }

    fn bar(&mut self, epoch: usize, position: usize) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = styled_bar(self.batches, &format!("epoch {epoch}"));
            bar.set_position(position as u64);
            bar
        })
    }
}

impl Callback for ProgressPrinter {
    fn on_run_start(&mut self, start: &Progress) -> Result<()> {
        if start.batch > 0 {
            self.bar(start.epoch, start.batch);
        }
        Ok(())
    }

    fn on_epoch_start(&mut self, epoch: usize) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.bar(epoch, 0);
        Ok(())
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        // Smooth the throughput so the display does not flicker.
        let s = info.samples_per_sec;
        self.samples_per_sec = if self.samples_per_sec.is_finite() {
            0.9 * self.samples_per_sec + 0.1 * s
        } else {
            s
        };
        let rate = self.samples_per_sec;
        let bar = self.bar(info.epoch, info.batch);
        bar.set_position(info.batch as u64 + 1);
        if info.log || info.batch.is_multiple_of(10) {
            bar.set_message(format!("loss {:.6} {:.0} samples/s", info.loss, rate));
        }
        Ok(())
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        let mut parts = Vec::new();
        for set in super::eval_sets(info) {
            let loss = info.get(&format!("{set}_loss")).unwrap_or(f64::NAN);
            parts.push(match info.get(&format!("{set}_accuracy")) {
                Some(acc) => format!("{set} accuracy {:.1}%, avg loss {loss:.6}", 100.0 * acc),
                None => format!("{set} avg loss {loss:.6}"),
            });
        }
        let line = format!("epoch {}: {}", info.epoch, parts.join("; "));
        match &self.bar {
            Some(bar) => bar.println(line),
            None => writeln!(self.out, "{line}")?,
        }
        Ok(())
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        match &summary.stop {
            StopReason::Completed => writeln!(self.out, "Training completed")?,
            StopReason::NonFiniteLoss { .. } | StopReason::Interrupted { .. } => {}
            other => writeln!(self.out, "Training stopped: {other}")?,
        }
        Ok(())
    }
}
