//! Your own data as tensors: `--data tensors:train.safetensors[,test=…]`.
//!
//! A safetensors file (written from Python with
//! `safetensors.torch.save_file({"inputs": x, "targets": y}, path)`) holds
//! the inputs `[N, ...]` (any shape; float, or uint8 images scaled per batch
//! as `ToTensor` does) and the targets `[N]`:
//! - integer targets are class indices (int64 after loading); the number of
//!   classes is `classes=N` or the largest label + 1, and every label must
//!   be in `0..classes`;
//! - float targets are regression values, `[N]` (read as `[N, 1]`) or `[N, K]`.
//!
//! Without `test=FILE`, a seeded `test_fraction` of the samples is held out
//! for testing, split as `--data csv:` splits rows
//! ([`test_split`](crate::data::tabular::test_split)).
use crate::data::source::{Splits, Task};
use crate::data::tabular::test_split;
use crate::{Dataset, Error, Result};
use kiln_tensor::{Kind, Tensor};
use std::path::{Path, PathBuf};

/// `tensors:PATH[,test=PATH,inputs=KEY,targets=KEY,test_fraction=F,classes=N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorsSource {
    /// The training file.
    pub path: PathBuf,
    /// A test file with the same keys; without it a share of the training
    /// file is held out.
    pub test: Option<PathBuf>,
    /// The key of the inputs.
    pub inputs: String,
    /// The key of the targets.
    pub targets: String,
    /// The share held out for testing when there is no test file.
    pub test_fraction: f64,
    /// The number of classes (class-index targets); default: largest label + 1.
    pub classes: Option<i64>,
}

impl TensorsSource {
    /// The defaults for a training file: keys `inputs` and `targets`, 20 %
    /// held out for testing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            test: None,
            inputs: "inputs".into(),
            targets: "targets".into(),
            test_fraction: 0.2,
            classes: None,
        }
    }
}

fn data_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The inputs and targets of one file, checked and converted.
struct Pair {
    inputs: Tensor,
    targets: Tensor,
    classes: bool,
}

fn read_pair(path: &Path, src: &TensorsSource) -> Result<Pair> {
    let tensors = kiln_tensor::io::read_safetensors(path).map_err(|e| match e {
        kiln_tensor::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            data_error(path, "no such file")
        }
        kiln_tensor::Error::Io { source, .. } => data_error(path, source.to_string()),
        other => data_error(path, format!("not a readable safetensors file ({other})")),
    })?;
    let keys: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    let take = |key: &str, what: &str| -> Result<Tensor> {
        tensors
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| {
                data_error(
                    path,
                    format!(
                        "no tensor '{key}' for the {what}; the file holds {} (name them with inputs=KEY,targets=KEY)",
                        if keys.is_empty() { "no tensors".to_string() } else { keys.join(", ") }
                    ),
                )
            })
    };
    let inputs = take(&src.inputs, "inputs")?;
    let targets = take(&src.targets, "targets")?;
    let (n_in, n_tg) = (inputs.size(), targets.size());
    if n_in.is_empty() || n_tg.is_empty() || n_in[0] != n_tg[0] {
        return Err(data_error(
            path,
            format!(
                "inputs '{}' {n_in:?} and targets '{}' {n_tg:?} must have the same number of samples (first dimension)",
                src.inputs, src.targets
            ),
        ));
    }
    if inputs.kind() == Kind::Bool {
        return Err(data_error(
            path,
            format!(
                "inputs '{}' are bool; store them as float or uint8",
                src.inputs
            ),
        ));
    }
    let classes = match targets.kind() {
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 => true,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => false,
        other => {
            return Err(data_error(
                path,
                format!(
                    "targets '{}' have dtype {other:?}; use int64 class indices or float values",
                    src.targets
                ),
            ))
        }
    };
    let targets = if classes {
        if n_tg.len() != 1 {
            return Err(data_error(
                path,
                format!(
                    "class-index targets '{}' must be [N], got {n_tg:?}",
                    src.targets
                ),
            ));
        }
        let targets = targets.f_to_kind(Kind::Int64)?;
        if targets.numel() > 0 {
            let min = targets.f_min()?.f_int64_value(&[])?;
            if min < 0 {
                let at = targets.f_argmin(None, false)?.f_int64_value(&[])?;
                return Err(data_error(
                    path,
                    format!("label {min} of sample {at} is negative; class indices start at 0"),
                ));
            }
        }
        targets
    } else {
        let targets = targets.f_to_kind(Kind::Float)?;
        match n_tg.len() {
            1 => targets.f_unsqueeze(1)?,
            2 => targets,
            _ => {
                return Err(data_error(
                    path,
                    format!(
                        "regression targets '{}' must be [N] or [N, K], got {n_tg:?}",
                        src.targets
                    ),
                ))
            }
        }
    };
    Ok(Pair {
        inputs,
        targets,
        classes,
    })
}

/// Loads `src` into train and test sets; `seed` splits off the test set
/// when there is no test file.
pub fn load(src: &TensorsSource, seed: u64) -> Result<Splits> {
    let train = read_pair(&src.path, src)?;
    let name = |path: &Path, part: &str| format!("{} ({part})", path.display());
    let (train_set, test_set, test_path) = match &src.test {
        Some(test_path) => {
            let test = read_pair(test_path, src)?;
            if test.classes != train.classes {
                return Err(data_error(
                    test_path,
                    format!(
                        "targets are {} here but {} in {}",
                        kind_name(test.classes),
                        kind_name(train.classes),
                        src.path.display()
                    ),
                ));
            }
            let sample = |t: &Tensor| t.size().into_iter().skip(1).collect::<Vec<i64>>();
            let (a, b) = (sample(&train.inputs), sample(&test.inputs));
            let (ta, tb) = (sample(&train.targets), sample(&test.targets));
            if a != b || ta != tb {
                return Err(data_error(
                    test_path,
                    format!(
                        "samples have inputs {b:?} and targets {tb:?} here, but inputs {a:?} and targets {ta:?} in {}",
                        src.path.display()
                    ),
                ));
            }
            (
                Dataset::from_tensors(train.inputs, train.targets, &name(&src.path, "train"))?,
                Dataset::from_tensors(test.inputs, test.targets, &name(test_path, "test"))?,
                test_path.clone(),
            )
        }
        None => {
            let n = train.targets.size()[0] as usize;
            let all = Dataset::from_tensors(train.inputs, train.targets, &name(&src.path, "all"))?;
            let (test_ids, train_ids) = test_split(n, src.test_fraction, seed, "samples")
                .map_err(|e| data_error(&src.path, e.to_string()))?;
            let ids = |v: Vec<usize>| v.into_iter().map(|i| i as i64).collect::<Vec<_>>();
            let mut tr = all.select(&ids(train_ids))?;
            let mut te = all.select(&ids(test_ids))?;
            tr.labels_path = PathBuf::from(name(&src.path, "train split"));
            te.labels_path = PathBuf::from(name(&src.path, "test split"));
            (tr, te, src.path.clone())
        }
    };
    let task = if train.classes {
        let largest = train_set.max_label().max(test_set.max_label());
        let classes = match src.classes {
            Some(c) if c < 1 => {
                return Err(Error::Usage(format!(
                    "--data tensors: classes must be at least 1, got {c}"
                )))
            }
            Some(c) => c,
            None => largest + 1,
        };
        train_set.check_labels(classes)?;
        test_set.check_labels(classes).map_err(|e| match e {
            Error::Data { message, .. } => data_error(&test_path, message),
            other => other,
        })?;
        Task::Classify { classes }
    } else {
        Task::Regress {
            outputs: train_set.targets.size().get(1).copied().unwrap_or(1),
        }
    };
    Ok(Splits {
        train: train_set,
        test: test_set,
        task,
    })
}

fn kind_name(classes: bool) -> &'static str {
    if classes {
        "integer class indices"
    } else {
        "float values"
    }
}
