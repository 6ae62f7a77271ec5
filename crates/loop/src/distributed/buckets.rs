//! Gradient buckets that are all-reduced while backward still runs, as
//! PyTorch's `DistributedDataParallel` reducer does.
//!
//! A [`Reducer`] groups the parameters into buckets (flat buffers, one dtype
//! each) and registers a post-accumulate-grad hook on every parameter. On a
//! backward pass that ends an accumulation window (armed by
//! [`Reducer::prepare_for_backward`]), each hook copies its gradient into the
//! bucket multiplied by `1 / world` (DDP's `mul_out(bucket_view, grad,
//! 1/world)` before the sum), and the moment a bucket's last gradient is in,
//! its sum over ranks is started on the transport
//! ([`GradientTransport`]) — buckets are started strictly in bucket order,
//! on every rank. [`Reducer::finish_backward`] waits for them all and copies
//! the averaged values back into the gradients (`param.grad.copy_(view)`).
//! Backward passes that are not armed (gradient accumulation, DDP's
//! `no_sync`) leave the gradients alone.
//!
//! The layout follows DDP exactly, so that sums in gloo's order give
//! `torchrun`'s bits: the first synchronized backward uses one bucket per
//! dtype holding every parameter in registration order; it records the order
//! in which gradients became ready, and from then on buckets follow that
//! order (rank 0's, shared with all ranks), closing a bucket once it holds at
//! least the cap — 1 MiB for the first bucket and 25 MiB after it by default
//! (`bucket_cap_mb=None`), or the given cap for every bucket.
//!
//! Buffers (batch-norm statistics) are broadcast from rank 0 before a
//! forward pass whenever the previous forward was a synchronized training
//! forward (DDP's `broadcast_buffers=True`): [`Reducer::pre_forward`] and
//! [`Reducer::post_forward`].
use super::{DataParallel, GradientTransport, PendingSum};
use crate::{Error, Model, Result};
use kiln_tensor::ops::PostAccumulateGradHook;
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Kind, Tensor};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// DDP's default bucket cap: 25 MiB.
pub const DEFAULT_BUCKET_CAP_BYTES: usize = 25 * 1024 * 1024;
/// DDP's first bucket with the default cap (`dist._DEFAULT_FIRST_BUCKET_BYTES`): 1 MiB.
pub const DEFAULT_FIRST_BUCKET_BYTES: usize = 1024 * 1024;

/// How gradients are bucketed (`--bucket-cap-mb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketConfig {
    /// A bucket is closed once it holds at least this many bytes.
    pub cap_bytes: usize,
    /// The cap of the first bucket (the last layers' gradients, ready first).
    pub first_cap_bytes: usize,
    /// Start each bucket's sum from the hooks, during backward (the
    /// default). `false` starts them all after backward: the same sums, for
    /// measuring what the overlap hides.
    pub overlap: bool,
}

impl Default for BucketConfig {
    fn default() -> Self {
        Self {
            cap_bytes: DEFAULT_BUCKET_CAP_BYTES,
            first_cap_bytes: DEFAULT_FIRST_BUCKET_BYTES,
            overlap: true,
        }
    }
}

impl BucketConfig {
    /// DDP's `bucket_cap_mb`: `None` is the default (1 MiB first bucket,
    /// then 25 MiB); `Some(mb)` caps every bucket, the first one included,
    /// at `int(mb * 1024 * 1024)` bytes, as DDP does when it is given.
    pub fn from_cap_mb(cap_mb: Option<f64>) -> Result<Self> {
        let Some(mb) = cap_mb else {
            return Ok(Self::default());
        };
        if !(mb.is_finite() && mb > 0.0) {
            return Err(Error::Usage(format!(
                "--bucket-cap-mb must be a positive number of MiB, got {mb}"
            )));
        }
        let bytes = (mb * 1024.0 * 1024.0) as usize;
        Ok(Self {
            cap_bytes: bytes.max(1),
            first_cap_bytes: bytes.max(1),
            overlap: true,
        })
    }
}

/// Assigns tensors (by index into `sizes`: bytes and dtype) to buckets as
/// `torch.distributed._compute_bucket_assignment_by_size` does: tensors are
/// taken in `order`, a bucket per dtype fills until it holds at least the
/// current limit, and each closed bucket advances to the next limit (the
/// last one repeats). Unfilled buckets follow, in order of their dtype's
/// first appearance. Without a recorded order (`order = None`, tensors in
/// registration order) the buckets are sorted by their smallest index and
/// then reversed, as DDP's constructor does.
pub fn assign_buckets(
    sizes: &[(usize, Kind)],
    limits: &[usize],
    order: Option<&[usize]>,
) -> Vec<Vec<usize>> {
    let natural: Vec<usize> = (0..sizes.len()).collect();
    let indices = order.unwrap_or(&natural);
    let mut closed: Vec<Vec<usize>> = Vec::new();
    // Per dtype: (kind, open bucket, bytes in it, index of its limit).
    let mut open: Vec<(Kind, Vec<usize>, usize, usize)> = Vec::new();
    for &i in indices {
        let Some(&(bytes, kind)) = sizes.get(i) else {
            continue;
        };
        let slot = match open.iter().position(|(k, ..)| *k == kind) {
            Some(slot) => slot,
            None => {
                open.push((kind, Vec::new(), 0, 0));
                open.len() - 1
            }
        };
        let (_, bucket, size, limit) = &mut open[slot];
        bucket.push(i);
        *size += bytes;
        let cap = limits
            .get(*limit)
            .or(limits.last())
            .copied()
            .unwrap_or(usize::MAX);
        if *size >= cap {
            closed.push(std::mem::take(bucket));
            *size = 0;
            if *limit + 1 < limits.len() {
                *limit += 1;
            }
        }
    }
    closed.extend(
        open.into_iter()
            .map(|(_, b, ..)| b)
            .filter(|b| !b.is_empty()),
    );
    if order.is_none() {
        closed.sort_by_key(|b| b.iter().min().copied().unwrap_or(usize::MAX));
        closed.reverse();
    }
    closed
}

/// One bucket: which parameters, their flat buffer and a view per parameter.
struct Bucket {
    params: Vec<usize>,
    buffer: Tensor,
    views: Vec<Tensor>,
}

/// The reducer's state, shared with the hooks.
struct State {
    names: Vec<String>,
    params: Vec<Tensor>,
    buckets: Vec<Bucket>,
    /// Per parameter: (bucket, position in the bucket).
    locator: Vec<(usize, usize)>,
    /// Hooks act only on armed backward passes.
    armed: bool,
    /// Per parameter: its gradient is in its bucket this pass.
    marked: Vec<bool>,
    /// Per bucket: gradients still missing.
    pending: Vec<usize>,
    /// The next bucket to start (buckets start in order).
    next_bucket: usize,
    /// Started sums, in bucket order.
    in_flight: Vec<PendingSum>,
    /// When the first bucket of this pass started.
    first_start: Option<Instant>,
    /// The ready order of the first synchronized pass, until buckets are rebuilt.
    recorded: Option<Vec<usize>>,
    /// A failure inside a hook, reported by `finish_backward`.
    failure: Option<Error>,
    scale: f64,
    overlap: bool,
    transport: Arc<dyn GradientTransport>,
}

impl State {
    /// Lays the buckets out (one flat buffer each, views into it).
    fn layout(&mut self, assignment: Vec<Vec<usize>>) -> Result<()> {
        let mut locator = vec![(usize::MAX, 0); self.params.len()];
        let mut buckets = Vec::with_capacity(assignment.len());
        kiln_tensor::tch::no_grad(|| -> Result<()> {
            for (b, params) in assignment.into_iter().enumerate() {
                let first = params
                    .first()
                    .and_then(|&i| self.params.get(i))
                    .ok_or_else(|| Error::InvalidArgument("an empty gradient bucket".into()))?;
                let numel: i64 = params.iter().map(|&i| self.params[i].numel() as i64).sum();
                let buffer = Tensor::f_zeros([numel], (first.kind(), first.device()))?;
                let mut views = Vec::with_capacity(params.len());
                let mut offset = 0i64;
                for (pos, &i) in params.iter().enumerate() {
                    let p = &self.params[i];
                    let n = p.numel() as i64;
                    views.push(buffer.f_narrow(0, offset, n)?.f_view(p.size().as_slice())?);
                    offset += n;
                    locator[i] = (b, pos);
                }
                buckets.push(Bucket {
                    params,
                    buffer,
                    views,
                });
            }
            Ok(())
        })?;
        if let Some(i) = locator.iter().position(|(b, _)| *b == usize::MAX) {
            return Err(Error::InvalidArgument(format!(
                "parameter '{}' is in no gradient bucket",
                self.names[i]
            )));
        }
        self.locator = locator;
        self.buckets = buckets;
        Ok(())
    }

    /// A hook: parameter `i`'s gradient is accumulated.
    fn ready(&mut self, i: usize) {
        if !self.armed || self.failure.is_some() {
            return;
        }
        if let Err(err) = self.mark(i) {
            self.failure = Some(err);
        }
    }

    fn mark(&mut self, i: usize) -> Result<()> {
        let (b, pos) = self.locator[i];
        if std::mem::replace(&mut self.marked[i], true) {
            return Err(Error::InvalidArgument(format!(
                "the gradient of parameter '{}' was produced twice in one backward pass; data-parallel training reduces each gradient once",
                self.names[i]
            )));
        }
        if let Some(order) = &mut self.recorded {
            order.push(i);
        }
        kiln_tensor::tch::no_grad(|| -> Result<()> {
            let grad = self.params[i].f_grad()?;
            let _ = grad.f_mul_scalar_out(&self.buckets[b].views[pos], self.scale)?;
            Ok(())
        })?;
        self.pending[b] -= 1;
        if self.overlap {
            self.start_ready()?;
        }
        Ok(())
    }

    /// Starts every ready bucket from `next_bucket` on, in order.
    fn start_ready(&mut self) -> Result<()> {
        while self.next_bucket < self.buckets.len() && self.pending[self.next_bucket] == 0 {
            let sum = self
                .transport
                .start_sum(&self.buckets[self.next_bucket].buffer)?;
            self.first_start.get_or_insert_with(Instant::now);
            self.in_flight.push(sum);
            self.next_bucket += 1;
        }
        Ok(())
    }
}

/// What one synchronized backward pass spent on communication.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceTiming {
    /// Seconds the transport spent summing the buckets (all of them, from
    /// start to finish of each, whether hidden behind backward or not).
    pub comm_seconds: f64,
    /// Seconds [`Reducer::finish_backward`] took: waiting for the sums
    /// still running after backward, and copying the results back — the
    /// communication backward did not hide.
    pub exposed_seconds: f64,
    /// Seconds from the start of the first bucket's sum to the end of
    /// backward: the window in which communication can hide (0 without overlap).
    pub window_seconds: f64,
    /// Number of buckets.
    pub buckets: usize,
}

/// Gradient buckets and hooks over one model's parameters; see the module
/// docs. The hooks are removed when the reducer is dropped.
pub struct Reducer<'c> {
    dp: DataParallel<'c>,
    shared: Arc<Mutex<State>>,
    config: BucketConfig,
    /// Broadcast buffers before the next forward (DDP's `require_forward_param_sync`).
    sync_buffers: bool,
    timing: ReduceTiming,
    _hooks: Vec<PostAccumulateGradHook>,
}

impl std::fmt::Debug for Reducer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self
            .state()
            .map(|s| s.buckets.iter().map(|b| b.params.len()).collect())
            .unwrap_or_default();
        write!(f, "Reducer({:?}, buckets of {sizes:?} parameters)", self.dp)
    }
}

fn lock(shared: &Mutex<State>) -> Result<MutexGuard<'_, State>> {
    shared
        .lock()
        .map_err(|_| Error::InvalidArgument("the gradient reducer's state is poisoned".into()))
}

impl<'c> Reducer<'c> {
    /// Buckets over `params` (in PyTorch's order) with `config`, summed by
    /// `dp`'s gradient transport; registers one hook per parameter.
    pub fn new(
        dp: DataParallel<'c>,
        params: &[NamedParameter],
        config: BucketConfig,
    ) -> Result<Self> {
        if params.is_empty() {
            return Err(Error::InvalidArgument(
                "data-parallel training needs a model with parameters".into(),
            ));
        }
        let transport = dp.comm().gradient_transport()?;
        let world = dp.world_size().max(1);
        let sizes: Vec<(usize, Kind)> = params
            .iter()
            .map(|p| {
                (
                    p.tensor.numel() * p.tensor.kind().elt_size_in_bytes(),
                    p.tensor.kind(),
                )
            })
            .collect();
        let mut state = State {
            names: params.iter().map(|p| p.name.clone()).collect(),
            params: params.iter().map(|p| p.tensor.shallow_clone()).collect(),
            buckets: Vec::new(),
            locator: Vec::new(),
            armed: false,
            marked: vec![false; params.len()],
            pending: Vec::new(),
            next_bucket: 0,
            in_flight: Vec::new(),
            first_start: None,
            recorded: Some(Vec::with_capacity(params.len())),
            failure: None,
            scale: 1.0 / world as f64,
            overlap: config.overlap,
            transport,
        };
        // DDP's constructor: one bucket per dtype until the ready order is known.
        state.layout(assign_buckets(&sizes, &[usize::MAX], None))?;
        let shared = Arc::new(Mutex::new(state));
        let mut hooks = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let weak = Arc::downgrade(&shared);
            let hook = kiln_tensor::ops::register_post_accumulate_grad_hook(&p.tensor, move || {
                if let Some(shared) = weak.upgrade() {
                    if let Ok(mut state) = shared.lock() {
                        state.ready(i);
                    }
                }
            })
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot hook the gradient of parameter '{}': {e}",
                    p.name
                ))
            })?;
            hooks.push(hook);
        }
        Ok(Self {
            dp,
            shared,
            config,
            sync_buffers: true,
            timing: ReduceTiming::default(),
            _hooks: hooks,
        })
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        lock(&self.shared)
    }

    /// Each bucket's size in bytes, in the order they are summed.
    pub fn bucket_bytes(&self) -> Result<Vec<usize>> {
        let state = self.state()?;
        Ok(state
            .buckets
            .iter()
            .map(|b| b.buffer.numel() * b.buffer.kind().elt_size_in_bytes())
            .collect())
    }

    /// The buckets' parameters, by name, in the order they are summed.
    pub fn bucket_names(&self) -> Result<Vec<Vec<String>>> {
        let state = self.state()?;
        Ok(state
            .buckets
            .iter()
            .map(|b| b.params.iter().map(|&i| state.names[i].clone()).collect())
            .collect())
    }

    /// The settings.
    pub fn config(&self) -> BucketConfig {
        self.config
    }

    /// Timing of the last synchronized backward pass.
    pub fn last_timing(&self) -> ReduceTiming {
        self.timing
    }

    /// Arms the hooks: the next backward pass's gradients are averaged over
    /// ranks (call it only on the backward pass that ends an accumulation
    /// window; the others are DDP's `no_sync`). Sums left over from a pass
    /// that failed are waited for first.
    pub fn prepare_for_backward(&mut self) -> Result<()> {
        let leftover = {
            let mut state = self.state()?;
            state.armed = false;
            std::mem::take(&mut state.in_flight)
        };
        for sum in leftover {
            let _ = sum.wait();
        }
        let mut state = self.state()?;
        state.marked.iter_mut().for_each(|m| *m = false);
        state.pending = state.buckets.iter().map(|b| b.params.len()).collect();
        state.next_bucket = 0;
        state.first_start = None;
        state.failure = None;
        if let Some(order) = &mut state.recorded {
            order.clear();
        }
        state.armed = true;
        Ok(())
    }

    /// After an armed backward pass: waits for every bucket's sum and
    /// writes the averages into the parameters' gradients. Errors (on this
    /// rank; the caller ends the job) if a parameter got no gradient, as DDP
    /// does without `find_unused_parameters`. After the first synchronized
    /// pass the buckets are rebuilt in rank 0's gradient-ready order.
    pub fn finish_backward(&mut self) -> Result<ReduceTiming> {
        let start = Instant::now();
        let (in_flight, window_seconds) = {
            let mut state = self.state()?;
            if !state.armed {
                return Err(Error::InvalidArgument(
                    "finish_backward without prepare_for_backward".into(),
                ));
            }
            state.armed = false;
            if let Some(err) = state.failure.take() {
                return Err(err);
            }
            if let Some(i) = state.marked.iter().position(|m| !m) {
                return Err(Error::InvalidArgument(format!(
                    "parameter '{}' has no gradient; data-parallel training needs every parameter to take part in the loss",
                    state.names[i]
                )));
            }
            let window = state
                .first_start
                .map_or(0.0, |t| start.saturating_duration_since(t).as_secs_f64());
            state.start_ready()?;
            (std::mem::take(&mut state.in_flight), window)
        };
        let buckets = in_flight.len();
        let mut comm_seconds = 0.0;
        for sum in in_flight {
            comm_seconds += sum.wait()?;
        }
        let recorded = {
            let mut state = self.state()?;
            kiln_tensor::tch::no_grad(|| -> Result<()> {
                for bucket in &state.buckets {
                    for (&i, view) in bucket.params.iter().zip(&bucket.views) {
                        let mut grad = state.params[i].f_grad()?;
                        grad.f_copy_(view)?;
                    }
                }
                Ok(())
            })?;
            state.recorded.take()
        };
        self.timing = ReduceTiming {
            comm_seconds,
            exposed_seconds: start.elapsed().as_secs_f64(),
            window_seconds,
            buckets,
        };
        if let Some(order) = recorded {
            self.rebuild(order)?;
        }
        Ok(self.timing)
    }

    /// DDP's `_rebuild_buckets`: rank 0's ready order, shared with all
    /// ranks, cut at the first-bucket cap and then the cap.
    fn rebuild(&mut self, order: Vec<usize>) -> Result<()> {
        let mut state = self.state()?;
        let n = state.params.len();
        let buf = Tensor::f_from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>())?;
        drop(state);
        if buf.numel() != n {
            return Err(Error::InvalidArgument(format!(
                "{} of {n} gradients were ready in the first synchronized backward pass",
                buf.numel()
            )));
        }
        self.dp.comm().broadcast(&buf, 0)?;
        let order: Vec<usize> = Vec::<i64>::try_from(&buf)?
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let mut seen = vec![false; n];
        if order
            .iter()
            .any(|&i| i >= n || std::mem::replace(&mut seen[i], true))
        {
            return Err(Error::InvalidArgument(
                "rank 0's gradient order is not a permutation of this rank's parameters".into(),
            ));
        }
        state = self.state()?;
        let sizes: Vec<(usize, Kind)> = state
            .params
            .iter()
            .map(|p| (p.numel() * p.kind().elt_size_in_bytes(), p.kind()))
            .collect();
        let limits = [self.config.first_cap_bytes, self.config.cap_bytes];
        let assignment = assign_buckets(&sizes, &limits, Some(&order));
        state.layout(assignment)
    }

    /// Before a forward pass: broadcasts rank 0's buffers when the previous
    /// forward was a synchronized training forward (DDP's
    /// `broadcast_buffers=True`; the first forward always does).
    pub fn pre_forward(&mut self, model: &dyn Model) -> Result<()> {
        if self.sync_buffers {
            self.dp.broadcast_buffers(model)?;
        }
        Ok(())
    }

    /// After a forward pass: `synchronized` is whether it was a training
    /// forward whose backward pass will be averaged (not an evaluation, not
    /// a batch inside an accumulation window).
    pub fn post_forward(&mut self, synchronized: bool) {
        self.sync_buffers = synchronized;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(bytes: &[usize]) -> Vec<(usize, Kind)> {
        bytes.iter().map(|&b| (b, Kind::Float)).collect()
    }

    #[test]
    fn assignment_matches_ddp() {
        // The quickstart MLP (DDP logs: rebuilt_bucket_sizes 1071144, 1607680;
        // rebuilt_per_bucket_param_indices "5 4 3 2, 1 0").
        let sizes = f32s(&[1_605_632, 2048, 1_048_576, 2048, 20_480, 40]);
        let ready = [5, 4, 3, 2, 1, 0];
        let limits = [DEFAULT_FIRST_BUCKET_BYTES, DEFAULT_BUCKET_CAP_BYTES];
        assert_eq!(
            assign_buckets(&sizes, &limits, Some(&ready)),
            vec![vec![5, 4, 3, 2], vec![1, 0]]
        );
        // Before the first pass: one bucket, registration order.
        assert_eq!(
            assign_buckets(&sizes, &[usize::MAX], None),
            vec![vec![0, 1, 2, 3, 4, 5]]
        );
        // A cap for every bucket; buckets sorted by smallest index, reversed.
        assert_eq!(
            assign_buckets(&f32s(&[10, 10, 10, 10, 10]), &[20], None),
            vec![vec![4], vec![2, 3], vec![0, 1]]
        );
        // Dtypes fill their own buckets; unfilled ones follow in order of appearance.
        let mixed = vec![
            (8, Kind::Double),
            (4, Kind::Float),
            (8, Kind::Double),
            (4, Kind::Float),
        ];
        assert_eq!(
            assign_buckets(&mixed, &[16], Some(&[3, 2, 1, 0])),
            vec![vec![2, 0], vec![3, 1]]
        );
        assert_eq!(
            assign_buckets(&mixed, &[100], Some(&[0, 1, 2, 3])),
            vec![vec![0, 2], vec![1, 3]]
        );
    }

    #[test]
    fn bucket_caps_follow_ddp() -> Result<()> {
        assert_eq!(BucketConfig::from_cap_mb(None)?, BucketConfig::default());
        let c = BucketConfig::from_cap_mb(Some(0.5))?;
        assert_eq!((c.first_cap_bytes, c.cap_bytes), (524_288, 524_288));
        assert!(BucketConfig::from_cap_mb(Some(0.0)).is_err());
        assert!(BucketConfig::from_cap_mb(Some(f64::NAN)).is_err());
        Ok(())
    }
}
