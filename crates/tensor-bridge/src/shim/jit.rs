//! Declarations of `cpp/jit.cpp` (TorchScript modules). Called by `jit`.
//! Device types are 0 = CPU, 1 = CUDA.
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

/// An opaque `torch::jit::Module`.
#[repr(C)]
pub(crate) struct JitModule {
    _private: [u8; 0],
}

extern "C" {
    pub(crate) fn kiln_jit_load(
        data: *const c_char,
        len: usize,
        device_type: c_int,
        index: i64,
        out: *mut *mut JitModule,
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_free(m: *mut JitModule);
    pub(crate) fn kiln_jit_forward(
        m: *mut JitModule,
        inputs: *const *mut C_tensor,
        n: usize,
        index: i64,
        key: *const c_char,
        out: *mut *mut C_tensor,
        kind: *mut *mut c_char,
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_train(m: *mut JitModule, on: c_int) -> *mut c_char;
    pub(crate) fn kiln_jit_is_training(m: *mut JitModule, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_jit_named_tensors(
        m: *mut JitModule,
        buffers: c_int,
        data: *mut std::ffi::c_void,
        f: extern "C" fn(*mut std::ffi::c_void, *const c_char, *mut C_tensor),
    ) -> *mut c_char;
    pub(crate) fn kiln_jit_save(
        m: *mut JitModule,
        bytes: *mut *mut c_char,
        len: *mut usize,
    ) -> *mut c_char;
}
