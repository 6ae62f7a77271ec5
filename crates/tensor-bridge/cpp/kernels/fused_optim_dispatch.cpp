// kiln's one-pass optimizer steps: the default (single-tensor) paths of SGD
// and Adam/AdamW in one pass over memory, with torch.optim's bits. The
// kernels are in fused_optim.cpp (compiled once per instruction set); this
// file decides whether they apply and which one runs.
#include "../error.h"
#include "../handles.h"
#include "fused_optim.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <initializer_list>
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
