//! In-memory labelled datasets: MNIST-style IDX files, CSV tables,
//! safetensors files, or any tensors.
//!
//! A dataset keeps its inputs in their stored dtype (IDX images stay uint8,
//! a quarter of float32's memory) and converts them per batch
//! ([`Dataset::model_inputs`]), as torchvision's `ToTensor` converts each
//! sample: the same operations on the same values, so the same bits.
use crate::data::idx;
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::{Path, PathBuf};

/// How stored inputs become what the model sees, per batch.
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

    /// Applies the transform to a batch (or any slice) of stored inputs.
    pub fn apply(self, stored: &Tensor) -> Result<Tensor> {
        Ok(match self {
            InputTransform::Identity => stored.shallow_clone(),
            InputTransform::ToTensor => stored.f_to_kind(Kind::Float)?.f_div_scalar(255)?,
            InputTransform::Float => stored.f_to_kind(Kind::Float)?,
        })
    }
}

/// Inputs `[N, ...]` in their stored dtype and targets `[N, ...]` (int64
/// class indices, or float regression values).
#[derive(Debug)]
pub struct Dataset {
    /// `[N, ...]` as stored (IDX images: uint8 `[N, 1, H, W]`); the model
    /// sees [`Dataset::model_inputs`] of them.
    pub inputs: Tensor,
    /// `[N]` int64 class indices, or float regression values `[N, K]`.
    pub targets: Tensor,
    /// Where the labels came from, for error messages.
    pub labels_path: PathBuf,
    /// How stored inputs become model inputs.
    pub transform: InputTransform,
    max_label: i64,
}

/// The file stems of the four (Fashion)MNIST IDX files.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

impl Dataset {
    /// Loads an images file (rank 3: `[N, H, W]`) and a labels file (rank 1: `[N]`).
    pub fn from_idx(images_path: &Path, labels_path: &Path) -> Result<Self> {
        let images = idx::read(images_path)?;
        let labels = idx::read(labels_path)?;
        let bad = |path: &Path, message: String| Error::Data {
            path: path.to_path_buf(),
            message,
        };
        let &[n, h, w] = images.dims.as_slice() else {
            return Err(bad(
                images_path,
                format!(
                    "images must have 3 dimensions [N, H, W], found {:?}",
                    images.dims
                ),
            ));
        };
        let &[n_labels] = labels.dims.as_slice() else {
            return Err(bad(
                labels_path,
                format!("labels must have 1 dimension [N], found {:?}", labels.dims),
            ));
        };
        if n_labels != n {
            return Err(bad(
                labels_path,
                format!(
                    "{n_labels} labels for {n} images in {}",
                    images_path.display()
                ),
            ));
        }
        let shape = [n as i64, 1, h as i64, w as i64];
        // uint8, as stored; `ToTensor`'s scaling happens per batch.
        let inputs = Tensor::f_from_slice(&images.data)?.f_view(shape)?;
        drop(images);
        let max_label = labels.data.iter().copied().max().map_or(-1, i64::from);
        let targets = Tensor::f_from_slice(&labels.data)?.f_to_kind(Kind::Int64)?;
        Ok(Self {
            inputs,
            targets,
            labels_path: labels_path.to_path_buf(),
            transform: InputTransform::ToTensor,
            max_label,
        })
    }

    /// A dataset of in-memory tensors: `inputs` `[N, ...]` and `targets` `[N, ...]`
    /// (class indices or regression values); `source` names it in errors.
    /// Inputs keep their dtype and convert per batch as
    /// [`InputTransform::for_kind`] says (uint8 as `ToTensor` does).
    pub fn from_tensors(inputs: Tensor, targets: Tensor, source: &str) -> Result<Self> {
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
        let max_label = if targets.kind() == Kind::Int64 && targets.numel() > 0 {
            targets.f_max()?.f_int64_value(&[])?
        } else {
            -1
        };
        Ok(Self {
            transform: InputTransform::for_kind(inputs.kind()),
            inputs,
            targets,
            labels_path: PathBuf::from(source),
            max_label,
        })
    }

    /// What the model sees for `stored`, a slice of [`Dataset::inputs`]:
    /// the dataset's [`InputTransform`] applied.
    pub fn model_inputs(&self, stored: &Tensor) -> Result<Tensor> {
        self.transform.apply(stored)
    }

    /// The shape of one sample's inputs as the model sees them (`[1, 28, 28]`).
    pub fn sample_shape(&self) -> Vec<i64> {
        self.inputs.size().into_iter().skip(1).collect()
    }

    /// Loads the train and test sets from a directory holding the four IDX
    /// files (gzipped or not), e.g. `/usr/share/datasets/fashion-mnist`.
    pub fn load_mnist_dir(dir: &Path) -> Result<(Self, Self)> {
        if !dir.is_dir() {
            return Err(Error::Data {
                path: dir.to_path_buf(),
                message: "data directory does not exist; pass --data-dir DIR holding the four (Fashion)MNIST IDX files".into(),
            });
        }
        let [train_x, train_y, test_x, test_y] = IDX_FILES;
        let train = Self::from_idx(&idx::find(dir, train_x)?, &idx::find(dir, train_y)?)?;
        let test = Self::from_idx(&idx::find(dir, test_x)?, &idx::find(dir, test_y)?)?;
        Ok((train, test))
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.size().first().map_or(0, |&n| n as usize)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per sample (`H * W` for images).
    pub fn features(&self) -> i64 {
        self.inputs.size().iter().skip(1).product()
    }

    /// The first `n` samples (all of them if `n` is larger), like
    /// `torch.utils.data.Subset(ds, range(n))`.
    pub fn take(&self, n: usize) -> Result<Self> {
        let n = n.min(self.len()) as i64;
        let targets = self.targets.f_narrow(0, 0, n)?;
        let max_label = if n == 0 {
            -1
        } else {
            targets.f_max()?.f_int64_value(&[])?
        };
        Ok(Self {
            inputs: self.inputs.f_narrow(0, 0, n)?,
            targets,
            labels_path: self.labels_path.clone(),
            transform: self.transform,
            max_label,
        })
    }

    /// `torch.utils.data.random_split(self, [1 - fraction, fraction],
    /// generator=torch.Generator().manual_seed(seed))`: a permutation from a
    /// private generator (the global one is not touched), the first part for
    /// training, the rest (`floor(n * fraction)` samples, one more when the
    /// floors leave a remainder for both) for validation. Both keep PyTorch's
    /// order of the permutation.
    pub fn random_split(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let n = self.len();
        // PyTorch: floor each share, then hand out the remainder round-robin.
        let mut lengths = [
            ((1.0 - fraction) * n as f64).floor() as usize,
            (fraction * n as f64).floor() as usize,
        ];
        for i in 0..n - lengths[0] - lengths[1] {
            lengths[i % 2] += 1;
        }
        if lengths.contains(&0) {
            return Err(Error::Usage(format!(
                "--val-fraction {fraction} of {n} training samples leaves an empty split"
            )));
        }
        let order = kiln_tensor::rng::Mt19937::new(seed).randperm(n)?;
        let (train_ids, val_ids) = order.split_at(lengths[0]);
        Ok((self.select(train_ids)?, self.select(val_ids)?))
    }

    /// The samples at `indices`, in that order (`Subset(self, indices)`).
    pub fn select(&self, indices: &[i64]) -> Result<Self> {
        let index = Tensor::f_from_slice(indices)?.f_to(self.inputs.device())?;
        let targets = self.targets.f_index_select(0, &index)?;
        let max_label = if targets.kind() == Kind::Int64 && targets.numel() > 0 {
            targets.f_max()?.f_int64_value(&[])?
        } else {
            -1
        };
        Ok(Self {
            inputs: self.inputs.f_index_select(0, &index)?,
            targets,
            labels_path: self.labels_path.clone(),
            transform: self.transform,
            max_label,
        })
    }

    /// The largest class index (-1 without class-index targets).
    pub fn max_label(&self) -> i64 {
        self.max_label
    }

    /// Errors unless every label is a class index below `classes`.
    pub fn check_labels(&self, classes: i64) -> Result<()> {
        if self.max_label < classes {
            return Ok(());
        }
        let position = Vec::<i64>::try_from(&self.targets)
            .ok()
            .and_then(|v| v.iter().position(|&l| l >= classes))
            .unwrap_or(0);
        Err(Error::Data {
            path: self.labels_path.clone(),
            message: format!(
                "label {} of sample {position} is out of range: the model has {classes} classes (0..={})",
                self.max_label.max(classes),
                classes - 1
            ),
        })
    }

    /// Moves the whole dataset to `device` once, so batches need no copies.
    pub fn to_device(&self, device: Device) -> Result<Self> {
        Ok(Self {
            inputs: self.inputs.f_to(device)?,
            targets: self.targets.f_to(device)?,
            labels_path: self.labels_path.clone(),
            transform: self.transform,
            max_label: self.max_label,
        })
    }
}
