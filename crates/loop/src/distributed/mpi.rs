//! The [`Collective`] over MPI (rsmpi on the system's MPI library), with a
//! watchdog that aborts the whole job when a collective does not complete
//! in time (a rank died, hangs or took another code path).
//!
//! Gradient buckets ([`GradientTransport`]) are summed by a communication
//! thread on a duplicate of `MPI_COMM_WORLD`, as PyTorch's gloo backend runs
//! its collectives on worker threads: a bucket is handed over the moment
//! its last gradient is ready (from an autograd hook) and summed while
//! backward goes on; the trainer waits for it, under the watchdog, before
//! the optimizer step (and sums the buckets nobody has started yet itself,
//! in order). The sum reproduces gloo's ring order ([`ring`]):
//! `MPI_Ialltoallv` gives each rank its chunk from every rank, the rank adds
//! them in gloo's grouping, and `MPI_Iallgatherv` shares the sums; the
//! requests are tested with a yield in between, so a waiting thread leaves
//! its core to backward. (A plain
//! `MPI_Iallreduce` would leave the grouping to the MPI library — the same
//! bits as gloo on two ranks only — and Open MPI makes no progress on a
//! non-blocking collective between MPI calls, so overlap needs a thread
//! either way.)
use super::ring::{self, GLOO_MAX_SEGMENT_BYTES};
use super::{Collective, GradientTransport, PendingSum, ReduceOp};
use crate::notice::{Notice, Notices};
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use mpi::ffi;
use mpi::traits::Communicator;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the watchdog watches: the collective in flight and since when.
#[derive(Default)]
pub(crate) struct Watch {
    in_flight: Mutex<Option<(&'static str, Instant)>>,
    stop: AtomicBool,
    /// Told why the watchdog ends the job, before it does.
    notices: Mutex<Notices>,
}

impl Watch {
    /// Runs `f` as the collective `what`: the watchdog aborts every rank if
    /// it has not returned within the timeout.
    pub(crate) fn watched<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((what, Instant::now()));
        let out = f();
        *self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        out
    }
}

/// A bucket to sum, numbered in the order it was started.
struct Job {
    id: u64,
    bucket: Tensor,
}

/// The buckets waiting to be summed, in order, and the results.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    next_id: u64,
    /// Sums started so far (for fault injection).
    started: usize,
    /// A sum is running (on the bucket thread or on a waiting thread).
    busy: bool,
    /// MPI is shutting down: no more sums.
    closed: bool,
    results: HashMap<u64, Result<f64>>,
}

/// Gradient-bucket sums on a communicator of their own. The bucket thread
/// takes buckets in order as they are started (during backward); a thread
/// that waits for a sum runs the queued ones itself, in order, when the
/// bucket thread has not taken them yet, which saves two thread wake-ups
/// for the buckets that are only ready at the end of backward. One sum
/// runs at a time, so the communicator's collectives keep the same order on
/// every rank.
struct Buckets {
    queue: Mutex<Queue>,
    changed: Condvar,
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    /// Fault injection: be killed in the middle of this sum (see [`injected_fault`]).
    fault: Option<usize>,
    watch: Arc<Watch>,
}

// SAFETY: MPI is initialized with MPI_THREAD_MULTIPLE (checked in
// `Mpi::init`); the communicator handle is used by one thread at a time (the
// `busy` flag under `queue`'s lock) and freed by `Mpi::drop` only after the
// queue is closed, its sums are done and the bucket thread has ended.
unsafe impl Send for Buckets {}
// SAFETY: as above; all other state is behind the mutex.
unsafe impl Sync for Buckets {}

impl Buckets {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the oldest queued sum (the caller holds `queue`, which is not
    /// busy and not empty) with the lock released, records its result and
    /// returns the lock again.
    fn run_front<'a>(&'a self, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let Some(job) = queue.jobs.pop_front() else {
            return queue;
        };
        queue.busy = true;
        let die = self.fault == Some(queue.started);
        queue.started += 1;
        drop(queue);
        if die {
            let notices = self
                .watch
                .notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            notices.warn(format!(
                "rank {}: killing itself in the middle of a gradient bucket (KILN_TEST_KILL_IN_BUCKET)",
                self.rank
            ));
        }
        let start = Instant::now();
        let result = sum_in_gloo_order(self.comm, self.rank, self.size, &job.bucket, die)
            .map(|()| start.elapsed().as_secs_f64());
        let mut queue = self.lock();
        queue.busy = false;
        queue.results.insert(job.id, result);
        self.changed.notify_all();
        queue
    }

    /// The bucket thread: sums queued buckets until the queue closes.
    fn serve(&self) {
        let mut queue = self.lock();
        loop {
            if !queue.busy && !queue.jobs.is_empty() {
                queue = self.run_front(queue);
            } else if queue.closed {
                return;
            } else {
                queue = self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Waits for sum `id`, running queued sums (in order) while nobody else does.
    fn wait(&self, id: u64) -> Result<f64> {
        let mut queue = self.lock();
        loop {
            if let Some(result) = queue.results.remove(&id) {
                return result;
            }
            if !queue.busy && !queue.jobs.is_empty() {
                queue = self.run_front(queue);
            } else if queue.closed && !queue.busy && queue.jobs.is_empty() {
                return Err(Error::InvalidArgument(
                    "MPI is shut down: the gradient bucket was not summed".into(),
                ));
            } else {
                queue = self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

impl GradientTransport for Arc<Buckets> {
    fn start_sum(&self, bucket: &Tensor) -> Result<PendingSum> {
        raw_buffer(bucket)?;
        if !matches!(bucket.kind(), Kind::Float | Kind::Double) {
            return Err(Error::InvalidArgument(format!(
                "gradient buckets over MPI are float32 or float64, not {:?}",
                bucket.kind()
            )));
        }
        let id = {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Error::InvalidArgument(
                    "MPI is shut down: no gradient bucket can be summed".into(),
                ));
            }
            let id = queue.next_id;
            queue.next_id += 1;
            queue.jobs.push_back(Job {
                id,
                bucket: bucket.shallow_clone(),
            });
            id
        };
        self.changed.notify_all();
        let buckets = Arc::clone(self);
        Ok(PendingSum::new(move || {
            let watch = Arc::clone(&buckets.watch);
            watch.watched("gradient bucket all-reduce", || buckets.wait(id))
        }))
    }
}

/// MPI's `MPI_COMM_WORLD`; created once per process by [`Mpi::init`] and
/// finalized when dropped.
pub struct Mpi {
    rank: usize,
    size: usize,
    timeout: Duration,
    watch: Arc<Watch>,
    watchdog: Option<JoinHandle<()>>,
    buckets: Arc<Buckets>,
    bucket_thread: Option<JoinHandle<()>>,
    // Dropped last: `MPI_Finalize`.
    _universe: mpi::environment::Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mpi(rank {} of {}, timeout {:?})",
            self.rank, self.size, self.timeout
        )
    }
}

fn world() -> ffi::MPI_Comm {
    // SAFETY: a constant handle exported by the MPI library.
    unsafe { ffi::RSMPI_COMM_WORLD }
}

fn abort_world(code: i32) -> ! {
    // SAFETY: MPI is initialized (only an `Mpi` calls this) with
    // MPI_THREAD_MULTIPLE requested, so any thread may call MPI_Abort.
    unsafe {
        ffi::MPI_Abort(world(), code);
    }
    // MPI_Abort does not return; should it, end this process anyway.
    std::process::exit(code)
}

impl Mpi {
    /// Initializes MPI (rank and world size from `mpirun`/`srun`; a process
    /// started alone is a world of one) and starts the watchdog: a
    /// collective that has not completed after `timeout` prints which one
    /// and aborts every rank.
    pub fn init(timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "the collective timeout must be positive".into(),
            ));
        }
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| {
                Error::InvalidArgument("MPI is already initialized in this process".into())
            })?;
        if threading != mpi::Threading::Multiple {
            return Err(Error::InvalidArgument(format!(
                "the MPI library provides {threading:?} threading; kiln sums gradient buckets on a thread of its own and needs MPI_THREAD_MULTIPLE"
            )));
        }
        let comm = universe.world();
        let (rank, size) = (comm.rank(), comm.size());
        let rank = usize::try_from(rank)
            .map_err(|_| Error::InvalidArgument(format!("MPI gave rank {rank}")))?;
        let size = usize::try_from(size)
            .map_err(|_| Error::InvalidArgument(format!("MPI gave world size {size}")))?;
        let watch = Arc::new(Watch::default());
        let watched = Arc::clone(&watch);
        let watchdog = std::thread::Builder::new()
            .name("kiln-mpi-watchdog".into())
            .spawn(move || {
                let tick = Duration::from_millis(50).min(timeout);
                while !watched.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let late = *watched.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some((what, since)) = late {
                        if since.elapsed() >= timeout {
                            let notices = watched
                                .notices
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .clone();
                            notices.send(Notice::RankFailed {
                                rank,
                                world: size,
                                error: format!(
                                    "{what} did not complete within {} s (a rank died, hangs or diverged); aborting all {size} ranks",
                                    timeout.as_secs_f64()
                                ),
                            });
                            abort_world(1);
                        }
                    }
                }
            })?;
        // The bucket thread's own communicator, so that its collectives never
        // interleave with the ones the main thread calls.
        let mut dup: ffi::MPI_Comm = world();
        // SAFETY: MPI is initialized; every rank calls this collectively here.
        check(
            unsafe { ffi::MPI_Comm_dup(world(), &mut dup) },
            "MPI_Comm_dup",
        )?;
        let buckets = Arc::new(Buckets {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            comm: dup,
            rank,
            size,
            fault: injected_fault(rank),
            watch: Arc::clone(&watch),
        });
        let served = Arc::clone(&buckets);
        let bucket_thread = std::thread::Builder::new()
            .name("kiln-mpi-buckets".into())
            .spawn(move || served.serve())?;
        Ok(Self {
            rank,
            size,
            timeout,
            buckets,
            bucket_thread: Some(bucket_thread),
            watch,
            watchdog: Some(watchdog),
            _universe: universe,
        })
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The MPI library's version string.
    pub fn library_version() -> String {
        mpi::environment::library_version().unwrap_or_else(|_| "unknown MPI".into())
    }

    /// Runs `f` under the watchdog, as the collective `what`.
    pub(crate) fn watched<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        self.watch.watched(what, f)
    }

    /// The watchdog, for transports built on this communicator.
    #[cfg(feature = "nccl")]
    pub(crate) fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.watch)
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        // The bucket thread ends once its queue closes and the sums queued
        // before are done (there are none unless a failed step left some
        // behind: the watchdog covers that wait); then the communicator goes.
        self.buckets.lock().closed = true;
        self.buckets.changed.notify_all();
        if let Some(handle) = self.bucket_thread.take() {
            let _ = self
                .watch
                .watched("finishing gradient bucket sums", || handle.join());
        }
        let mut queue = self.buckets.lock();
        while queue.busy {
            queue = self
                .buckets
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(queue);
        let mut comm = self.buckets.comm;
        // SAFETY: the communicator came from MPI_Comm_dup; the bucket thread
        // has ended and no sum runs (a later start_sum is refused).
        unsafe {
            ffi::MPI_Comm_free(&mut comm);
        }
        self.watch.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.watchdog.take() {
            let _ = handle.join();
        }
    }
}

/// A contiguous CPU tensor's MPI datatype, element count and data pointer.
fn raw_buffer(buf: &Tensor) -> Result<(ffi::MPI_Datatype, usize, *mut std::ffi::c_void)> {
    if buf.device() != Device::Cpu {
        return Err(Error::InvalidArgument(format!(
            "MPI collectives take CPU tensors, got one on {:?} (use the nccl feature for CUDA)",
            buf.device()
        )));
    }
    if !buf.is_contiguous() {
        return Err(Error::InvalidArgument(
            "MPI collectives need a contiguous tensor".into(),
        ));
    }
    // SAFETY: constant handles exported by the MPI library.
    let dtype = unsafe {
        match buf.kind() {
            Kind::Float => ffi::RSMPI_FLOAT,
            Kind::Double => ffi::RSMPI_DOUBLE,
            Kind::Int64 => ffi::RSMPI_INT64_T,
            Kind::Int => ffi::RSMPI_INT32_T,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "MPI collectives do not take {other:?} tensors"
                )))
            }
        }
    };
    Ok((dtype, buf.numel(), buf.data_ptr()))
}

fn check(code: i32, what: &str) -> Result<()> {
    if code == ffi::MPI_SUCCESS as i32 {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} failed with MPI error code {code}"
        )))
    }
}

/// Elements per MPI call (counts are C `int`s).
const CHUNK: usize = i32::MAX as usize;

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn set_notices(&self, notices: Notices) {
        *self
            .watch
            .notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = notices;
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()> {
        let (dtype, count, recv) = raw_buffer(buf)?;
        // rsmpi exposes no MPI_IN_PLACE: reduce from a copy into `buf`.
        let send_tensor = kiln_tensor::ops::detached_clone(buf)?;
        let send = send_tensor.data_ptr();
        let elem = buf.kind().elt_size_in_bytes();
        // SAFETY: constant handles exported by the MPI library.
        let op = unsafe {
            match op {
                ReduceOp::Sum => ffi::RSMPI_SUM,
                ReduceOp::Max => ffi::RSMPI_MAX,
                ReduceOp::Min => ffi::RSMPI_MIN,
            }
        };
        self.watched("all-reduce", || {
            let mut done = 0;
            while done < count {
                let n = (count - done).min(CHUNK);
                // SAFETY: `send` and `recv` are distinct live contiguous
                // buffers of `count` elements of `dtype`; every rank passes
                // the same count and type (the trainer's invariant).
                let code = unsafe {
                    ffi::MPI_Allreduce(
                        send.cast::<u8>().add(done * elem).cast(),
                        recv.cast::<u8>().add(done * elem).cast(),
                        n as i32,
                        dtype,
                        op,
                        world(),
                    )
                };
                check(code, "MPI_Allreduce")?;
                done += n;
            }
            Ok(())
        })
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::InvalidArgument(format!(
                "broadcast root {root} is not a rank of {}",
                self.size
            )));
        }
        let (dtype, count, ptr) = raw_buffer(buf)?;
        let elem = buf.kind().elt_size_in_bytes();
        self.watched("broadcast", || {
            let mut done = 0;
            while done < count {
                let n = (count - done).min(CHUNK);
                // SAFETY: `ptr` is a live contiguous buffer of `count`
                // elements of `dtype`.
                let code = unsafe {
                    ffi::MPI_Bcast(
                        ptr.cast::<u8>().add(done * elem).cast(),
                        n as i32,
                        dtype,
                        root as i32,
                        world(),
                    )
                };
                check(code, "MPI_Bcast")?;
                done += n;
            }
            Ok(())
        })
    }

    fn abort(&self, code: i32) -> ! {
        abort_world(code)
    }

    fn gradient_transport(&self) -> Result<Arc<dyn GradientTransport>> {
        Ok(Arc::new(Arc::clone(&self.buckets)) as Arc<dyn GradientTransport>)
    }
}

/// Fault injection for the tests of a rank that dies in the middle of a
/// bucket: with `KILN_TEST_KILL_IN_BUCKET=R:N` in its environment, rank `R`
/// kills itself (SIGKILL) during its `N`-th bucket sum (counted from 0),
/// after the exchange and before the gather, while its peers wait for it.
fn injected_fault(rank: usize) -> Option<usize> {
    let spec = std::env::var("KILN_TEST_KILL_IN_BUCKET").ok()?;
    let (r, n) = spec.split_once(':')?;
    (r.trim().parse::<usize>().ok()? == rank).then_some(())?;
    n.trim().parse().ok()
}

/// Sums `bucket` (float32 or float64, contiguous, CPU) over the ranks of
/// `comm` in place, in gloo's ring order (see [`ring`]); `die`: be
/// killed half-way (fault injection, see [`injected_fault`]).
fn sum_in_gloo_order(
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    bucket: &Tensor,
    die: bool,
) -> Result<()> {
    // SAFETY: constant handles exported by the MPI library.
    match bucket.kind() {
        Kind::Float => sum_typed::<f32>(comm, rank, size, bucket, unsafe { ffi::RSMPI_FLOAT }, die),
        Kind::Double => {
            sum_typed::<f64>(comm, rank, size, bucket, unsafe { ffi::RSMPI_DOUBLE }, die)
        }
        other => Err(Error::InvalidArgument(format!(
            "gradient buckets over MPI are float32 or float64, not {other:?}"
        ))),
    }
}

fn count(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!(
            "a gradient bucket of {n} elements is too large for MPI's int counts; lower --bucket-cap-mb"
        ))
    })
}

fn sum_typed<T: Copy + Default + std::ops::Add<Output = T>>(
    comm: ffi::MPI_Comm,
    rank: usize,
    size: usize,
    bucket: &Tensor,
    dtype: ffi::MPI_Datatype,
    die: bool,
) -> Result<()> {
    let n = bucket.numel();
    let (_, _, ptr) = raw_buffer(bucket)?;
    let chunks = ring::chunks(n, std::mem::size_of::<T>(), size, GLOO_MAX_SEGMENT_BYTES);
    let mine = chunks.get(rank).cloned().unwrap_or(0..0);
    let len = mine.len();
    let counts: Vec<i32> = chunks
        .iter()
        .map(|c| count(c.len()))
        .collect::<Result<_>>()?;
    let displs: Vec<i32> = chunks
        .iter()
        .map(|c| count(c.start))
        .collect::<Result<_>>()?;
    let recv_counts = vec![count(len)?; size];
    let recv_displs: Vec<i32> = (0..size).map(|r| count(r * len)).collect::<Result<_>>()?;
    let mut gathered = vec![T::default(); size * len];
    let mut request = null_request();
    // SAFETY: `ptr` is the live contiguous CPU buffer of `n` elements of `T`
    // (checked by raw_buffer and the caller's dtype match); counts and
    // displacements stay inside it and inside `gathered`, which outlive the
    // request (waited for below); every rank passes the same chunking (same
    // bucket sizes, in the same order).
    let code = unsafe {
        ffi::MPI_Ialltoallv(
            ptr.cast_const(),
            counts.as_ptr(),
            displs.as_ptr(),
            dtype,
            gathered.as_mut_ptr().cast(),
            recv_counts.as_ptr(),
            recv_displs.as_ptr(),
            dtype,
            comm,
            &mut request,
        )
    };
    check(code, "MPI_Ialltoallv")?;
    wait_yielding(&mut request, "MPI_Ialltoallv")?;
    if die {
        // The fault the tests inject (KILN_TEST_KILL_IN_BUCKET): this rank
        // dies in the middle of a gradient bucket.
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
        std::process::abort();
    }
    let inputs: Vec<&[T]> = (0..size)
        .map(|r| &gathered[r * len..(r + 1) * len])
        .collect();
    let mut summed = vec![T::default(); len];
    ring::fold(&mut summed, &inputs, rank);
    let mut request = null_request();
    // SAFETY: `summed` holds this rank's `len` elements; `ptr` receives
    // every rank's chunk at its place in the bucket; both outlive the request.
    let code = unsafe {
        ffi::MPI_Iallgatherv(
            summed.as_ptr().cast(),
            count(len)?,
            dtype,
            ptr,
            counts.as_ptr(),
            displs.as_ptr(),
            dtype,
            comm,
            &mut request,
        )
    };
    check(code, "MPI_Iallgatherv")?;
    wait_yielding(&mut request, "MPI_Iallgatherv")
}

fn null_request() -> ffi::MPI_Request {
    // SAFETY: a constant handle exported by the MPI library.
    unsafe { ffi::RSMPI_REQUEST_NULL }
}

/// Waits for `request`, testing it and yielding the processor in between
/// (instead of MPI_Wait's busy polling), so that the bucket thread leaves
/// the core to backward while it waits for its peers.
fn wait_yielding(request: &mut ffi::MPI_Request, what: &str) -> Result<()> {
    loop {
        let mut done = 0;
        // SAFETY: `request` is an active request of this thread.
        let code = unsafe { ffi::MPI_Test(request, &mut done, ffi::RSMPI_STATUS_IGNORE) };
        check(code, what)?;
        if done != 0 {
            return Ok(());
        }
        std::thread::yield_now();
    }
}
