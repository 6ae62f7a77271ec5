// Mixed precision: libtorch's autocast state (what torch.autocast's
// __enter__/__exit__ call) and the two kernels torch.amp.GradScaler uses.
// Device types are kiln's codes: 0 = CPU, 1 = CUDA. Dtypes are c10::ScalarType
// values as ints.
#include "error.h"
#include "handles.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

static c10::DeviceType kiln_amp_device_type(int device_type) {
  switch (device_type) {
    case 0:
      return c10::DeviceType::CPU;
    case 1:
      return c10::DeviceType::CUDA;
    default:
      TORCH_CHECK(false, "kiln autocast supports device types cpu (0) and cuda (1), got ", device_type);
  }
}

extern "C" {

// torch.is_autocast_enabled(device_type)
char *kiln_autocast_is_enabled(int device_type, int *out) {
  KILN_TRY(*out = at::autocast::is_autocast_enabled(kiln_amp_device_type(device_type)) ? 1 : 0)
}

// torch.set_autocast_enabled(device_type, enabled)
char *kiln_autocast_set_enabled(int device_type, int enabled) {
  KILN_TRY(at::autocast::set_autocast_enabled(kiln_amp_device_type(device_type), enabled != 0))
}

// torch.get_autocast_dtype(device_type), as a c10::ScalarType value.
char *kiln_autocast_get_dtype(int device_type, int *out) {
  KILN_TRY(*out = static_cast<int>(at::autocast::get_autocast_dtype(kiln_amp_device_type(device_type))))
}

// torch.set_autocast_dtype(device_type, dtype); dtype is a c10::ScalarType value.
char *kiln_autocast_set_dtype(int device_type, int dtype) {
  KILN_TRY({
    TORCH_CHECK(dtype >= 0 && dtype < static_cast<int>(c10::ScalarType::NumOptions),
                "not a c10::ScalarType: ", dtype);
    at::autocast::set_autocast_dtype(kiln_amp_device_type(device_type),
                                     static_cast<c10::ScalarType>(dtype));
  })
}

// torch.autocast_increment_nesting(): the new nesting depth.
char *kiln_autocast_increment_nesting(int *out) {
  KILN_TRY(*out = at::autocast::increment_nesting())
}

// torch.autocast_decrement_nesting(): the new nesting depth.
char *kiln_autocast_decrement_nesting(int *out) {
  KILN_TRY(*out = at::autocast::decrement_nesting())
}

// torch.clear_autocast_cache()
char *kiln_autocast_clear_cache() {
  KILN_TRY(at::autocast::clear_cache())
}

// torch.is_autocast_cache_enabled()
char *kiln_autocast_is_cache_enabled(int *out) {
  KILN_TRY(*out = at::autocast::is_autocast_cache_enabled() ? 1 : 0)
}

// torch.set_autocast_cache_enabled(enabled)
char *kiln_autocast_set_cache_enabled(int enabled) {
  KILN_TRY(at::autocast::set_autocast_cache_enabled(enabled != 0))
}

// torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
char *kiln_amp_foreach_non_finite_check_and_unscale_(tensor *grads, int64_t n, tensor found_inf,
                                                     tensor inv_scale) {
  KILN_TRY(at::_amp_foreach_non_finite_check_and_unscale_(kiln_list(grads, n), *found_inf, *inv_scale))
}

// torch._amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor,
// growth_interval), in place on scale and growth_tracker.
char *kiln_amp_update_scale_(tensor scale, tensor growth_tracker, tensor found_inf,
                             double growth_factor, double backoff_factor, int64_t growth_interval) {
  KILN_TRY(at::_amp_update_scale_(*scale, *growth_tracker, *found_inf, growth_factor,
                                  backoff_factor, growth_interval))
}

}  // extern "C"
