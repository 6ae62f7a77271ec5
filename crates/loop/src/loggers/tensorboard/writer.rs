//! [`SummaryWriter`]: PyTorch's `torch.utils.tensorboard.SummaryWriter`,
//! for the kinds of data kiln logs.
use super::events::{event_files, now_secs, EventFileWriter};
use super::histogram::{histogram, histogram_of};
use super::hparams::{hparams_summaries, HParamValue};
use super::proto::{
    event, session_log, summary, summary_metadata, tensor_shape_proto, Event, HistogramProto,
    SessionLog, Summary, SummaryMetadata, TensorProto, TensorShapeProto, TextPluginData, DT_STRING,
};
use crate::loggers::metrics_log::output_error;
use crate::{Error, Result};
use kiln_tensor::Tensor;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Suffix `add_text` gives a tag, as PyTorch's `summary.text` does.
pub const TEXT_TAG_SUFFIX: &str = "/text_summary";

/// How a [`SummaryWriter`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterOptions {
    /// How often queued events are written to the file by a background
    /// thread (PyTorch's `flush_secs`, 120 s there). Zero writes every event
    /// before its `add_*` call returns, without a thread.
    pub flush_interval: Duration,
    /// PyTorch's `purge_step`: the new file starts with a
    /// `SessionLog.START` at this step, so TensorBoard drops the events with
    /// `step >= purge_step` of the directory's older files. TensorBoard's
    /// server ignores the first `START` of a run, so a log that may be
    /// resumed should begin with one too: `Some(0)` for a new run.
    pub purge_step: Option<u64>,
    /// Appended to the file name (PyTorch's `filename_suffix`).
    pub filename_suffix: String,
}

impl Default for WriterOptions {
    /// Flushes every 5 seconds; no purge; no suffix.
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(5),
            purge_step: None,
            filename_suffix: String::new(),
        }
    }
}

/// Writes scalars, histograms, text and hyperparameters to a new event file
/// in a log directory, as `torch.utils.tensorboard.SummaryWriter` does.
///
/// Each `add_*` encodes its event and queues it; a background thread writes
/// the queue out every [`WriterOptions::flush_interval`], and
/// [`flush`](Self::flush) does it at once, so a running TensorBoard sees the
/// events within that interval. Dropping the writer writes what is queued;
/// [`close`](Self::close) also syncs the file to disk and reports errors.
/// Errors name the file. A failed write is cut back from the file, so the
/// file never holds a torn record before a whole one.
pub struct SummaryWriter {
    log_dir: PathBuf,
    file: EventFileWriter,
}

impl SummaryWriter {
    /// A new event file in `log_dir` (created if missing) with
    /// [`WriterOptions::default`].
    pub fn create(log_dir: &Path) -> Result<Self> {
        Self::with_options(log_dir, &WriterOptions::default())
    }

    /// Continues the log in `log_dir` after a restart: a new event file
    /// whose `SessionLog.START` at `purge_step` hides the events of the
    /// older files with `step >= purge_step` (those the restarted run will
    /// write again), so TensorBoard shows one curve per tag. TensorBoard's
    /// server purges only if the log began with a `START` of its own (see
    /// [`WriterOptions::purge_step`]).
    pub fn resume(log_dir: &Path, purge_step: u64) -> Result<Self> {
        Self::with_options(
            log_dir,
            &WriterOptions {
                purge_step: Some(purge_step),
                ..WriterOptions::default()
            },
        )
    }

    /// A new event file in `log_dir` written as `options` say.
    ///
    /// As in PyTorch, the first event is the `file_version` (at the purge
    /// step, if any, else step 0), then the `SessionLog.START` if purging.
    pub fn with_options(log_dir: &Path, options: &WriterOptions) -> Result<Self> {
        let purge = options.purge_step.map(step_i64).transpose()?;
        let file = EventFileWriter::create(
            log_dir,
            &options.filename_suffix,
            options.flush_interval,
            purge.unwrap_or(0),
        )?;
        let mut writer = Self {
            log_dir: log_dir.to_path_buf(),
            file,
        };
        if let Some(step) = purge {
            writer.file.add(&Event {
                wall_time: now_secs(),
                step,
                what: Some(event::What::SessionLog(SessionLog {
                    status: session_log::SessionStatus::Start as i32,
                    ..Default::default()
                })),
            })?;
            writer.file.flush()?;
        }
        Ok(writer)
    }

    /// The log directory.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The event file this writer appends to.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Queues an event as it is (its wall time and step included).
    pub fn add_event(&mut self, event: &Event) -> Result<()> {
        self.file.add(event)
    }

    /// Queues `summary` as an event at `step`, stamped with the current time.
    pub fn add_summary(&mut self, summary: Summary, step: u64) -> Result<()> {
        let event = Event {
            wall_time: now_secs(),
            step: step_i64(step)?,
            what: Some(event::What::Summary(summary)),
        };
        self.file.add(&event)
    }

    /// `add_scalar(tag, value, step)`: a `simple_value`, which TensorBoard
    /// stores in single precision (so `value` is rounded to `f32`).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        check_tag(tag)?;
        self.add_summary(
            single(summary::Value {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary::value::Value::SimpleValue(value as f32)),
            }),
            step,
        )
    }

    /// `add_histogram(tag, values, step)` with `bins='tensorflow'`: the
    /// histogram of every element of `values` (see [`super::histogram`]).
    pub fn add_histogram(&mut self, tag: &str, values: &Tensor, step: u64) -> Result<()> {
        check_tag(tag)?;
        let histo = histogram_of(values)?;
        self.add_histogram_proto(tag, histo, step)
    }

    /// [`add_histogram`](Self::add_histogram) of values given as a slice.
    pub fn add_histogram_values(&mut self, tag: &str, values: &[f64], step: u64) -> Result<()> {
        check_tag(tag)?;
        let histo = histogram(values)?;
        self.add_histogram_proto(tag, histo, step)
    }

    /// A histogram computed elsewhere (PyTorch's `add_histogram_raw`).
    pub fn add_histogram_proto(
        &mut self,
        tag: &str,
        histo: HistogramProto,
        step: u64,
    ) -> Result<()> {
        check_tag(tag)?;
        self.add_summary(
            single(summary::Value {
                tag: tag.to_string(),
                metadata: None,
                value: Some(summary::value::Value::Histo(histo)),
            }),
            step,
        )
    }

    /// `add_text(tag, text, step)`: the text plugin's one-element string
    /// tensor under the tag `<tag>/text_summary`. TensorBoard renders it as
    /// Markdown.
    pub fn add_text(&mut self, tag: &str, text: &str, step: u64) -> Result<()> {
        check_tag(tag)?;
        let metadata = SummaryMetadata {
            plugin_data: Some(summary_metadata::PluginData {
                plugin_name: "text".into(),
                content: TextPluginData { version: 0 }.encode_to_vec(),
            }),
            ..Default::default()
        };
        let tensor = TensorProto {
            dtype: DT_STRING,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![tensor_shape_proto::Dim { size: 1 }],
            }),
            string_val: vec![text.as_bytes().to_vec()],
        };
        self.add_summary(
            single(summary::Value {
                tag: format!("{tag}{TEXT_TAG_SUFFIX}"),
                metadata: Some(metadata),
                value: Some(summary::value::Value::Tensor(tensor)),
            }),
            step,
        )
    }

    /// `add_hparams(hparams, metrics, run_name=run_name, global_step=step)`:
    /// in the sub-directory `run_name` of the log directory, a new event
    /// file with the HParams plugin's experiment, session-start and
    /// session-end summaries and then each metric as a scalar, all at
    /// `step`, written and synced before this returns. The HParams tab shows
    /// the sub-run as one session with these values.
    ///
    /// Unlike PyTorch, where a second call with the same `run_name` adds a
    /// session that TensorBoard ignores (it keeps the first metadata of a
    /// tag), the new file replaces the sub-run's older event files, so the
    /// sub-run always holds the latest session. `run_name` must be a plain
    /// directory name.
    pub fn add_hparams(
        &mut self,
        hparams: &[(String, HParamValue)],
        metrics: &[(String, f64)],
        run_name: &str,
        step: u64,
    ) -> Result<()> {
        if run_name.is_empty()
            || run_name == "."
            || run_name == ".."
            || run_name.contains(['/', '\\'])
        {
            return Err(Error::InvalidArgument(format!(
                "hparams run name {run_name:?} must be a plain directory name"
            )));
        }
        let names: Vec<&str> = metrics.iter().map(|(k, _)| k.as_str()).collect();
        let summaries = hparams_summaries(hparams, &names)?;
        let dir = self.log_dir.join(run_name);
        let older = event_files(&dir)?;
        let mut sub = SummaryWriter::with_options(
            &dir,
            &WriterOptions {
                flush_interval: Duration::ZERO,
                ..WriterOptions::default()
            },
        )?;
        for summary in summaries {
            sub.add_summary(summary, step)?;
        }
        for (name, value) in metrics {
            sub.add_scalar(name, *value, step)?;
        }
        sub.close()?;
        for path in older {
            std::fs::remove_file(&path).map_err(|e| output_error(&path, "removing", e))?;
        }
        Ok(())
    }

    /// Writes every queued event to the file now.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush()
    }

    /// Writes every queued event and syncs the file to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync()
    }

    /// Where a warning goes when events are lost because the writer is
    /// dropped without [`close`](Self::close) and the last write fails.
    pub fn set_notices(&mut self, notices: crate::notice::Notices) {
        self.file.notices = notices;
    }

    /// Writes what is queued, syncs the file to disk and closes it.
    pub fn close(self) -> Result<()> {
        self.file.close()
    }
}

fn single(value: summary::Value) -> Summary {
    Summary { value: vec![value] }
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() {
        return Err(Error::InvalidArgument("empty TensorBoard tag".into()));
    }
    Ok(())
}

fn step_i64(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| {
        Error::InvalidArgument(format!("step {step} does not fit TensorBoard's int64"))
    })
}
