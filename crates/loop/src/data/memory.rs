//! [`TensorDataset`]: inputs and targets as two tensors, as
//! `torch.utils.data.TensorDataset`: held in memory (MNIST-style IDX files,
//! CSV tables, any tensors) or, for the inputs of a safetensors file,
//! read from their file per batch ([`TensorDataset::stored`]), so a file
//! larger than memory trains with flat resident memory.
//!
//! Inputs keep their stored dtype (IDX images stay uint8, a quarter of
//! float32's memory) and are converted when read ([`InputTransform`]), as
//! torchvision's `ToTensor` converts each sample: the same operations on the
//! same values, so the same bits whether one sample or a batch is converted.
use crate::data::batch::{INPUTS, TARGETS};
use crate::data::{Dataset, Sample};
use crate::{Error, Result};
use kiln_tensor::datafile::StoredArray;
use kiln_tensor::rng::Generator;
use kiln_tensor::shared::SharedTensor;
use kiln_tensor::{Kind, Tensor};

/// How stored inputs become what the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputTransform {
    /// As stored (float32, or integer inputs such as token ids).
    Identity,
    /// torchvision's `ToTensor` on uint8 images: `x.to(float32).div(255)`.
    ToTensor,
    /// `x.float()`: float64, float16 and bfloat16 inputs as float32.
    Float,
}

impl InputTransform {
    /// The transform for inputs stored as `kind`: `ToTensor` for uint8,
    /// `Float` for other floating dtypes than float32, else `Identity`.
    pub fn for_kind(kind: Kind) -> Self {
        match kind {
            Kind::Uint8 => InputTransform::ToTensor,
            Kind::Double | Kind::Half | Kind::BFloat16 => InputTransform::Float,
            _ => InputTransform::Identity,
        }
    }

    /// Applies the transform to a sample or a batch of stored inputs.
    pub fn apply(self, stored: &Tensor) -> Result<Tensor> {
        Ok(match self {
            InputTransform::Identity => stored.shallow_clone(),
            InputTransform::ToTensor => stored.f_to_kind(Kind::Float)?.f_div_scalar(255)?,
            InputTransform::Float => stored.f_to_kind(Kind::Float)?,
        })
    }
}

/// Where the inputs are read from.
#[derive(Debug)]
enum Rows {
    /// A tensor in memory.
    Memory(SharedTensor),
    /// A tensor of a file, read per batch.
    Stored(StoredArray),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Memory(t) => t.size().first().map_or(0, |&n| n as usize),
            Rows::Stored(a) => a.len(),
        }
    }

    fn shape(&self) -> Vec<i64> {
        match self {
            Rows::Memory(t) => t.size(),
            Rows::Stored(a) => a.shape().to_vec(),
        }
    }

    /// [`check_finite`] over every row; rows left in their file are read
    /// in pieces of about 64 MiB (integer inputs are not read).
    fn check_finite(&self, source: &str) -> Result<()> {
        match self {
            Rows::Memory(t) => check_finite(t, "input", source, 0),
            Rows::Stored(a) if is_floating(a.kind()) => {
                let row_bytes = a.shape().iter().skip(1).product::<i64>().max(1) as usize
                    * a.kind().elt_size_in_bytes();
                let chunk = ((64 << 20) / row_bytes).max(1);
                for start in (0..a.len()).step_by(chunk) {
                    let rows: Vec<i64> = (start..(start + chunk).min(a.len()))
                        .map(|i| i as i64)
                        .collect();
                    check_finite(&a.rows(&rows)?, "input", source, start as i64)?;
                }
                Ok(())
            }
            Rows::Stored(_) => Ok(()),
        }
    }

    /// The rows at `indices`: a view of consecutive rows in memory, else a
    /// gathered copy.
    fn gather(&self, indices: &[i64]) -> Result<Tensor> {
        match self {
            Rows::Memory(t) => narrow_or_select(t, indices),
            Rows::Stored(a) => Ok(a.rows(indices)?),
        }
    }
}

/// `t.index_select(0, indices)`, as a narrowed view when the indices are
/// consecutive (the unshuffled order, evaluation).
fn narrow_or_select(t: &Tensor, indices: &[i64]) -> Result<Tensor> {
    let contiguous = indices.windows(2).all(|w| w[1] == w[0] + 1);
    Ok(match indices.first() {
        Some(&start) if contiguous => t.f_narrow(0, start, indices.len() as i64)?,
        _ => t.f_index_select(0, &Tensor::f_from_slice(indices)?)?,
    })
}

/// Inputs `[N, ...]` in their stored dtype (in memory or in their file) and
/// targets `[N, ...]` (int64 class indices, or float regression values) in
/// memory. Samples are the fields `inputs` and `targets`.
#[derive(Debug)]
pub struct TensorDataset {
    inputs: Rows,
    targets: SharedTensor,
    source: String,
    transform: InputTransform,
    max_label: i64,
}

impl TensorDataset {
    /// A dataset of `inputs` `[N, ...]` and `targets` `[N, ...]` (class
    /// indices or regression values); `source` names it in errors. Inputs
    /// keep their dtype and convert as [`InputTransform::for_kind`] says.
    pub fn new(inputs: Tensor, targets: Tensor, source: &str) -> Result<Self> {
        let transform = InputTransform::for_kind(inputs.kind());
        Self::with_rows(
            Rows::Memory(SharedTensor::new(inputs)),
            transform,
            targets,
            source,
        )
    }

    /// A dataset whose inputs stay in their file and are read
    /// per batch (resident memory does not grow with the file); the targets
    /// are in memory. Batches equal [`TensorDataset::new`]'s on the loaded
    /// inputs, bit for bit.
    pub fn stored(inputs: StoredArray, targets: Tensor, source: &str) -> Result<Self> {
        let transform = InputTransform::for_kind(inputs.kind());
        Self::with_rows(Rows::Stored(inputs), transform, targets, source)
    }

    fn with_rows(
        inputs: Rows,
        transform: InputTransform,
        targets: Tensor,
        source: &str,
    ) -> Result<Self> {
        let n_tg = targets.size().first().copied();
        if inputs.shape().is_empty() || Some(inputs.len() as i64) != n_tg {
            return Err(Error::InvalidArgument(format!(
                "{source}: inputs {:?} and targets {:?} must have the same first dimension",
                inputs.shape(),
                targets.size()
            )));
        }
        inputs.check_finite(source)?;
        check_finite(&targets, "target", source, 0)?;
        let max_label = max_label(&targets)?;
        Ok(Self {
            transform,
            inputs,
            targets: SharedTensor::new(targets),
            source: source.to_string(),
            max_label,
        })
    }

    /// The same dataset with its inputs converted by `transform` instead.
    pub fn with_transform(mut self, transform: InputTransform) -> Self {
        self.transform = transform;
        self
    }

    /// The shape of the stored inputs, `[N, ...]`.
    pub fn input_shape(&self) -> Vec<i64> {
        self.inputs.shape()
    }

    /// The targets `[N, ...]`.
    pub fn targets(&self) -> &Tensor {
        self.targets.get()
    }

    /// How stored inputs become model inputs.
    pub fn transform(&self) -> InputTransform {
        self.transform
    }

    /// What the dataset is read from, for error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The largest class index (-1 without class-index targets).
    pub fn max_label(&self) -> i64 {
        self.max_label
    }

    /// Errors unless every label is a class index below `classes`, naming
    /// the first sample that is not.
    pub fn check_labels(&self, classes: i64) -> Result<()> {
        if self.max_label < classes {
            return Ok(());
        }
        // Sequence targets ([N, T]) are searched flat; the sample is the row.
        let flat = self.targets.f_reshape([-1])?;
        let position = flat
            .f_ge(classes)?
            .f_to_kind(Kind::Uint8)?
            .f_argmax(None, false)?
            .f_int64_value(&[])?;
        let per_sample = (flat.numel() / self.len().max(1)).max(1) as i64;
        Err(Error::Data {
            path: self.source.clone().into(),
            message: format!(
                "label {} of sample {} is out of range: the model has {classes} classes (0..={})",
                flat.f_int64_value(&[position])?,
                position / per_sample,
                classes - 1
            ),
        })
    }

    /// The samples at `indices`, gathered into one tensor per field.
    fn gather(&self, indices: &[i64]) -> Result<Sample> {
        Ok(Sample::new()
            .with(INPUTS, self.transform.apply(&self.inputs.gather(indices)?)?)
            .with(TARGETS, narrow_or_select(&self.targets, indices)?))
    }
}

fn max_label(targets: &Tensor) -> Result<i64> {
    Ok(if targets.kind() == Kind::Int64 && targets.numel() > 0 {
        targets.f_max()?.f_int64_value(&[])?
    } else {
        -1
    })
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.inputs.len()
    }

    fn get(&self, index: usize, _rng: &mut Generator) -> Result<Sample> {
        if index >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "index {index} is out of range for {} samples",
                self.len()
            )));
        }
        let i = index as i64;
        let input = match &self.inputs {
            Rows::Memory(t) => t.f_get(i)?,
            Rows::Stored(a) => a.rows(&[i])?.f_squeeze_dim(0)?,
        };
        Ok(Sample::new()
            .with(INPUTS, self.transform.apply(&input)?)
            .with(TARGETS, self.targets.f_get(i)?))
    }

    fn get_batch(&self, indices: &[i64], _rng: &mut Generator) -> Result<Option<Sample>> {
        self.gather(indices).map(Some)
    }

    fn describe(&self, index: usize) -> String {
        format!("sample {index} of {}", self.source)
    }
}

fn is_floating(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

/// Errors if a floating-point `tensor` `[N, ...]` holds NaN or an
/// infinity, naming the first sample that does (a run would otherwise
/// stop later with a NaN loss that points at no sample).
/// `first` is the index of the tensor's first sample in the dataset.
fn check_finite(tensor: &Tensor, what: &str, source: &str, first: i64) -> Result<()> {
    let n = tensor.size().first().copied().unwrap_or(0);
    if !is_floating(tensor.kind()) || n == 0 {
        return Ok(());
    }
    let bad = tensor
        .f_isfinite()?
        .f_logical_not()?
        .f_reshape([n, -1])?
        .f_any_dim(1, false)?;
    if bad.f_any()?.f_int64_value(&[])? == 0 {
        return Ok(());
    }
    let sample = bad
        .f_to_kind(Kind::Uint8)?
        .f_argmax(None, false)?
        .f_int64_value(&[])?;
    let values = tensor
        .f_get(sample)?
        .f_flatten(0, -1)?
        .f_to_kind(Kind::Double)?;
    let values = Vec::<f64>::try_from(&values)?;
    let value = values
        .iter()
        .find(|v| !v.is_finite())
        .copied()
        .unwrap_or(f64::NAN);
    Err(Error::Data {
        path: source.into(),
        message: format!(
            "sample {} has a non-finite {what} ({value}); clean the data or drop the sample",
            first + sample
        ),
    })
}
