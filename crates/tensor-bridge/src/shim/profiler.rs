//! Declarations of `cpp/profiler.cpp` (libtorch's Kineto profiler and
//! RecordFunction spans). Called by `profiler`.
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};

extern "C" {
    pub(crate) fn kiln_profiler_start(record_shapes: c_int, with_cuda: c_int) -> *mut c_char;
    pub(crate) fn kiln_profiler_stop(path: *const c_char) -> *mut c_char;
    pub(crate) fn kiln_record_function_enter(
        name: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_record_function_exit(handle: *mut c_void) -> *mut c_char;
}
