//! The [`Collective`] for CUDA tensors over NCCL (feature `nccl`): CUDA
//! buffers are reduced and broadcast with NCCL, CPU buffers (metric sums,
//! agreement flags) go through MPI, which also carries NCCL's unique id from
//! rank 0 to the others and aborts the job on errors and timeouts.
//!
//! NCCL and the CUDA runtime are bound in kiln-tensor ([`kiln_tensor::nccl`],
//! [`kiln_tensor::cuda`]: the torch wheel's libraries, loaded at run time,
//! so a CPU-only libtorch still builds and reports a clear error); this
//! module holds no `unsafe`. Collectives run on the legacy default CUDA
//! stream, the stream libtorch uses as long as no other stream is made
//! current (kiln never does), and are waited for, so that the watchdog
//! covers them.
//!
//! Gradient buckets ([`GradientTransport`]) take DDP's path on GPUs: when a
//! bucket's last gradient is in (an autograd hook, on libtorch's CUDA
//! device thread), an event recorded on the default stream makes a
//! non-blocking side stream wait for the gradients, `ncclAllReduce` runs on
//! that side stream while backward kernels continue on the default one, and
//! the trainer waits for an event after it (under the watchdog) before the
//! optimizer step. The sum is NCCL's (the backend DDP uses for CUDA tensors).
use super::mpi::{Mpi, Watch};
use super::{Collective, GradientTransport, PendingSum, ReduceOp};
use crate::{Error, Result};
use kiln_tensor::cuda::{self, Event, Stream};
use kiln_tensor::nccl::{self, Communicator, UniqueId};
use kiln_tensor::{Device, Tensor};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The NCCL communicator and the side stream, shared by the collective and
/// its gradient transport; destroyed with the last of them.
struct Transport {
    /// The non-blocking side stream gradient buckets are summed on
    /// (destroyed before the communicator).
    side_stream: Stream,
    comm: Communicator,
    /// One enqueue sequence at a time on the communicator (hooks may run on
    /// libtorch's device threads; every rank must queue collectives in the
    /// same order).
    enqueue: Mutex<()>,
    watch: Arc<Watch>,
}

impl GradientTransport for Transport {
    fn start_sum(&self, bucket: &Tensor) -> Result<PendingSum> {
        if !matches!(bucket.device(), Device::Cuda(_)) {
            return Err(Error::InvalidArgument(
                "NCCL gradient buckets are CUDA tensors".into(),
            ));
        }
        let _guard = self.enqueue.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = Event::new(false)?;
        let start = Event::new(true)?;
        let done = Event::new(true)?;
        // The hook's copies into the bucket were enqueued on the default stream.
        ready.record(None)?;
        self.side_stream.wait_event(&ready)?;
        start.record(Some(&self.side_stream))?;
        self.comm
            .all_reduce_(bucket, nccl::ReduceOp::Sum, Some(&self.side_stream))?;
        done.record(Some(&self.side_stream))?;
        let watch = Arc::clone(&self.watch);
        Ok(PendingSum::new(move || {
            // `ready` lives until the sum is waited for, as the other two.
            let _ready = ready;
            watch.watched("NCCL gradient bucket all-reduce", || -> Result<()> {
                Ok(done.synchronize()?)
            })?;
            Ok(f64::from(done.elapsed_ms(&start)?) / 1e3)
        }))
    }
}

/// NCCL for CUDA tensors and MPI for everything else, one rank per GPU.
pub struct Nccl {
    // Dropped first: the communicator goes before MPI_Finalize.
    comm: Arc<Transport>,
    mpi: Mpi,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nccl(rank {} of {}, cuda:{})",
            self.mpi.rank(),
            self.mpi.world_size(),
            self.comm.comm.device()
        )
    }
}

/// This rank's index among the ranks on its host, from the launcher's
/// environment (Open MPI, MPICH/Intel MPI, Slurm), or 0.
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

impl Nccl {
    /// Starts MPI (see [`Mpi::init`]), makes `cuda:device` this process's
    /// current device, and creates an NCCL communicator over all ranks.
    pub fn init(timeout: Duration, device: usize) -> Result<Self> {
        let mpi = Mpi::init(timeout)?;
        cuda::set_device(device)?;
        let id = if mpi.rank() == 0 {
            UniqueId::new()?
        } else {
            UniqueId::from_words(&[0; nccl::UNIQUE_ID_WORDS])?
        };
        // The id travels as 16 int64 words over MPI.
        let buf = Tensor::f_from_slice(&id.to_words())?;
        mpi.broadcast(&buf, 0)?;
        let id = UniqueId::from_words(&Vec::<i64>::try_from(&buf)?)?;
        let (rank, size) = (mpi.rank(), mpi.world_size());
        let comm = mpi.watched("ncclCommInitRank", || -> Result<Communicator> {
            Ok(Communicator::init_rank(device, size, &id, rank)?)
        })?;
        // On an error the communicator is destroyed here.
        let side_stream = Stream::non_blocking()?;
        let watch = mpi.watch();
        Ok(Self {
            comm: Arc::new(Transport {
                side_stream,
                comm,
                enqueue: Mutex::new(()),
                watch,
            }),
            mpi,
        })
    }

    /// The CUDA device this rank uses.
    pub fn device(&self) -> usize {
        self.comm.comm.device()
    }

    /// Whether `buf` goes through NCCL: a CUDA tensor (any CUDA device: the
    /// communicator refuses another device than its own); CPU tensors go
    /// through MPI.
    fn on_gpu(buf: &Tensor) -> bool {
        matches!(buf.device(), Device::Cuda(_))
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()> {
        if !Self::on_gpu(buf) {
            return self.mpi.all_reduce(buf, op);
        }
        let op = match op {
            ReduceOp::Sum => nccl::ReduceOp::Sum,
            ReduceOp::Max => nccl::ReduceOp::Max,
            ReduceOp::Min => nccl::ReduceOp::Min,
        };
        let _guard = self
            .comm
            .enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.mpi.watched("NCCL all-reduce", || -> Result<()> {
            self.comm.comm.all_reduce_(buf, op, None)?;
            Ok(cuda::synchronize_default_stream()?)
        })
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<()> {
        if !Self::on_gpu(buf) {
            return self.mpi.broadcast(buf, root);
        }
        let _guard = self
            .comm
            .enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.mpi.watched("NCCL broadcast", || -> Result<()> {
            self.comm.comm.broadcast_(buf, root, None)?;
            Ok(cuda::synchronize_default_stream()?)
        })
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }

    fn gradient_transport(&self) -> Result<Arc<dyn GradientTransport>> {
        Ok(Arc::clone(&self.comm) as Arc<dyn GradientTransport>)
    }
}
