//! `kiln predict`: a trained run's outputs for a data set, in order, into a
//! safetensors or a CSV file (Lightning's `trainer.predict`).
use super::{evaluation_set, load_to_evaluate, Registries, Source};
use crate::data::source::Task;
use crate::eval::Predictions;
use crate::notice::{Notice, Notices};
use crate::{DataLoader, Error, Result};
use kiln_tensor::Kind;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `kiln predict` asks for.
#[derive(Debug, Default)]
pub struct PredictRequest {
    /// A checkpoint directory, or a run directory.
    pub checkpoint: Option<PathBuf>,
    /// With a run directory: `last` (default) or `best`.
    pub which: Option<String>,
    /// A safetensors state dict of the default model (or of `flags.model`).
    pub weights: Option<PathBuf>,
    /// The set to predict: `test` (default) or `val`.
    pub split: Option<String>,
    /// Flags that override the run's (`data` or `data_dir`, test samples,
    /// batch size, device); another data source replaces the run's.
    pub flags: serde_json::Map<String, serde_json::Value>,
    /// The file to write: `.safetensors` or `.csv`.
    pub output: PathBuf,
    /// Show a progress bar (on stderr, when it is a terminal).
    pub progress: bool,
    /// Where warnings and the written file's notice go.
    pub notices: Notices,
}

/// What [`predict`] wrote.
#[derive(Debug)]
pub struct PredictSummary {
    /// The file written.
    pub path: PathBuf,
    /// How many samples it holds.
    pub samples: usize,
}

/// The formats `--output` takes, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    Csv,
}

fn format_of(path: &Path) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(Format::Safetensors),
        Some("csv") => Ok(Format::Csv),
        other => Err(Error::Usage(format!(
            "--output {}: {}; use FILE.safetensors (outputs and targets) or FILE.csv (one row per sample)",
            path.display(),
            match other {
                Some(ext) => format!("unknown extension '.{ext}'"),
                None => "no extension".to_string(),
            }
        ))),
    }
}

/// `kiln predict`: the model of a checkpoint (or weights file), rebuilt as
/// `kiln eval` rebuilds it, run on the test set (or `--split val`, or
/// other `--data`) in order, in eval mode without gradients; the outputs
/// go to `request.output`, written atomically:
/// - `.safetensors`: `outputs` (`[N, ...]`, float32) and, when the data
///   has them, `targets`;
/// - `.csv`: a header, then one row per sample — `index,class,probability`
///   for classification (the arg-max class and its softmax probability; a
///   one-logit binary model's class is `logit > 0`, its probability the
///   sigmoid's), `index,value` (`value_0,value_1,…` for several outputs)
///   for regression.
pub fn predict(request: PredictRequest, registries: &Registries) -> Result<PredictSummary> {
    let format = format_of(&request.output)?;
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
    let (_, dataset) = evaluation_set(&parts.data, request.split.as_deref())?;
    let samples = dataset.len();
    let loader = DataLoader::new(dataset, plan.config.batch_size, false)?.to_device(parts.device);
    let mut model = parts.model;
    let predictions = with_progress(request.progress, loader.len(), |on_batch| {
        crate::eval::predict(&loader, model.as_mut(), on_batch)
    })?;
    match format {
        Format::Safetensors => {
            let mut tensors = vec![("outputs".to_string(), predictions.outputs.shallow_clone())];
            if let Some(targets) = &predictions.targets {
                tensors.push(("targets".to_string(), targets.shallow_clone()));
            }
            kiln_tensor::io::write_safetensors(&request.output, &tensors)?;
        }
        Format::Csv => {
            let text = csv_rows(&predictions, parts.data.task)?;
            kiln_tensor::io::write_atomic(&request.output, text.as_bytes())?;
        }
    }
    request.notices.send(Notice::Wrote(request.output.clone()));
    Ok(PredictSummary {
        path: request.output,
        samples,
    })
}

/// Runs `f` with a batch counter that moves kiln's progress bar when
/// `show` (and the `progress` feature) says so.
fn with_progress<T>(
    show: bool,
    batches: usize,
    f: impl FnOnce(&mut dyn FnMut(usize)) -> Result<T>,
) -> Result<T> {
    #[cfg(feature = "progress")]
    if show {
        let bar = crate::loggers::progress::styled_bar(batches, "predict");
        let result = f(&mut |done| bar.set_position(done as u64));
        bar.finish_and_clear();
        return result;
    }
    let _ = (show, batches);
    f(&mut |_| {})
}

/// The CSV text of `predictions` for a run of `task`.
fn csv_rows(predictions: &Predictions, task: Task) -> Result<String> {
    let outputs = predictions.outputs.f_to_kind(Kind::Float)?;
    let size = outputs.size();
    let not_rows = || {
        Error::Usage(format!(
            "--output: the model's outputs have shape {size:?}, not one row of values per sample; write them to a .safetensors file"
        ))
    };
    let n = *size.first().ok_or_else(not_rows)?;
    let mut text = String::new();
    let fmt_err = |e: std::fmt::Error| Error::InvalidArgument(e.to_string());
    match (task, size.len()) {
        (Task::Classify { .. }, 2) => {
            let (prob, class) = outputs.f_softmax(1, Kind::Float)?.f_max_dim(1, false)?;
            let (prob, class) = (Vec::<f32>::try_from(&prob)?, Vec::<i64>::try_from(&class)?);
            text.push_str("index,class,probability\n");
            for (i, (c, p)) in class.iter().zip(&prob).enumerate() {
                writeln!(text, "{i},{c},{p}").map_err(fmt_err)?;
            }
        }
        (Task::Binary, 1 | 2) if size.iter().skip(1).all(|d| *d == 1) => {
            let logits = Vec::<f32>::try_from(&outputs.f_reshape([n])?)?;
            let sigmoid = Vec::<f32>::try_from(&outputs.f_reshape([n])?.f_sigmoid()?)?;
            text.push_str("index,class,probability\n");
            for (i, (logit, p)) in logits.iter().zip(&sigmoid).enumerate() {
                let (class, prob) = if *logit > 0.0 { (1, *p) } else { (0, 1.0 - p) };
                writeln!(text, "{i},{class},{prob}").map_err(fmt_err)?;
            }
        }
        (Task::Regress { .. }, 1 | 2) => {
            let width = size.get(1).copied().unwrap_or(1);
            let values = Vec::<f32>::try_from(&outputs.f_reshape([n * width])?)?;
            let header: Vec<String> = match width {
                1 => vec!["value".into()],
                w => (0..w).map(|j| format!("value_{j}")).collect(),
            };
            writeln!(text, "index,{}", header.join(",")).map_err(fmt_err)?;
            for (i, row) in values.chunks(width.max(1) as usize).enumerate() {
                let row: Vec<String> = row.iter().map(f32::to_string).collect();
                writeln!(text, "{i},{}", row.join(",")).map_err(fmt_err)?;
            }
        }
        _ => return Err(not_rows()),
    }
    Ok(text)
}
