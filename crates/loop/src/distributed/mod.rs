//! Data-parallel training, as PyTorch's `DistributedDataParallel` does it:
//! every process (rank) holds a replica of the model, reads its shard of
//! each epoch through a [`DistributedSampler`], and during backward the
//! gradients are averaged over ranks in buckets whose sums start as soon as
//! their last gradient is ready ([`buckets::Reducer`]), so every replica
//! takes the same step. Buffers are broadcast from rank 0 before forward
//! passes; evaluation metrics are summed over ranks.
//!
//! The transport is a [`Collective`]: `mpi::Mpi` (feature `mpi`) over the
//! system's MPI, `nccl::Nccl` (feature `nccl`) for CUDA tensors, or
//! [`Single`] (one process, no communication). Gradient buckets go through
//! its [`GradientTransport`], which MPI sums in the order of PyTorch's gloo
//! backend ([`ring`]). [`DataParallel`] holds the algorithms on top of it
//! and is what [`Trainer::data_parallel`](crate::Trainer::data_parallel) takes.
use crate::metrics::Metric;
use crate::{Error, Model, Result};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Kind, Tensor};
use std::sync::Arc;

pub mod buckets;
// MPI's FFI: the one module of kiln-loop allowed to hold unsafe code.
#[cfg(feature = "mpi")]
#[allow(unsafe_code)]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod ring;

use crate::data::DistributedSampler;
pub use buckets::{BucketConfig, ReduceTiming, Reducer};

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
    /// Where the collective reports why it ends the job on its own (a
    /// watchdog's timeout); by default it has nothing to report.
    fn set_notices(&self, notices: crate::notice::Notices) {
        let _ = notices;
    }
    /// Where gradient buckets are summed during backward (see
    /// [`GradientTransport`]). The default has none: such a collective
    /// cannot train data-parallel on more than one rank.
    fn gradient_transport(&self) -> Result<Arc<dyn GradientTransport>> {
        Err(Error::InvalidArgument(
            "this communicator cannot sum gradient buckets".into(),
        ))
    }
}

/// A gradient bucket's sum in flight ([`GradientTransport::start_sum`]).
pub struct PendingSum {
    wait: Box<dyn FnOnce() -> Result<f64> + Send>,
}

impl std::fmt::Debug for PendingSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingSum")
    }
}

impl PendingSum {
    /// A sum that completes when `wait` returns (with the seconds the
    /// transport spent on it).
    pub fn new(wait: impl FnOnce() -> Result<f64> + Send + 'static) -> Self {
        Self {
            wait: Box::new(wait),
        }
    }

    /// A sum that is already complete.
    pub fn done(seconds: f64) -> Self {
        Self::new(move || Ok(seconds))
    }

    /// Blocks until the bucket holds the sum over all ranks; returns the
    /// seconds the transport spent on it, from start to finish.
    pub fn wait(self) -> Result<f64> {
        (self.wait)()
    }
}

/// Sums gradient buckets over ranks asynchronously; shared with the
/// autograd hooks, so it is `Send + Sync` and callable from any thread.
pub trait GradientTransport: Send + Sync {
    /// Starts summing `bucket` (a contiguous tensor on this rank's device)
    /// over all ranks, in place, and returns at once; `bucket` must not be
    /// touched until the returned [`PendingSum`] is waited for. Every rank
    /// starts the same buckets in the same order. Over MPI the sum is
    /// computed in the order of PyTorch's gloo backend ([`ring`]), so it
    /// has `torchrun`'s bits.
    fn start_sum(&self, bucket: &Tensor) -> Result<PendingSum>;
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
    buckets: BucketConfig,
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

/// FNV-1a over the names, shapes and dtypes of a state dict: equal on
/// every rank and every build for the same model.
fn model_signature(state: &[(String, Tensor)]) -> u64 {
    let mut text = String::new();
    for (name, t) in state {
        text.push_str(&format!("{name}:{:?}:{:?};", t.size(), t.kind()));
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<'c> DataParallel<'c> {
    /// Data parallelism over `comm`.
    pub fn new(comm: &'c dyn Collective) -> Self {
        Self {
            comm,
            buckets: BucketConfig::default(),
        }
    }

    /// Buckets gradients with `config` (DDP's `bucket_cap_mb`).
    pub fn buckets(mut self, config: BucketConfig) -> Self {
        self.buckets = config;
        self
    }

    /// The bucket settings.
    pub fn bucket_config(&self) -> BucketConfig {
        self.buckets
    }

    /// Gradient buckets and autograd hooks over `params` (the model's, in
    /// PyTorch's order): what averages gradients during backward.
    pub fn reducer(&self, params: &[NamedParameter]) -> Result<Reducer<'c>> {
        Reducer::new(*self, params, self.buckets)
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
    /// whatever their seed, as DDP's constructor does. First checks that
    /// every rank has the same model: the same parameter and buffer names,
    /// shapes and dtypes in the same order (DDP's
    /// `_verify_param_shape_across_processes`), naming the ranks that differ.
    pub fn broadcast_model(&self, model: &dyn Model) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.check_same_model(model)?;
        let state = model.state_dict()?;
        self.broadcast_tensors(state.into_iter().map(|(_, t)| t).collect())
    }

    /// Errors on every rank unless all ranks have the same model as rank 0:
    /// the same parameter and buffer names, shapes and dtypes in the same
    /// order; the error names the ranks that differ.
    pub fn check_same_model(&self, model: &dyn Model) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        self.check_matches_rank0(
            "its model (parameter and buffer names, shapes and dtypes)",
            &[model_signature(&model.state_dict()?)],
        )
    }

    /// Overwrites every rank's buffers (batch-norm statistics…) with rank
    /// 0's, as DDP does before a forward pass with `broadcast_buffers=True`.
    pub fn broadcast_buffers(&self, model: &dyn Model) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let buffers: Vec<Tensor> = model.buffers()?.into_iter().map(|(_, t)| t).collect();
        if buffers.is_empty() {
            return Ok(());
        }
        self.broadcast_tensors(buffers)
    }

    fn broadcast_tensors(&self, tensors: Vec<Tensor>) -> Result<()> {
        kiln_tensor::tch::no_grad(|| {
            for group in by_kind(&tensors) {
                let flat = Tensor::f_cat(&flat_views(&group)?, 0)?;
                self.comm.broadcast(&flat, 0)?;
                unflatten_into(&flat, &group)?;
            }
            Ok(())
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

    /// Rank 0's `text`, on every rank (its length, then its bytes).
    pub fn broadcast_text(&self, text: &str) -> Result<String> {
        if self.world_size() == 1 {
            return Ok(text.to_string());
        }
        let len = self.broadcast_u64(text.len() as u64)? as usize;
        let mut bytes: Vec<i64> = text.bytes().map(i64::from).collect();
        bytes.resize(len, 0);
        let buf = Tensor::f_from_slice(&bytes)?;
        self.comm.broadcast(&buf, 0)?;
        let words = Vec::<i64>::try_from(&buf)?;
        let bytes: Vec<u8> = words.iter().map(|w| *w as u8).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
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
    /// (hashes, sizes) as rank 0, naming the ranks that differ.
    pub fn check_same_u64(&self, what: &str, values: &[u64]) -> Result<()> {
        self.check_matches_rank0(what, values)
    }

    /// Rank 0's `values` are broadcast and compared on every rank; a
    /// one-hot vector of the ranks that differ is summed over ranks, so
    /// every rank returns the same [`Error::RankMismatch`] naming them.
    fn check_matches_rank0(&self, what: &str, values: &[u64]) -> Result<()> {
        let world = self.world_size();
        if world == 1 || values.is_empty() {
            return Ok(());
        }
        let words: Vec<i64> = values
            .iter()
            .map(|v| i64::from_ne_bytes(v.to_ne_bytes()))
            .collect();
        let root = Tensor::f_from_slice(&words)?;
        self.comm.broadcast(&root, 0)?;
        let differs = Vec::<i64>::try_from(&root)? != words;
        let mut flags = vec![0.0f64; world];
        flags[self.rank()] = f64::from(u8::from(differs));
        let flags = Tensor::f_from_slice(&flags)?;
        self.comm.all_reduce(&flags, ReduceOp::Sum)?;
        let ranks: Vec<usize> = Vec::<f64>::try_from(&flags)?
            .iter()
            .enumerate()
            .filter(|(_, f)| **f > 0.0)
            .map(|(r, _)| r)
            .collect();
        if ranks.is_empty() {
            return Ok(());
        }
        let list = ranks
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let (noun, verb) = if ranks.len() == 1 {
            ("rank", "differs")
        } else {
            ("ranks", "differ")
        };
        Err(Error::RankMismatch {
            message: format!("{noun} {list} of {world} {verb} from rank 0 in {what}"),
            ranks,
        })
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
    /// (dataset sizes, batch counts…) as rank 0, bit for bit, naming `what`
    /// and the ranks that differ.
    pub fn check_same(&self, what: &str, values: &[f64]) -> Result<()> {
        let bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        self.check_matches_rank0(what, &bits)
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

/// Whether a launcher started this process as a rank of a job (Open MPI's
/// `mpirun`, PMI/PMIx launchers such as MPICH's and Slurm's `srun`): what
/// tells a one-rank job on purpose from a process started on its own.
pub fn launched() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALRANKID",
        "SLURM_PROCID",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Accuracy, MeanLoss};
    use crate::models::mlp::{self, MlpConfig};
    use crate::models::VarStoreModel;
    use kiln_tensor::Device;

    /// A one-layer network `Linear(3, 2)`.
    fn tiny() -> Result<impl Model> {
        let cfg = MlpConfig {
            hidden: vec![],
            ..MlpConfig::default()
        };
        mlp::build(&cfg, 3, 2, None, Device::Cpu)
    }

    /// Sums as if `n` ranks held this rank's buffer: times `n`.
    struct Times(usize);

    impl GradientTransport for Times {
        fn start_sum(&self, bucket: &Tensor) -> Result<PendingSum> {
            let _ = bucket.shallow_clone().f_mul_scalar_(self.0 as f64)?;
            Ok(PendingSum::done(0.0))
        }
    }

    /// A fake communicator for `n` ranks whose peers all hold the same
    /// buffer as this one, so sums are `n` times the local buffer;
    /// broadcasts write `fill` (when set).
    struct Mirror(usize, Option<f64>);

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
        fn broadcast(&self, buf: &Tensor, _root: usize) -> Result<()> {
            if let Some(fill) = self.1 {
                let _ = buf.shallow_clone().f_fill_(fill)?;
            }
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
        fn gradient_transport(&self) -> Result<Arc<dyn GradientTransport>> {
            Ok(Arc::new(Times(self.0)))
        }
    }

    fn grads(params: &[NamedParameter]) -> Vec<Tensor> {
        params.iter().map(|p| p.tensor.grad().copy()).collect()
    }

    #[test]
    fn buckets_average_identical_gradients_to_themselves() -> anyhow::Result<()> {
        let model = tiny()?;
        let x = Tensor::f_from_slice(&[1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0])?.f_view([2, 3])?;
        let params = model.parameters()?;
        let comm = Mirror(4, None);
        // A cap of one byte: a bucket per parameter once rebuilt.
        let dp = DataParallel::new(&comm).buckets(BucketConfig::from_cap_mb(Some(1e-7))?);
        let mut reducer = dp.reducer(&params)?;
        assert_eq!(
            reducer.bucket_names()?,
            vec![vec![
                "linear_relu_stack.0.weight",
                "linear_relu_stack.0.bias"
            ]]
        );
        // Not armed (inside an accumulation window): gradients untouched.
        model.forward(&x)?.f_sum(Kind::Float)?.f_backward()?;
        let first = grads(&params);
        reducer.prepare_for_backward()?;
        model.forward(&x)?.f_sum(Kind::Float)?.f_backward()?;
        let accumulated = grads(&params);
        let timing = reducer.finish_backward()?;
        assert_eq!(timing.buckets, 1);
        for ((p, a), f) in params.iter().zip(&accumulated).zip(&first) {
            // (g / 4) · 4 is g exactly, and g is twice the first pass's.
            assert!(p.tensor.grad().equal(a));
            assert!(a.equal(&(f * 2.0)));
        }
        // Rebuilt in the order the gradients became ready: bias first.
        assert_eq!(
            reducer.bucket_names()?,
            vec![
                vec!["linear_relu_stack.0.bias"],
                vec!["linear_relu_stack.0.weight"]
            ]
        );
        reducer.prepare_for_backward()?;
        model.forward(&x)?.f_sum(Kind::Float)?.f_backward()?;
        assert_eq!(reducer.finish_backward()?.buckets, 2);
        dp.verify_replicas(&model)?;
        assert_eq!(dp.mean(2.5)?, 2.5);
        // Dropping the reducer removes its hooks: a new one can hook again.
        drop(reducer);
        let _again = dp.reducer(&params)?;
        Ok(())
    }

    #[test]
    fn missing_gradients_are_an_error_and_metrics_sum() -> anyhow::Result<()> {
        let model = tiny()?;
        let comm = Mirror(2, None);
        let mut reducer = DataParallel::new(&comm).reducer(&model.parameters()?)?;
        assert!(reducer.finish_backward().is_err(), "not armed");
        reducer.prepare_for_backward()?;
        let err = reducer.finish_backward().err().map(|e| e.to_string());
        assert!(
            err.as_ref().is_some_and(|e| e.contains("has no gradient")),
            "{err:?}"
        );
        let mut metrics: Vec<Box<dyn Metric>> =
            vec![Box::new(MeanLoss::default()), Box::new(Accuracy::default())];
        let pred = Tensor::f_from_slice(&[0.9f32, 0.1, 0.2, 0.8])?.f_view([2, 2])?;
        let target = Tensor::f_from_slice(&[0i64, 0])?;
        for m in metrics.iter_mut() {
            m.update(&crate::metrics::Evaluated::of(&pred, &target, 2.0))?;
        }
        DataParallel::new(&Mirror(3, None)).reduce_metrics(&mut metrics)?;
        // Sums times 3 over counts times 3: the same means.
        assert_eq!(metrics[0].value(), 2.0);
        assert_eq!(metrics[1].value(), 0.5);
        assert_eq!(metrics[1].totals(), Some(vec![3.0, 6.0]));
        assert!(DataParallel::new(&Mirror(2, None)).any(true)?);
        assert!(!DataParallel::new(&Single).any(false)?);
        // Single has no gradient transport.
        assert!(DataParallel::new(&Single)
            .reducer(&model.parameters()?)
            .is_err());
        Ok(())
    }

    /// A linear layer with a buffer, like a batch-norm's running mean.
    #[derive(Debug)]
    struct WithBuffer(kiln_tensor::nn::Linear);

    impl kiln_tensor::nn::ModuleT for WithBuffer {
        fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
            kiln_tensor::nn::Module::forward(&self.0, xs)
        }
    }

    #[test]
    fn buffers_follow_rank_zero_before_forwards_as_in_ddp() -> anyhow::Result<()> {
        let model = VarStoreModel::new(Device::Cpu, |p| {
            let _ = p.zeros_no_train("running_mean", &[2]);
            Ok(WithBuffer(kiln_tensor::nn::linear(
                p / "fc",
                3,
                2,
                Default::default(),
            )))
        })?;
        let buffer = || -> anyhow::Result<Vec<f32>> {
            let (_, t) = model
                .buffers()?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no buffer"))?;
            Ok(Vec::<f32>::try_from(&t)?)
        };
        let set = |v: f64| -> anyhow::Result<()> {
            for (_, t) in model.buffers()? {
                let _ = t.shallow_clone().f_fill_(v)?;
            }
            Ok(())
        };
        // Rank 0's buffers read 7 here.
        let comm = Mirror(2, Some(7.0));
        let dp = DataParallel::new(&comm);
        let mut reducer = dp.reducer(&model.parameters()?)?;
        reducer.pre_forward(&model)?;
        assert_eq!(buffer()?, vec![7.0, 7.0], "the first forward broadcasts");
        reducer.post_forward(false);
        set(1.0)?;
        reducer.pre_forward(&model)?;
        assert_eq!(
            buffer()?,
            vec![1.0, 1.0],
            "not after an unsynchronized forward"
        );
        reducer.post_forward(true);
        reducer.pre_forward(&model)?;
        assert_eq!(buffer()?, vec![7.0, 7.0], "after a synchronized one");
        // The parameters are untouched by buffer broadcasts.
        let w = model.parameters()?[0].tensor.copy();
        dp.broadcast_buffers(&model)?;
        assert!(model.parameters()?[0].tensor.equal(&w));
        Ok(())
    }

    /// Rank 1 of 2, whose peers' parameters are larger by 1e-3 and whose
    /// rank 0 broadcasts values larger by one: a diverged replica.
    struct Skewed;

    impl Collective for Skewed {
        fn rank(&self) -> usize {
            1
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
        fn broadcast(&self, buf: &Tensor, _root: usize) -> Result<()> {
            let _ = buf.shallow_clone().f_add_scalar_(1)?;
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
        match err {
            Some(Error::RankMismatch { ranks, message }) => {
                assert_eq!(ranks, vec![1]);
                assert_eq!(message, "rank 1 of 2 differs from rank 0 in sizes");
            }
            other => panic!("{other:?}"),
        }
        let err = DataParallel::new(&Skewed).broadcast_model(&model).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("differs from rank 0 in its model")),
            "{err:?}"
        );
        DataParallel::new(&Mirror(2, None)).check_same("sizes", &[4.0])?;
        Ok(())
    }
}
