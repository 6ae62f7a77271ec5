//! One JSON object per event, for machines.
use crate::checkpoint::Progress;
use crate::{Callback, EvalInfo, FitSummary, Result, StepInfo};
use std::io::Write;

/// One JSON object per line: `{"event":"start",...}` when training starts
/// (with what [`JsonLines::start`] adds: a run's directory and seed),
/// `{"event":"step",...}` at each log interval, `{"event":"eval",...}`
/// after each evaluation, `{"event":"checkpoint",...}` after each
/// checkpoint, `{"event":"end","stop":{"reason":...},...}`.
pub struct JsonLines<W: Write> {
    out: W,
    start: serde_json::Map<String, serde_json::Value>,
}

impl<W: Write> JsonLines<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            start: serde_json::Map::new(),
        }
    }

    /// Adds `fields` to the `start` event (`run_dir`, `seed`…).
    pub fn start(mut self, fields: serde_json::Map<String, serde_json::Value>) -> Self {
        self.start.extend(fields);
        self
    }

    fn emit(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.out, "{value}")?;
        self.out.flush()?;
        Ok(())
    }
}

impl<W: Write> Callback for JsonLines<W> {
    fn on_run_start(&mut self, start: &Progress) -> Result<()> {
        let mut event = serde_json::Map::new();
        event.insert("event".into(), "start".into());
        event.extend(self.start.clone());
        event.insert("epoch".into(), start.epoch.into());
        event.insert("step".into(), start.step.into());
        self.emit(serde_json::Value::Object(event))
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        if !info.log {
            return Ok(());
        }
        self.emit(serde_json::json!({
            "event": "step", "epoch": info.epoch, "batch": info.batch, "step": info.step,
            "train_loss": info.loss, "lr": info.lr, "samples_per_sec": info.samples_per_sec,
        }))
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        let metrics: serde_json::Map<String, serde_json::Value> = info
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        self.emit(serde_json::json!({ "event": "eval", "epoch": info.epoch, "step": info.step, "metrics": metrics }))
    }

    fn on_checkpoint(&mut self, path: &std::path::Path, progress: &Progress) -> Result<()> {
        self.emit(serde_json::json!({ "event": "checkpoint", "path": path, "step": progress.step }))
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        let stop = serde_json::to_value(&summary.stop)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        self.emit(serde_json::json!({ "event": "end", "steps": summary.steps, "stop": stop }))
    }
}
