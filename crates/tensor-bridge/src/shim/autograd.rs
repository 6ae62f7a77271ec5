//! Declarations of `cpp/autograd.cpp` (post-accumulate-grad hooks,
//! activation checkpointing, anomaly mode). Called by `autograd`.
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

extern "C" {
    pub(crate) fn kiln_set_post_accumulate_grad_hook(
        this: *mut C_tensor,
        hook: unsafe extern "C" fn(*mut c_void),
        drop: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_clear_post_accumulate_grad_hook(
        this: *mut C_tensor,
        ctx: *mut c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_checkpoint_enter(
        inputs: *const *mut C_tensor,
        n: i64,
        recompute: unsafe extern "C" fn(
            *mut c_void,
            *const *mut C_tensor,
            i64,
            *mut c_void,
        ) -> c_int,
        drop: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub(crate) fn kiln_checkpoint_exit(region: *mut c_void) -> *mut c_char;
    pub(crate) fn kiln_error_assign(error: *mut c_void, msg: *const c_char, len: usize);
    pub(crate) fn kiln_set_detect_anomaly(enabled: bool, check_nan: bool);
    pub(crate) fn kiln_is_anomaly_enabled() -> bool;
}
