//! In-memory labelled image datasets (MNIST-style IDX files).
use crate::data::idx;
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use std::path::{Path, PathBuf};

/// Images as float32 `[N, 1, H, W]` scaled to [0, 1] (torchvision's
/// `ToTensor`: `uint8.to(float32).div(255)`) and int64 labels `[N]`.
#[derive(Debug)]
pub struct Dataset {
    /// `[N, 1, H, W]` float32 in [0, 1].
    pub inputs: Tensor,
    /// `[N]` int64 class indices.
    pub targets: Tensor,
    /// Where the labels came from, for error messages.
    pub labels_path: PathBuf,
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
        let inputs = Tensor::f_from_slice(&images.data)?
            .f_view(shape)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(255)?;
        let max_label = labels.data.iter().copied().max().map_or(-1, i64::from);
        let targets = Tensor::f_from_slice(&labels.data)?.f_to_kind(Kind::Int64)?;
        Ok(Self {
            inputs,
            targets,
            labels_path: labels_path.to_path_buf(),
            max_label,
        })
    }

    /// A dataset of in-memory tensors: `inputs` `[N, ...]` and `targets` `[N, ...]`
    /// (class indices or regression values); `source` names it in errors.
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
            inputs,
            targets,
            labels_path: PathBuf::from(source),
            max_label,
        })
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
            max_label,
        })
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
            max_label: self.max_label,
        })
    }
}
