//! The CUDA libraries, loaded at run time and in this one place.
//!
//! kiln links none of them. [`load_libtorch_cuda`] opens libtorch_cuda
//! (which makes libtorch see GPUs) the first time kiln asks about CUDA, and
//! only where an NVIDIA driver is installed, so a CPU-only run never maps
//! the CUDA libraries (about 350 MB resident). The CUDA runtime and NCCL,
//! which data-parallel training calls directly ([`crate::nccl`]), are the
//! torch wheel's: usually libtorch_cuda has loaded them already, otherwise
//! they are opened from the wheel kiln was built against; their functions are
//! looked up by name (`dlsym`) into one table ([`api`]). This module wraps
//! the few CUDA-runtime objects those collectives use: the current device,
//! streams and events.
use crate::{Error, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::OnceLock;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

const RTLD_LAZY: c_int = 1;
const RTLD_NOW: c_int = 2;
const RTLD_LOCAL: c_int = 0;
const RTLD_GLOBAL: c_int = 0x100;

/// The libtorch lib directory kiln was built against (`build.rs`).
const TORCH_LIB_DIR: &str = env!("KILN_TORCH_LIB_DIR");

/// `dlopen(path, flags)`; null when it cannot be opened.
fn open(path: &str, flags: c_int) -> *mut c_void {
    let Ok(path) = CString::new(path) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a valid C string; a failed dlopen returns null.
    unsafe { dlopen(path.as_ptr(), flags) }
}

/// Loads libtorch_cuda (and with it the CUDA libraries) once, where an
/// NVIDIA driver (`libcuda.so.1`) exists; whether it is loaded. Its static
/// initialisers register libtorch's CUDA hooks, so this must run before
/// anything asks libtorch about CUDA ([`crate::device::cuda_device_count`]
/// calls it first).
pub(crate) fn load_libtorch_cuda() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        if open("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL).is_null() {
            return false;
        }
        let flags = RTLD_NOW | RTLD_GLOBAL;
        let mut lib = open("libtorch_cuda.so", flags);
        if lib.is_null() {
            lib = open(&format!("{TORCH_LIB_DIR}/libtorch_cuda.so"), flags);
        }
        !lib.is_null()
    })
}

/// The libraries NCCL collectives need, by soname and by their place in the
/// torch wheel (relative to its `torch` directory).
const LIBRARIES: [(&str, &str); 3] = [
    ("libcudart.so.13", "nvidia/cu13/lib"),
    ("libcudart.so.12", "nvidia/cuda_runtime/lib"),
    ("libnccl.so.2", "nvidia/nccl/lib"),
];

/// Makes sure NCCL and the CUDA runtime are in the global scope: `dlopen`
/// by soname finds them where libtorch_cuda loaded them, else they are
/// opened from the torch wheel.
fn preload() {
    let wheel = Path::new(TORCH_LIB_DIR).join("../..");
    for (soname, dir) in LIBRARIES {
        let in_wheel = wheel.join(dir).join(soname);
        for path in [soname.to_string(), in_wheel.to_string_lossy().into_owned()] {
            if !open(&path, RTLD_NOW | RTLD_GLOBAL).is_null() {
                break;
            }
        }
    }
}

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawUniqueId {
    pub(crate) internal: [u8; 128],
}

type GetUniqueId = unsafe extern "C" fn(*mut RawUniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut *mut c_void, c_int, RawUniqueId, c_int) -> c_int;
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

/// The NCCL and CUDA runtime functions kiln calls, resolved in the process.
pub(crate) struct Api {
    pub(crate) get_unique_id: GetUniqueId,
    pub(crate) comm_init_rank: CommInitRank,
    pub(crate) all_reduce: Collect,
    pub(crate) broadcast: Collect,
    pub(crate) comm_destroy: CommDestroy,
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
unsafe fn symbol<F: Copy>(name: &CStr) -> std::result::Result<F, String> {
    // SAFETY: RTLD_DEFAULT (a null handle on glibc) searches the global scope.
    let ptr = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    if ptr.is_null() {
        return Err(format!(
            "{} is not loaded: NCCL needs a CUDA build of libtorch (the torch wheel's libtorch_cuda loads nvidia/nccl/lib/libnccl.so.2)",
            name.to_string_lossy()
        ));
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the symbol's true type; fn pointers and data
    // pointers have the same size on the platforms libtorch supports.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

impl Api {
    fn load() -> std::result::Result<Self, String> {
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

    /// An NCCL result as a `Result`, with NCCL's text for the code.
    pub(crate) fn nccl(&self, code: c_int, what: &str) -> Result<()> {
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

    /// A CUDA runtime result as a `Result`.
    fn cuda(&self, code: c_int, what: &str) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} failed with CUDA error {code}"
            )))
        }
    }
}

/// The CUDA runtime and NCCL functions, loaded on first use (an error names
/// the first function that could not be found).
pub(crate) fn api() -> Result<&'static Api> {
    static API: OnceLock<Api> = OnceLock::new();
    if let Some(api) = API.get() {
        return Ok(api);
    }
    // Not cached on failure: libtorch_cuda may load the libraries later.
    let api = Api::load().map_err(Error::InvalidArgument)?;
    Ok(API.get_or_init(|| api))
}

/// `cudaSetDevice(index)`: makes CUDA device `index` the calling thread's
/// current device for the CUDA runtime.
pub fn set_device(index: usize) -> Result<()> {
    let api = api()?;
    let device = c_int::try_from(index)
        .map_err(|_| Error::InvalidArgument(format!("no CUDA device {index}")))?;
    // SAFETY: a plain call into the CUDA runtime.
    let code = unsafe { (api.cuda_set_device)(device) };
    api.cuda(code, &format!("cudaSetDevice({index})"))
}

/// Waits for the work queued on the legacy default stream (the stream
/// libtorch uses as long as no other stream is made current).
pub fn synchronize_default_stream() -> Result<()> {
    let api = api()?;
    // SAFETY: the null stream is the legacy default stream.
    let code = unsafe { (api.cuda_stream_synchronize)(std::ptr::null_mut()) };
    api.cuda(code, "cudaStreamSynchronize")
}

/// `cudaStreamNonBlocking`: no implicit synchronization with the legacy default stream.
const CUDA_STREAM_NON_BLOCKING: u32 = 1;
/// `cudaEventDisableTiming`.
const CUDA_EVENT_DISABLE_TIMING: u32 = 2;

/// A CUDA stream of kiln's own, destroyed when dropped.
#[derive(Debug)]
pub struct Stream {
    raw: *mut c_void,
}

// SAFETY: CUDA stream handles may be used and destroyed from any thread.
unsafe impl Send for Stream {}
// SAFETY: as above; the CUDA runtime serializes what it must.
unsafe impl Sync for Stream {}

impl Stream {
    /// `cudaStreamCreateWithFlags(cudaStreamNonBlocking)` on the current
    /// device: a stream that does not synchronize with the default stream.
    pub fn non_blocking() -> Result<Self> {
        let api = api()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer.
        let code =
            unsafe { (api.cuda_stream_create_with_flags)(&mut raw, CUDA_STREAM_NON_BLOCKING) };
        api.cuda(code, "cudaStreamCreateWithFlags")?;
        Ok(Self { raw })
    }

    /// `cudaStreamWaitEvent`: work queued on this stream from now on waits
    /// for `event`'s recorded work.
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        let api = api()?;
        // SAFETY: both handles are live.
        let code = unsafe { (api.cuda_stream_wait_event)(self.raw, event.raw, 0) };
        api.cuda(code, "cudaStreamWaitEvent")
    }

    pub(crate) fn raw(&self) -> *mut c_void {
        self.raw
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: created by cudaStreamCreateWithFlags, destroyed once.
            let _ = unsafe { (api.cuda_stream_destroy)(self.raw) };
        }
    }
}

/// The stream a call queues work on: `None` is the legacy default stream.
pub(crate) fn raw_stream(stream: Option<&Stream>) -> *mut c_void {
    stream.map_or(std::ptr::null_mut(), Stream::raw)
}

/// A CUDA event, destroyed when dropped.
#[derive(Debug)]
pub struct Event {
    raw: *mut c_void,
}

// SAFETY: CUDA event handles may be used and destroyed from any thread.
unsafe impl Send for Event {}
// SAFETY: as above.
unsafe impl Sync for Event {}

impl Event {
    /// `cudaEventCreateWithFlags`: with timing (for [`Event::elapsed_ms`]) or
    /// without (`cudaEventDisableTiming`, cheaper, for ordering only).
    pub fn new(timing: bool) -> Result<Self> {
        let api = api()?;
        let flags = if timing { 0 } else { CUDA_EVENT_DISABLE_TIMING };
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer.
        let code = unsafe { (api.cuda_event_create_with_flags)(&mut raw, flags) };
        api.cuda(code, "cudaEventCreateWithFlags")?;
        Ok(Self { raw })
    }

    /// `cudaEventRecord` on `stream` (`None`: the legacy default stream).
    pub fn record(&self, stream: Option<&Stream>) -> Result<()> {
        let api = api()?;
        // SAFETY: live handles (the null stream is the legacy default stream).
        let code = unsafe { (api.cuda_event_record)(self.raw, raw_stream(stream)) };
        api.cuda(code, "cudaEventRecord")
    }

    /// `cudaEventSynchronize`: waits until the recorded work is done.
    pub fn synchronize(&self) -> Result<()> {
        let api = api()?;
        // SAFETY: a live event.
        let code = unsafe { (api.cuda_event_synchronize)(self.raw) };
        api.cuda(code, "cudaEventSynchronize")
    }

    /// `cudaEventElapsedTime(start, self)`: milliseconds between two
    /// completed timing events.
    pub fn elapsed_ms(&self, start: &Event) -> Result<f32> {
        let api = api()?;
        let mut ms = 0.0f32;
        // SAFETY: both events are live; `ms` is a valid out-pointer.
        let code = unsafe { (api.cuda_event_elapsed_time)(&mut ms, start.raw, self.raw) };
        api.cuda(code, "cudaEventElapsedTime")?;
        Ok(ms)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: created by cudaEventCreateWithFlags, destroyed once.
            let _ = unsafe { (api.cuda_event_destroy)(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cuda_runtime_and_nccl_resolve_in_the_process() -> Result<()> {
        // The torch wheel's libraries; no GPU is needed to find and call into them.
        let api = api()?;
        let err = api.nccl(1, "ncclAllReduce").err().map(|e| e.to_string());
        assert!(
            err.as_ref().is_some_and(
                |e| e.starts_with("ncclAllReduce failed: ") && e.ends_with("(NCCL error 1)")
            ),
            "{err:?}"
        );
        assert!(api.nccl(0, "x").is_ok());
        let err = api
            .cuda(100, "cudaSetDevice(3)")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("cudaSetDevice(3) failed with CUDA error 100")
        );
        Ok(())
    }
}
