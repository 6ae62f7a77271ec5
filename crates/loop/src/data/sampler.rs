//! PyTorch's `torch.utils.data.distributed.DistributedSampler`, index for index.
use crate::{Error, Result};
use kiln_tensor::rng::Mt19937;

/// Which sample indices one rank reads in one epoch, as
/// `DistributedSampler(dataset, num_replicas, rank, shuffle, seed, drop_last)`:
/// every rank permutes the whole dataset with a generator seeded
/// `seed + epoch` (`torch.randperm(n, generator=g)`), pads the permutation to
/// a multiple of `num_replicas` by repeating its head (or, with `drop_last`,
/// cuts it), and takes every `num_replicas`-th index starting at `rank`.
///
/// `pad = false` is kiln's evaluation variant (not in PyTorch): no index is
/// repeated or dropped, so ranks may get one sample more than others and each
/// sample is counted exactly once when metrics are summed over ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedSampler {
    /// Number of ranks.
    pub num_replicas: usize,
    /// This process's rank, `0..num_replicas`.
    pub rank: usize,
    /// Permute every epoch (PyTorch's default `True`).
    pub shuffle: bool,
    /// Seed shared by all ranks (PyTorch's default 0).
    pub seed: u64,
    /// Cut the tail instead of padding (PyTorch's default `False`).
    pub drop_last: bool,
    /// Pad to equal length by repeating indices (PyTorch's behaviour; see above).
    pub pad: bool,
}

impl DistributedSampler {
    /// PyTorch's defaults (`shuffle=True, seed=0, drop_last=False`) for `rank`
    /// of `num_replicas`; errors as PyTorch does on a rank out of range.
    pub fn new(num_replicas: usize, rank: usize) -> Result<Self> {
        if num_replicas == 0 {
            return Err(Error::InvalidArgument(
                "num_replicas must be at least 1".into(),
            ));
        }
        if rank >= num_replicas {
            return Err(Error::InvalidArgument(format!(
                "Invalid rank {rank}, rank should be in the interval [0, {}]",
                num_replicas - 1
            )));
        }
        Ok(Self {
            num_replicas,
            rank,
            shuffle: true,
            seed: 0,
            drop_last: false,
            pad: true,
        })
    }

    /// Sets `shuffle`.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Sets the shared seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets `drop_last`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets `pad` (see the type's documentation).
    pub fn pad(mut self, pad: bool) -> Self {
        self.pad = pad;
        self
    }

    /// `len(sampler)` for a dataset of `len` samples: the indices this rank
    /// reads per epoch.
    pub fn num_samples(&self, len: usize) -> usize {
        let p = self.num_replicas;
        if self.drop_last && !len.is_multiple_of(p) {
            // math.ceil((len - p) / p), which is 0 when len < p.
            len.saturating_sub(p).div_ceil(p)
        } else if self.pad || self.drop_last {
            len.div_ceil(p)
        } else {
            len / p + usize::from(self.rank < len % p)
        }
    }

    /// This rank's indices for `epoch` (PyTorch's `set_epoch(epoch)` then
    /// `iter(sampler)`) over a dataset of `len` samples.
    pub fn indices(&self, epoch: u64, len: usize) -> Result<Vec<i64>> {
        let p = self.num_replicas;
        let mut indices: Vec<i64> = if self.shuffle {
            if len == 0 {
                return Err(Error::InvalidArgument(
                    "cannot shuffle an empty dataset".into(),
                ));
            }
            Mt19937::new(self.seed.wrapping_add(epoch)).randperm(len)?
        } else {
            (0..len as i64).collect()
        };
        let per_rank = self.num_samples(len);
        if self.drop_last {
            indices.truncate(per_rank * p);
        } else if self.pad && !indices.is_empty() {
            let total = per_rank * p;
            let mut i = 0;
            while indices.len() < total {
                indices.push(indices[i]);
                i += 1;
            }
        }
        let mine: Vec<i64> = indices.iter().skip(self.rank).step_by(p).copied().collect();
        debug_assert!(!self.pad || mine.len() == per_rank);
        Ok(mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_by_repeating_the_head_and_strides_by_rank() -> anyhow::Result<()> {
        // 10 samples over 4 ranks: 3 each, total 12, indices 0 and 1 repeated.
        let shards: Vec<Vec<i64>> = (0..4)
            .map(|r| DistributedSampler::new(4, r)?.shuffle(false).indices(0, 10))
            .collect::<Result<_>>()?;
        assert_eq!(
            shards,
            vec![vec![0, 4, 8], vec![1, 5, 9], vec![2, 6, 0], vec![3, 7, 1]]
        );
        // Padding longer than the data repeats it whole (indices * ceil(...)).
        let s = DistributedSampler::new(5, 4)?.shuffle(false);
        assert_eq!(s.indices(0, 2)?, vec![0]);
        assert_eq!(
            DistributedSampler::new(5, 2)?
                .shuffle(false)
                .indices(0, 2)?,
            vec![0]
        );
        assert_eq!(s.num_samples(2), 1);
        Ok(())
    }

    #[test]
    fn drop_last_and_unpadded_shards() -> anyhow::Result<()> {
        let s = |r| DistributedSampler::new(4, r).map(|s| s.shuffle(false).drop_last(true));
        assert_eq!(s(0)?.num_samples(10), 2);
        assert_eq!(s(3)?.indices(0, 10)?, vec![3, 7]);
        assert_eq!(s(0)?.num_samples(3), 0);
        let u = |r| DistributedSampler::new(4, r).map(|s| s.shuffle(false).pad(false));
        assert_eq!(u(1)?.indices(0, 10)?, vec![1, 5, 9]);
        assert_eq!(u(2)?.indices(0, 10)?, vec![2, 6]);
        assert_eq!(
            (0..4)
                .map(|r| u(r).map(|s| s.num_samples(10)))
                .collect::<Result<Vec<_>>>()?,
            vec![3, 3, 2, 2]
        );
        assert!(DistributedSampler::new(2, 2).is_err());
        Ok(())
    }

    #[test]
    fn shards_partition_the_seeded_permutation() -> anyhow::Result<()> {
        // Every rank permutes with seed + epoch; together the shards are that
        // permutation, interleaved: global batch k of size B*p is
        // perm[k*B*p .. (k+1)*B*p].
        let perm = Mt19937::new(7 + 3).randperm(64)?;
        let shards: Vec<Vec<i64>> = (0..4)
            .map(|r| DistributedSampler::new(4, r)?.seed(7).indices(3, 64))
            .collect::<Result<_>>()?;
        for (j, &idx) in perm.iter().enumerate() {
            assert_eq!(shards[j % 4][j / 4], idx);
        }
        let other_epoch = DistributedSampler::new(4, 0)?.seed(7).indices(4, 64)?;
        assert_ne!(other_epoch, shards[0]);
        Ok(())
    }
}
