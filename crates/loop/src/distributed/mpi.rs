//! The [`Collective`] over MPI (rsmpi on the system's MPI library), with a
//! watchdog that aborts the whole job when a collective does not complete
//! in time (a rank died, hangs or took another code path).
use super::{Collective, ReduceOp};
use crate::{Error, Result};
use kiln_tensor::{Device, Kind, Tensor};
use mpi::ffi;
use mpi::traits::Communicator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the watchdog watches: the collective in flight and since when.
#[derive(Default)]
struct Watch {
    in_flight: Mutex<Option<(&'static str, Instant)>>,
    stop: AtomicBool,
}

/// MPI's `MPI_COMM_WORLD`; created once per process by [`Mpi::init`] and
/// finalized when dropped.
pub struct Mpi {
    rank: usize,
    size: usize,
    timeout: Duration,
    watch: Arc<Watch>,
    watchdog: Option<JoinHandle<()>>,
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
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| {
                Error::InvalidArgument("MPI is already initialized in this process".into())
            })?;
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
                            eprintln!(
                                "error: rank {rank}: {what} did not complete within {} s (a rank died, hangs or diverged); aborting all {size} ranks",
                                timeout.as_secs_f64()
                            );
                            abort_world(1);
                        }
                    }
                }
            })?;
        Ok(Self {
            rank,
            size,
            timeout,
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
        *self
            .watch
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((what, Instant::now()));
        let out = f();
        *self
            .watch
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        out
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
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
}
