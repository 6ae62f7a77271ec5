//! Data: the [`Dataset`] trait, PyTorch's samplers and `DataLoader`, and
//! the sources kiln reads (IDX, CSV, safetensors tensors).
//!
//! A dataset is map-style, as `torch.utils.data.Dataset`: a length and
//! `get(index)`, which returns a [`Sample`] of named tensors. The
//! [`DataLoader`] owns everything around it — the order (samplers), the
//! random draws PyTorch's loader makes, collation ([`collate`]) and moving
//! batches to the model's device — so a crate that brings its own data
//! implements only [`Dataset`].
pub mod batch;
pub mod idx;
pub mod images;
pub mod loader;
pub mod memory;
pub mod meta;
pub mod pickle;
pub mod sampler;
pub mod source;
pub mod tabular;
pub mod tensors;
pub mod tokens;

pub use batch::{collate, Batch, Fields, Sample};
pub use loader::{Batches, DataLoader};
pub use memory::{InputTransform, TensorDataset};
pub use sampler::DistributedSampler;
pub use source::{data_sources, DataRegistry, Sampling, Splits, Task};

use crate::{Error, Result};
use kiln_tensor::rng::Generator;
use std::sync::Arc;

/// A map-style dataset: `len` samples, each read by index. What a crate
/// implements to bring data kiln has no reader for (`torch.utils.data.Dataset`).
///
/// `get` may draw random numbers (augmentation, noise) from `rng`: the
/// generator PyTorch's code would draw from implicitly — the global one
/// when the loader has no workers, the worker's own (seeded
/// `base_seed + worker_id`) otherwise — so the same seed gives the same
/// samples as `DataLoader(dataset, num_workers=N)` in PyTorch.
pub trait Dataset: Send + Sync {
    /// Number of samples (`len(dataset)`).
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (`dataset[index]`), `index < len()`.
    fn get(&self, index: usize, rng: &mut Generator) -> Result<Sample>;

    /// Several samples at once, already stacked (`[B, ...]` per field): what
    /// [`collate`] of [`Dataset::get`] over `indices` gives, bit for bit and
    /// with the same random draws. Datasets held in memory gather a batch
    /// with one `index_select`; `None` (the default) makes the loader read
    /// sample by sample.
    fn get_batch(&self, indices: &[i64], rng: &mut Generator) -> Result<Option<Sample>> {
        let _ = (indices, rng);
        Ok(None)
    }

    /// What the fields of a sample are for (the model's inputs, the target).
    fn fields(&self) -> Fields {
        Fields::default()
    }

    /// Where sample `index` comes from, for error messages (a file, a row).
    fn describe(&self, index: usize) -> String {
        format!("sample {index}")
    }
}

/// `torch.utils.data.Subset(dataset, indices)`: the samples at `indices`,
/// in that order.
#[derive(Clone)]
pub struct Subset {
    dataset: Arc<dyn Dataset>,
    indices: Arc<Vec<i64>>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("len", &self.indices.len())
            .finish_non_exhaustive()
    }
}

impl Subset {
    /// The samples of `dataset` at `indices` (each below its length).
    pub fn new(dataset: Arc<dyn Dataset>, indices: Vec<i64>) -> Result<Self> {
        let n = dataset.len() as i64;
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= n) {
            return Err(Error::InvalidArgument(format!(
                "subset index {bad} is out of range for a dataset of {n} samples"
            )));
        }
        Ok(Self {
            dataset,
            indices: Arc::new(indices),
        })
    }

    /// The first `n` samples (all of them if `n` is larger), as
    /// `Subset(dataset, range(n))`.
    pub fn first(dataset: Arc<dyn Dataset>, n: usize) -> Self {
        let n = n.min(dataset.len()) as i64;
        Self {
            dataset,
            indices: Arc::new((0..n).collect()),
        }
    }

    /// The index in the underlying dataset of sample `index` of the subset.
    fn inner(&self, index: usize) -> Result<usize> {
        self.indices.get(index).map(|&i| i as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "index {index} is out of range for a subset of {} samples",
                self.indices.len()
            ))
        })
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn get(&self, index: usize, rng: &mut Generator) -> Result<Sample> {
        self.dataset.get(self.inner(index)?, rng)
    }

    fn get_batch(&self, indices: &[i64], rng: &mut Generator) -> Result<Option<Sample>> {
        let inner = indices
            .iter()
            .map(|&i| self.inner(i as usize).map(|j| j as i64))
            .collect::<Result<Vec<_>>>()?;
        self.dataset.get_batch(&inner, rng)
    }

    fn fields(&self) -> Fields {
        self.dataset.fields()
    }

    fn describe(&self, index: usize) -> String {
        match self.inner(index) {
            Ok(i) => self.dataset.describe(i),
            Err(_) => format!("sample {index}"),
        }
    }
}

/// `torch.utils.data.random_split(dataset, [1 - fraction, fraction],
/// generator=torch.Generator().manual_seed(seed))`: a permutation from a
/// private generator (the global one is not touched), the first part for
/// training, the rest (`floor(n * fraction)` samples, one more when the
/// floors leave a remainder for both) for validation. Both keep PyTorch's
/// order of the permutation. `what` names the flag in errors.
pub fn random_split(
    dataset: Arc<dyn Dataset>,
    fraction: f64,
    seed: u64,
    what: &str,
) -> Result<(Subset, Subset)> {
    let n = dataset.len();
    // PyTorch: floor each share, then hand out the remainder round-robin.
    let mut lengths = [
        ((1.0 - fraction) * n as f64).floor() as usize,
        (fraction * n as f64).floor() as usize,
    ];
    for i in 0..n.saturating_sub(lengths[0] + lengths[1]) {
        lengths[i % 2] += 1;
    }
    if lengths.contains(&0) {
        return Err(Error::Usage(format!(
            "{what} {fraction} of {n} samples leaves an empty split"
        )));
    }
    let order = kiln_tensor::rng::Mt19937::new(seed).randperm(n)?;
    let (first, second) = order.split_at(lengths[0]);
    Ok((
        Subset::new(dataset.clone(), first.to_vec())?,
        Subset::new(dataset, second.to_vec())?,
    ))
}
