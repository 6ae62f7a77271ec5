// kiln's C++ shim: the few libtorch entry points tch 0.24 does not wrap.
// Every function catches C++ exceptions and returns them as a malloc'd
// message (NULL on success); the Rust side turns it into `Error::Torch`.
#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>

#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

typedef at::Tensor *tensor;

#include <dlfcn.h>

static char *kiln_strdup(const char *msg) {
  size_t n = std::strlen(msg);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, msg, n + 1);
  return out;
}

#define KILN_TRY(body)                                             \
  try {                                                            \
    body;                                                          \
    return nullptr;                                                \
  } catch (const c10::Error &e) {                                  \
    return kiln_strdup(e.what_without_backtrace());                \
  } catch (const std::exception &e) {                              \
    return kiln_strdup(e.what());                                  \
  } catch (...) {                                                  \
    return kiln_strdup("unknown C++ exception in libtorch");       \
  }

static std::vector<at::Tensor> kiln_list(tensor *ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

extern "C" {

void kiln_free_error(char *err) { std::free(err); }

// The OpenMP thread count of the calling thread (`omp_set_num_threads`,
// the count ATen's own parallel kernels read through at::get_num_threads()),
// leaving MKL's thread-local count (mkl_set_num_threads_local, which
// at::set_num_threads also sets and MKL's GEMMs read first) as it is.
// libtorch's OpenMP runtime is found by symbol (the wheel ships its own
// libgomp under another file name); `*previous` gets the count before, or
// -1 when libtorch runs without OpenMP (then nothing changes).
char *kiln_set_omp_threads(int threads, int *previous) {
  KILN_TRY({
    // First use on this thread: let ATen apply its own count before ours.
    (void)at::get_num_threads();
    using get_fn = int (*)();
    using set_fn = void (*)(int);
    auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    auto set = reinterpret_cast<set_fn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (get == nullptr || set == nullptr) {
      *previous = -1;
    } else {
      *previous = get();
      set(threads);
    }
  })
}

// Loads libtorch_cuda (and with it the CUDA libraries, ~350 MB resident)
// on first use, and only where an NVIDIA driver is installed: a CPU-only
// run never maps them. Its static initialisers register libtorch's CUDA
// hooks, so this must run before anything asks libtorch about CUDA (kiln
// resolves the device first). Non-zero when libtorch_cuda is loaded.
int kiln_cuda_load() {
  static const int loaded = [] {
    if (dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL) == nullptr) return 0;
    void *torch_cuda = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL);
#ifdef KILN_TORCH_LIB_DIR
    if (torch_cuda == nullptr) torch_cuda = dlopen(KILN_TORCH_LIB_DIR "/libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL);
#endif
    return torch_cuda != nullptr ? 1 : 0;
  }();
  return loaded;
}

// self.add_(other, alpha=alpha): one rounding (PyTorch's kernel uses an FMA).
char *kiln_add_(tensor self, tensor other, double alpha) {
  KILN_TRY(self->add_(*other, alpha))
}

// out = self.add(other, alpha=alpha)
char *kiln_add(tensor self, tensor other, double alpha, tensor *out) {
  KILN_TRY(*out = new at::Tensor(self->add(*other, alpha)))
}

// out = self.detach().clone()
char *kiln_detached_clone(tensor self, tensor *out) {
  KILN_TRY(*out = new at::Tensor(self->detach().clone()))
}

// self.addcmul_(t1, t2, value=value)
char *kiln_addcmul_(tensor self, tensor t1, tensor t2, double value) {
  KILN_TRY(self->addcmul_(*t1, *t2, value))
}

// self.addcdiv_(t1, t2, value=value)
char *kiln_addcdiv_(tensor self, tensor t1, tensor t2, double value) {
  KILN_TRY(self->addcdiv_(*t1, *t2, value))
}

// param.grad = None (PyTorch's zero_grad(set_to_none=True)).
char *kiln_clear_grad(tensor self) {
  KILN_TRY(self->mutable_grad().reset())
}

// Writes 1 to *defined when self.grad is defined.
char *kiln_grad_defined(tensor self, int *defined) {
  KILN_TRY(*defined = self->grad().defined() ? 1 : 0)
}

// torch._foreach_add_(selfs, others, alpha=alpha)
char *kiln_foreach_add_(tensor *selfs, tensor *others, int64_t n, double alpha) {
  KILN_TRY(at::_foreach_add_(kiln_list(selfs, n), kiln_list(others, n), alpha))
}

// torch._foreach_mul_(selfs, scalar)
char *kiln_foreach_mul_scalar_(tensor *selfs, int64_t n, double scalar) {
  KILN_TRY(at::_foreach_mul_(kiln_list(selfs, n), scalar))
}

// torch._foreach_add_(selfs, scalar)
char *kiln_foreach_add_scalar_(tensor *selfs, int64_t n, double scalar) {
  KILN_TRY(at::_foreach_add_(kiln_list(selfs, n), scalar))
}

// torch._foreach_mul_(selfs, other) with a 0-dim tensor `other`.
char *kiln_foreach_mul_tensor_(tensor *selfs, int64_t n, tensor other) {
  KILN_TRY(at::_foreach_mul_(kiln_list(selfs, n), *other))
}

// outs[i] = torch._foreach_norm(selfs, ord)[i]; `outs` has room for n tensors.
char *kiln_foreach_norm(tensor *selfs, int64_t n, double ord, tensor *outs) {
  KILN_TRY({
    auto norms = at::_foreach_norm(kiln_list(selfs, n), ord);
    for (size_t i = 0; i < norms.size(); ++i) outs[i] = new at::Tensor(norms[i]);
  })
}

// torch._fused_sgd_(params, grads, momentum_buffers, ...); nbufs is 0 or n.
char *kiln_fused_sgd_(tensor *params, tensor *grads, tensor *bufs, int64_t n, int64_t nbufs,
                      double weight_decay, double momentum, double lr, double dampening,
                      int nesterov, int maximize, int is_first_step) {
  KILN_TRY(at::_fused_sgd_(kiln_list(params, n), kiln_list(grads, n), kiln_list(bufs, nbufs),
                           weight_decay, momentum, lr, dampening, nesterov != 0, maximize != 0,
                           is_first_step != 0))
}

// torch._fused_adam_ / torch._fused_adamw_ (decoupled != 0); nmax is 0 or n.
char *kiln_fused_adam_(tensor *params, tensor *grads, tensor *exp_avgs, tensor *exp_avg_sqs,
                       tensor *max_exp_avg_sqs, int64_t nmax, tensor *steps, int64_t n, double lr,
                       double beta1, double beta2, double weight_decay, double eps, int amsgrad,
                       int maximize, int decoupled) {
  KILN_TRY({
    if (decoupled != 0) {
      at::_fused_adamw_(kiln_list(params, n), kiln_list(grads, n), kiln_list(exp_avgs, n),
                        kiln_list(exp_avg_sqs, n), kiln_list(max_exp_avg_sqs, nmax),
                        kiln_list(steps, n), lr, beta1, beta2, weight_decay, eps, amsgrad != 0,
                        maximize != 0);
    } else {
      at::_fused_adam_(kiln_list(params, n), kiln_list(grads, n), kiln_list(exp_avgs, n),
                       kiln_list(exp_avg_sqs, n), kiln_list(max_exp_avg_sqs, nmax),
                       kiln_list(steps, n), lr, beta1, beta2, weight_decay, eps, amsgrad != 0,
                       maximize != 0);
    }
  })
}

// out = torch.linalg.vector_norm(self, ord) over all elements.
char *kiln_vector_norm(tensor self, double ord, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::linalg_vector_norm(*self, ord)))
}

// out = torch.linalg.vector_norm(self, ord, dim=[dim], keepdim=keepdim)
char *kiln_vector_norm_dim(tensor self, double ord, int64_t dim, int keepdim, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::linalg_vector_norm(*self, ord, at::IntArrayRef{dim}, keepdim != 0)))
}

// out = torch.addmm(self, mat1, mat2, beta=beta, alpha=alpha)
char *kiln_addmm(tensor self, tensor mat1, tensor mat2, double beta, double alpha, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::addmm(*self, *mat1, *mat2, beta, alpha)))
}

}  // extern "C"

// ---------------------------------------------------------------------------
// Conformance block (issue 12): default dtype, p.grad = g, fused Adagrad,
// multi_margin_loss. Kept together at the end to keep merges easy.
#include <c10/core/DefaultDtype.h>

extern "C" {

// torch.set_default_dtype(like.dtype)
char *kiln_set_default_dtype(tensor like) {
  KILN_TRY(c10::set_default_dtype(like->dtype()))
}

// out = torch.empty(0) in torch.get_default_dtype() (the caller reads its dtype).
char *kiln_default_dtype(tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::empty({0}, at::TensorOptions().dtype(c10::get_default_dtype()))))
}

// self.grad = grad, with the checks of PyTorch's `Tensor.grad` setter.
char *kiln_set_grad(tensor self, tensor grad) {
  KILN_TRY({
    TORCH_CHECK(grad->dtype() == self->dtype(), "assigned grad has data of a different type");
    TORCH_CHECK(grad->device() == self->device(), "assigned grad has data located on a different device");
    TORCH_CHECK(grad->sizes() == self->sizes(), "assigned grad has data of a different size");
    self->mutable_grad() = *grad;
  })
}

// torch._fused_adagrad_(params, grads, state_sums, state_steps, lr=..., ...)
char *kiln_fused_adagrad_(tensor *params, tensor *grads, tensor *state_sums, tensor *state_steps,
                          int64_t n, double lr, double lr_decay, double weight_decay, double eps,
                          int maximize) {
  KILN_TRY(at::_fused_adagrad_(kiln_list(params, n), kiln_list(grads, n), kiln_list(state_sums, n),
                               kiln_list(state_steps, n), lr, lr_decay, weight_decay, eps,
                               maximize != 0))
}

// out = torch._C._nn.multi_margin_loss(self, target, p, margin, weight, reduction)
// (what F.multi_margin_loss calls; autograd records it). weight may be NULL.
char *kiln_multi_margin_loss(tensor self, tensor target, int64_t p, double margin, tensor weight,
                             int64_t reduction, tensor *out) {
  KILN_TRY({
    std::optional<at::Tensor> w;
    if (weight != nullptr) w = *weight;
    *out = new at::Tensor(at::multi_margin_loss(*self, *target, p, margin, w, reduction));
  })
}

}  // extern "C"

// ===========================================================================
// amp: mixed precision. libtorch's autocast state (what torch.autocast's
// __enter__/__exit__ call) and the two kernels torch.amp.GradScaler uses.
// Device types are kiln's codes: 0 = CPU, 1 = CUDA. Dtypes are c10::ScalarType
// values as ints.
// ===========================================================================

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

// ===========================================================================
// Fused optimizer block (issue 16): the default (single-tensor) paths of
// SGD and Adam/AdamW in one pass over memory, with torch.optim's bits. The
// kernels are in fused_optim.cpp (compiled once per instruction set); this
// block decides whether they apply and which one runs.
// ===========================================================================

#include "fused_optim.h"

#include <ATen/core/grad_mode.h>
#include <cmath>
#include <type_traits>

// How libtorch's elementwise kernels round `self + alpha * other` for
// dtype T on this machine and build: 1 = one rounding (a fused
// multiply-add, as its AVX2/AVX-512 kernels are compiled), 0 = two (x86
// `DEFAULT` kernels), -1 = neither, or the vectorised loop and the scalar
// tail disagree (the fused kernels then stay unused). Asked once, of
// libtorch itself: with b = alpha = 1 + e, -1 + b * alpha is 2e + e^2 fused
// and 2e rounded twice.
template <typename T>
static int kiln_probe_fma() {
  static const int mode = [] {
    const int k = std::is_same<T, float>::value ? 12 : 27;
    const T e = std::ldexp(T(1), -k);
    auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    int seen = -2;
    // 64 elements go through the vectorised loop, 1 through the scalar tail.
    for (int64_t n : {int64_t(64), int64_t(1)}) {
      at::Tensor a = at::full({n}, -1.0, opts);
      at::Tensor b = at::full({n}, static_cast<double>(T(1) + e), opts);
      at::Tensor r = a.add(b, static_cast<double>(T(1) + e)).contiguous();
      const T got = r.data_ptr<T>()[n - 1];
      const int mode = got == T(2) * e + e * e ? 1 : (got == T(2) * e ? 0 : -1);
      if (seen != -2 && seen != mode) return -1;
      seen = mode;
    }
    return seen;
  }();
  return mode;
}

static bool kiln_fused_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return avx2;
#else
  return false;
#endif
}

// -1 when the fused kernels do not apply to these tensors (the caller then
// runs the op sequence), else the rounding mode (0 or 1).
static int kiln_fused_mode(std::initializer_list<const at::Tensor *> ts) {
  const at::Tensor &first = **ts.begin();
  const auto dtype = first.scalar_type();
  if (dtype != at::kFloat && dtype != at::kDouble) return -1;
  for (const at::Tensor *t : ts) {
    if (!t->defined() || !t->device().is_cpu() || t->layout() != at::kStrided ||
        t->scalar_type() != dtype || t->is_conj() || t->is_neg()) {
      return -1;
    }
  }
  // With grad mode on, an in-place update of a leaf that requires grad is
  // libtorch's error to raise: leave it to the op sequence.
  if (at::GradMode::is_enabled() && first.requires_grad()) return -1;
  return dtype == at::kFloat ? kiln_probe_fma<float>() : kiln_probe_fma<double>();
}

static void kiln_bump(const at::Tensor &t, int times) {
  for (int i = 0; i < times; ++i) t.unsafeGetTensorImpl()->bump_version();
}

static void kiln_fused_sgd_impl(at::Tensor *param, at::Tensor *grad, at::Tensor *buf, bool first,
                                const kiln::fused::Sgd &h, int *applied) {
  *applied = 0;
  const bool has_m = h.momentum != 0.0;
  TORCH_CHECK(has_m == (buf != nullptr), "kiln_fused_sgd_step: a momentum buffer goes with momentum");
  const int mode = has_m ? kiln_fused_mode({param, grad, buf}) : kiln_fused_mode({param, grad});
  if (mode < 0) return;
  const at::Tensor none;
  const at::Tensor &b = has_m ? *buf : none;
#if defined(__x86_64__)
  if (kiln_fused_avx2()) {
    kiln::fused::avx2::sgd(*param, *grad, b, first, h, mode == 1);
  } else
#endif
  {
    kiln::fused::base::sgd(*param, *grad, b, first, h, mode == 1);
  }
  kiln_bump(*param, 1);
  if (has_m && !first) kiln_bump(b, 2);
  *applied = 1;
}

static void kiln_fused_adam_impl(at::Tensor *param, at::Tensor *grad, at::Tensor *exp_avg,
                                 at::Tensor *exp_avg_sq, at::Tensor *max_exp_avg_sq,
                                 const kiln::fused::Adam &h, int *applied) {
  *applied = 0;
  TORCH_CHECK(h.amsgrad == (max_exp_avg_sq != nullptr),
              "kiln_fused_adam_step: max_exp_avg_sq goes with amsgrad");
  const int mode = h.amsgrad ? kiln_fused_mode({param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq})
                             : kiln_fused_mode({param, grad, exp_avg, exp_avg_sq});
  if (mode < 0) return;
  const at::Tensor none;
  const at::Tensor &mx = h.amsgrad ? *max_exp_avg_sq : none;
#if defined(__x86_64__)
  if (kiln_fused_avx2()) {
    kiln::fused::avx2::adam(*param, *grad, *exp_avg, *exp_avg_sq, mx, h, mode == 1);
  } else
#endif
  {
    kiln::fused::base::adam(*param, *grad, *exp_avg, *exp_avg_sq, mx, h, mode == 1);
  }
  kiln_bump(*param, (h.decoupled_weight_decay && h.weight_decay != 0.0) ? 2 : 1);
  kiln_bump(*exp_avg, 1);
  kiln_bump(*exp_avg_sq, 2);
  if (h.amsgrad) kiln_bump(mx, 1);
  *applied = 1;
}

extern "C" {

// One SGD update of one parameter as torch.optim's default path computes it
// (`_single_tensor_sgd`), in one pass. `buf` is NULL without momentum;
// `first` != 0 when it is a fresh buffer to initialise (`buf = grad`).
// *applied = 0 (and nothing changed) when the kernel does not apply.
char *kiln_fused_sgd_step(tensor param, tensor grad, tensor buf, int first, double lr,
                          double momentum, double dampening, double weight_decay, int nesterov,
                          int maximize, int *applied) {
  const kiln::fused::Sgd h{lr, momentum, dampening, weight_decay, nesterov != 0, maximize != 0};
  KILN_TRY(kiln_fused_sgd_impl(param, grad, buf, first != 0, h, applied))
}

// One Adam/AdamW update of one parameter as `_single_tensor_adam` computes
// it (not capturable, not differentiable), in one pass, with the step
// already counted: step_size = lr / (1 - beta1^t), bias_correction2_sqrt =
// (1 - beta2^t)^0.5. max_exp_avg_sq is NULL unless amsgrad.
// *applied = 0 (and nothing changed) when the kernel does not apply.
char *kiln_fused_adam_step(tensor param, tensor grad, tensor exp_avg, tensor exp_avg_sq,
                           tensor max_exp_avg_sq, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int amsgrad, int maximize,
                           int decoupled, double step_size, double bias_correction2_sqrt,
                           int *applied) {
  const kiln::fused::Adam h{lr,
                            beta1,
                            beta2,
                            eps,
                            weight_decay,
                            amsgrad != 0,
                            maximize != 0,
                            decoupled != 0,
                            step_size,
                            bias_correction2_sqrt};
  KILN_TRY(kiln_fused_adam_impl(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, h, applied))
}

}  // extern "C"

// ---------------------------------------------------------------------------
// Determinism (torch.use_deterministic_algorithms + cuDNN's flags), for
// comparing runs on GPUs: `kiln train --deterministic`.
extern "C" {

// torch.use_deterministic_algorithms(on); torch.backends.cudnn.deterministic = on;
// torch.backends.cudnn.benchmark = not on.
char *kiln_set_deterministic(int on) {
  KILN_TRY({
    at::globalContext().setDeterministicAlgorithms(on != 0, false);
    at::globalContext().setDeterministicCuDNN(on != 0);
    at::globalContext().setBenchmarkCuDNN(on == 0 ? at::globalContext().benchmarkCuDNN() : false);
  })
}

}  // extern "C"

// ===========================================================================
// ddp (issue 15): post-accumulate-grad hooks, the C++ side of
// `Tensor.register_post_accumulate_grad_hook`. Data-parallel training starts a
// gradient bucket's all-reduce as soon as autograd has accumulated the last
// gradient of the bucket. The hook object lives in the tensor's AutogradMeta
// (torch::autograd::impl::set_post_acc_grad_hooks) and calls back into Rust;
// it owns `ctx` and frees it through `drop` when it is destroyed (replaced,
// cleared, or with the tensor).
// ===========================================================================

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

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
// Generators: `at::Generator` handles (torch.Generator). A handle shares its
// generator (an intrusive pointer): the default CPU and CUDA generators are
// handed out as handles too. Draws call libtorch's own functions with the
// generator, whose kernels take `gen.mutex()` themselves; seeding and state
// take it here, as PyTorch's Python bindings do (THPGenerator_*).
// ===========================================================================

typedef at::Generator *generator;

static at::TensorOptions kiln_options(int dtype) {
  TORCH_CHECK(dtype >= 0 && dtype < static_cast<int>(c10::ScalarType::NumOptions),
              "not a c10::ScalarType: ", dtype);
  return at::TensorOptions().dtype(static_cast<c10::ScalarType>(dtype));
}

extern "C" {

// torch.Generator().manual_seed(seed)
char *kiln_generator_new(uint64_t seed, generator *out) {
  KILN_TRY(*out = new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed)))
}

// A handle to the default generator of the CPU (device_type 0: what
// torch.rand() uses without generator=) or of CUDA device `index` (1).
char *kiln_generator_default(int device_type, int64_t index, generator *out) {
  KILN_TRY({
    TORCH_CHECK(device_type == 0 || device_type == 1,
                "kiln generators are on cpu (0) or cuda (1), got ", device_type);
    if (device_type == 0) {
      *out = new at::Generator(at::detail::getDefaultCPUGenerator());
    } else {
      *out = new at::Generator(at::globalContext().defaultGenerator(
          c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index))));
    }
  })
}

void kiln_generator_free(generator g) { delete g; }

// g.manual_seed(seed)
char *kiln_generator_manual_seed(generator g, uint64_t seed) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    g->set_current_seed(seed);
  })
}

// g.initial_seed()
char *kiln_generator_initial_seed(generator g, uint64_t *out) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    *out = g->current_seed();
  })
}

// g.get_state(): a uint8 tensor.
char *kiln_generator_get_state(generator g, tensor *out) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    *out = new at::Tensor(g->get_state());
  })
}

// g.set_state(state)
char *kiln_generator_set_state(generator g, tensor state) {
  KILN_TRY({
    std::lock_guard<std::mutex> lock(g->mutex());
    g->set_state(*state);
  })
}

// torch.rand(size, generator=g, dtype=dtype)
char *kiln_generator_rand(generator g, const int64_t *size, int64_t ndim, int dtype, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::rand(at::IntArrayRef(size, ndim), *g, kiln_options(dtype))))
}

// torch.randn(size, generator=g, dtype=dtype)
char *kiln_generator_randn(generator g, const int64_t *size, int64_t ndim, int dtype, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randn(at::IntArrayRef(size, ndim), *g, kiln_options(dtype))))
}

// torch.randint(low, high, size, generator=g) (int64)
char *kiln_generator_randint(generator g, int64_t low, int64_t high, const int64_t *size,
                             int64_t ndim, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randint(low, high, at::IntArrayRef(size, ndim), *g,
                                             at::TensorOptions().dtype(at::kLong))))
}

// torch.randperm(n, generator=g) (int64)
char *kiln_generator_randperm(generator g, int64_t n, tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::randperm(n, *g, at::TensorOptions().dtype(at::kLong))))
}

// self.uniform_(from, to, generator=g)
char *kiln_generator_uniform_(generator g, tensor self, double from, double to) {
  KILN_TRY(self->uniform_(from, to, *g))
}

// self.normal_(mean, std, generator=g)
char *kiln_generator_normal_(generator g, tensor self, double mean, double std) {
  KILN_TRY(self->normal_(mean, std, *g))
}

// self.random_(generator=g)
char *kiln_generator_random_(generator g, tensor self) {
  KILN_TRY(self->random_(*g))
}

// self.bernoulli_(p, generator=g)
char *kiln_generator_bernoulli_(generator g, tensor self, double p) {
  KILN_TRY(self->bernoulli_(p, *g))
}

// torch.multinomial(probs, num_samples, replacement, generator=g)
char *kiln_generator_multinomial(generator g, tensor probs, int64_t num_samples, int replacement,
                                 tensor *out) {
  KILN_TRY(*out = new at::Tensor(at::multinomial(*probs, num_samples, replacement != 0, *g)))
}

}  // extern "C"
