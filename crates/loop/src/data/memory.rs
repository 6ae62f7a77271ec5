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

/// One model input of a [`TensorDataset`]: its field name, its rows and
/// how they are converted.
#[derive(Debug)]
struct Input {
    name: String,
    rows: Rows,
    transform: InputTransform,
}

impl Input {
    fn new(name: &str, rows: Rows, transform: InputTransform) -> Self {
        Self {
            name: name.to_string(),
            rows,
            transform,
        }
    }
}

/// Inputs `[N, ...]` in their stored dtype (in memory or in their file) and
/// targets `[N, ...]` (int64 class indices, or float regression values) in
/// memory. Samples are the fields `inputs` and `targets`, or, for several
/// inputs ([`TensorDataset::stored_inputs`]), each input under its own name.
#[derive(Debug)]
pub struct TensorDataset {
    inputs: Vec<Input>,
    targets: SharedTensor,
    source: String,
    max_label: i64,
}

impl TensorDataset {
    /// A dataset of `inputs` `[N, ...]` and `targets` `[N, ...]` (class
    /// indices or regression values); `source` names it in errors. Inputs
    /// keep their dtype and convert as [`InputTransform::for_kind`] says.
    pub fn new(inputs: Tensor, targets: Tensor, source: &str) -> Result<Self> {
        let transform = InputTransform::for_kind(inputs.kind());
        let rows = Rows::Memory(SharedTensor::new(inputs));
        Self::with_inputs(vec![Input::new(INPUTS, rows, transform)], targets, source)
    }

    /// A dataset whose inputs stay in their file and are read
    /// per batch (resident memory does not grow with the file); the targets
    /// are in memory. Batches equal [`TensorDataset::new`]'s on the loaded
    /// inputs, bit for bit.
    pub fn stored(inputs: StoredArray, targets: Tensor, source: &str) -> Result<Self> {
        Self::stored_inputs(vec![(INPUTS.to_string(), inputs)], targets, source)
    }

    /// [`TensorDataset::stored`] with several model inputs (`ids`, `mask`),
    /// each a field of its own name, given to the model in this order
    /// (`forward(ids, mask)`).
    pub fn stored_inputs(
        inputs: Vec<(String, StoredArray)>,
        targets: Tensor,
        source: &str,
    ) -> Result<Self> {
        let inputs = inputs
            .into_iter()
            .map(|(name, array)| {
                let transform = InputTransform::for_kind(array.kind());
                Input::new(&name, Rows::Stored(array), transform)
            })
            .collect();
        Self::with_inputs(inputs, targets, source)
    }

    fn with_inputs(inputs: Vec<Input>, targets: Tensor, source: &str) -> Result<Self> {
        let n_tg = targets.size().first().copied();
        if inputs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{source}: a dataset needs at least one input"
            )));
        }
        for input in &inputs {
            if input.rows.shape().is_empty() || Some(input.rows.len() as i64) != n_tg {
                return Err(Error::InvalidArgument(format!(
                    "{source}: inputs {:?} and targets {:?} must have the same first dimension",
                    input.rows.shape(),
                    targets.size()
                )));
            }
            input.rows.check_finite(source)?;
        }
        check_finite(&targets, "target", source, 0)?;
        let max_label = max_label(&targets)?;
        Ok(Self {
            inputs,
            targets: SharedTensor::new(targets),
            source: source.to_string(),
            max_label,
        })
    }

    /// The same dataset with its inputs converted by `transform` instead.
    pub fn with_transform(mut self, transform: InputTransform) -> Self {
        for input in &mut self.inputs {
            input.transform = transform;
        }
        self
    }

    /// The shape of the (first) stored inputs, `[N, ...]`.
    pub fn input_shape(&self) -> Vec<i64> {
        self.first().rows.shape()
    }

    fn first(&self) -> &Input {
        // `with_inputs` refuses a dataset without inputs.
        &self.inputs[0]
    }

    /// The targets `[N, ...]`.
    pub fn targets(&self) -> &Tensor {
        self.targets.get()
    }

    /// How the (first) stored inputs become model inputs.
    pub fn transform(&self) -> InputTransform {
        self.first().transform
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
        let mut sample = Sample::new();
        for input in &self.inputs {
            sample.insert(
                &input.name,
                input.transform.apply(&input.rows.gather(indices)?)?,
            );
        }
        Ok(sample.with(TARGETS, narrow_or_select(&self.targets, indices)?))
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
        self.first().rows.len()
    }

    fn get(&self, index: usize, _rng: &mut Generator) -> Result<Sample> {
        if index >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "index {index} is out of range for {} samples",
                self.len()
            )));
        }
        let i = index as i64;
        let mut sample = Sample::new();
        for input in &self.inputs {
            let row = match &input.rows {
                Rows::Memory(t) => t.f_get(i)?,
                Rows::Stored(a) => a.rows(&[i])?.f_squeeze_dim(0)?,
            };
            sample.insert(&input.name, input.transform.apply(&row)?);
        }
        Ok(sample.with(TARGETS, self.targets.f_get(i)?))
    }

    fn get_batch(&self, indices: &[i64], _rng: &mut Generator) -> Result<Option<Sample>> {
        self.gather(indices).map(Some)
    }

    fn describe(&self, index: usize) -> String {
        format!("sample {index} of {}", self.source)
    }

    /// The inputs in the order the model takes them, then `targets`.
    fn fields(&self) -> crate::data::batch::Fields {
        crate::data::batch::Fields {
            inputs: self.inputs.iter().map(|i| i.name.clone()).collect(),
            target: Some(TARGETS.into()),
        }
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
