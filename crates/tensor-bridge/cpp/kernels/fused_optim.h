// One-pass CPU kernels for the default (single-tensor) paths of
// torch.optim's SGD and Adam/AdamW, with PyTorch's arithmetic exactly.
//
// torch.optim's default CPU path updates a parameter with a sequence of
// libtorch ops (SGD: `buf.mul_(momentum).add_(grad, alpha=1-dampening)`,
// `param.add_(buf, alpha=-lr)`; Adam: `lerp_`, `mul_`, `addcmul_`, `sqrt`,
// `div`, `add_`, `addcdiv_`), each one pass over memory. These kernels run
// the same per-element arithmetic in one pass: every intermediate is
// rounded to the tensor's dtype where the op sequence stores it, and a
// multiply-add is fused exactly where libtorch's compiled kernels fuse it
// (`fused_multiply_add`: libtorch's AVX2/AVX-512 kernels are built with
// contraction, its x86 `DEFAULT` kernels without), so the results are the
// op sequence's bit for bit. `sqrt` is the one libtorch computes
// (`at::vml::vsqrt`: MKL's `vmsSqrt`/`vmdSqrt` in HA mode where libtorch
// has MKL, which is not correctly rounded; IEEE sqrt otherwise).
//
// Iteration is libtorch's own: a TensorIterator over the tensors (any
// strides) and `for_each` with the same grain size, so the tensors are
// split over threads as the ops split them; inner contiguous runs use
// ATen's `Vectorized` in steps of two vectors with a scalar tail, like
// `cpu_kernel_vec`.
#pragma once

#include <ATen/ATen.h>

namespace kiln {
namespace fused {

// SGD's hyperparameters (torch.optim.SGD's names).
struct Sgd {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
};

// Adam's hyperparameters, and one parameter's step-dependent scalars:
// `step_size = lr / (1 - beta1^t)`, `bias_correction2_sqrt = (1 - beta2^t)^0.5`.
struct Adam {
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, maximize, decoupled_weight_decay;
  double step_size, bias_correction2_sqrt;
};

// `buf` is undefined when momentum is 0; `first` says it is still
// uninitialised (the first step: `buf = grad.clone()`).
#define KILN_FUSED_DECLARE(isa)                                                          \
  namespace isa {                                                                        \
  void sgd(const at::Tensor &param, const at::Tensor &grad, const at::Tensor &buf,       \
           bool first, const Sgd &h, bool fma);                                          \
  void adam(const at::Tensor &param, const at::Tensor &grad, const at::Tensor &exp_avg,  \
            const at::Tensor &exp_avg_sq, const at::Tensor &max_exp_avg_sq, const Adam &h, \
            bool fma);                                                                   \
  }

KILN_FUSED_DECLARE(base)
#if defined(__x86_64__)
KILN_FUSED_DECLARE(avx2)
#endif
#undef KILN_FUSED_DECLARE

}  // namespace fused
}  // namespace kiln
