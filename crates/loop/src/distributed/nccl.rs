//! The [`Collective`] for CUDA tensors over NCCL (feature `nccl`): CUDA
//! buffers are reduced and broadcast with NCCL, CPU buffers (metric sums,
//! agreement flags) go through MPI, which also carries NCCL's unique id from
//! rank 0 to the others and aborts the job on errors and timeouts.
//!
//! NCCL is the `libnccl.so.2` of the torch wheel (`nvidia/nccl/lib`), which
//! libtorch's CUDA library loads; its functions are looked up in the process
//! (`dlsym`, after a `dlopen` by soname or from the wheel's directory that
//! kiln was built against) rather than linked, so binaries need no extra
//! rpath and a CPU-only libtorch still builds and reports a clear error. Collectives run on the legacy default CUDA stream, the stream
//! libtorch uses as long as no other stream is made current (kiln never
//! does), and are waited for, so that the watchdog covers them.
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
use kiln_tensor::{Device, Kind, Tensor};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
}

const RTLD_NOW: c_int = 2;
const RTLD_GLOBAL: c_int = 0x100;

/// The libraries NCCL collectives need, by soname and by their place in the
/// torch wheel (relative to the `LIBTORCH` directory kiln was built with).
const LIBRARIES: [(&str, &str); 3] = [
    ("libcudart.so.13", "nvidia/cu13/lib"),
    ("libcudart.so.12", "nvidia/cuda_runtime/lib"),
    ("libnccl.so.2", "nvidia/nccl/lib"),
];

/// Makes sure NCCL and the CUDA runtime are loaded into the global scope:
/// usually libtorch_cuda has loaded them already (then `dlopen` by soname
/// just finds them); otherwise they are opened from the torch wheel.
fn preload() {
    let wheel = option_env!("LIBTORCH").map(|t| std::path::Path::new(t).join(".."));
    for (soname, dir) in LIBRARIES {
        let mut candidates = vec![soname.to_string()];
        if let Some(wheel) = &wheel {
            candidates.push(wheel.join(dir).join(soname).to_string_lossy().into_owned());
        }
        for path in candidates {
            let Ok(path) = std::ffi::CString::new(path) else {
                continue;
            };
            // SAFETY: a valid C string; a failed dlopen returns null.
            if !unsafe { dlopen(path.as_ptr(), RTLD_NOW | RTLD_GLOBAL) }.is_null() {
                break;
            }
        }
    }
}

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [u8; 128],
}

type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut *mut c_void, c_int, UniqueId, c_int) -> c_int;
type Collect = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    *mut c_void,
    *mut c_void,
) -> c_int;
type CommDestroy = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;
type CudaSetDevice = unsafe extern "C" fn(c_int) -> c_int;
type CudaStreamSynchronize = unsafe extern "C" fn(*mut c_void) -> c_int;
type CudaStreamCreateWithFlags = unsafe extern "C" fn(*mut *mut c_void, u32) -> c_int;
type CudaHandleDestroy = unsafe extern "C" fn(*mut c_void) -> c_int;
type CudaEventCreateWithFlags = unsafe extern "C" fn(*mut *mut c_void, u32) -> c_int;
type CudaEventRecord = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type CudaStreamWaitEvent = unsafe extern "C" fn(*mut c_void, *mut c_void, u32) -> c_int;
type CudaEventElapsedTime = unsafe extern "C" fn(*mut f32, *mut c_void, *mut c_void) -> c_int;

/// `cudaStreamNonBlocking`: no implicit synchronization with the legacy default stream.
const CUDA_STREAM_NON_BLOCKING: u32 = 1;

/// The NCCL and CUDA runtime functions used, resolved in the process.
#[derive(Clone, Copy)]
struct Api {
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: Collect,
    broadcast: Collect,
    comm_destroy: CommDestroy,
    get_error_string: GetErrorString,
    cuda_set_device: CudaSetDevice,
    cuda_stream_synchronize: CudaStreamSynchronize,
    cuda_stream_create_with_flags: CudaStreamCreateWithFlags,
    cuda_stream_destroy: CudaHandleDestroy,
    cuda_event_create_with_flags: CudaEventCreateWithFlags,
    cuda_event_record: CudaEventRecord,
    cuda_stream_wait_event: CudaStreamWaitEvent,
    cuda_event_synchronize: CudaHandleDestroy,
    cuda_event_elapsed_time: CudaEventElapsedTime,
    cuda_event_destroy: CudaHandleDestroy,
}

/// Looks `name` up among the libraries loaded into the process.
///
/// # Safety
/// `F` must be the function pointer type of the C function `name`.
unsafe fn symbol<F: Copy>(name: &CStr) -> Result<F> {
    // SAFETY: RTLD_DEFAULT (a null handle on glibc) searches the global scope.
    let ptr = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    if ptr.is_null() {
        return Err(Error::InvalidArgument(format!(
            "{} is not loaded: NCCL needs a CUDA build of libtorch (the torch wheel's libtorch_cuda loads nvidia/nccl/lib/libnccl.so.2)",
            name.to_string_lossy()
        )));
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the symbol's true type; fn pointers and data
    // pointers have the same size on the platforms libtorch supports.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

impl Api {
    fn load() -> Result<Self> {
        preload();
        // SAFETY: each type is the C declaration's (nccl.h, cuda_runtime_api.h).
        unsafe {
            Ok(Self {
                get_unique_id: symbol(c"ncclGetUniqueId")?,
                comm_init_rank: symbol(c"ncclCommInitRank")?,
                all_reduce: symbol(c"ncclAllReduce")?,
                broadcast: symbol(c"ncclBroadcast")?,
                comm_destroy: symbol(c"ncclCommDestroy")?,
                get_error_string: symbol(c"ncclGetErrorString")?,
                cuda_set_device: symbol(c"cudaSetDevice")?,
                cuda_stream_synchronize: symbol(c"cudaStreamSynchronize")?,
                cuda_stream_create_with_flags: symbol(c"cudaStreamCreateWithFlags")?,
                cuda_stream_destroy: symbol(c"cudaStreamDestroy")?,
                cuda_event_create_with_flags: symbol(c"cudaEventCreateWithFlags")?,
                cuda_event_record: symbol(c"cudaEventRecord")?,
                cuda_stream_wait_event: symbol(c"cudaStreamWaitEvent")?,
                cuda_event_synchronize: symbol(c"cudaEventSynchronize")?,
                cuda_event_elapsed_time: symbol(c"cudaEventElapsedTime")?,
                cuda_event_destroy: symbol(c"cudaEventDestroy")?,
            })
        }
    }

    fn check(&self, code: c_int, what: &str) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: ncclGetErrorString returns a static C string for any code.
        let text = unsafe { CStr::from_ptr((self.get_error_string)(code)) };
        Err(Error::InvalidArgument(format!(
            "{what} failed: {} (NCCL error {code})",
            text.to_string_lossy()
        )))
    }

    fn cuda(&self, code: c_int, what: &str) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} failed with CUDA error {code}"
            )))
        }
    }

    fn synchronize(&self) -> Result<()> {
        // SAFETY: the null stream is the legacy default stream.
        let code = unsafe { (self.cuda_stream_synchronize)(std::ptr::null_mut()) };
        if code == 0 {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "cudaStreamSynchronize failed with CUDA error {code}"
            )))
        }
    }
}

/// The NCCL communicator, shared by the collective and its gradient
/// transport; destroyed with the last of them.
struct Communicator {
    api: Api,
    comm: *mut c_void,
    device: usize,
    /// The non-blocking side stream gradient buckets are summed on.
    side_stream: *mut c_void,
    /// One enqueue at a time on the communicator (hooks may run on
    /// libtorch's device threads).
    enqueue: Mutex<()>,
    watch: Arc<Watch>,
}

// SAFETY: the NCCL communicator and CUDA stream handles may be used from any
// thread; kiln serializes every enqueue on them through `enqueue` (and the
// main thread's collectives happen between backward passes).
unsafe impl Send for Communicator {}
// SAFETY: as above.
unsafe impl Sync for Communicator {}

impl Drop for Communicator {
    fn drop(&mut self) {
        // SAFETY: both came from their create calls and are destroyed once.
        unsafe {
            let _ = (self.api.cuda_stream_destroy)(self.side_stream);
            let _ = (self.api.comm_destroy)(self.comm);
        }
    }
}

impl GradientTransport for Communicator {
    fn start_sum(&self, bucket: &Tensor) -> Result<PendingSum> {
        let (dtype, count, ptr) = cuda_buffer(self.device, bucket)?.ok_or_else(|| {
            Error::InvalidArgument("NCCL gradient buckets are CUDA tensors".into())
        })?;
        let _guard = self.enqueue.lock().unwrap_or_else(PoisonError::into_inner);
        let api = &self.api;
        let mut sum = Sum {
            api: self.api,
            handles: Vec::new(),
        };
        let ready = sum.create(false)?;
        let start = sum.create(true)?;
        let done = sum.create(true)?;
        // SAFETY: live handles; the null stream is the legacy default stream,
        // where the hook's copies into the bucket were enqueued.
        unsafe {
            api.cuda(
                (api.cuda_event_record)(ready, std::ptr::null_mut()),
                "cudaEventRecord",
            )?;
            api.cuda(
                (api.cuda_stream_wait_event)(self.side_stream, ready, 0),
                "cudaStreamWaitEvent",
            )?;
            api.cuda(
                (api.cuda_event_record)(start, self.side_stream),
                "cudaEventRecord",
            )?;
            // In place on a live contiguous CUDA buffer of `count` elements.
            api.check(
                (api.all_reduce)(ptr, ptr, count, dtype, 0, self.comm, self.side_stream),
                "ncclAllReduce",
            )?;
            api.cuda(
                (api.cuda_event_record)(done, self.side_stream),
                "cudaEventRecord",
            )?;
        }
        let watch = Arc::clone(&self.watch);
        Ok(PendingSum::new(move || {
            let sum = sum;
            let api = &sum.api;
            let (start, done) = (sum.handles[1], sum.handles[2]);
            watch.watched("NCCL gradient bucket all-reduce", || {
                // SAFETY: a live event recorded after the all-reduce.
                api.cuda(
                    unsafe { (api.cuda_event_synchronize)(done) },
                    "cudaEventSynchronize",
                )
            })?;
            let mut ms = 0.0f32;
            // SAFETY: both timing events are live and have completed.
            api.cuda(
                unsafe { (api.cuda_event_elapsed_time)(&mut ms, start, done) },
                "cudaEventElapsedTime",
            )?;
            Ok(f64::from(ms) / 1e3)
        }))
    }
}

/// A bucket sum's events (ready, start, done), destroyed when it is waited for or dropped.
struct Sum {
    api: Api,
    handles: Vec<*mut c_void>,
}

impl Sum {
    fn create(&mut self, timing: bool) -> Result<*mut c_void> {
        let mut event = std::ptr::null_mut();
        // cudaEventDisableTiming = 2
        let flags = if timing { 0 } else { 2 };
        // SAFETY: `event` is a valid out-pointer.
        self.api.cuda(
            unsafe { (self.api.cuda_event_create_with_flags)(&mut event, flags) },
            "cudaEventCreateWithFlags",
        )?;
        self.handles.push(event);
        Ok(event)
    }
}

// SAFETY: CUDA event handles may be used and destroyed from any thread.
unsafe impl Send for Sum {}

impl Drop for Sum {
    fn drop(&mut self) {
        for &event in &self.handles {
            // SAFETY: each came from cudaEventCreateWithFlags, destroyed once.
            let _ = unsafe { (self.api.cuda_event_destroy)(event) };
        }
    }
}

/// NCCL for CUDA tensors and MPI for everything else, one rank per GPU.
pub struct Nccl {
    // Dropped first: the communicator goes before MPI_Finalize.
    comm: Arc<Communicator>,
    mpi: Mpi,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nccl(rank {} of {}, cuda:{})",
            self.mpi.rank(),
            self.mpi.world_size(),
            self.comm.device
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

fn nccl_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Int => Ok(2),
        Kind::Int64 => Ok(4),
        Kind::Float => Ok(7),
        Kind::Double => Ok(8),
        other => Err(Error::InvalidArgument(format!(
            "NCCL collectives here do not take {other:?} tensors"
        ))),
    }
}

impl Nccl {
    /// Starts MPI (see [`Mpi::init`]), makes `cuda:device` this process's
    /// current device, and creates an NCCL communicator over all ranks.
    pub fn init(timeout: Duration, device: usize) -> Result<Self> {
        let mpi = Mpi::init(timeout)?;
        let api = Api::load()?;
        let index = c_int::try_from(device)
            .map_err(|_| Error::InvalidArgument(format!("no CUDA device {device}")))?;
        // SAFETY: plain call into the CUDA runtime.
        let code = unsafe { (api.cuda_set_device)(index) };
        if code != 0 {
            return Err(Error::InvalidArgument(format!(
                "cudaSetDevice({device}) failed with CUDA error {code}"
            )));
        }
        let mut id = UniqueId { internal: [0; 128] };
        if mpi.rank() == 0 {
            // SAFETY: `id` is a valid out-pointer.
            api.check(unsafe { (api.get_unique_id)(&mut id) }, "ncclGetUniqueId")?;
        }
        // The id travels as 16 int64 words over MPI.
        let words: Vec<i64> = id
            .internal
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let buf = Tensor::f_from_slice(&words)?;
        mpi.broadcast(&buf, 0)?;
        for (dst, word) in id
            .internal
            .chunks_exact_mut(8)
            .zip(Vec::<i64>::try_from(&buf)?)
        {
            dst.copy_from_slice(&word.to_ne_bytes());
        }
        let (rank, size) = (mpi.rank() as c_int, mpi.world_size() as c_int);
        let mut comm = std::ptr::null_mut();
        mpi.watched("ncclCommInitRank", || {
            // SAFETY: `comm` is a valid out-pointer; every rank passes the same id and size.
            api.check(
                unsafe { (api.comm_init_rank)(&mut comm, size, id, rank) },
                "ncclCommInitRank",
            )
        })?;
        let mut side_stream = std::ptr::null_mut();
        // SAFETY: a valid out-pointer; the device is current.
        let created = unsafe {
            (api.cuda_stream_create_with_flags)(&mut side_stream, CUDA_STREAM_NON_BLOCKING)
        };
        if let Err(err) = api.cuda(created, "cudaStreamCreateWithFlags") {
            // SAFETY: created above, destroyed once.
            let _ = unsafe { (api.comm_destroy)(comm) };
            return Err(err);
        }
        let watch = mpi.watch();
        Ok(Self {
            comm: Arc::new(Communicator {
                api,
                comm,
                device,
                side_stream,
                enqueue: Mutex::new(()),
                watch,
            }),
            mpi,
        })
    }

    /// The CUDA device this rank uses.
    pub fn device(&self) -> usize {
        self.comm.device
    }
}

/// A CUDA tensor's NCCL type, element count and pointer (`None` for a CPU tensor).
fn cuda_buffer(device: usize, buf: &Tensor) -> Result<Option<(c_int, usize, *mut c_void)>> {
    match buf.device() {
        Device::Cuda(i) if i == device => {}
        Device::Cuda(i) => {
            return Err(Error::InvalidArgument(format!(
                "this rank's NCCL communicator is on cuda:{device}, the tensor on cuda:{i}"
            )))
        }
        _ => return Ok(None),
    }
    if !buf.is_contiguous() {
        return Err(Error::InvalidArgument(
            "NCCL collectives need a contiguous tensor".into(),
        ));
    }
    Ok(Some((nccl_type(buf.kind())?, buf.numel(), buf.data_ptr())))
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }

    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }

    fn all_reduce(&self, buf: &Tensor, op: ReduceOp) -> Result<()> {
        let Some((dtype, count, ptr)) = cuda_buffer(self.comm.device, buf)? else {
            return self.mpi.all_reduce(buf, op);
        };
        let api = &self.comm.api;
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
        };
        let _guard = self
            .comm
            .enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.mpi.watched("NCCL all-reduce", || {
            // SAFETY: in place (NCCL allows send == recv) on a live contiguous
            // CUDA buffer of `count` elements on this communicator's device.
            let code = unsafe {
                (api.all_reduce)(
                    ptr,
                    ptr,
                    count,
                    dtype,
                    op,
                    self.comm.comm,
                    std::ptr::null_mut(),
                )
            };
            api.check(code, "ncclAllReduce")?;
            api.synchronize()
        })
    }

    fn broadcast(&self, buf: &Tensor, root: usize) -> Result<()> {
        let Some((dtype, count, ptr)) = cuda_buffer(self.comm.device, buf)? else {
            return self.mpi.broadcast(buf, root);
        };
        let api = &self.comm.api;
        let root = c_int::try_from(root)
            .map_err(|_| Error::InvalidArgument(format!("bad root {root}")))?;
        let _guard = self
            .comm
            .enqueue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.mpi.watched("NCCL broadcast", || {
            // SAFETY: as in `all_reduce`.
            let code = unsafe {
                (api.broadcast)(
                    ptr,
                    ptr,
                    count,
                    dtype,
                    root,
                    self.comm.comm,
                    std::ptr::null_mut(),
                )
            };
            api.check(code, "ncclBroadcast")?;
            api.synchronize()
        })
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }

    fn gradient_transport(&self) -> Result<Arc<dyn GradientTransport>> {
        Ok(Arc::clone(&self.comm) as Arc<dyn GradientTransport>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nccl_and_the_cuda_runtime_resolve_in_the_process() -> anyhow::Result<()> {
        // libtorch_cuda (kept linked by kiln-tensor) loads libnccl.so.2 and
        // libcudart; no GPU is needed to find and call into them.
        let api = Api::load()?;
        let err = api.check(1, "ncclAllReduce").err().map(|e| e.to_string());
        assert!(
            err.as_ref().is_some_and(
                |e| e.starts_with("ncclAllReduce failed: ") && e.ends_with("(NCCL error 1)")
            ),
            "{err:?}"
        );
        assert!(api.check(0, "x").is_ok());
        assert_eq!(nccl_type(Kind::Float)?, 7);
        assert!(nccl_type(Kind::Half).is_err());
        Ok(())
    }
}
