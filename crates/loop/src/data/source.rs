//! Where a run's data comes from: `--data-dir DIR` (IDX files) or a
//! `--data` spec (`csv:PATH,target=COLUMN[,test_fraction=0.2]`,
//! `tensors:PATH[,test=PATH,inputs=KEY,targets=KEY,test_fraction=0.2,classes=N]`),
//! parsed into a typed value and printed back canonically.
use crate::data::tabular::CsvData;
pub use crate::data::tensors::TensorsSource;
use crate::{Dataset, Error, Result};
use kiln_tensor::spec::Spec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::{Path, PathBuf};

/// Tabular data for regression: a CSV file with a header row.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSource {
    /// The file.
    pub path: PathBuf,
    /// The target column.
    pub target: String,
    /// The share of rows held out for testing (seeded split).
    pub test_fraction: f64,
}

/// A `--data` spec.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// `csv:PATH,target=COLUMN[,test_fraction=0.2]`.
    Csv(CsvSource),
    /// `tensors:PATH[,test=PATH,inputs=KEY,targets=KEY,test_fraction=0.2,classes=N]`.
    Tensors(TensorsSource),
}

/// What the data asks the model to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Class indices (int64 targets) among `classes` classes.
    Classify {
        /// Number of classes.
        classes: i64,
    },
    /// Float targets of `outputs` values per sample.
    Regress {
        /// Values per sample.
        outputs: i64,
    },
}

const ACCEPTED: &str = "csv:PATH,target=COLUMN[,test_fraction=0.2] or tensors:PATH[,test=PATH,inputs=KEY,targets=KEY,test_fraction=0.2,classes=N]";

impl std::str::FromStr for DataSource {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::Usage(format!("--data {text}: {why}; accepted: {ACCEPTED}"));
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        if kind != "csv" && kind != "tensors" {
            return Err(bad(&format!("unknown data kind '{kind}'")));
        }
        let (path, options) = rest.split_once(',').unwrap_or((rest, ""));
        if path.is_empty() || path.contains('=') {
            return Err(bad("name the file first"));
        }
        let mut spec: Spec = format!("{kind}:{options}")
            .parse()
            .map_err(|e: kiln_tensor::Error| bad(&e.to_string()))?;
        let test_fraction = spec
            .f64("test_fraction")
            .map_err(|e| bad(&e.to_string()))?
            .unwrap_or(0.2);
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(bad(&format!(
                "test_fraction must be between 0 and 1 (exclusive), got {test_fraction}"
            )));
        }
        if kind == "csv" {
            let target = spec
                .raw("target")
                .ok_or_else(|| bad("name the target column with target=COLUMN"))?;
            spec.finish(&["target", "test_fraction"])
                .map_err(|e| bad(&e.to_string()))?;
            return Ok(DataSource::Csv(CsvSource {
                path: PathBuf::from(path),
                target,
                test_fraction,
            }));
        }
        let mut src = TensorsSource::new(path);
        src.test_fraction = test_fraction;
        src.test = spec.raw("test").map(PathBuf::from);
        if let Some(key) = spec.raw("inputs") {
            src.inputs = key;
        }
        if let Some(key) = spec.raw("targets") {
            src.targets = key;
        }
        src.classes = spec.i64("classes").map_err(|e| bad(&e.to_string()))?;
        if src.classes.is_some_and(|c| c < 1) {
            return Err(bad("classes must be at least 1"));
        }
        spec.finish(&["test", "inputs", "targets", "test_fraction", "classes"])
            .map_err(|e| bad(&e.to_string()))?;
        Ok(DataSource::Tensors(src))
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Csv(c) => write!(
                f,
                "csv:{},target={},test_fraction={}",
                c.path.display(),
                c.target,
                c.test_fraction
            ),
            DataSource::Tensors(t) => {
                write!(f, "tensors:{}", t.path.display())?;
                match &t.test {
                    Some(test) => write!(f, ",test={}", test.display())?,
                    None => write!(f, ",test_fraction={}", t.test_fraction)?,
                }
                write!(f, ",inputs={},targets={}", t.inputs, t.targets)?;
                if let Some(c) = t.classes {
                    write!(f, ",classes={c}")?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for DataSource {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl DataSource {
    /// The same source with its file made absolute (so a run resumes from
    /// any working directory).
    pub fn absolute(self) -> Self {
        match self {
            DataSource::Csv(mut c) => {
                c.path = absolute(&c.path);
                DataSource::Csv(c)
            }
            DataSource::Tensors(mut t) => {
                t.path = absolute(&t.path);
                t.test = t.test.as_deref().map(absolute);
                DataSource::Tensors(t)
            }
        }
    }
}

/// `path` made absolute against the working directory (without resolving
/// links); unchanged if it already is, or if there is no working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The (Fashion)MNIST directory the setup provides when `--data-dir` is not
/// given: `$KILN_DATA_DIR`, the build's default, or Debian's location.
pub fn default_data_dir() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("KILN_DATA_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(option_env!("KILN_DEFAULT_DATA_DIR").map(PathBuf::from))
        .chain([PathBuf::from("/usr/share/datasets/fashion-mnist")])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Error::Data {
                path: candidates.first().cloned().unwrap_or_default(),
                message: format!(
                    "no FashionMNIST found (tried {}); run `make setup` or pass --data-dir DIR",
                    tried.join(", ")
                ),
            }
        })
}

/// The train and test sets of a run, and what they ask the model to do.
#[derive(Debug)]
pub struct Splits {
    /// Training samples.
    pub train: Dataset,
    /// Test samples.
    pub test: Dataset,
    /// Classification or regression.
    pub task: Task,
}

/// The classes of (Fashion)MNIST.
pub const MNIST_CLASSES: i64 = 10;

/// Loads the data a run names: the IDX files of `data_dir` (or the setup's
/// FashionMNIST), or a `--data` source; `seed` splits tabular data.
pub fn load(source: Option<&DataSource>, data_dir: Option<&Path>, seed: u64) -> Result<Splits> {
    match source {
        None => {
            let dir = match data_dir {
                Some(dir) => dir.to_path_buf(),
                None => default_data_dir()?,
            };
            let (train, test) = Dataset::load_mnist_dir(&dir)?;
            train.check_labels(MNIST_CLASSES)?;
            test.check_labels(MNIST_CLASSES)?;
            Ok(Splits {
                train,
                test,
                task: Task::Classify {
                    classes: MNIST_CLASSES,
                },
            })
        }
        Some(DataSource::Csv(c)) => {
            let split = CsvData::load(&c.path, &c.target, c.test_fraction, seed)?;
            let name = |part: &str| format!("{} ({part})", c.path.display());
            Ok(Splits {
                train: Dataset::from_tensors(
                    split.train_inputs,
                    split.train_targets,
                    &name("train split"),
                )?,
                test: Dataset::from_tensors(
                    split.test_inputs,
                    split.test_targets,
                    &name("test split"),
                )?,
                task: Task::Regress { outputs: 1 },
            })
        }
        Some(DataSource::Tensors(t)) => crate::data::tensors::load(t, seed),
    }
}
