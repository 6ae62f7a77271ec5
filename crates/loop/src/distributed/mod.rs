//! Data-parallel training: every process (rank) holds a replica of the
//! model, reads its shard of each epoch through a [`DistributedSampler`],
//! and before every optimizer step the gradients are averaged over ranks
//! with one all-reduce over one flat buffer, so every replica takes the same
//! step. Evaluation metrics are summed over ranks.
//!
//! The transport is a [`Collective`]: `mpi::Mpi` (feature `mpi`) over the
//! system's MPI, `nccl::Nccl` (feature `nccl`) for CUDA tensors, or
//! [`Single`] (one process, no communication).
//! [`DataParallel`] holds the algorithms on top of it and is what
//! [`Trainer::data_parallel`](crate::Trainer::data_parallel) takes.
use crate::metrics::Metric;
use crate::{Error, Model, Result};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Kind, Tensor};

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
mod sampler;

pub use sampler::DistributedSampler;

/// A reduction applied element-wise across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// Collective communication among the ranks of one job. Every rank must
/// call the same collectives in the same order with tensors of the same
/// shape and kind.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Reduces `buf` (contiguous) over all ranks in place: afterwards every
    /// rank holds the element-wise `op` of all ranks' buffers.
    fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()>;
    /// Overwrites `buf` (contiguous) on every rank with rank `root`'s.
    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<()>;
    /// Ends every rank of the job with exit status `code` (`MPI_Abort`);
    /// used after an error on one rank so that the others do not wait forever.
    fn abort(&self, code: i32) -> !;
}

/// The one-process [`Collective`]: reductions and broadcasts leave the
/// buffer as it is; `abort` exits the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce(&self, _buf: &Tensor, _op: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &Tensor, _root: usize) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Data-parallel algorithms over a [`Collective`].
#[derive(Clone, Copy)]
pub struct DataParallel<'c> {
    comm: &'c dyn Collective,
}

impl std::fmt::Debug for DataParallel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataParallel(rank {} of {})",
            self.comm.rank(),
            self.comm.world_size()
        )
    }
}

/// `tensors` grouped by dtype (first appearance order), for flat buffers.
fn by_kind(tensors: &[Tensor]) -> Vec<Vec<Tensor>> {
    let mut groups: Vec<(Kind, Vec<Tensor>)> = Vec::new();
    for t in tensors {
        match groups.iter_mut().find(|(k, _)| *k == t.kind()) {
            Some((_, g)) => g.push(t.shallow_clone()),
            None => groups.push((t.kind(), vec![t.shallow_clone()])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Each tensor flattened.
fn flat_views(tensors: &[Tensor]) -> Result<Vec<Tensor>> {
    tensors.iter().map(|t| Ok(t.f_reshape([-1])?)).collect()
}

/// Copies consecutive slices of `flat` back into `tensors`.
fn unflatten_into(flat: &Tensor, tensors: &[Tensor]) -> Result<()> {
    let mut offset = 0i64;
    for t in tensors {
        let n = t.numel() as i64;
        let mut dst = t.shallow_clone();
        dst.f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(t)?)?;
        offset += n;
    }
    Ok(())
}

impl<'c> DataParallel<'c> {
    /// Data parallelism over `comm`.
    pub fn new(comm: &'c dyn Collective) -> Self {
        Self { comm }
    }

    /// The communicator.
    pub fn comm(&self) -> &'c dyn Collective {
        self.comm
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// Whether this is rank 0, the one that prints and writes files.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's [`DistributedSampler`] with PyTorch's defaults.
    pub fn sampler(&self) -> Result<DistributedSampler> {
        DistributedSampler::new(self.world_size(), self.rank())
    }

    /// Overwrites every rank's parameters and buffers with rank 0's (one
    /// broadcast of one flat buffer per dtype), so replicas start identical
    /// whatever their seed.
    pub fn broadcast_model(&self, model: &dyn Model) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let tensors: Vec<Tensor> = model.state_dict()?.into_iter().map(|(_, t)| t).collect();
        kiln_tensor::tch::no_grad(|| {
            for group in by_kind(&tensors) {
                let flat = Tensor::f_cat(&flat_views(&group)?, 0)?;
                self.comm.broadcast(&flat, 0)?;
                unflatten_into(&flat, &group)?;
            }
            Ok(())
        })
    }

    /// Replaces every parameter's gradient by its mean over ranks: all
    /// gradients are copied into one contiguous buffer, all-reduced (sum)
    /// in place, divided by the world size and copied back. Every parameter
    /// must have a gradient (as DDP without `find_unused_parameters`).
    pub fn average_gradients(&self, params: &[NamedParameter]) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let mut grads = Vec::new();
        for p in params {
            if !kiln_tensor::ops::has_grad(&p.tensor)? {
                return Err(Error::InvalidArgument(format!(
                    "parameter '{}' has no gradient; data-parallel training needs every parameter to take part in the loss",
                    p.name
                )));
            }
            grads.push(p.tensor.grad());
        }
        kiln_tensor::tch::no_grad(|| {
            let mut flat = Tensor::f_cat(&flat_views(&grads)?, 0)?;
            self.comm.all_reduce(&flat, ReduceOp::Sum)?;
            let _ = flat.f_div_scalar_(self.world_size() as f64)?;
            unflatten_into(&flat, &grads)
        })
    }

    /// The mean of `value` over ranks (one small all-reduce).
    pub fn mean(&self, value: f64) -> Result<f64> {
        if self.world_size() == 1 {
            return Ok(value);
        }
        let buf = Tensor::f_from_slice(&[value])?;
        self.comm.all_reduce(&buf, ReduceOp::Sum)?;
        Ok(buf.f_double_value(&[0])? / self.world_size() as f64)
    }

    /// Rank 0's `value`, on every rank (one small broadcast).
    pub fn broadcast_u64(&self, value: u64) -> Result<u64> {
        if self.world_size() == 1 {
            return Ok(value);
        }
        let buf = Tensor::f_from_slice(&[i64::from_ne_bytes(value.to_ne_bytes())])?;
        self.comm.broadcast(&buf, 0)?;
        let word = buf.f_int64_value(&[0])?;
        Ok(u64::from_ne_bytes(word.to_ne_bytes()))
    }

    /// The largest `value` over ranks (one small all-reduce; exact for
    /// values below 2^53).
    pub fn max_u64(&self, value: u64) -> Result<u64> {
        if self.world_size() == 1 {
            return Ok(value);
        }
        let buf = Tensor::f_from_slice(&[value as f64])?;
        self.comm.all_reduce(&buf, ReduceOp::Max)?;
        Ok(buf.f_double_value(&[0])? as u64)
    }

    /// Errors on every rank unless all ranks passed the same `values`
    /// (hashes, sizes), compared exactly as 32-bit halves.
    pub fn check_same_u64(&self, what: &str, values: &[u64]) -> Result<()> {
        let halves: Vec<f64> = values
            .iter()
            .flat_map(|v| [(v >> 32) as f64, (v & 0xffff_ffff) as f64])
            .collect();
        self.check_same(what, &halves)
    }

    /// Whether `flag` is true on any rank (one small all-reduce).
    pub fn any(&self, flag: bool) -> Result<bool> {
        if self.world_size() == 1 {
            return Ok(flag);
        }
        let buf = Tensor::f_from_slice(&[f64::from(u8::from(flag))])?;
        self.comm.all_reduce(&buf, ReduceOp::Max)?;
        Ok(buf.f_double_value(&[0])? > 0.0)
    }

    /// Errors on every rank unless all ranks passed the same `values`
    /// (dataset sizes, batch counts…), naming `what` and the ranges seen.
    pub fn check_same(&self, what: &str, values: &[f64]) -> Result<()> {
        if self.world_size() == 1 || values.is_empty() {
            return Ok(());
        }
        let max = Tensor::f_from_slice(values)?;
        let min = Tensor::f_from_slice(values)?;
        self.comm.all_reduce(&max, ReduceOp::Max)?;
        self.comm.all_reduce(&min, ReduceOp::Min)?;
        let (max, min) = (Vec::<f64>::try_from(&max)?, Vec::<f64>::try_from(&min)?);
        if max != min {
            return Err(Error::InvalidArgument(format!(
                "ranks disagree on {what}: minimum {min:?}, maximum {max:?} over {} ranks",
                self.world_size()
            )));
        }
        Ok(())
    }

    /// Sums every metric's totals over ranks (one all-reduce), so each rank
    /// then reports the metric over the whole evaluation set.
    pub fn reduce_metrics(&self, metrics: &mut [Box<dyn Metric>]) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let mut all = Vec::new();
        let mut lens = Vec::new();
        for m in metrics.iter() {
            let totals = m.totals().ok_or_else(|| {
                Error::InvalidArgument(format!("metric '{}' cannot be summed over ranks", m.name()))
            })?;
            lens.push(totals.len());
            all.extend(totals);
        }
        if all.is_empty() {
            return Ok(());
        }
        let buf = Tensor::f_from_slice(&all)?;
        self.comm.all_reduce(&buf, ReduceOp::Sum)?;
        let summed = Vec::<f64>::try_from(&buf)?;
        let mut offset = 0;
        for (m, len) in metrics.iter_mut().zip(lens) {
            m.set_totals(summed.get(offset..offset + len).unwrap_or_default());
            offset += len;
        }
        Ok(())
    }

    /// Errors on every rank unless all replicas' parameters are bitwise
    /// identical (an element-wise max and min all-reduce of all parameters).
    pub fn verify_replicas(&self, model: &dyn Model) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let params: Vec<Tensor> = model.parameters()?.into_iter().map(|p| p.tensor).collect();
        kiln_tensor::tch::no_grad(|| {
            let flat = Tensor::f_cat(&flat_views(&params)?, 0)?.f_to_kind(Kind::Float)?;
            let max = kiln_tensor::ops::detached_clone(&flat)?;
            let min = kiln_tensor::ops::detached_clone(&flat)?;
            self.comm.all_reduce(&max, ReduceOp::Max)?;
            self.comm.all_reduce(&min, ReduceOp::Min)?;
            let spread = max.f_sub(&min)?.f_abs()?.f_max()?.f_double_value(&[])?;
            // NaN compares unequal: a NaN anywhere is a divergence too.
            if spread == 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "replicas diverged: parameters differ across {} ranks by up to {spread}",
                    self.world_size()
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Accuracy, MeanLoss};
    use crate::models::mlp::{self, MlpConfig};
    use kiln_tensor::Device;

    /// A one-layer network `Linear(3, 2)`.
    fn tiny() -> Result<impl Model> {
        let cfg = MlpConfig {
            hidden: vec![],
            ..MlpConfig::default()
        };
        mlp::build(&cfg, 3, 2, None, Device::Cpu)
    }

    /// A fake communicator for `n` ranks whose peers all hold the same
    /// buffer as this one, so sums are `n` times the local buffer.
    struct Mirror(usize);

    impl Collective for Mirror {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            self.0
        }
        fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()> {
            if op == ReduceOp::Sum {
                let _ = buf.shallow_clone().f_mul_scalar_(self.0 as f64)?;
            }
            Ok(())
        }
        fn broadcast(&self, _buf: &Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    #[test]
    fn averaging_identical_gradients_leaves_them_unchanged() -> anyhow::Result<()> {
        let model = tiny()?;
        let x = Tensor::f_from_slice(&[1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0])?.f_view([2, 3])?;
        model.forward(&x)?.f_sum(Kind::Float)?.f_backward()?;
        let params = model.parameters()?;
        let before: Vec<Tensor> = params.iter().map(|p| p.tensor.grad().copy()).collect();
        DataParallel::new(&Mirror(4)).average_gradients(&params)?;
        for (p, b) in params.iter().zip(&before) {
            assert!(p.tensor.grad().allclose(b, 0.0, 0.0, false));
        }
        DataParallel::new(&Mirror(4)).verify_replicas(&model)?;
        assert_eq!(DataParallel::new(&Mirror(4)).mean(2.5)?, 2.5);
        Ok(())
    }

    #[test]
    fn missing_gradients_are_an_error_and_metrics_sum() -> anyhow::Result<()> {
        let model = tiny()?;
        let err = DataParallel::new(&Mirror(2))
            .average_gradients(&model.parameters()?)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref().is_some_and(|e| e.contains("has no gradient")),
            "{err:?}"
        );
        let mut metrics: Vec<Box<dyn Metric>> =
            vec![Box::new(MeanLoss::default()), Box::new(Accuracy::default())];
        let pred = Tensor::f_from_slice(&[0.9f32, 0.1, 0.2, 0.8])?.f_view([2, 2])?;
        let target = Tensor::f_from_slice(&[0i64, 0])?;
        for m in metrics.iter_mut() {
            m.update(&pred, &target, 2.0)?;
        }
        DataParallel::new(&Mirror(3)).reduce_metrics(&mut metrics)?;
        // Sums times 3 over counts times 3: the same means.
        assert_eq!(metrics[0].value(), 2.0);
        assert_eq!(metrics[1].value(), 0.5);
        assert_eq!(metrics[1].totals(), Some(vec![3.0, 6.0]));
        assert!(DataParallel::new(&Mirror(2)).any(true)?);
        assert!(!DataParallel::new(&Single).any(false)?);
        Ok(())
    }

    /// Peers whose parameters are larger by 1e-3: a diverged replica.
    struct Skewed;

    impl Collective for Skewed {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()> {
            if op == ReduceOp::Max {
                let _ = buf.shallow_clone().f_add_scalar_(1e-3)?;
            }
            Ok(())
        }
        fn broadcast(&self, _buf: &Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    #[test]
    fn diverged_replicas_and_disagreeing_ranks_are_errors() -> anyhow::Result<()> {
        let model = tiny()?;
        let err = DataParallel::new(&Skewed).verify_replicas(&model).err();
        assert!(err.is_some_and(|e| e.to_string().starts_with("replicas diverged")));
        let err = DataParallel::new(&Skewed).check_same("sizes", &[4.0]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("ranks disagree on sizes")));
        DataParallel::new(&Mirror(2)).check_same("sizes", &[4.0])?;
        Ok(())
    }
}
