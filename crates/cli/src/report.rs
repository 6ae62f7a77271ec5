//! How a run shows itself: a progress bar on a terminal, JSON lines for machines.
use indicatif::{ProgressBar, ProgressStyle};
use kiln_loop::checkpoint::Progress;
use kiln_loop::train::test_report;
use kiln_loop::{Callback, EvalInfo, FitSummary, StepInfo, StopReason};
use std::io::Write;

/// A progress bar per epoch with the loss, samples/s and ETA; the test
/// results are printed above it as the tutorial prints them.
pub struct ProgressPrinter {
    batches: usize,
    bar: Option<ProgressBar>,
    samples_per_sec: f64,
}

impl ProgressPrinter {
    /// For epochs of `batches` batches.
    pub fn new(batches: usize) -> Self {
        Self {
            batches,
            bar: None,
            samples_per_sec: f64::NAN,
        }
    }

    fn bar(&mut self, epoch: usize, position: usize) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(self.batches as u64);
            let style =
                ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(epoch.to_string());
            bar.set_position(position as u64);
            bar
        })
    }
}

impl Callback for ProgressPrinter {
    fn on_run_start(&mut self, start: &Progress) -> kiln_loop::Result<()> {
        if start.batch > 0 {
            self.bar(start.epoch, start.batch);
        }
        Ok(())
    }

    fn on_epoch_start(&mut self, epoch: usize) -> kiln_loop::Result<()> {
        self.bar = None;
        self.bar(epoch, 0);
        Ok(())
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> kiln_loop::Result<()> {
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
        if info.log || info.batch % 10 == 0 {
            bar.set_message(format!("loss {:.6} {:.0} samples/s", info.loss, rate));
        }
        Ok(())
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> kiln_loop::Result<()> {
        let text = test_report(
            info.get("accuracy").unwrap_or(f64::NAN),
            info.get("test_loss").unwrap_or(f64::NAN),
        );
        match &self.bar {
            Some(bar) => bar.println(format!("epoch {}: {}", info.epoch, text.replace('\n', ""))),
            None => println!("{text}"),
        }
        Ok(())
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> kiln_loop::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !matches!(summary.stop, StopReason::NonFiniteLoss { .. }) {
            println!("Training completed");
        }
        Ok(())
    }
}

/// One JSON object per line: `{"event":"step",...}` at each log interval,
/// `{"event":"eval",...}` after each evaluation, `{"event":"end",...}`.
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn emit(&mut self, value: serde_json::Value) -> kiln_loop::Result<()> {
        writeln!(self.out, "{value}")?;
        Ok(())
    }
}

impl<W: Write> Callback for JsonLines<W> {
    fn on_batch_end(&mut self, info: &StepInfo) -> kiln_loop::Result<()> {
        if !info.log {
            return Ok(());
        }
        self.emit(serde_json::json!({
            "event": "step", "epoch": info.epoch, "batch": info.batch, "step": info.step,
            "loss": info.loss, "lr": info.lr, "samples_per_sec": info.samples_per_sec,
        }))
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> kiln_loop::Result<()> {
        let metrics: serde_json::Map<String, serde_json::Value> = info
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        self.emit(serde_json::json!({ "event": "eval", "epoch": info.epoch, "step": info.step, "metrics": metrics }))
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> kiln_loop::Result<()> {
        self.emit(serde_json::json!({ "event": "end", "steps": summary.steps, "stop": format!("{:?}", summary.stop) }))
    }
}
