// Autograd extensions kiln needs and tch lacks: post-accumulate-grad hooks,
// activation checkpointing and anomaly mode.
//
// Activation checkpointing: torch.utils.checkpoint.checkpoint(fn, *inputs,
// use_reentrant=False) (torch/utils/checkpoint.py,
// _checkpoint_without_reentrant_generator), the same mechanism in C++.
// While the checkpointed function runs forward, every tensor autograd saves
// goes to a saved-tensor hook that keeps only an empty holder. The first
// time backward unpacks one of them, the function runs again (the CPU and
// CUDA generators set to their state at the forward, restored afterwards;
// autocast as it was; grad mode on) under a second hook that puts each
// recomputed tensor into its holder, and stops the function as soon as the
// last one is in. Backward then goes through the forward's own graph, so
// gradients are those of the run without checkpointing.
//
// libtorch asks for saved-tensor hooks through the autograd engine
// (SavedVariable::get_default_hooks ->
// Engine::get_default_saved_variable_hooks, which PyTorch's Python engine
// overrides for torch.autograd.graph.saved_tensors_hooks); kiln's engine is
// the base engine with that one method overridden, installed as libtorch's
// default engine (set_default_engine_stub) the first time a checkpoint
// runs. The hooks are a thread-local stack, as Python's are.
#include "error.h"
#include "handles.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/anomaly_mode.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/saved_variable_hooks.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

// ===========================================================================
// Post-accumulate-grad hooks, the C++ side of
// `Tensor.register_post_accumulate_grad_hook`. Data-parallel training starts a
// gradient bucket's all-reduce as soon as autograd has accumulated the last
// gradient of the bucket. The hook object lives in the tensor's AutogradMeta
// (torch::autograd::impl::set_post_acc_grad_hooks) and calls back into Rust;
// it owns `ctx` and frees it through `drop` when it is destroyed (replaced,
// cleared, or with the tensor).
// ===========================================================================

typedef void (*kiln_hook_fn)(void *ctx);
typedef void (*kiln_hook_drop_fn)(void *ctx);

namespace {

struct KilnPostAccumulateGradHook : torch::autograd::PostAccumulateGradHook {
  KilnPostAccumulateGradHook(kiln_hook_fn fn, kiln_hook_drop_fn drop, void *ctx)
      : fn(fn), drop(drop), ctx(ctx) {}
  ~KilnPostAccumulateGradHook() override { drop(ctx); }
  void operator()(const torch::autograd::Variable & /*tensor*/) override { fn(ctx); }

  kiln_hook_fn fn;
  kiln_hook_drop_fn drop;
  void *ctx;
};

}  // namespace

extern "C" {

// Calls fn(ctx) every time autograd has accumulated a gradient into
// self.grad. Ownership of ctx passes to the hook in every case: on an error
// (not a leaf, no requires_grad, a hook already set) it is dropped here.
char *kiln_set_post_accumulate_grad_hook(tensor self, kiln_hook_fn fn, kiln_hook_drop_fn drop,
                                         void *ctx) {
  KILN_TRY({
    auto hook = std::make_unique<KilnPostAccumulateGradHook>(fn, drop, ctx);
    TORCH_CHECK(self->requires_grad() && self->is_leaf(),
                "a post-accumulate-grad hook needs a leaf tensor that requires grad");
    TORCH_CHECK(torch::autograd::impl::post_acc_grad_hooks(*self) == nullptr,
                "the tensor already has a post-accumulate-grad hook");
    torch::autograd::impl::set_post_acc_grad_hooks(*self, std::move(hook));
  })
}

// Removes self's post-accumulate-grad hook if it is the one holding ctx
// (destroying it, which drops ctx); any other hook is left alone.
char *kiln_clear_post_accumulate_grad_hook(tensor self, void *ctx) {
  KILN_TRY({
    auto &current = torch::autograd::impl::post_acc_grad_hooks(*self);
    auto *mine = dynamic_cast<KilnPostAccumulateGradHook *>(current.get());
    if (mine != nullptr && mine->ctx == ctx) {
      torch::autograd::impl::set_post_acc_grad_hooks(*self, nullptr);
    }
  })
}

}  // extern "C"

// ===========================================================================
// Activation checkpointing (see the top of the file).
// ===========================================================================

// Runs the checkpointed (Rust) function on `inputs` (tensors it takes
// ownership of); returns 0, or non-zero after writing a message into
// `error` (through kiln_error_assign).
typedef int (*kiln_recompute_fn)(void *ctx, tensor *inputs, int64_t n, void *error);
typedef void (*kiln_drop_fn)(void *ctx);

extern "C" void kiln_error_assign(void *error, const char *msg, size_t len) {
  static_cast<std::string *>(error)->assign(msg, len);
}

namespace kiln {
namespace checkpoint {
namespace {

using torch::autograd::SavedVariable;
using torch::autograd::SavedVariableHooks;

// Thrown by the recomputation hook once the last saved tensor is back
// (torch.utils.checkpoint's _StopRecomputationError).
struct StopRecomputation : std::exception {
  const char *what() const noexcept override {
    return "kiln checkpoint: recomputation stopped after the last saved tensor";
  }
};

// The Rust function and its context; dropping it drops the closure.
struct Body {
  kiln_recompute_fn fn;
  kiln_drop_fn drop;
  void *ctx;
  ~Body() {
    if (ctx != nullptr) drop(ctx);
  }
};

// What the default determinism check compares (shape, dtype, device).
struct Metadata {
  std::vector<int64_t> sizes;
  at::ScalarType dtype;
  at::Device device;

  static Metadata of(const at::Tensor &t) {
    return {t.sizes().vec(), t.scalar_type(), t.device()};
  }
  bool operator==(const Metadata &o) const {
    return sizes == o.sizes && dtype == o.dtype && device == o.device;
  }
  std::string str() const {
    std::ostringstream s;
    s << "{'shape': torch.Size(" << c10::IntArrayRef(sizes) << "), 'dtype': " << dtype
      << ", 'device': " << device << "}";
    return s.str();
  }
};

// One saved tensor of the forward: its recomputation per graph task (empty
// once backward has taken it).
struct Holder {
  std::unordered_map<int64_t, std::optional<at::Tensor>> handles;
};

// torch.autocast's state for one device type.
struct AutocastState {
  c10::DeviceType device_type;
  bool enabled;
  at::ScalarType dtype;
  bool cache_enabled;

  static AutocastState of(c10::DeviceType t) {
    return {t, at::autocast::is_autocast_enabled(t), at::autocast::get_autocast_dtype(t),
            at::autocast::is_autocast_cache_enabled()};
  }
};

// `with torch.autocast(device_type, enabled, dtype, cache_enabled):`
// (torch.amp.autocast_mode.autocast.__enter__/__exit__).
class AutocastScope {
 public:
  explicit AutocastScope(const AutocastState &s)
      : previous_(AutocastState::of(s.device_type)) {
    at::autocast::set_autocast_enabled(s.device_type, s.enabled);
    at::autocast::set_autocast_dtype(s.device_type, s.dtype);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(s.cache_enabled);
  }
  ~AutocastScope() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(previous_.device_type, previous_.enabled);
    at::autocast::set_autocast_dtype(previous_.device_type, previous_.dtype);
    at::autocast::set_autocast_cache_enabled(previous_.cache_enabled);
  }
  AutocastScope(const AutocastScope &) = delete;
  AutocastScope &operator=(const AutocastScope &) = delete;

 private:
  AutocastState previous_;
};

at::Generator cuda_generator(c10::DeviceIndex index) {
  return at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CUDA, index));
}

at::Tensor get_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_state(at::Generator gen, const at::Tensor &state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// torch.random.fork_rng(devices): restores the CPU generator and the given
// CUDA generators to their state at construction when it ends.
class ForkRng {
 public:
  explicit ForkRng(const std::vector<c10::DeviceIndex> &devices)
      : cpu_(get_state(at::detail::getDefaultCPUGenerator())) {
    for (auto d : devices) cuda_.emplace_back(d, get_state(cuda_generator(d)));
  }
  ~ForkRng() {
    try {
      set_state(at::detail::getDefaultCPUGenerator(), cpu_);
      for (auto &[d, state] : cuda_) set_state(cuda_generator(d), state);
    } catch (...) {
      // Restoring a state read a moment ago cannot fail; nothing to report from a destructor.
    }
  }
  ForkRng(const ForkRng &) = delete;
  ForkRng &operator=(const ForkRng &) = delete;

 private:
  at::Tensor cpu_;
  std::vector<std::pair<c10::DeviceIndex, at::Tensor>> cuda_;
};

// One checkpointed region (torch.utils.checkpoint's _CheckpointFrame).
struct Frame {
  std::shared_ptr<Body> body;
  // The inputs, saved as _NoopSaveInputs saves them (version-checked).
  std::vector<SavedVariable> inputs;
  // preserve_rng_state: the generators at the forward.
  at::Tensor cpu_state;
  std::vector<c10::DeviceIndex> cuda_devices;
  std::vector<at::Tensor> cuda_states;
  // _get_autocast_kwargs(device_type) (device_autocast absent when
  // autocast is not available for the device type) and the CPU's.
  std::optional<AutocastState> device_autocast;
  AutocastState cpu_autocast{c10::DeviceType::CPU, false, at::kBFloat16, true};

  std::vector<std::weak_ptr<Holder>> holders;
  std::vector<Metadata> metadata;
  std::unordered_map<int64_t, size_t> recomp_counter;
  std::unordered_set<int64_t> recomputed;
  std::unordered_set<int64_t> stopped;
  bool forward_completed = false;
  bool early_stop = true;
  bool ignore_saved_mismatch = false;
  // Backward may unpack from several engine threads (CPU and CUDA nodes);
  // the recomputation's own hooks re-enter on the same thread.
  std::recursive_mutex mutex;
};

// The thread's saved-tensor hooks: a forward region, or a recomputation.
struct Scope {
  std::shared_ptr<Frame> frame;
  bool recompute;
  int64_t gid;
};

thread_local std::vector<Scope> scopes;

class ScopeGuard {
 public:
  explicit ScopeGuard(Scope s) { scopes.push_back(std::move(s)); }
  ~ScopeGuard() { scopes.pop_back(); }
  ScopeGuard(const ScopeGuard &) = delete;
  ScopeGuard &operator=(const ScopeGuard &) = delete;
};

// An id for an unpack outside any backward pass (PyTorch uses a uuid).
int64_t graph_task_id() {
  static std::atomic<int64_t> temporary{-2};
  int64_t gid = torch::autograd::get_current_graph_task_id();
  return gid == -1 ? temporary.fetch_sub(1) : gid;
}

// _CheckpointFrame.check_recomputed_tensors_match
void check_recomputed_tensors_match(Frame &frame, int64_t gid) {
  if (frame.ignore_saved_mismatch) return;
  TORCH_CHECK(frame.holders.size() == frame.recomp_counter[gid],
              "torch.utils.checkpoint: A different number of tensors was saved during the "
              "original forward and recomputation.\nNumber of tensors saved during forward: ",
              frame.holders.size(), "\nNumber of tensors saved during recomputation: ",
              frame.recomp_counter[gid], ".");
  std::ostringstream mismatched;
  bool any = false;
  for (size_t i = 0; i < frame.holders.size(); ++i) {
    auto holder = frame.holders[i].lock();
    if (!holder) continue;
    auto it = holder->handles.find(gid);
    TORCH_INTERNAL_ASSERT(it != holder->handles.end() && it->second.has_value());
    Metadata recomputed = Metadata::of(*it->second);
    if (!(recomputed == frame.metadata[i])) {
      any = true;
      mismatched << "tensor at position " << i << ":\nsaved metadata: " << frame.metadata[i].str()
                 << "\nrecomputed metadata: " << recomputed.str() << "\n";
    }
  }
  TORCH_CHECK(!any,
              "torch.utils.checkpoint: Recomputed values for the following tensors have "
              "different metadata than during the forward pass.\n",
              mismatched.str(), ".");
}

// The recomputation (recompute_fn under _recomputation_hook and enable_grad).
void recompute(const std::shared_ptr<Frame> &frame, int64_t gid) {
  std::vector<at::Tensor> inputs;
  inputs.reserve(frame->inputs.size());
  for (const auto &saved : frame->inputs) inputs.push_back(saved.unpack());
  std::string error;
  int status = 0;
  {
    ScopeGuard hooks({frame, true, gid});
    at::AutoGradMode grad(true);
    ForkRng fork(frame->cuda_devices);
    set_state(at::detail::getDefaultCPUGenerator(), frame->cpu_state);
    for (size_t i = 0; i < frame->cuda_devices.size(); ++i) {
      set_state(cuda_generator(frame->cuda_devices[i]), frame->cuda_states[i]);
    }
    std::optional<AutocastScope> device_autocast;
    if (frame->device_autocast) device_autocast.emplace(*frame->device_autocast);
    AutocastScope cpu_autocast(frame->cpu_autocast);
    // The callee owns these handles.
    std::vector<tensor> handles;
    handles.reserve(inputs.size());
    for (const auto &t : inputs) handles.push_back(new at::Tensor(t));
    status = frame->body->fn(frame->body->ctx, handles.data(),
                             static_cast<int64_t>(handles.size()), &error);
  }
  if (status != 0 && frame->stopped.count(gid) == 0) {
    TORCH_CHECK(false, error.empty() ? "the checkpointed function failed" : error);
  }
}

// _checkpoint_hook's unpack hook.
at::Tensor unpack(const std::shared_ptr<Frame> &frame, const std::shared_ptr<Holder> &holder) {
  const int64_t gid = graph_task_id();
  std::lock_guard<std::recursive_mutex> lock(frame->mutex);
  if (frame->recomputed.count(gid) == 0) {
    recompute(frame, gid);
    frame->recomputed.insert(gid);
    check_recomputed_tensors_match(*frame, gid);
  }
  auto it = holder->handles.find(gid);
  TORCH_INTERNAL_ASSERT(it != holder->handles.end());
  TORCH_CHECK(it->second.has_value(),
              "torch.utils.checkpoint: Unpack is being triggered for a tensor that was already "
              "unpacked once. If you are calling ctx.saved_tensors in backward, make sure to do "
              "so only once. Otherwise please open an issue with details on your use case.");
  at::Tensor out = std::move(*it->second);
  it->second.reset();
  return out;
}

// _checkpoint_hook: a saved tensor of the forward keeps only a holder.
struct ForwardHooks final : SavedVariableHooks {
  explicit ForwardHooks(std::shared_ptr<Frame> frame) : frame_(std::move(frame)) {}

  void call_pack_hook(const at::Tensor &x) override {
    holder_ = std::make_shared<Holder>();
    std::lock_guard<std::recursive_mutex> lock(frame_->mutex);
    frame_->holders.push_back(holder_);
    frame_->metadata.push_back(Metadata::of(x));
  }

  at::Tensor call_unpack_hook() override { return unpack(frame_, holder_); }

 private:
  std::shared_ptr<Frame> frame_;
  std::shared_ptr<Holder> holder_;
};

// _recomputation_hook: each tensor saved while the function runs again goes
// into the holder of the same position.
struct RecomputeHooks final : SavedVariableHooks {
  RecomputeHooks(std::shared_ptr<Frame> frame, int64_t gid)
      : frame_(std::move(frame)), gid_(gid) {}

  void call_pack_hook(const at::Tensor &t) override {
    x_ = t.requires_grad() ? t.detach() : t;
    std::lock_guard<std::recursive_mutex> lock(frame_->mutex);
    // The function went on after being stopped (it swallowed the error).
    if (frame_->stopped.count(gid_) != 0) return;
    const size_t index = frame_->recomp_counter[gid_]++;
    if (index >= frame_->holders.size()) {
      TORCH_INTERNAL_ASSERT(!frame_->early_stop);
      if (!frame_->forward_completed) {
        frame_->ignore_saved_mismatch = true;
        return;
      }
      TORCH_CHECK(false,
                  "torch.utils.checkpoint: trying to save more tensors during recomputation "
                  "than during the original forward pass.");
    }
    if (auto holder = frame_->holders[index].lock()) {
      TORCH_INTERNAL_ASSERT(!holder->handles.count(gid_) || !holder->handles[gid_].has_value());
      holder->handles[gid_] = x_;
    }
    if (frame_->early_stop && frame_->recomp_counter[gid_] == frame_->holders.size()) {
      frame_->stopped.insert(gid_);
      throw StopRecomputation();
    }
  }

  at::Tensor call_unpack_hook() override { return x_; }

 private:
  std::shared_ptr<Frame> frame_;
  int64_t gid_;
  at::Tensor x_;
};

// libtorch's autograd engine with the saved-tensor hooks of the thread's
// innermost checkpoint scope.
struct Engine final : torch::autograd::Engine {
  static torch::autograd::Engine &get() {
    static Engine engine;
    return engine;
  }
  ~Engine() override { stop(); }

  std::unique_ptr<SavedVariableHooks> get_default_saved_variable_hooks() override {
    if (scopes.empty()) return nullptr;
    const Scope &top = scopes.back();
    if (top.recompute) return std::make_unique<RecomputeHooks>(top.frame, top.gid);
    return std::make_unique<ForwardHooks>(top.frame);
  }

 private:
  Engine() = default;
};

void install_engine() {
  static std::once_flag once;
  std::call_once(once, [] { torch::autograd::set_default_engine_stub(&Engine::get); });
}

}  // namespace
}  // namespace checkpoint
}  // namespace kiln

extern "C" {

// Starts a checkpointed region on this thread: captures what
// torch.utils.checkpoint captures before running the function (the RNG
// states, autocast, the inputs) and makes the thread's saved tensors go to
// the region's holders until kiln_checkpoint_exit. The region takes
// ownership of ctx in every case (dropping it through `drop` when the last
// saved tensor of the region is freed, or here when nothing is recorded).
// *out = NULL when grad mode is off: nothing is saved then, and the
// function simply runs.
char *kiln_checkpoint_enter(tensor *inputs, int64_t n, kiln_recompute_fn fn, kiln_drop_fn drop,
                            void *ctx, void **out) {
  using namespace kiln::checkpoint;
  std::unique_ptr<void, kiln_drop_fn> owned(ctx, drop);
  *out = nullptr;
  KILN_TRY({
    auto body = std::make_shared<Body>(Body{fn, drop, nullptr});
    body->ctx = owned.release();
    if (!at::GradMode::is_enabled()) return nullptr;
    install_engine();
    auto frame = std::make_shared<Frame>();
    frame->body = std::move(body);
    // _infer_device_type: CUDA if an input is on CUDA, else the first
    // non-CPU input's device type, else CUDA. The CUDA generators saved are
    // those of the inputs' CUDA devices (get_device_states).
    std::optional<c10::DeviceType> first_device_type;
    bool any_cuda = false;
    for (int64_t i = 0; i < n; ++i) {
      const at::Tensor &t = *inputs[i];
      if (!t.defined() || t.device().is_cpu()) continue;
      if (!first_device_type) first_device_type = t.device().type();
      if (t.device().is_cuda()) {
        any_cuda = true;
        auto d = t.device().index();
        auto &ds = frame->cuda_devices;
        if (std::find(ds.begin(), ds.end(), d) == ds.end()) ds.push_back(d);
      }
    }
    const c10::DeviceType device_type =
        any_cuda ? c10::DeviceType::CUDA : first_device_type.value_or(c10::DeviceType::CUDA);
    if (at::autocast::is_autocast_available(device_type)) {
      frame->device_autocast = AutocastState::of(device_type);
    }
    frame->cpu_autocast = AutocastState::of(c10::DeviceType::CPU);
    frame->cpu_state = get_state(at::detail::getDefaultCPUGenerator());
    for (auto d : frame->cuda_devices) frame->cuda_states.push_back(get_state(cuda_generator(d)));
    frame->inputs.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) frame->inputs.emplace_back(*inputs[i], false);
    scopes.push_back({frame, false, 0});
    *out = new std::shared_ptr<Frame>(std::move(frame));
  })
}

// Ends the region kiln_checkpoint_enter started (a handle it returned, not
// NULL) and frees the handle; the saved tensors keep the region alive.
char *kiln_checkpoint_exit(void *handle) {
  using namespace kiln::checkpoint;
  std::unique_ptr<std::shared_ptr<Frame>> frame(static_cast<std::shared_ptr<Frame> *>(handle));
  KILN_TRY({
    auto it = std::find_if(scopes.rbegin(), scopes.rend(), [&](const Scope &s) {
      return !s.recompute && s.frame == *frame;
    });
    TORCH_CHECK(it != scopes.rend(), "kiln checkpoint: the region did not begin on this thread");
    scopes.erase(std::next(it).base());
    std::lock_guard<std::recursive_mutex> lock((*frame)->mutex);
    (*frame)->forward_completed = true;
  })
}

}  // extern "C"

namespace {

// Anomaly mode's own warning ("Error detected in SqrtBackward0. Traceback of
// forward call that caused the error:" and a C++ backtrace: libtorch has no
// Python frames to show) only repeats what the error then says: dropped.
// Other warnings go on to the handler that was installed before. Warning
// handlers are per thread; CPU backward runs on the calling thread.
struct AnomalyWarningFilter : c10::WarningHandler {
  c10::WarningHandler *next = nullptr;
  void process(const c10::Warning &warning) override {
    if (warning.msg().rfind("Error detected in ", 0) == 0) return;
    if (next != nullptr) next->process(warning);
  }
};

thread_local AnomalyWarningFilter anomaly_warning_filter;

}  // namespace

// torch.autograd.set_detect_anomaly(enabled, check_nan): libtorch's
// process-wide switch. With it on, the engine checks every backward
// function's outputs and fails with "Function 'SqrtBackward0' returned nan
// values in its 0th output." when one holds a NaN. On, this thread's
// warnings also go through the filter above; off, the handler before it
// is back.
extern "C" void kiln_set_detect_anomaly(bool enabled, bool check_nan) {
  torch::autograd::AnomalyMode::set_enabled(enabled, check_nan);
  auto *current = c10::WarningUtils::get_warning_handler();
  if (enabled && current != &anomaly_warning_filter) {
    anomaly_warning_filter.next = current;
    c10::WarningUtils::set_warning_handler(&anomaly_warning_filter);
  } else if (!enabled && current == &anomaly_warning_filter) {
    c10::WarningUtils::set_warning_handler(anomaly_warning_filter.next);
  }
}

extern "C" bool kiln_is_anomaly_enabled() { return torch::autograd::AnomalyMode::is_enabled(); }
