//! Batches from a [`Dataset`], drawing randomness as PyTorch's `DataLoader`.
//!
//! Each `iter()` of a `torch.utils.data.DataLoader` (single process) draws a
//! base seed from the global generator; a shuffled loader's `RandomSampler`
//! then draws its own seed and permutes with `randperm(n, generator)` on a
//! fresh generator. [`DataLoader::iter`] makes the same two draws in the same
//! order, so the global generator and the batch order match PyTorch's.
use crate::distributed::DistributedSampler;
use crate::{Dataset, Error, Result};
use kiln_tensor::rng::{draw_seed, Mt19937};
use kiln_tensor::Tensor;
use std::cell::Cell;

/// One batch: inputs `[B, ...]` and targets `[B]`.
#[derive(Debug)]
pub struct Batch {
    /// Input tensor.
    pub inputs: Tensor,
    /// Target tensor.
    pub targets: Tensor,
}

impl Batch {
    /// Number of samples in the batch (`len(X)`).
    pub fn len(&self) -> usize {
        self.targets.size().first().map_or(0, |&n| n as usize)
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `DataLoader(dataset, batch_size, shuffle)`; the last short batch is kept.
#[derive(Debug)]
pub struct DataLoader<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    shuffle: bool,
    sampler: Option<DistributedSampler>,
    epoch: Cell<u64>,
}

impl<'a> DataLoader<'a> {
    /// A loader over `dataset`; `batch_size` must be at least 1.
    pub fn new(dataset: &'a Dataset, batch_size: usize, shuffle: bool) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1, got 0".into(),
            ));
        }
        if shuffle && dataset.is_empty() {
            // PyTorch's RandomSampler refuses this too.
            return Err(Error::InvalidArgument(
                "cannot shuffle an empty dataset".into(),
            ));
        }
        Ok(Self {
            dataset,
            batch_size,
            shuffle,
            sampler: None,
            epoch: Cell::new(0),
        })
    }

    /// Reads this rank's shard through `sampler` (`DataLoader(dataset,
    /// sampler=DistributedSampler(...))`); the loader's own `shuffle` is
    /// then unused, as PyTorch forbids both.
    pub fn distributed(mut self, sampler: DistributedSampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// The sampler's epoch (`sampler.set_epoch(epoch)`), which seeds the
    /// distributed permutation; without a distributed sampler it is unused.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.set(epoch);
    }

    /// Samples one pass reads: the dataset, or this rank's shard of it.
    fn samples(&self) -> usize {
        self.sampler
            .as_ref()
            .map_or(self.dataset.len(), |s| s.num_samples(self.dataset.len()))
    }

    /// The dataset this loader reads.
    pub fn dataset(&self) -> &Dataset {
        self.dataset
    }

    /// Number of batches per pass (`len(dataloader)`).
    pub fn len(&self) -> usize {
        self.samples().div_ceil(self.batch_size)
    }

    /// Whether a pass yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a pass, consuming the global generator as PyTorch does.
    pub fn iter(&self) -> Result<Batches<'a>> {
        let _base_seed = draw_seed()?;
        // A DistributedSampler draws nothing from the global generator.
        let shuffled = self.shuffle && self.sampler.is_none();
        let sampler_seed = if shuffled { Some(draw_seed()?) } else { None };
        self.resume(sampler_seed, 0)
    }

    /// Continues a pass that [`DataLoader::iter`] started, from batch
    /// `start_batch`, without drawing from the generator: `sampler_seed` is
    /// what [`Batches::sampler_seed`] reported for that pass.
    pub fn resume(&self, sampler_seed: Option<u64>, start_batch: usize) -> Result<Batches<'a>> {
        let order = match (self.shuffle, sampler_seed) {
            _ if self.sampler.is_some() => match (&self.sampler, sampler_seed) {
                (Some(sampler), None) => {
                    Some(sampler.indices(self.epoch.get(), self.dataset.len())?)
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "a distributed pass has no sampler seed".into(),
                    ))
                }
            },
            (true, Some(seed)) => Some(Mt19937::new(seed).randperm(self.dataset.len())?),
            (false, None) => None,
            (true, None) => {
                return Err(Error::InvalidArgument(
                    "resuming a shuffled pass needs its sampler seed".into(),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::InvalidArgument(
                    "an unshuffled pass has no sampler seed".into(),
                ))
            }
        };
        let next = start_batch
            .saturating_mul(self.batch_size)
            .min(self.samples());
        Ok(Batches {
            dataset: self.dataset,
            batch_size: self.batch_size,
            sampler_seed,
            order,
            next,
        })
    }
}

/// One pass over a [`DataLoader`].
#[derive(Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    sampler_seed: Option<u64>,
    order: Option<Vec<i64>>,
    next: usize,
}

impl Batches<'_> {
    /// The `RandomSampler` seed of this pass (`None` when not shuffled).
    pub fn sampler_seed(&self) -> Option<u64> {
        self.sampler_seed
    }

    fn batch(&self, start: usize, len: usize) -> Result<Batch> {
        let d = self.dataset;
        // Stored inputs are converted per batch (uint8 images as `ToTensor` does).
        match &self.order {
            None => Ok(Batch {
                inputs: d.model_inputs(&d.inputs.f_narrow(0, start as i64, len as i64)?)?,
                targets: d.targets.f_narrow(0, start as i64, len as i64)?,
            }),
            Some(order) => {
                let ids = order.get(start..start + len).unwrap_or_default();
                let index = Tensor::f_from_slice(ids)?.f_to(d.inputs.device())?;
                Ok(Batch {
                    inputs: d.model_inputs(&d.inputs.f_index_select(0, &index)?)?,
                    targets: d.targets.f_index_select(0, &index)?,
                })
            }
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.order.as_ref().map_or(self.dataset.len(), Vec::len);
        if self.next >= n {
            return None;
        }
        let len = self.batch_size.min(n - self.next);
        let batch = self.batch(self.next, len);
        self.next += len;
        Some(batch)
    }
}
