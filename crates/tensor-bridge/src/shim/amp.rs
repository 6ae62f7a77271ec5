//! Declarations of `cpp/amp.cpp` (libtorch's autocast state, the
//! GradScaler kernels). Called by `amp`. Device types are 0 = CPU, 1 =
//! CUDA; dtypes are `c10::ScalarType` values.
use std::os::raw::{c_char, c_int};
use torch_sys::C_tensor;

extern "C" {
    pub(crate) fn kiln_autocast_is_enabled(device_type: c_int, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_enabled(device_type: c_int, enabled: c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_get_dtype(device_type: c_int, out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_dtype(device_type: c_int, dtype: c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_increment_nesting(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_decrement_nesting(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_clear_cache() -> *mut c_char;
    pub(crate) fn kiln_autocast_is_cache_enabled(out: *mut c_int) -> *mut c_char;
    pub(crate) fn kiln_autocast_set_cache_enabled(enabled: c_int) -> *mut c_char;
    pub(crate) fn kiln_amp_foreach_non_finite_check_and_unscale_(
        grads: *const *mut C_tensor,
        n: i64,
        found_inf: *mut C_tensor,
        inv_scale: *mut C_tensor,
    ) -> *mut c_char;
    pub(crate) fn kiln_amp_update_scale_(
        scale: *mut C_tensor,
        growth_tracker: *mut C_tensor,
        found_inf: *mut C_tensor,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: i64,
    ) -> *mut c_char;
}
