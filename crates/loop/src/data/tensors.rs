//! Your own data as tensors: `--data tensors:train.safetensors[,test=…]`.
//!
//! A safetensors file (written from Python with
//! `safetensors.torch.save_file({"inputs": x, "targets": y}, path)`) holds
//! the inputs `[N, ...]` (any shape; float, or uint8 images scaled per batch
//! as `ToTensor` does) and the targets `[N]`:
//! - integer targets are class indices (int64 after loading), `[N]` or
//!   `[N, T]` (sequence targets: a class per position, compared with a
//!   model output `[N, T, classes]` flattened, as nanoGPT's loss does); the
//!   number of classes is `classes=N` or the largest label + 1, and every
//!   label must be in `0..classes`;
//! - float targets are regression values, `[N]` (read as `[N, 1]`) or `[N, K]`.
//!
//! Without `test=FILE`, a seeded `test_fraction` of the samples is held out
//! for testing, split as `--data csv:` splits rows
//! ([`test_split`](crate::data::tabular::test_split)).
//!
//! The inputs stay in the file: each batch reads
//! its rows ([`TensorDataset::stored`]), so a file larger than memory trains
//! with flat resident memory. The targets (one value or row per sample) are
//! loaded.
use crate::data::batch::INPUTS;
use crate::data::source::{check_fraction, Splits, Task};
use crate::data::tabular::test_split;
use crate::data::{Subset, TensorDataset};
use crate::{Error, Result};
use kiln_tensor::datafile::StoredArray;
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use kiln_tensor::{Kind, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `tensors:PATH[,test=PATH,inputs=KEY[;KEY…],targets=KEY,test_fraction=F,classes=N]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorsConfig {
    /// The training file.
    pub path: String,
    /// A test file with the same keys; without it a share of the training
    /// file is held out.
    pub test: Option<String>,
    /// The keys of the model's inputs, in the order its forward takes
    /// them (`ids;mask` feeds `forward(ids, mask)`).
    pub inputs: Vec<String>,
    /// The key of the targets.
    pub targets: String,
    /// The share held out for testing when there is no test file.
    pub test_fraction: f64,
    /// The number of classes (class-index targets); default: largest label + 1.
    pub classes: Option<i64>,
}

impl Default for TensorsConfig {
    /// The keys `inputs` and `targets`, 20 % held out for testing.
    fn default() -> Self {
        Self {
            path: String::new(),
            test: None,
            inputs: vec!["inputs".into()],
            targets: "targets".into(),
            test_fraction: 0.2,
            classes: None,
        }
    }
}

impl Options for TensorsConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("path", "the safetensors file (tensors:PATH for short)").required(),
            &mut self.path,
        )?;
        v.option(
            OptionInfo::new(
                "test",
                "a test file with the same keys (default: hold out test_fraction)",
            ),
            &mut self.test,
        )?;
        v.option(
            OptionInfo::new(
                "inputs",
                "the key of the inputs, or several (ids;mask) for a model whose forward takes them in that order",
            ),
            &mut self.inputs,
        )?;
        v.option(
            OptionInfo::new("targets", "the key of the targets"),
            &mut self.targets,
        )?;
        v.option(
            OptionInfo::new(
                "test_fraction",
                "share held out for testing without a test file (split with the run's seed)",
            ),
            &mut self.test_fraction,
        )?;
        v.option(
            OptionInfo::new("classes", "number of classes (default: largest label + 1)"),
            &mut self.classes,
        )
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
    /// Each model input under its field name.
    inputs: Vec<(String, StoredArray)>,
    targets: Tensor,
    classes: bool,
}

fn read_pair(path: &Path, src: &TensorsConfig) -> Result<Pair> {
    let tensors = kiln_tensor::datafile::open_safetensors(path)
        .map_err(|e| Error::safetensors_read(path, e))?;
    let keys: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    let take = |key: &str, what: &str| -> Result<StoredArray> {
        tensors
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, t)| t.clone())
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
    if src.inputs.is_empty() {
        return Err(Error::Usage(
            "--data tensors: inputs names no tensor; give inputs=KEY or inputs=KEY;KEY".into(),
        ));
    }
    if let Some(key) = src
        .inputs
        .iter()
        .enumerate()
        .find(|(i, k)| **k == src.targets || src.inputs[..*i].contains(k))
        .map(|(_, k)| k)
    {
        return Err(Error::Usage(format!(
            "--data tensors: '{key}' is named twice among inputs and targets; name each tensor once"
        )));
    }
    let targets = take(&src.targets, "targets")?;
    let n_tg = targets.shape().to_vec();
    let several = src.inputs.len() > 1;
    let mut inputs = Vec::with_capacity(src.inputs.len());
    for key in &src.inputs {
        let array = take(key, "inputs")?;
        let n_in = array.shape().to_vec();
        if n_in.is_empty() || n_tg.is_empty() || n_in[0] != n_tg[0] {
            return Err(data_error(
                path,
                format!(
                    "inputs '{key}' {n_in:?} and targets '{}' {n_tg:?} must have the same number of samples (first dimension)",
                    src.targets
                ),
            ));
        }
        // A bool tensor is a mask beside other inputs; alone it is no input
        // a layer multiplies.
        if array.kind() == Kind::Bool && !several {
            return Err(data_error(
                path,
                format!("inputs '{key}' are bool; store them as float or uint8"),
            ));
        }
        // One input keeps the conventional field name; several keep theirs.
        let field = if several { key.as_str() } else { INPUTS };
        inputs.push((field.to_string(), array));
    }
    let targets = targets.load()?;
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
        if !matches!(n_tg.len(), 1 | 2) {
            return Err(data_error(
                path,
                format!(
                    "class-index targets '{}' must be [N] (a class per sample) or [N, T] (a class per position: sequence targets), got {n_tg:?}",
                    src.targets
                ),
            ));
        }
        let targets = targets.f_to_kind(Kind::Int64)?;
        if targets.numel() > 0 {
            let min = targets.f_min()?.f_int64_value(&[])?;
            if min < 0 {
                let per_sample = n_tg.get(1).copied().unwrap_or(1).max(1);
                let at = targets.f_argmin(None, false)?.f_int64_value(&[])? / per_sample;
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
pub fn load(src: &TensorsConfig, seed: u64) -> Result<Splits> {
    check_fraction("--data tensors: test_fraction", src.test_fraction)?;
    if src.classes.is_some_and(|c| c < 1) {
        return Err(Error::Usage(format!(
            "--data tensors: classes must be at least 1, got {}",
            src.classes.unwrap_or_default()
        )));
    }
    let path = PathBuf::from(&src.path);
    let train = read_pair(&path, src)?;
    let name = |path: &Path, part: &str| format!("{} ({part})", path.display());
    let classes_in_train = train.classes;
    let outputs = train.targets.size().get(1).copied().unwrap_or(1);
    let (train_set, test_set, largest): (
        Arc<dyn crate::data::Dataset>,
        Arc<dyn crate::data::Dataset>,
        i64,
    ) = match &src.test {
        Some(test_path) => {
            let test_path = PathBuf::from(test_path);
            let test = read_pair(&test_path, src)?;
            if test.classes != train.classes {
                return Err(data_error(
                    &test_path,
                    format!(
                        "targets are {} here but {} in {}",
                        kind_name(test.classes),
                        kind_name(train.classes),
                        path.display()
                    ),
                ));
            }
            let sample = |shape: Vec<i64>| shape.into_iter().skip(1).collect::<Vec<i64>>();
            let samples = |inputs: &[(String, StoredArray)]| {
                inputs
                    .iter()
                    .map(|(_, a)| sample(a.shape().to_vec()))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (samples(&train.inputs), samples(&test.inputs));
            // One input's shape as `[784]`, several as `[[8], [8]]`.
            let show = |v: &Vec<Vec<i64>>| match v.as_slice() {
                [one] => format!("{one:?}"),
                _ => format!("{v:?}"),
            };
            let (ta, tb) = (sample(train.targets.size()), sample(test.targets.size()));
            if a != b || ta != tb {
                return Err(data_error(
                    &test_path,
                    format!(
                        "samples have inputs {} and targets {tb:?} here, but inputs {} and targets {ta:?} in {}",
                        show(&b),
                        show(&a),
                        path.display()
                    ),
                ));
            }
            let train_set =
                TensorDataset::stored_inputs(train.inputs, train.targets, &name(&path, "train"))?;
            let test_set = TensorDataset::stored_inputs(
                test.inputs,
                test.targets,
                &test_path.display().to_string(),
            )?;
            // The classes are the training file's (or `classes=`): a test
            // label beyond them would otherwise widen the model silently.
            let largest = train_set.max_label();
            if classes_in_train {
                let classes = src.classes.unwrap_or(largest + 1);
                train_set.check_labels(classes)?;
                test_set.check_labels(classes)?;
            }
            (Arc::new(train_set), Arc::new(test_set), largest)
        }
        None => {
            let all = TensorDataset::stored_inputs(
                train.inputs,
                train.targets,
                &path.display().to_string(),
            )?;
            if let Some(classes) = src.classes.filter(|_| classes_in_train) {
                all.check_labels(classes)?;
            }
            let largest = all.max_label();
            let n = crate::data::Dataset::len(&all);
            let (test_ids, train_ids) = test_split(n, src.test_fraction, seed, "samples")
                .map_err(|e| data_error(&path, e.to_string()))?;
            let ids = |v: Vec<usize>| v.into_iter().map(|i| i as i64).collect::<Vec<_>>();
            let all: Arc<dyn crate::data::Dataset> = Arc::new(all);
            (
                Arc::new(Subset::new(all.clone(), ids(train_ids))?),
                Arc::new(Subset::new(all, ids(test_ids))?),
                largest,
            )
        }
    };
    let task = if classes_in_train {
        Task::Classify {
            classes: src.classes.unwrap_or(largest + 1),
        }
    } else {
        Task::Regress { outputs }
    };
    Ok(Splits {
        train: train_set,
        test: test_set,
        task,
        sampling: crate::data::source::Sampling::Passes,
    })
}

fn kind_name(classes: bool) -> &'static str {
    if classes {
        "integer class indices"
    } else {
        "float values"
    }
}
