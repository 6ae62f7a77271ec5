// libtorch's own profiler (Kineto), as torch.profiler drives it:
// prepare + enable with a ProfilerConfig (KINETO state, record_shapes),
// disable into a ProfilerResult whose save() writes the Chrome trace, and
// user-scope RecordFunction spans (what torch.profiler.profile.step() opens
// as "ProfilerStep#N").
#include "error.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <memory>
#include <set>
#include <string>

namespace {

namespace prof = torch::profiler::impl;

std::set<prof::ActivityType> kiln_activities(int with_cuda) {
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (with_cuda != 0) activities.insert(prof::ActivityType::CUDA);
  return activities;
}

prof::ProfilerConfig kiln_profiler_config(int record_shapes) {
  // torch.profiler.profile(record_shapes=…): the other options off.
  return prof::ProfilerConfig(prof::ProfilerState::KINETO, record_shapes != 0,
                              /*profile_memory=*/false, /*with_stack=*/false,
                              /*with_flops=*/false, /*with_modules=*/false);
}

}  // namespace

extern "C" {

// torch.profiler.profile.start(): _prepare_profiler then _enable_profiler,
// on the calling thread.
char *kiln_profiler_start(int record_shapes, int with_cuda) {
  KILN_TRY({
    // libtorch would silently reconfigure the running one.
    TORCH_CHECK(!prof::profilerEnabled(), "a profiler is already recording on this thread");
    auto config = kiln_profiler_config(record_shapes);
    auto activities = kiln_activities(with_cuda);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  })
}

// torch.profiler.profile.stop() and export_chrome_trace(path): the result is
// written to `path` (NULL: dropped).
char *kiln_profiler_stop(const char *path) {
  KILN_TRY({
    auto result = torch::autograd::profiler::disableProfiler();
    if (path != nullptr && result) result->save(std::string(path));
  })
}

// torch.ops.profiler._record_function_enter_new(name): a user-scope span,
// ended by kiln_record_function_exit.
char *kiln_record_function_enter(const char *name, void **out) {
  KILN_TRY({
    auto rec = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
    if (rec->isActive()) rec->before(std::string_view(name), c10::ArrayRef<const c10::IValue>{});
    *out = rec.release();
  })
}

// Ends and frees a span of kiln_record_function_enter.
char *kiln_record_function_exit(void *handle) {
  KILN_TRY({
    std::unique_ptr<at::RecordFunction> rec(static_cast<at::RecordFunction *>(handle));
    rec->end();
  })
}

}  // extern "C"
