//! Batches from a [`Dataset`], in PyTorch's order, with PyTorch's random
//! draws, on worker threads.
//!
//! Each pass of a `torch.utils.data.DataLoader` draws a base seed from the
//! global generator; a shuffled loader's `RandomSampler` then draws its own
//! seed and permutes with `randperm(n, generator)` on a fresh generator.
//! [`DataLoader::iter`] makes the same two draws in the same order, so the
//! global generator and the order match PyTorch's.
//!
//! With `workers` = N > 0, N threads build the batches as PyTorch's N worker
//! processes do: batch b of a pass goes to worker b mod N, each worker owns
//! a libtorch CPU generator seeded `base_seed + worker_id` at the start of
//! every pass (what `torch.manual_seed` does in a worker process), runs
//! libtorch's kernels on its own thread only (`torch.set_num_threads(1)` in
//! a worker), and up to `prefetch_factor × N` batches are in flight; the
//! batches reach the caller in order. With N = 0 the batches are built on
//! the calling thread with the global generator, as PyTorch's
//! single-process loader does. Either way, every random draw a dataset
//! makes comes from the generator PyTorch would use, so the same seed gives
//! the same batches as `DataLoader(dataset, batch_size, shuffle,
//! num_workers=N)`.
//!
//! A pass can be resumed at any batch ([`DataLoader::resume`]) from the
//! [`PassState`] a checkpoint kept: the seeds it drew and each worker's
//! generator state after the last batch the caller took from it.
//!
//! A loader of random batches ([`DataLoader::random_batches`]) is
//! nanoGPT's `get_batch` over any dataset: no permutation and no seeds per
//! pass; each batch draws its sample indices with `torch.randint(len,
//! (batch_size,))` from the global generator when it is built, on the
//! calling thread. Its passes are endless unless
//! [`DataLoader::batches_per_pass`] bounds them. nanoGPT draws the next
//! training batch ahead, between the forward and the backward pass of the
//! current one: [`Batches::draw_ahead`] draws it then and keeps its indices
//! in the loader ([`DataLoader::pending`], what a checkpoint keeps), to be
//! built by the next batch taken, in this pass or the next.
use crate::data::batch::{collate, Batch, Fields};
use crate::data::sampler::DistributedSampler;
use crate::data::Dataset;
use crate::{Error, Result};
use kiln_tensor::device::SerialAtenKernels;
use kiln_tensor::rng::{draw_seed, Generator, Mt19937};
use kiln_tensor::{Device, Kind, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// `DataLoader(dataset, batch_size, shuffle, num_workers, prefetch_factor)`;
/// the last short batch is kept.
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    fields: Arc<Fields>,
    batch_size: usize,
    shuffle: bool,
    sampler: Option<DistributedSampler>,
    epoch: AtomicU64,
    workers: usize,
    prefetch_factor: usize,
    device: Device,
    random: Option<RandomBatches>,
}

/// How a loader of random batches draws ([`DataLoader::random_batches`]).
#[derive(Debug, Clone)]
struct RandomBatches {
    /// Batches per pass (`usize::MAX`: endless).
    batches: usize,
    /// The sample indices of the batch drawn ahead, not yet taken.
    pending: Arc<Mutex<Option<Vec<i64>>>>,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("workers", &self.workers)
            .field("random", &self.random.is_some())
            .finish_non_exhaustive()
    }
}

/// What a pass drew and where its workers' generators stand: enough to
/// continue it exactly ([`DataLoader::resume`]).
#[derive(Debug, Default)]
pub struct PassState {
    /// The base seed the pass drew (workers are seeded `base_seed + id`).
    pub base_seed: u64,
    /// The `RandomSampler` seed, when the pass is shuffled.
    pub sampler_seed: Option<u64>,
    /// Each worker's generator state after the last batch taken from it
    /// (`None`: no batch taken yet, the worker starts from its seed). Empty
    /// without workers.
    pub worker_rng: Vec<Option<Tensor>>,
}

impl PassState {
    /// A copy (generator states are copied, not shared).
    pub fn duplicate(&self) -> Result<Self> {
        Ok(Self {
            base_seed: self.base_seed,
            sampler_seed: self.sampler_seed,
            worker_rng: self
                .worker_rng
                .iter()
                .map(|s| s.as_ref().map(kiln_tensor::ops::detached_clone).transpose())
                .collect::<kiln_tensor::Result<_>>()?,
        })
    }
}

/// The most worker threads a loader starts: past this, threads and their
/// stacks could fail to start mid-run (the OS's limits), far beyond any
/// gain (PyTorch suggests one worker per CPU).
pub const MAX_WORKERS: usize = 256;

/// Default batches in flight per worker (PyTorch's `prefetch_factor=2`).
pub const PREFETCH_FACTOR: usize = 2;

impl DataLoader {
    /// A loader over `dataset` without workers; `batch_size` must be at
    /// least 1.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize, shuffle: bool) -> Result<Self> {
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
            fields: Arc::new(dataset.fields()),
            dataset,
            batch_size,
            shuffle,
            sampler: None,
            epoch: AtomicU64::new(0),
            workers: 0,
            prefetch_factor: PREFETCH_FACTOR,
            device: Device::Cpu,
            random: None,
        })
    }

    /// A loader of random batches over `dataset` (nanoGPT's `get_batch`):
    /// each batch is the samples `torch.randint(len(dataset),
    /// (batch_size,))` names, drawn from the global generator when the
    /// batch is built (or drawn ahead, [`Batches::draw_ahead`]); passes are
    /// endless until [`DataLoader::batches_per_pass`] bounds them. No
    /// workers: the draws are the training thread's.
    pub fn random_batches(dataset: Arc<dyn Dataset>, batch_size: usize) -> Result<Self> {
        if dataset.is_empty() {
            return Err(Error::InvalidArgument(
                "cannot draw random batches from an empty dataset".into(),
            ));
        }
        let mut loader = Self::new(dataset, batch_size, false)?;
        loader.random = Some(RandomBatches {
            batches: usize::MAX,
            pending: Arc::new(Mutex::new(None)),
        });
        Ok(loader)
    }

    /// A loader of random batches yields `n` batches per pass (nanoGPT's
    /// `eval_iters` for an evaluation); other loaders are unchanged.
    pub fn batches_per_pass(mut self, n: usize) -> Self {
        if let Some(random) = &mut self.random {
            random.batches = n;
        }
        self
    }

    /// Whether batches are drawn at random ([`DataLoader::random_batches`]).
    pub fn is_random(&self) -> bool {
        self.random.is_some()
    }

    /// The sample indices of the batch a loader of random batches drew
    /// ahead and has not delivered yet: what a checkpoint keeps.
    pub fn pending(&self) -> Option<Vec<i64>> {
        self.random
            .as_ref()
            .and_then(|r| r.pending.lock().ok().and_then(|p| p.clone()))
    }

    /// Restores [`DataLoader::pending`] (a resumed run's); loaders that are
    /// not random ignore it.
    pub fn set_pending(&self, indices: Option<Vec<i64>>) -> Result<()> {
        if let Some(random) = &self.random {
            *lock(&random.pending)? = indices;
        }
        Ok(())
    }

    /// Draws the next batch's indices now when this loader draws random
    /// batches and holds none drawn ahead (nanoGPT's first `get_batch`,
    /// before its loop); other loaders draw nothing.
    pub fn draw_ahead(&self) -> Result<()> {
        match &self.random {
            Some(random) => draw_pending(&random.pending, self.dataset.len(), self.batch_size),
            None => Ok(()),
        }
    }

    /// Builds batches on `workers` threads with up to `prefetch_factor`
    /// batches in flight per worker (`num_workers`, `prefetch_factor`);
    /// 0 workers build them on the calling thread.
    pub fn workers(mut self, workers: usize, prefetch_factor: usize) -> Result<Self> {
        if prefetch_factor == 0 {
            return Err(Error::InvalidArgument(
                "prefetch_factor must be at least 1, got 0".into(),
            ));
        }
        if workers > MAX_WORKERS {
            return Err(Error::InvalidArgument(format!(
                "{workers} workers is more threads than a loader starts (at most {MAX_WORKERS})"
            )));
        }
        if workers > 0 && self.random.is_some() {
            return Err(Error::InvalidArgument(format!(
                "random batches are drawn on the training thread from the global generator, as nanoGPT's get_batch draws them; {workers} data workers cannot draw them (use 0)"
            )));
        }
        self.workers = workers;
        self.prefetch_factor = prefetch_factor;
        Ok(self)
    }

    /// Delivers batches on `device`: on CUDA, built in page-locked memory
    /// and copied without blocking (`pin_memory=True` and
    /// `.to(device, non_blocking=True)`).
    pub fn to_device(mut self, device: Device) -> Self {
        self.device = device;
        self
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
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Samples one pass reads: the dataset, or this rank's shard of it.
    pub fn samples(&self) -> usize {
        self.sampler
            .as_ref()
            .map_or(self.dataset.len(), |s| s.num_samples(self.dataset.len()))
    }

    /// The dataset this loader reads.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// What the fields of a batch are for.
    pub fn fields(&self) -> &Arc<Fields> {
        &self.fields
    }

    /// The number of worker threads.
    pub fn num_workers(&self) -> usize {
        self.workers
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches per pass (`len(dataloader)`; `usize::MAX` for
    /// the endless passes of a loader of random batches).
    pub fn len(&self) -> usize {
        match &self.random {
            Some(random) => random.batches,
            None => self.samples().div_ceil(self.batch_size),
        }
    }

    /// Whether a pass yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a pass, consuming the global generator as PyTorch does (a
    /// loader of random batches draws nothing before its batches).
    pub fn iter(&self) -> Result<Batches> {
        if self.random.is_some() {
            return self.resume(PassState::default(), 0);
        }
        let base_seed = draw_seed()?;
        // A DistributedSampler draws nothing from the global generator.
        let shuffled = self.shuffle && self.sampler.is_none();
        let sampler_seed = if shuffled { Some(draw_seed()?) } else { None };
        self.resume(
            PassState {
                base_seed,
                sampler_seed,
                worker_rng: Vec::new(),
            },
            0,
        )
    }

    /// Continues a pass that [`DataLoader::iter`] started, from batch
    /// `start_batch`, without drawing from the global generator: `state` is
    /// what [`Batches::state`] reported after batch `start_batch - 1`. With
    /// the same number of workers the pass continues exactly; with another
    /// number, the samples and their order are the same but each worker's
    /// generator starts from its seed (random draws of the datasets differ
    /// from the uninterrupted pass).
    pub fn resume(&self, state: PassState, start_batch: usize) -> Result<Batches> {
        let order = match &self.random {
            Some(_) => None,
            None => self.order(state.sampler_seed)?,
        };
        let batches = match &self.random {
            Some(random) => random.batches,
            None => order
                .as_ref()
                .map_or(self.dataset.len(), Vec::len)
                .div_ceil(self.batch_size),
        };
        let next = start_batch.min(batches);
        let mut worker_rng = state.worker_rng;
        if worker_rng.len() != self.workers {
            worker_rng = (0..self.workers).map(|_| None).collect();
        }
        let plan = Arc::new(Plan {
            dataset: self.dataset.clone(),
            fields: self.fields.clone(),
            order,
            batch_size: self.batch_size,
            pin: (self.device != Device::Cpu).then_some(self.device),
            pending: self.random.as_ref().map(|r| r.pending.clone()),
        });
        let source = if self.workers == 0 {
            Source::Here {
                rng: Generator::global()?,
            }
        } else {
            Source::Workers(Pool::start(
                &plan,
                self.workers,
                self.prefetch_factor,
                state.base_seed,
                &worker_rng,
                next,
                batches,
            )?)
        };
        Ok(Batches {
            plan,
            device: self.device,
            base_seed: state.base_seed,
            sampler_seed: state.sampler_seed,
            worker_rng,
            next,
            batches,
            source,
        })
    }

    /// The pass's sample order: `None` for file order.
    fn order(&self, sampler_seed: Option<u64>) -> Result<Option<Vec<i64>>> {
        let n = self.dataset.len();
        match (&self.sampler, self.shuffle, sampler_seed) {
            (Some(sampler), _, None) => Ok(Some(
                sampler.indices(self.epoch.load(Ordering::Relaxed), n)?,
            )),
            (Some(_), _, Some(_)) => Err(Error::InvalidArgument(
                "a distributed pass has no sampler seed".into(),
            )),
            (None, true, Some(seed)) => Ok(Some(Mt19937::new(seed).randperm(n)?)),
            (None, false, None) => Ok(None),
            (None, true, None) => Err(Error::InvalidArgument(
                "resuming a shuffled pass needs its sampler seed".into(),
            )),
            (None, false, Some(_)) => Err(Error::InvalidArgument(
                "an unshuffled pass has no sampler seed".into(),
            )),
        }
    }
}

/// What every batch of a pass is built from (shared with the workers).
struct Plan {
    dataset: Arc<dyn Dataset>,
    fields: Arc<Fields>,
    order: Option<Vec<i64>>,
    batch_size: usize,
    /// Build batches in page-locked memory for copies to this device.
    pin: Option<Device>,
    /// Random batches: the indices drawn ahead (shared with the loader).
    pending: Option<Arc<Mutex<Option<Vec<i64>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::InvalidArgument("a data loader's lock was poisoned".into()))
}

/// `torch.randint(n, (batch_size,))` on the global generator, kept as the
/// batch drawn ahead unless one is kept already.
fn draw_pending(pending: &Mutex<Option<Vec<i64>>>, n: usize, batch_size: usize) -> Result<()> {
    let mut slot = lock(pending)?;
    if slot.is_none() {
        *slot = Some(draw_indices(n, batch_size)?);
    }
    Ok(())
}

/// nanoGPT's `torch.randint(len(data) - block_size, (batch_size,))`.
fn draw_indices(n: usize, batch_size: usize) -> Result<Vec<i64>> {
    let ix = Tensor::f_randint(n as i64, [batch_size as i64], (Kind::Int64, Device::Cpu))?;
    Ok(Vec::<i64>::try_from(&ix)?)
}

impl Plan {
    /// The sample indices of batch `b`.
    fn indices(&self, b: usize) -> Vec<i64> {
        let start = b * self.batch_size;
        match &self.order {
            Some(order) => {
                let end = (start + self.batch_size).min(order.len());
                order.get(start..end).unwrap_or_default().to_vec()
            }
            None => {
                let end = (start + self.batch_size).min(self.dataset.len());
                (start as i64..end as i64).collect()
            }
        }
    }

    /// Batch `b`, drawing from `rng`: the dataset's batched read, or
    /// `collate` of its samples. A sample that cannot be read names itself.
    fn build(&self, b: usize, rng: &mut Generator) -> Result<Batch> {
        let indices = match &self.pending {
            // A random batch: the one drawn ahead, else drawn now.
            Some(pending) => match lock(pending)?.take() {
                Some(indices) => indices,
                None => draw_indices(self.dataset.len(), self.batch_size)?,
            },
            None => self.indices(b),
        };
        let batched = guarded(|| self.dataset.get_batch(&indices, rng))
            .map_err(|e| Error::InvalidArgument(format!("batch {b}: {e}")))?;
        let batch = match batched {
            Some(stacked) => Batch::new(stacked.into_fields(), self.fields.clone()),
            None => {
                let samples = indices
                    .iter()
                    .map(|&i| {
                        guarded(|| self.dataset.get(i as usize, rng))
                            .map_err(|e| self.name_sample(i as usize, e))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.check_shapes(&indices, &samples)?;
                collate(samples, self.fields.clone())?
            }
        };
        match self.pin {
            Some(device) => batch.pinned(device),
            None => Ok(batch),
        }
    }

    /// Samples of one batch must stack: the first one whose fields' shapes
    /// differ from the first sample's is named, with both shapes.
    fn check_shapes(&self, indices: &[i64], samples: &[crate::data::Sample]) -> Result<()> {
        let shapes = |s: &crate::data::Sample| -> Vec<(String, Vec<i64>)> {
            s.fields()
                .iter()
                .map(|(n, t)| (n.clone(), t.size()))
                .collect()
        };
        let Some(first) = samples.first().map(shapes) else {
            return Ok(());
        };
        let Some((k, other)) = samples
            .iter()
            .map(shapes)
            .enumerate()
            .find(|(_, s)| *s != first)
        else {
            return Ok(());
        };
        let describe = |k: usize| {
            indices
                .get(k)
                .map_or_else(String::new, |&i| self.dataset.describe(i as usize))
        };
        let show = |fields: &[(String, Vec<i64>)]| {
            fields
                .iter()
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::Sample {
            sample: describe(k),
            source: Box::new(Error::InvalidArgument(format!(
                "{} in a batch with {} ({}): the samples of a batch stack only with equal shapes",
                show(&other),
                describe(0),
                show(&first)
            ))),
        })
    }

    fn name_sample(&self, index: usize, err: Error) -> Error {
        match err {
            // Already names its sample (or file).
            Error::Sample { .. } | Error::Data { .. } => err,
            other => Error::Sample {
                sample: self.dataset.describe(index),
                source: Box::new(other),
            },
        }
    }
}

enum Source {
    /// No workers: batches built on the calling thread, drawing from `rng`
    /// (the global generator, as PyTorch's single-process loader).
    Here { rng: Generator },
    /// Worker threads.
    Workers(Pool),
}

/// One pass over a [`DataLoader`]: yields its batches in order.
pub struct Batches {
    plan: Arc<Plan>,
    device: Device,
    base_seed: u64,
    sampler_seed: Option<u64>,
    worker_rng: Vec<Option<Tensor>>,
    next: usize,
    batches: usize,
    source: Source,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("next", &self.next)
            .field("batches", &self.batches)
            .finish_non_exhaustive()
    }
}

impl Batches {
    /// The `RandomSampler` seed of this pass (`None` when not shuffled).
    pub fn sampler_seed(&self) -> Option<u64> {
        self.sampler_seed
    }

    /// nanoGPT's next `get_batch` between forward and backward: a loader of
    /// random batches draws the next batch's indices now (unless it holds
    /// some already), so the generator's draws follow nanoGPT's order;
    /// other loaders do nothing.
    pub fn draw_ahead(&self) -> Result<()> {
        match &self.plan.pending {
            Some(pending) => draw_pending(pending, self.plan.dataset.len(), self.plan.batch_size),
            None => Ok(()),
        }
    }

    /// Where the pass stands after the batches taken so far: what
    /// [`DataLoader::resume`] needs to continue with the next one.
    pub fn state(&self) -> Result<PassState> {
        PassState {
            base_seed: self.base_seed,
            sampler_seed: self.sampler_seed,
            worker_rng: self
                .worker_rng
                .iter()
                .map(|s| s.as_ref().map(Tensor::shallow_clone))
                .collect(),
        }
        .duplicate()
    }

    fn take_next(&mut self) -> Result<Batch> {
        let b = self.next;
        let batch = match &mut self.source {
            Source::Here { rng } => self.plan.build(b, rng)?,
            Source::Workers(pool) => {
                let (batch, worker, state) = pool.receive(b)?;
                if let Some(slot) = self.worker_rng.get_mut(worker) {
                    *slot = Some(state);
                }
                pool.dispatch_next()?;
                batch
            }
        };
        batch.to_device(self.device, self.device != Device::Cpu)
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches {
            return None;
        }
        let batch = self.take_next();
        // An error ends the pass.
        self.next = if batch.is_ok() {
            self.next + 1
        } else {
            self.batches
        };
        Some(batch)
    }
}

/// What a worker sends back: the batch (or why not), its worker, and the
/// worker's generator state after building it.
type Delivery = (usize, Result<Batch>, usize, Option<Tensor>);

/// The worker threads of one pass.
struct Pool {
    tasks: Vec<Option<mpsc::Sender<usize>>>,
    results: mpsc::Receiver<Delivery>,
    handles: Vec<Option<JoinHandle<()>>>,
    /// Batches delivered out of order, by index.
    early: BTreeMap<usize, (Result<Batch>, usize, Option<Tensor>)>,
    /// The next batch to hand to a worker.
    dispatched: usize,
    batches: usize,
}

impl Pool {
    /// Starts `workers` threads, each seeded `base_seed + id` (or restored
    /// from `rng`), and hands out the first `prefetch × workers` batches
    /// from `first`.
    fn start(
        plan: &Arc<Plan>,
        workers: usize,
        prefetch: usize,
        base_seed: u64,
        rng: &[Option<Tensor>],
        first: usize,
        batches: usize,
    ) -> Result<Self> {
        let (deliver, results) = mpsc::channel::<Delivery>();
        let mut tasks = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for id in 0..workers {
            let mut generator = Generator::new(base_seed.wrapping_add(id as u64))?;
            if let Some(Some(state)) = rng.get(id) {
                generator.set_state(state)?;
            }
            let (task, inbox) = mpsc::channel::<usize>();
            let plan = plan.clone();
            let deliver = deliver.clone();
            let handle = std::thread::Builder::new()
                .name(format!("kiln-data-{id}"))
                .spawn(move || worker(id, &plan, generator, &inbox, &deliver))
                .map_err(|e| {
                    Error::InvalidArgument(format!("cannot start data worker {id}: {e}"))
                })?;
            tasks.push(Some(task));
            handles.push(Some(handle));
        }
        let mut pool = Self {
            tasks,
            results,
            handles,
            early: BTreeMap::new(),
            dispatched: first,
            batches,
        };
        for _ in 0..prefetch * workers {
            pool.dispatch_next()?;
        }
        Ok(pool)
    }

    /// Hands the next batch to its worker (batch b to worker b mod N).
    fn dispatch_next(&mut self) -> Result<()> {
        if self.dispatched >= self.batches {
            return Ok(());
        }
        let b = self.dispatched;
        let id = b % self.tasks.len();
        self.dispatched += 1;
        match self.tasks.get(id).and_then(Option::as_ref) {
            // A worker that is gone is reported when its batch is awaited.
            Some(task) => {
                let _ = task.send(b);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Waits for batch `b`; an error, a failed worker or a worker that
    /// stopped without answering ends the pass with one line.
    fn receive(&mut self, b: usize) -> Result<(Batch, usize, Tensor)> {
        loop {
            if let Some((batch, worker, state)) = self.early.remove(&b) {
                let state = state.ok_or_else(|| {
                    Error::InvalidArgument(format!("data worker {worker} lost its generator"))
                })?;
                return Ok((batch?, worker, state));
            }
            match self.results.recv_timeout(Duration::from_millis(200)) {
                Ok((index, batch, worker, state)) => {
                    self.early.insert(index, (batch, worker, state));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.check_alive(b)?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(self.died(b % self.tasks.len()))
                }
            }
        }
    }

    /// Errors if the worker that owes batch `b` has ended.
    fn check_alive(&mut self, b: usize) -> Result<()> {
        let id = b % self.tasks.len();
        let finished = self
            .handles
            .get(id)
            .and_then(Option::as_ref)
            .is_none_or(JoinHandle::is_finished);
        if finished {
            // It may have delivered just before ending.
            if let Ok((index, batch, worker, state)) = self.results.try_recv() {
                self.early.insert(index, (batch, worker, state));
                return Ok(());
            }
            return Err(self.died(id));
        }
        Ok(())
    }

    fn died(&mut self, id: usize) -> Error {
        let why = match self.handles.get_mut(id).and_then(Option::take) {
            Some(handle) => match handle.join() {
                Ok(()) => "it stopped".to_string(),
                Err(payload) => panic_text(payload.as_ref()),
            },
            None => "it stopped".to_string(),
        };
        Error::InvalidArgument(format!("data worker {id} failed: {why}"))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the task channels ends the workers after their current batch.
        self.tasks.iter_mut().for_each(|t| drop(t.take()));
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            let _ = handle.join();
        }
    }
}

/// How a caught panic's error starts.
const PANICKED: &str = "panicked: ";

/// `f()`, with a panic (a dataset's, say) turned into an error carrying its
/// message's first line: a panic never unwinds through the training loop
/// or leaves a pass waiting.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(Error::InvalidArgument(format!(
            "{PANICKED}{}",
            panic_text(payload.as_ref())
        )))
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("it panicked")
        .lines()
        .next()
        .unwrap_or("it panicked")
        .to_string()
}

/// A worker thread: builds the batches it is handed, in order, drawing from
/// its own generator, on one thread of libtorch kernels.
fn worker(
    id: usize,
    plan: &Plan,
    mut rng: Generator,
    inbox: &mpsc::Receiver<usize>,
    deliver: &mpsc::Sender<Delivery>,
) {
    // PyTorch's worker loop calls torch.set_num_threads(1).
    let _serial = SerialAtenKernels::for_worker_thread();
    while let Ok(b) = inbox.recv() {
        // The dataset's own panics are caught where they name the sample;
        // this one keeps the pass from waiting on a worker that died.
        let built = guarded(|| plan.build(b, &mut rng)).map_err(|e| match e {
            Error::InvalidArgument(text) if text.starts_with(PANICKED) => {
                Error::InvalidArgument(format!("data worker {id}, batch {b}: {text}"))
            }
            other => other,
        });
        let state = rng.state().ok();
        if deliver.send((b, built, id, state)).is_err() {
            return;
        }
    }
}
