//! The C ABI of kiln's C++ shim (`cpp/`): raw declarations, one module per
//! concept as the C++ files are grouped, and the conventions every call
//! follows:
//! - a function returns NULL or a malloc'd message, which [`check`] turns
//!   into `Error::Torch` (`cpp/error.h` is the C++ side);
//! - a tensor argument is tch's `C_tensor` pointer, borrowed for the call
//!   ([`raw`], [`raw_list`]); a tensor handed back is a `new` allocation the
//!   caller owns ([`owned`]) (`cpp/handles.h`).
//!
//! Only kiln-tensor's safe wrappers call these.
mod amp;
mod autograd;
mod jit;
mod kernels;
mod profiler;
mod runtime;

pub(crate) use amp::*;
pub(crate) use autograd::*;
pub(crate) use jit::*;
pub(crate) use kernels::*;
pub(crate) use profiler::*;
pub(crate) use runtime::*;

use std::os::raw::c_char;
use torch_sys::C_tensor;

extern "C" {
    /// Frees a message (or `kiln_jit_save`'s bytes) the shim returned.
    pub(crate) fn kiln_free_error(err: *mut c_char);
}

/// Turns a shim return value into a `Result`, freeing the message.
pub(crate) fn check(err: *mut c_char) -> crate::Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns NULL or a NUL-terminated malloc'd string that we own.
    let msg = unsafe { std::ffi::CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: `err` came from the shim's malloc and is freed exactly once.
    unsafe { kiln_free_error(err) };
    Err(crate::Error::Torch(msg))
}

/// The raw pointer tch hands to C; the shim never frees it.
pub(crate) fn raw(t: &tch::Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}

/// The raw pointers of `tensors`, for a list argument.
pub(crate) fn raw_list(tensors: &[&tch::Tensor]) -> Vec<*mut C_tensor> {
    tensors.iter().map(|t| raw(t)).collect()
}

/// Wraps a tensor the shim allocated with `new`; tch frees it on drop.
pub(crate) fn owned(ptr: *mut C_tensor) -> crate::Result<tch::Tensor> {
    if ptr.is_null() {
        return Err(crate::Error::Torch("libtorch returned no tensor".into()));
    }
    // SAFETY: the shim allocated this `at::Tensor` with `new` for us to own.
    Ok(unsafe { tch::Tensor::from_ptr(ptr) })
}
