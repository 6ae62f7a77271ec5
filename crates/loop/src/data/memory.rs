//! [`TensorDataset`]: inputs and targets held as two tensors in memory
//! (MNIST-style IDX files, CSV tables, small safetensors files, or any
//! tensors), as `torch.utils.data.TensorDataset`.
//!
//! Inputs keep their stored dtype (IDX images stay uint8, a quarter of
//! float32's memory) and are converted when read ([`InputTransform`]), as
//! torchvision's `ToTensor` converts each sample: the same operations on the
//! same values, so the same bits whether one sample or a batch is converted.
use crate::data::batch::{INPUTS, TARGETS};
use crate::data::{Dataset, Sample};
use crate::{Error, Result};
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

/// Inputs `[N, ...]` in their stored dtype and targets `[N, ...]` (int64
/// class indices, or float regression values), in memory. Samples are the
/// fields `inputs` and `targets`.
#[derive(Debug)]
pub struct TensorDataset {
    inputs: SharedTensor,
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
        let (n_in, n_tg) = (
            inputs.size().first().copied(),
            targets.size().first().copied(),
        );
        if n_in.is_none() || n_in != n_tg {
            return Err(Error::InvalidArgument(format!(
                "{source}: inputs {:?} and targets {:?} must have the same first dimension",
                inputs.size(),
                targets.size()
            )));
        }
        let max_label = max_label(&targets)?;
        Ok(Self {
            transform: InputTransform::for_kind(inputs.kind()),
            inputs: SharedTensor::new(inputs),
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

    /// The stored inputs `[N, ...]`.
    pub fn inputs(&self) -> &Tensor {
        self.inputs.get()
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
        let contiguous = indices.windows(2).all(|w| w[1] == w[0] + 1);
        let (inputs, targets) = match indices.first() {
            Some(&start) if contiguous => (
                self.inputs.f_narrow(0, start, indices.len() as i64)?,
                self.targets.f_narrow(0, start, indices.len() as i64)?,
            ),
            _ => {
                let index = Tensor::f_from_slice(indices)?;
                (
                    self.inputs.f_index_select(0, &index)?,
                    self.targets.f_index_select(0, &index)?,
                )
            }
        };
        Ok(Sample::new()
            .with(INPUTS, self.transform.apply(&inputs)?)
            .with(TARGETS, targets))
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
        self.targets.size().first().map_or(0, |&n| n as usize)
    }

    fn get(&self, index: usize, _rng: &mut Generator) -> Result<Sample> {
        if index >= self.len() {
            return Err(Error::InvalidArgument(format!(
                "index {index} is out of range for {} samples",
                self.len()
            )));
        }
        let i = index as i64;
        Ok(Sample::new()
            .with(INPUTS, self.transform.apply(&self.inputs.f_get(i)?)?)
            .with(TARGETS, self.targets.f_get(i)?))
    }

    fn get_batch(&self, indices: &[i64], _rng: &mut Generator) -> Result<Option<Sample>> {
        self.gather(indices).map(Some)
    }

    fn describe(&self, index: usize) -> String {
        format!("sample {index} of {}", self.source)
    }
}
