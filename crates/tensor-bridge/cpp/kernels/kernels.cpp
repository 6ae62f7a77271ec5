// Kernels: the libtorch operations tch 0.24 does not wrap, with PyTorch's
// exact arithmetic — elementwise ops with scalars (`add_(other, alpha)` is
// one fused multiply-add in libtorch's kernel), gradients (`p.grad = None`,
// `p.grad = g`), norms, `multi_margin_loss`, the `_foreach_*` kernels and
// libtorch's fused optimizers (`_fused_sgd_`, `_fused_adam(w)_`,
// `_fused_adagrad_`). kiln's own one-pass optimizer kernels are in
// fused_optim*.
#include "../error.h"
#include "../handles.h"

#include <ATen/ATen.h>

extern "C" {

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

// self.grad = grad, with the checks of PyTorch's `Tensor.grad` setter.
char *kiln_set_grad(tensor self, tensor grad) {
  KILN_TRY({
    TORCH_CHECK(grad->dtype() == self->dtype(), "assigned grad has data of a different type");
    TORCH_CHECK(grad->device() == self->device(), "assigned grad has data located on a different device");
    TORCH_CHECK(grad->sizes() == self->sizes(), "assigned grad has data of a different size");
    self->mutable_grad() = *grad;
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

// torch._fused_adagrad_(params, grads, state_sums, state_steps, lr=..., ...)
char *kiln_fused_adagrad_(tensor *params, tensor *grads, tensor *state_sums, tensor *state_steps,
                          int64_t n, double lr, double lr_decay, double weight_decay, double eps,
                          int maximize) {
  KILN_TRY(at::_fused_adagrad_(kiln_list(params, n), kiln_list(grads, n), kiln_list(state_sums, n),
                               kiln_list(state_steps, n), lr, lr_decay, weight_decay, eps,
                               maximize != 0))
}
}  // extern "C"
