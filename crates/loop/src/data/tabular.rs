//! Numeric CSV tables for regression: features `[N, F]` and a target `[N, 1]`.
//!
//! [`CsvData::load`] reads a CSV file with a header row, takes one column as
//! the regression target and the others as features (all float32), and
//! splits the rows into a test and a train set with a seeded permutation.
//!
//! The split is PyTorch's
//! `torch.utils.data.random_split(ds, [n_test, n - n_test], generator=torch.Generator().manual_seed(seed))`:
//! the permutation is `torch.randperm(n)` on a fresh CPU generator seeded
//! with `seed` ([`Mt19937`]), the test set is its first
//! `n_test = round(n * test_fraction)` rows (Python's `round`: halves go to
//! the even neighbour, so 2.5 gives 2) and
//! the train set the rest, each in permutation order.
//!
//! The file is read by the `csv` crate (RFC 4180: fields separated by
//! commas, records by `\n` or `\r\n`; a field in double quotes may hold
//! commas, newlines and doubled quotes `""`). A UTF-8 byte order mark is
//! skipped and blank lines are ignored. Cells are trimmed of surrounding
//! spaces before they are read as numbers. Every error names the file and,
//! where it has one, the line and the column.
use crate::{Error, Result};
use kiln_tensor::rng::Mt19937;
use kiln_tensor::Tensor;
use std::path::{Path, PathBuf};

/// The train and test sets of a regression table, as float32 tensors.
#[derive(Debug)]
pub struct TabularSplit {
    /// Train features, float32 `[N_train, F]`.
    pub train_inputs: Tensor,
    /// Train targets, float32 `[N_train, 1]`.
    pub train_targets: Tensor,
    /// Test features, float32 `[N_test, F]`.
    pub test_inputs: Tensor,
    /// Test targets, float32 `[N_test, 1]`.
    pub test_targets: Tensor,
    /// The feature columns, in file order (the order of the `F` axis).
    pub feature_names: Vec<String>,
    /// The target column's name.
    pub target_name: String,
    /// The rows (0-based, among the data rows) in the train set, in order.
    pub train_rows: Vec<usize>,
    /// The rows (0-based, among the data rows) in the test set, in order.
    pub test_rows: Vec<usize>,
    /// The file the table came from, for messages.
    pub path: PathBuf,
}

impl TabularSplit {
    /// Number of feature columns (`F`).
    pub fn features(&self) -> usize {
        self.feature_names.len()
    }

    /// Makes the targets class indices `[N]` (int64) among `classes`:
    /// every target must be a whole number in `0..classes`; the first that
    /// is not is named by its data row (1-based, header not counted).
    pub fn class_targets(&mut self, classes: i64) -> Result<()> {
        if classes < 1 {
            return Err(Error::Usage(format!(
                "--data csv: classes must be at least 1, got {classes}"
            )));
        }
        let convert = |targets: &Tensor, rows: &[usize]| -> Result<Tensor> {
            let values = Vec::<f32>::try_from(&targets.f_flatten(0, -1)?)?;
            let mut labels = Vec::with_capacity(values.len());
            for (v, row) in values.iter().zip(rows) {
                if v.fract() != 0.0 || *v < 0.0 || f64::from(*v) >= classes as f64 {
                    return Err(Error::Data {
                        path: self.path.clone(),
                        message: format!(
                            "data row {}, column {:?}: {v} is not a class index in 0..={} (classes={classes})",
                            row + 1,
                            self.target_name,
                            classes - 1
                        ),
                    });
                }
                labels.push(*v as i64);
            }
            Ok(Tensor::f_from_slice(&labels)?)
        };
        self.train_targets = convert(&self.train_targets, &self.train_rows)?;
        self.test_targets = convert(&self.test_targets, &self.test_rows)?;
        Ok(())
    }

    /// Standardises the targets of both sets with the training targets'
    /// mean and standard deviation (`torch.std`, Bessel-corrected).
    pub fn standardize_targets(&mut self) -> Result<()> {
        let mean = self.train_targets.f_mean(kiln_tensor::Kind::Float)?;
        let std = self.train_targets.f_std(true)?;
        if std.f_double_value(&[])? <= 0.0 {
            return Err(Error::Data {
                path: self.path.clone(),
                message: format!(
                    "standardize_targets: the target column {:?} is constant in the training rows",
                    self.target_name
                ),
            });
        }
        self.train_targets = self.train_targets.f_sub(&mean)?.f_div(&std)?;
        self.test_targets = self.test_targets.f_sub(&mean)?.f_div(&std)?;
        Ok(())
    }
}

/// A CSV table whose cells are all numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    /// The file it was read from.
    pub path: PathBuf,
    /// Column names from the header row.
    pub columns: Vec<String>,
    /// The data rows; each has one value per column.
    pub rows: Vec<Vec<f32>>,
}

/// A record of text fields and the (1-based) line it starts on.
struct RawRecord {
    line: usize,
    fields: Vec<String>,
}

/// The header and data records of a CSV file, still as text.
struct RawCsv {
    path: PathBuf,
    header: Vec<String>,
    records: Vec<RawRecord>,
}

impl CsvData {
    /// Reads the CSV file at `path`, splits it into a test set of
    /// `round(n * test_fraction)` rows and a train set, and takes column
    /// `target` as the targets and the other columns as the features.
    ///
    /// `test_fraction` must be in `(0, 1)` and leave both sets non-empty;
    /// the table needs a header, at least two data rows, a column named
    /// `target` and at least one other column, and every cell must be a
    /// finite number.
    pub fn load(path: &Path, target: &str, test_fraction: f64, seed: u64) -> Result<TabularSplit> {
        check_fraction(test_fraction)?;
        let raw = RawCsv::read(path)?;
        raw.column_index(target)?;
        Self::from_raw(raw)?.split(target, test_fraction, seed)
    }

    /// Reads a CSV file with a header row and numeric cells.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_raw(RawCsv::read(path)?)
    }

    fn from_raw(raw: RawCsv) -> Result<Self> {
        let width = raw.header.len();
        let mut rows = Vec::with_capacity(raw.records.len());
        for record in &raw.records {
            if record.fields.len() != width {
                return Err(raw.error(format!(
                    "line {}: {} field{}, but the header has {width} columns",
                    record.line,
                    record.fields.len(),
                    if record.fields.len() == 1 { "" } else { "s" }
                )));
            }
            let mut row = Vec::with_capacity(width);
            for (index, (field, name)) in record.fields.iter().zip(&raw.header).enumerate() {
                let column = column_label(index, name);
                let text = field.trim();
                if text.is_empty() {
                    return Err(raw.error(format!("line {}, {column}: empty cell", record.line)));
                }
                let value: f32 = text.trim().parse().map_err(|_| {
                    raw.error(format!(
                        "line {}, {column}: {text:?} is not a number",
                        record.line
                    ))
                })?;
                if !value.is_finite() {
                    return Err(raw.error(format!(
                        "line {}, {column}: {text:?} is not a finite number",
                        record.line
                    )));
                }
                row.push(value);
            }
            rows.push(row);
        }
        Ok(Self {
            path: raw.path,
            columns: raw.header,
            rows,
        })
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Splits the rows as [`CsvData::load`] does.
    pub fn split(&self, target: &str, test_fraction: f64, seed: u64) -> Result<TabularSplit> {
        check_fraction(test_fraction)?;
        let target_index = find_column(&self.columns, target).map_err(|m| self.error(m))?;
        if self.columns.len() < 2 {
            return Err(self.error(format!(
                "the only column is the target {target:?}; need at least one feature column"
            )));
        }
        let n = self.rows.len();
        if n < 2 {
            return Err(self.error(format!(
                "{n} data row{}; need at least 2 to split into a train and a test set",
                if n == 1 { "" } else { "s" }
            )));
        }
        let (test_rows, train_rows) =
            test_split(n, test_fraction, seed, "rows").map_err(|e| match e {
                Error::InvalidArgument(m) => self.error(m),
                other => other,
            })?;
        let (test_rows, train_rows) = (test_rows.as_slice(), train_rows.as_slice());
        let feature_names: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != target_index)
            .map(|(_, name)| name.clone())
            .collect();
        let (train_inputs, train_targets) = self.tensors(train_rows, target_index)?;
        let (test_inputs, test_targets) = self.tensors(test_rows, target_index)?;
        Ok(TabularSplit {
            train_inputs,
            train_targets,
            test_inputs,
            test_targets,
            feature_names,
            target_name: target.to_string(),
            train_rows: train_rows.to_vec(),
            test_rows: test_rows.to_vec(),
            path: self.path.clone(),
        })
    }

    /// Features `[rows, F]` and targets `[rows, 1]` of the given rows.
    fn tensors(&self, rows: &[usize], target_index: usize) -> Result<(Tensor, Tensor)> {
        let features = self.columns.len() - 1;
        let mut inputs = Vec::with_capacity(rows.len() * features);
        let mut targets = Vec::with_capacity(rows.len());
        for &r in rows {
            let row = self
                .rows
                .get(r)
                .ok_or_else(|| self.error(format!("row {r} out of range")))?;
            if row.len() != self.columns.len() {
                return Err(self.error(format!(
                    "row {r} has {} values for {} columns",
                    row.len(),
                    self.columns.len()
                )));
            }
            for (i, &v) in row.iter().enumerate() {
                if i == target_index {
                    targets.push(v);
                } else {
                    inputs.push(v);
                }
            }
        }
        let n = rows.len() as i64;
        let inputs = Tensor::f_from_slice(&inputs)?.f_view([n, features as i64])?;
        let targets = Tensor::f_from_slice(&targets)?.f_view([n, 1])?;
        Ok((inputs, targets))
    }

    fn error(&self, message: String) -> Error {
        Error::Data {
            path: self.path.clone(),
            message,
        }
    }
}

/// The seeded test/train split of `n` samples that `--data csv:` and
/// `--data tensors:` use: `torch.randperm(n)` on a fresh generator seeded
/// with `seed`, the first `round(n * test_fraction)` (ties to even, as
/// Python's `round`) for testing, the rest for training, each in
/// permutation order. `noun` names the samples in errors (`rows`).
pub fn test_split(
    n: usize,
    test_fraction: f64,
    seed: u64,
    noun: &str,
) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(test_fraction)?;
    let n_test = (n as f64 * test_fraction).round_ties_even() as usize;
    if n_test == 0 || n_test >= n {
        let empty = if n_test == 0 { "test" } else { "train" };
        return Err(Error::InvalidArgument(format!(
            "test_fraction {test_fraction} of {n} {noun} leaves the {empty} set empty"
        )));
    }
    let perm = Mt19937::new(seed).randperm(n)?;
    let mut order = Vec::with_capacity(n);
    for p in perm {
        let row = usize::try_from(p)
            .ok()
            .filter(|&r| r < n)
            .ok_or_else(|| Error::InvalidArgument(format!("randperm gave index {p}")))?;
        order.push(row);
    }
    let train = order.split_off(n_test);
    Ok((order, train))
}

fn check_fraction(test_fraction: f64) -> Result<()> {
    if test_fraction > 0.0 && test_fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "test_fraction must be between 0 and 1 (exclusive), got {test_fraction}"
        )))
    }
}

fn column_label(index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("column {}", index + 1)
    } else {
        format!("column {name:?}")
    }
}

fn find_column(columns: &[String], name: &str) -> std::result::Result<usize, String> {
    columns.iter().position(|c| c == name).ok_or_else(|| {
        let list: Vec<String> = columns.iter().map(|c| format!("{c:?}")).collect();
        format!("no column {name:?}; the columns are {}", list.join(", "))
    })
}

impl RawCsv {
    fn read(path: &Path) -> Result<Self> {
        let error = |message: String| Error::Data {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| {
            error(if e.kind() == std::io::ErrorKind::NotFound {
                "file does not exist".to_string()
            } else {
                format!("cannot read: {e}")
            })
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            error(format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut records = parse(text).map_err(error)?.into_iter();
        let Some(header) = records.next() else {
            return Err(error("file is empty".into()));
        };
        if header
            .fields
            .iter()
            .all(|f| !f.trim().is_empty() && f.trim().parse::<f64>().is_ok())
        {
            return Err(error(format!(
                "line {}: no header row: the first line must name the columns, but it holds numbers",
                header.line
            )));
        }
        let header: Vec<String> = header.fields.iter().map(|f| f.trim().to_string()).collect();
        for (i, name) in header.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            if let Some(j) = header.iter().skip(i + 1).position(|other| other == name) {
                return Err(error(format!(
                    "line 1: column {name:?} appears twice in the header (columns {} and {})",
                    i + 1,
                    i + j + 2
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            records: records.collect(),
        })
    }

    fn column_index(&self, name: &str) -> Result<usize> {
        find_column(&self.header, name).map_err(|m| self.error(m))
    }

    fn error(&self, message: String) -> Error {
        Error::Data {
            path: self.path.clone(),
            message,
        }
    }
}

/// Splits `text` into records with the `csv` crate (records may have any
/// number of fields; the caller checks them against the header), skipping
/// blank lines and lines of spaces.
fn parse(text: &str) -> std::result::Result<Vec<RawRecord>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| match e.position() {
            Some(pos) => format!("line {}: {}", pos.line(), e.kind_text()),
            None => e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let fields: Vec<String> = record.iter().map(str::to_string).collect();
        let blank = matches!(fields.as_slice(), [only] if only.trim().is_empty());
        if !blank {
            records.push(RawRecord { line, fields });
        }
    }
    Ok(records)
}

/// What a `csv` error says, without its position (given separately).
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for csv::Error {
    fn kind_text(&self) -> String {
        match self.kind() {
            csv::ErrorKind::Utf8 { err, .. } => format!("not UTF-8 text ({err})"),
            _ => self.to_string(),
        }
    }
}
