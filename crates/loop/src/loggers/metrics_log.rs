//! A run's metrics on disk: `metrics.jsonl` plus two CSV views.
//!
//! [`MetricsWriter`] appends one JSON object per line to
//! `RUN_DIR/metrics.jsonl`:
//!
//! ```text
//! {"scope":"step","step":100,"epoch":1,"values":{"lr":0.001,"train_loss":0.52}}
//! {"scope":"epoch","step":938,"epoch":1,"values":{"test_accuracy":0.64,"test_loss":0.91}}
//! ```
//!
//! and the same records, one row each, to `metrics_step.csv` and
//! `metrics_epoch.csv` (header `step,epoch,` then the metric names in sorted
//! order; a record without a metric leaves its cell empty). Metric names are
//! kept in a `BTreeMap`, so files are byte-identical from run to run.
//!
//! One name per quantity, the same in the JSONL, the CSVs, the plots and
//! the monitors of early stopping and best checkpoints: a `step` record has
//! the training loss of that optimizer step ([`TRAIN_LOSS`]), the learning
//! rate it used ([`LR`]), `samples_per_sec` and, when clipping by norm,
//! `grad_norm`; evaluation metrics are `{set}_{metric}` — `test_loss`,
//! `test_accuracy` (a fraction), `val_loss`, `test_top5_accuracy`… — in an
//! `epoch` record after each epoch's evaluation, or in a `step` record of
//! their own for evaluations every N steps. A record's `step` is the number
//! of optimizer steps taken so far.
//!
//! Durability: each record is written with a single `write` of the whole
//! line and flushed before [`MetricsWriter::log`] returns, so a killed run
//! loses at most the record being written; [`read_metrics`] ignores a torn
//! last line (with a warning). Whole-file rewrites (a CSV growing a column,
//! the truncation done by [`MetricsWriter::open_append`]) go through
//! [`kiln_tensor::io::write_atomic`], so no file is ever half-written.
//!
//! Non-finite values, which JSON numbers cannot hold, are written as the JSON
//! strings `"NaN"`, `"inf"` and `"-inf"` (and the same words in the CSVs), and
//! read back as the same `f64`.
use crate::json_f64::{non_finite_word, JsonF64};
use crate::notice::Notices;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File name of the JSON-lines metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// File name of the CSV holding the `step` records.
pub const STEP_CSV: &str = "metrics_step.csv";
/// File name of the CSV holding the `epoch` records.
pub const EPOCH_CSV: &str = "metrics_epoch.csv";

/// The training loss of an optimizer step.
pub const TRAIN_LOSS: &str = "train_loss";
/// The learning rate (of the first parameter group).
pub const LR: &str = "lr";
/// The test set's average loss.
pub const TEST_LOSS: &str = "test_loss";
/// The test set's accuracy, a fraction in `[0, 1]`.
pub const TEST_ACCURACY: &str = "test_accuracy";
/// The validation split's average loss.
pub const VAL_LOSS: &str = "val_loss";
/// The validation split's accuracy.
pub const VAL_ACCURACY: &str = "val_accuracy";

/// Which kind of moment a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// After one optimizer step.
    Step,
    /// After one epoch (training pass plus evaluation).
    Epoch,
}

impl Scope {
    /// `"step"` or `"epoch"`, as in the files.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Step => "step",
            Scope::Epoch => "epoch",
        }
    }

    /// The CSV file of this scope ([`STEP_CSV`] or [`EPOCH_CSV`]).
    pub fn csv_file(self) -> &'static str {
        match self {
            Scope::Step => STEP_CSV,
            Scope::Epoch => EPOCH_CSV,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// Step or epoch record.
    pub scope: Scope,
    /// Optimizer steps taken so far (the step just taken for a `step` record).
    pub step: u64,
    /// The epoch (1-based, as the quickstart prints it).
    pub epoch: u64,
    /// Metric values by name, in name order.
    pub values: BTreeMap<String, f64>,
}

impl MetricRecord {
    /// A record from `(name, value)` pairs; a later pair with the same name wins.
    pub fn new<'a>(
        scope: Scope,
        step: u64,
        epoch: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Self {
        Self {
            scope,
            step,
            epoch,
            values: values
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }
    }

    /// The value of metric `name`, if the record has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

/// The on-disk shape of a record; field order is the order in the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    scope: Scope,
    step: u64,
    epoch: u64,
    values: BTreeMap<String, JsonF64>,
}

fn to_line(record: &MetricRecord) -> Result<String> {
    let wire = Wire {
        scope: record.scope,
        step: record.step,
        epoch: record.epoch,
        values: record
            .values
            .iter()
            .map(|(k, &v)| (k.clone(), JsonF64(v)))
            .collect(),
    };
    let mut line = serde_json::to_string(&wire)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode metric record: {e}")))?;
    line.push('\n');
    Ok(line)
}

fn from_line(line: &str) -> std::result::Result<MetricRecord, serde_json::Error> {
    let wire: Wire = serde_json::from_str(line)?;
    Ok(MetricRecord {
        scope: wire.scope,
        step: wire.step,
        epoch: wire.epoch,
        values: wire.values.into_iter().map(|(k, v)| (k, v.0)).collect(),
    })
}

fn check_names(record: &MetricRecord) -> Result<()> {
    for name in record.values.keys() {
        if name.is_empty() || name == "step" || name == "epoch" {
            return Err(Error::InvalidArgument(format!(
                "metric name {name:?} is not allowed: names must be non-empty and not \"step\" or \"epoch\" (the CSV columns)"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "metric name {name:?} contains a control character"
            )));
        }
    }
    Ok(())
}

/// A CSV field, quoted (RFC 4180) only when it has to be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn csv_number(v: f64) -> String {
    if v.is_finite() {
        // Rust's `Display` for f64 is the shortest text that reads back exactly.
        format!("{v}")
    } else {
        non_finite_word(v).to_string()
    }
}

fn csv_header(columns: &BTreeSet<String>) -> String {
    let mut line = String::from("step,epoch");
    for name in columns {
        line.push(',');
        line.push_str(&csv_field(name));
    }
    line.push('\n');
    line
}

fn csv_row(record: &MetricRecord, columns: &BTreeSet<String>) -> String {
    let mut line = format!("{},{}", record.step, record.epoch);
    for name in columns {
        line.push(',');
        if let Some(&v) = record.values.get(name) {
            line.push_str(&csv_number(v));
        }
    }
    line.push('\n');
    line
}

/// An output error naming `path`: "{what} {path}: {err}".
pub(crate) fn output_error(path: &Path, what: &str, err: io::Error) -> Error {
    Error::Output(io::Error::new(
        err.kind(),
        format!("{what} {}: {err}", path.display()),
    ))
}

/// One of the two CSV files: its open handle and current columns.
#[derive(Debug)]
struct CsvFile {
    path: PathBuf,
    scope: Scope,
    columns: BTreeSet<String>,
    file: File,
}

impl CsvFile {
    /// Writes the whole CSV for `records` (those of this scope) atomically
    /// and opens it for appending.
    fn rewrite(path: PathBuf, scope: Scope, records: &[MetricRecord]) -> Result<Self> {
        let of_scope = || records.iter().filter(|r| r.scope == scope);
        let columns: BTreeSet<String> = of_scope().flat_map(|r| r.values.keys().cloned()).collect();
        let mut text = csv_header(&columns);
        for record in of_scope() {
            text.push_str(&csv_row(record, &columns));
        }
        kiln_tensor::io::write_atomic(&path, text.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| output_error(&path, "opening", e))?;
        Ok(Self {
            path,
            scope,
            columns,
            file,
        })
    }

    fn append(&mut self, record: &MetricRecord) -> Result<()> {
        let row = csv_row(record, &self.columns);
        self.file
            .write_all(row.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| output_error(&self.path, "writing", e))
    }
}

/// Which metric files a [`MetricsWriter`] keeps (`--logger csv,jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    /// `metrics.jsonl`.
    pub jsonl: bool,
    /// `metrics_step.csv` and `metrics_epoch.csv`.
    pub csv: bool,
}

impl Default for Formats {
    fn default() -> Self {
        Self {
            jsonl: true,
            csv: true,
        }
    }
}

/// Appends metric records to a run directory's `metrics.jsonl` and CSVs
/// (either or both, see [`Formats`]).
///
/// Every [`log`](Self::log) writes and flushes one line per file before it
/// returns. The writer keeps the run's records, from which a CSV is rebuilt
/// when a column appears; a resumed run reads them back from
/// `metrics.jsonl` (or the CSVs when the run kept no JSONL).
#[derive(Debug)]
pub struct MetricsWriter {
    run_dir: PathBuf,
    jsonl: Option<(PathBuf, File)>,
    step_csv: Option<CsvFile>,
    epoch_csv: Option<CsvFile>,
    records: Vec<MetricRecord>,
}

impl MetricsWriter {
    /// Starts the metrics of a new run in `run_dir` (created if missing),
    /// JSONL and CSVs.
    ///
    /// Existing metrics files in `run_dir` are replaced by empty ones; a
    /// caller that must not overwrite an earlier run checks
    /// [`has_metrics`] first.
    pub fn create(run_dir: &Path) -> Result<Self> {
        Self::create_with(run_dir, Formats::default())
    }

    /// [`MetricsWriter::create`] with the files `formats` names.
    pub fn create_with(run_dir: &Path, formats: Formats) -> Result<Self> {
        fs::create_dir_all(run_dir).map_err(|e| output_error(run_dir, "creating", e))?;
        Self::start(run_dir, Vec::new(), formats)
    }

    /// Continues the run in `run_dir` after its checkpoint at `resume_step`.
    ///
    /// Records with `step > resume_step` (written after the checkpoint by the
    /// interrupted run) are dropped, as is a torn last line, and the files
    /// are rewritten atomically, so that once the resumed run has logged the
    /// same records again the files equal those of an uninterrupted run.
    /// Missing metrics files are created; a malformed file is an error,
    /// never silently discarded.
    pub fn open_append(run_dir: &Path, resume_step: u64) -> Result<Self> {
        Self::open_append_with(run_dir, resume_step, Formats::default(), &mut |_| {})
    }

    /// [`MetricsWriter::open_append`] with the files `formats` names;
    /// what is dropped (a torn last line) is reported through `warn`.
    pub fn open_append_with(
        run_dir: &Path,
        resume_step: u64,
        formats: Formats,
        warn: &mut dyn FnMut(String),
    ) -> Result<Self> {
        if !run_dir.is_dir() {
            return Err(Error::Data {
                path: run_dir.to_path_buf(),
                message: "run directory does not exist; nothing to resume".into(),
            });
        }
        let records = match read_metrics(run_dir, warn) {
            Ok(records) => records,
            Err(_) if !has_any_metrics(run_dir) => Vec::new(),
            Err(e) => return Err(e),
        };
        let records = records
            .into_iter()
            .filter(|r| r.step <= resume_step)
            .collect();
        Self::start(run_dir, records, formats)
    }

    /// Writes `records` as the complete contents of the files and opens
    /// them for appending.
    fn start(run_dir: &Path, records: Vec<MetricRecord>, formats: Formats) -> Result<Self> {
        let jsonl = if formats.jsonl {
            let path = run_dir.join(METRICS_FILE);
            let mut text = String::new();
            for record in &records {
                text.push_str(&to_line(record)?);
            }
            kiln_tensor::io::write_atomic(&path, text.as_bytes())?;
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| output_error(&path, "opening", e))?;
            Some((path, file))
        } else {
            None
        };
        let (step_csv, epoch_csv) = if formats.csv {
            (
                Some(CsvFile::rewrite(
                    run_dir.join(STEP_CSV),
                    Scope::Step,
                    &records,
                )?),
                Some(CsvFile::rewrite(
                    run_dir.join(EPOCH_CSV),
                    Scope::Epoch,
                    &records,
                )?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            jsonl,
            step_csv,
            epoch_csv,
            records,
        })
    }

    /// The run directory the files live in.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Appends `record` to `metrics.jsonl` and to its scope's CSV, flushing
    /// both. A metric name the CSV has not seen yet makes it rewrite itself
    /// (atomically) with the wider header.
    ///
    /// Names must be non-empty, free of control characters and other than
    /// `step` and `epoch`.
    pub fn log(&mut self, record: &MetricRecord) -> Result<()> {
        check_names(record)?;
        if let Some((path, file)) = &mut self.jsonl {
            let line = to_line(record)?;
            let before = file
                .metadata()
                .map_err(|e| output_error(path, "writing", e))?
                .len();
            if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
                // Take back a partly written line (disk full…), so that a later
                // record does not land after it in the middle of the file.
                let _ = file.set_len(before);
                return Err(output_error(path, "writing", e));
            }
        }
        self.records.push(record.clone());
        let csv = match record.scope {
            Scope::Step => &mut self.step_csv,
            Scope::Epoch => &mut self.epoch_csv,
        };
        let Some(csv) = csv else {
            return Ok(());
        };
        if record.values.keys().all(|k| csv.columns.contains(k)) {
            csv.append(record)
        } else {
            *csv = CsvFile::rewrite(csv.path.clone(), csv.scope, &self.records)?;
            Ok(())
        }
    }

    /// Makes every record logged so far durable (each line is already
    /// written through to the OS; this also syncs the files to disk).
    pub fn sync(&mut self) -> Result<()> {
        let files = self
            .jsonl
            .iter()
            .map(|(path, file)| (path.as_path(), file))
            .chain(self.step_csv.iter().map(|c| (c.path.as_path(), &c.file)))
            .chain(self.epoch_csv.iter().map(|c| (c.path.as_path(), &c.file)));
        for (path, file) in files {
            file.sync_data()
                .map_err(|e| output_error(path, "syncing", e))?;
        }
        Ok(())
    }

    /// Logs a `step` record.
    pub fn log_step<'a>(
        &mut self,
        step: u64,
        epoch: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<()> {
        self.log(&MetricRecord::new(Scope::Step, step, epoch, values))
    }

    /// Logs an `epoch` record.
    pub fn log_epoch<'a>(
        &mut self,
        step: u64,
        epoch: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<()> {
        self.log(&MetricRecord::new(Scope::Epoch, step, epoch, values))
    }
}

/// Whether `run_dir` holds a non-empty `metrics.jsonl`.
pub fn has_metrics(run_dir: &Path) -> bool {
    fs::metadata(run_dir.join(METRICS_FILE)).is_ok_and(|m| m.len() > 0)
}

fn has_any_metrics(run_dir: &Path) -> bool {
    [METRICS_FILE, STEP_CSV, EPOCH_CSV]
        .iter()
        .any(|f| run_dir.join(f).is_file())
}

/// Reads a run's metric records back: `metrics.jsonl` in file order, or,
/// for a run that kept only CSVs, both CSVs (records ordered by step, step
/// records before the epoch record of the same step).
///
/// A malformed line is an error naming the file and line number, except a
/// last line without its newline (a run killed while writing it), which is
/// skipped with a warning.
pub fn read_metrics(run_dir: &Path, warn: &mut dyn FnMut(String)) -> Result<Vec<MetricRecord>> {
    let path = run_dir.join(METRICS_FILE);
    if path.is_file() {
        return read_metrics_file(&path, warn);
    }
    let (step, epoch) = (run_dir.join(STEP_CSV), run_dir.join(EPOCH_CSV));
    if !step.is_file() && !epoch.is_file() {
        return Err(Error::Data {
            path,
            message: format!(
                "no {METRICS_FILE}, {STEP_CSV} or {EPOCH_CSV} here; is {} a kiln run directory?",
                run_dir.display()
            ),
        });
    }
    let mut records = Vec::new();
    for (file, scope) in [(step, Scope::Step), (epoch, Scope::Epoch)] {
        if file.is_file() {
            records.extend(read_csv_file(&file, scope)?);
        }
    }
    records.sort_by_key(|r| (r.step, r.scope));
    Ok(records)
}

/// Splits one CSV line into fields (RFC 4180 quoting, as [`csv_field`] writes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// The records of one of the CSVs (`step,epoch,` then the metric columns).
fn read_csv_file(path: &Path, scope: Scope) -> Result<Vec<MetricRecord>> {
    let bad = |message: String| Error::Data {
        path: path.to_path_buf(),
        message,
    };
    let text = fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or_default());
    if header.get(..2) != Some(&["step".to_string(), "epoch".to_string()][..]) {
        return Err(bad(
            "line 1: the header does not start with step,epoch".into()
        ));
    }
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields = csv_fields(line);
        let number = |text: &str| -> std::result::Result<f64, String> {
            match text {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                t => t.parse().map_err(|_| format!("{t:?} is not a number")),
            }
        };
        let line_no = i + 2;
        let int = |k: usize| -> Result<u64> {
            fields
                .get(k)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| bad(format!("line {line_no}: no {} number", header[k])))
        };
        let mut values = BTreeMap::new();
        for (name, field) in header.iter().zip(&fields).skip(2) {
            if !field.is_empty() {
                let v = number(field).map_err(|m| bad(format!("line {line_no}: {m}")))?;
                values.insert(name.clone(), v);
            }
        }
        records.push(MetricRecord {
            scope,
            step: int(0)?,
            epoch: int(1)?,
            values,
        });
    }
    Ok(records)
}

fn read_metrics_file(path: &Path, warn: &mut dyn FnMut(String)) -> Result<Vec<MetricRecord>> {
    let bad = |message: String| Error::Data {
        path: path.to_path_buf(),
        message,
    };
    let bytes = fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // `split` yields one empty piece after a final newline; `complete` says
    // whether the last piece is a whole line or a torn one.
    let count = lines.len();
    let mut records = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        let number = i + 1;
        let is_last_piece = number == count;
        if is_last_piece && complete {
            break;
        }
        let torn = is_last_piece && !complete;
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| format!("not UTF-8 ({e})"))
            .and_then(|text| {
                let text = text.strip_suffix('\r').unwrap_or(text);
                if text.trim().is_empty() {
                    Err("empty line".to_string())
                } else {
                    from_line(text).map_err(|e| e.to_string())
                }
            });
        match parsed {
            Ok(record) => records.push(record),
            Err(message) if torn => {
                warn(format!(
                    "{}: line {number}: ignoring an incomplete last line ({message}); the run was probably interrupted while writing it",
                    path.display()
                ));
            }
            Err(message) => return Err(bad(format!("line {number}: {message}"))),
        }
    }
    Ok(records)
}

/// The seconds an epoch spent training (from its first batch to the end
/// of its last, evaluation excluded), in its `epoch` record.
pub const EPOCH_TRAIN_SECONDS: &str = "epoch_train_seconds";

/// Seconds of an optimizer step, from the end of the previous step to the
/// end of this one (every batch of an accumulation window); the phases
/// below split it ([`crate::StepTimings`]; what they leave is callbacks,
/// metrics, reading the loss, clipping and schedulers).
pub const STEP_SECONDS: &str = "step_seconds";
/// Seconds of a step spent assembling its batches.
pub const DATA_SECONDS: &str = "data_seconds";
/// Seconds of a step in forward passes and the loss.
pub const FORWARD_SECONDS: &str = "forward_seconds";
/// Seconds of a step in backward passes.
pub const BACKWARD_SECONDS: &str = "backward_seconds";
/// Seconds of a step in the optimizer (`step()` and `zero_grad()`).
pub const OPTIMIZER_SECONDS: &str = "optimizer_seconds";

/// A [`crate::Callback`] writing the run's metrics with a [`MetricsWriter`]:
/// a step record after every optimizer step ([`TRAIN_LOSS`], [`LR`],
/// `samples_per_sec`, `grad_norm` when clipping by norm, and the step's
/// timings: [`STEP_SECONDS`], [`DATA_SECONDS`], [`FORWARD_SECONDS`],
/// [`BACKWARD_SECONDS`], [`OPTIMIZER_SECONDS`]) and a record after
/// every evaluation (an `epoch` record at epoch ends, with
/// [`EPOCH_TRAIN_SECONDS`], a `step` record for evaluations every N steps),
/// under the metric names the evaluation gives.
///
/// The files are opened (a resumed run's truncated to its checkpoint) when
/// training starts, so a run that fails to start leaves them untouched.
pub struct MetricsLogger {
    run_dir: PathBuf,
    formats: Formats,
    resume_step: Option<usize>,
    writer: Option<MetricsWriter>,
    epoch_start: Option<std::time::Instant>,
    last_batch_end: Option<std::time::Instant>,
    /// The timings of the batches since the last step record.
    window: crate::StepTimings,
    notices: Notices,
}

impl MetricsLogger {
    /// Fresh files in `run_dir`.
    pub fn create(run_dir: &Path, formats: Formats, notices: Notices) -> Self {
        Self::new(run_dir, formats, None, notices)
    }

    /// Continues a resumed run's files, dropping records after `resume_step`
    /// (what it drops that it did not write, a torn line, is a warning).
    pub fn resume(run_dir: &Path, formats: Formats, resume_step: usize, notices: Notices) -> Self {
        Self::new(run_dir, formats, Some(resume_step), notices)
    }

    fn new(run_dir: &Path, formats: Formats, resume_step: Option<usize>, notices: Notices) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            formats,
            resume_step,
            writer: None,
            epoch_start: None,
            last_batch_end: None,
            window: crate::StepTimings::default(),
            notices,
        }
    }

    fn writer(&mut self) -> Result<&mut MetricsWriter> {
        self.writer.as_mut().ok_or_else(|| {
            Error::InvalidArgument("the metrics logger is used before the run started".into())
        })
    }
}

impl crate::Callback for MetricsLogger {
    fn on_run_start(&mut self, _start: &crate::checkpoint::Progress) -> Result<()> {
        self.writer = Some(match self.resume_step {
            Some(step) => MetricsWriter::open_append_with(
                &self.run_dir,
                step as u64,
                self.formats,
                &mut |w| self.notices.warn(w),
            )?,
            None => MetricsWriter::create_with(&self.run_dir, self.formats)?,
        });
        self.epoch_start = Some(std::time::Instant::now());
        Ok(())
    }

    fn on_epoch_start(&mut self, _epoch: usize) -> Result<()> {
        self.epoch_start = Some(std::time::Instant::now());
        Ok(())
    }

    fn on_batch_end(&mut self, info: &crate::StepInfo) -> Result<()> {
        self.last_batch_end = Some(std::time::Instant::now());
        let (w, t) = (&mut self.window, &info.timings);
        w.total += t.total;
        w.data += t.data;
        w.forward += t.forward;
        w.backward += t.backward;
        w.optimizer += t.optimizer;
        if !info.stepped {
            return Ok(());
        }
        let w = std::mem::take(&mut self.window);
        let mut values = vec![
            (TRAIN_LOSS, info.loss),
            ("samples_per_sec", info.samples_per_sec),
            (STEP_SECONDS, w.total),
            (DATA_SECONDS, w.data),
            (FORWARD_SECONDS, w.forward),
            (BACKWARD_SECONDS, w.backward),
            (OPTIMIZER_SECONDS, w.optimizer),
        ];
        values.extend(info.lr.map(|lr| (LR, lr)));
        values.extend(info.grad_norm.map(|n| ("grad_norm", n)));
        let extra: Vec<(String, f64)> = info
            .metrics
            .iter()
            .map(|(name, v)| (format!("train_{name}"), *v))
            .collect();
        values.extend(extra.iter().map(|(n, v)| (n.as_str(), *v)));
        self.writer()?
            .log_step(info.step as u64, info.epoch as u64, values)
    }

    fn on_before_checkpoint(&mut self, _progress: &crate::checkpoint::Progress) -> Result<()> {
        match &mut self.writer {
            Some(writer) => writer.sync(),
            None => Ok(()),
        }
    }

    fn on_eval_end(&mut self, info: &crate::EvalInfo) -> Result<()> {
        let scope = if info.end_of_epoch {
            Scope::Epoch
        } else {
            Scope::Step
        };
        let mut values: Vec<(&str, f64)> = info
            .metrics
            .iter()
            .map(|(name, v)| (name.as_str(), *v))
            .collect();
        let train_seconds = match (info.end_of_epoch, self.epoch_start, self.last_batch_end) {
            (true, Some(start), Some(end)) if end > start => Some((end - start).as_secs_f64()),
            _ => None,
        };
        values.extend(train_seconds.map(|s| (EPOCH_TRAIN_SECONDS, s)));
        let record = MetricRecord::new(scope, info.step as u64, info.epoch as u64, values);
        self.writer()?.log(&record)
    }
}
