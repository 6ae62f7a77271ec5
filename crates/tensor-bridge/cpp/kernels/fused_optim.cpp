// One-pass SGD and Adam/AdamW kernels (see fused_optim.h for what they
// promise). build.rs compiles this file twice, always with
// -ffp-contract=off (every fused multiply-add below is written out):
//   KILN_FUSED_ISA=base  scalar loops, any CPU;
//   KILN_FUSED_ISA=avx2  -mavx2 -mfma, ATen's AVX2 `Vectorized` (x86-64 only).
// fused_optim_dispatch.cpp picks one at run time.
#include "fused_optim.h"

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(KILN_FUSED_VECTORIZED)
#include <ATen/cpu/vec/vec.h>
#endif

#if AT_MKL_ENABLED() && !defined(__APPLE__)
// What at::vml::vsqrt calls (ATen/cpu/vml.h): MKL's VML, LP64 interface,
// mode VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE.
extern "C" {
void vmsSqrt(int n, const float *a, float *r, long long mode);
void vmdSqrt(int n, const double *a, double *r, long long mode);
}
#define KILN_VML_MODE (0x00000002LL | 0x00140000LL | 0x00000100LL)
#endif

namespace kiln {
namespace fused {
namespace KILN_FUSED_ISA {
namespace {

// `sqrt` over a contiguous run, as at::vml::vsqrt computes it.
inline void vsqrt(const float *in, float *out, int64_t n) {
#if AT_MKL_ENABLED() && !defined(__APPLE__)
  vmsSqrt(static_cast<int>(n), in, out, KILN_VML_MODE);
#else
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
#endif
}

inline void vsqrt(const double *in, double *out, int64_t n) {
#if AT_MKL_ENABLED() && !defined(__APPLE__)
  vmdSqrt(static_cast<int>(n), in, out, KILN_VML_MODE);
#else
  for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
#endif
}

template <typename T>
using if_scalar = std::enable_if_t<std::is_floating_point_v<T>, int>;

// y + x * a, fused (one rounding) or not (two), as libtorch's kernels do it.
template <bool FMA, typename T, if_scalar<T> = 0>
inline T madd(T x, T a, T y) {
  if constexpr (FMA) {
    return std::fma(x, a, y);
  } else {
    return y + x * a;
  }
}

#if defined(KILN_FUSED_VECTORIZED)
template <bool FMA, typename T>
inline at::vec::Vectorized<T> madd(at::vec::Vectorized<T> x, at::vec::Vectorized<T> a,
                                   at::vec::Vectorized<T> y) {
  if constexpr (FMA) {
    return at::vec::fmadd(x, a, y);
  } else {
    return y + x * a;
  }
}

template <typename T>
inline at::vec::Vectorized<T> neg(at::vec::Vectorized<T> x) {
  return x.neg();
}

// torch.maximum's vectorised kernel.
template <typename T>
inline at::vec::Vectorized<T> maximum_of(at::vec::Vectorized<T> a, at::vec::Vectorized<T> b) {
  return at::vec::maximum(a, b);
}
#endif

template <typename T, if_scalar<T> = 0>
inline T neg(T x) {
  return -x;
}

// torch.maximum's scalar kernel.
template <typename T, if_scalar<T> = 0>
inline T maximum_of(T a, T b) {
  if (a != a || b != b) return std::numeric_limits<T>::quiet_NaN();
  return std::max(a, b);
}

// Splat a scalar to the value type S (a scalar or a vector).
template <typename S, typename T>
inline S splat(T v) {
  return S(v);
}

// ---------------------------------------------------------------------------
// SGD: torch.optim.sgd._single_tensor_sgd, per element.
//   g = maximize ? -g : g
//   g = g.add(p, alpha=wd)                     (wd != 0)
//   b = g                                      (first step)
//   b = b.mul_(m).add_(g, alpha=1 - dampening) (later steps)
//   g = nesterov ? g.add(b, alpha=m) : b       (m != 0)
//   p = p.add_(g, alpha=-lr)
// Scalars are the ops' own: each Python float cast to the tensor's dtype.
template <typename T>
struct SgdScalars {
  T wd, m, one_minus_damp, neg_lr;
  bool has_wd, has_m, first, nesterov, maximize;
};

// Calls f(std::integral_constant<bool, b>{}): a run-time switch made a
// compile-time one, so the loops below carry no per-element branches.
template <typename F>
inline void with_bool(bool b, F &&f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <bool FMA, bool MAX, bool WD, bool M, bool FIRST, bool NEST, typename T, typename S>
inline void sgd_elem(S &p, S g, S &b, T wd, T m, T omd, T neg_lr) {
  if constexpr (MAX) g = neg(g);
  if constexpr (WD) g = madd<FMA>(p, splat<S>(wd), g);
  if constexpr (M) {
    if constexpr (FIRST) {
      b = g;
    } else {
      b = b * splat<S>(m);
      b = madd<FMA>(g, splat<S>(omd), b);
    }
    if constexpr (NEST) {
      g = madd<FMA>(b, splat<S>(m), g);
    } else {
      g = b;
    }
  }
  p = madd<FMA>(g, splat<S>(neg_lr), p);
}

// Operands: with momentum [p_out, b_out, p, g, (b)], without [p_out, p, g].
template <bool FMA, bool MAX, bool WD, bool M, bool FIRST, bool NEST, typename T>
void sgd_loop(at::TensorIterator &iter, const SgdScalars<T> &s) {
  const int nt = iter.ntensors();
  // Scalars by value: stores through the data pointers cannot alias them.
  const T wd = s.wd, m = s.m, omd = s.one_minus_damp, neg_lr = s.neg_lr;
  constexpr int gi = M ? 3 : 2;
  iter.for_each(
      [=](char **data, const int64_t *strides, int64_t n0, int64_t n1) {
        for (int64_t j = 0; j < n1; ++j) {
          char *ptr[5];
          for (int k = 0; k < nt; ++k) ptr[k] = data[k] + j * strides[nt + k];
          bool contiguous = true;
          for (int k = 0; k < nt; ++k) contiguous = contiguous && strides[k] == int64_t(sizeof(T));
          if (contiguous) {
            T *__restrict pp = reinterpret_cast<T *>(ptr[0]);
            T *__restrict bp = M ? reinterpret_cast<T *>(ptr[1]) : nullptr;
            const T *__restrict gp = reinterpret_cast<const T *>(ptr[gi]);
            int64_t i = 0;
#if defined(KILN_FUSED_VECTORIZED)
            using V = at::vec::Vectorized<T>;
            constexpr int64_t W = V::size();
            for (; i + 2 * W <= n0; i += 2 * W) {
              for (int64_t h = 0; h < 2 * W; h += W) {
                V p = V::loadu(pp + i + h);
                V b = (M && !FIRST) ? V::loadu(bp + i + h) : V(T(0));
                sgd_elem<FMA, MAX, WD, M, FIRST, NEST, T>(p, V::loadu(gp + i + h), b, wd, m, omd,
                                                          neg_lr);
                p.store(pp + i + h);
                if constexpr (M) b.store(bp + i + h);
              }
            }
#endif
            for (; i < n0; ++i) {
              T p = pp[i];
              T b = (M && !FIRST) ? bp[i] : T(0);
              sgd_elem<FMA, MAX, WD, M, FIRST, NEST, T>(p, gp[i], b, wd, m, omd, neg_lr);
              pp[i] = p;
              if constexpr (M) bp[i] = b;
            }
          } else {
            for (int64_t i = 0; i < n0; ++i) {
              T *pe = reinterpret_cast<T *>(ptr[0] + i * strides[0]);
              T *be = M ? reinterpret_cast<T *>(ptr[1] + i * strides[1]) : nullptr;
              const T g = *reinterpret_cast<const T *>(ptr[gi] + i * strides[gi]);
              T p = *pe;
              T b = (M && !FIRST) ? *be : T(0);
              sgd_elem<FMA, MAX, WD, M, FIRST, NEST, T>(p, g, b, wd, m, omd, neg_lr);
              *pe = p;
              if constexpr (M) *be = b;
            }
          }
        }
      },
      at::internal::GRAIN_SIZE);
}

template <bool FMA, typename T>
void sgd_dispatch(at::TensorIterator &iter, const SgdScalars<T> &s) {
  with_bool(s.maximize, [&](auto max) {
    with_bool(s.has_wd, [&](auto wd) {
      with_bool(s.has_m, [&](auto m) {
        with_bool(s.has_m && s.first, [&](auto first) {
          with_bool(s.has_m && s.nesterov, [&](auto nest) {
            sgd_loop<FMA, decltype(max)::value, decltype(wd)::value, decltype(m)::value,
                     decltype(first)::value, decltype(nest)::value, T>(iter, s);
          });
        });
      });
    });
  });
}

// ---------------------------------------------------------------------------
// Adam / AdamW: torch.optim.adam._single_tensor_adam (not capturable, not
// differentiable), per element, with t the step after incrementing:
//   g = maximize ? -g : g
//   p = p.mul_(1 - lr * wd)                    (decoupled, wd != 0)
//   g = g.add(p, alpha=wd)                     (L2, wd != 0)
//   m = m.lerp_(g, 1 - beta1)
//   v = v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
//   vmax = torch.maximum(vmax, v)              (amsgrad; used below for v)
//   d = (v.sqrt() / bias_correction2_sqrt).add_(eps)
//   p = p.addcdiv_(m, d, value=-step_size)
template <typename T>
struct AdamScalars {
  T wd, decay, lerp_w, lerp_w_minus_1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
  bool has_wd, decoupled, small_w, amsgrad, maximize;
};

// Compile-time switches of one Adam configuration.
template <bool MAX_, bool L2_, bool DECOUPLED_, bool SMALL_W_, bool AMS_>
struct AdamFlags {
  static constexpr bool MAX = MAX_, L2 = L2_, DECOUPLED = DECOUPLED_, SMALL_W = SMALL_W_,
                        AMS = AMS_;
};

// First half, up to the sqrt: updates m, v (vmax); returns what sqrt takes.
template <bool FMA, typename F, typename T, typename S>
inline S adam_moments(S p, S g, S &m, S &v, S &vmax, const AdamScalars<T> &s) {
  if constexpr (F::MAX) g = neg(g);
  if constexpr (F::L2) g = madd<FMA>(p, splat<S>(s.wd), g);
  // lerp(self=m, end=g, w): libtorch's lerp, by the size of w.
  S d = g - m;
  if constexpr (F::SMALL_W) {
    m = madd<FMA>(splat<S>(s.lerp_w), d, m);
  } else {
    m = madd<FMA>(splat<S>(s.lerp_w_minus_1), d, g);
  }
  v = v * splat<S>(s.beta2);
  v = madd<FMA>(splat<S>(s.one_minus_beta2) * g, g, v);
  if constexpr (F::AMS) {
    vmax = maximum_of(vmax, v);
    return vmax;
  } else {
    return v;
  }
}

// Second half, from sqrt(v) on: updates p.
template <typename F, typename T, typename S>
inline S adam_param(S p, S m, S root, const AdamScalars<T> &s) {
  if constexpr (F::DECOUPLED) p = p * splat<S>(s.decay);
  S d = root / splat<S>(s.bc2_sqrt) + splat<S>(s.eps);
  return p + (splat<S>(s.neg_step_size) * m) / d;
}

// Values per sqrt call: the block's operands stay in L1 between the passes.
constexpr int64_t BLOCK = 1024;

// Operands: [p_out, m_out, v_out, (vmax_out), p, g, m, v, (vmax)].
template <bool FMA, typename F, typename T>
void adam_loop(at::TensorIterator &iter, const AdamScalars<T> &scalars) {
  const int nt = iter.ntensors();
  constexpr int nout = F::AMS ? 4 : 3;
  constexpr int P = 0, M = 1, Vq = 2, X = 3, G = nout + 1;
  // Scalars by value: stores through the data pointers cannot alias them.
  iter.for_each(
      [nt, s = scalars](char **data, const int64_t *strides, int64_t n0, int64_t n1) {
        T root[BLOCK];
        for (int64_t j = 0; j < n1; ++j) {
          char *ptr[9];
          for (int k = 0; k < nt; ++k) ptr[k] = data[k] + j * strides[nt + k];
          bool contiguous = true;
          for (int k = 0; k < nt; ++k) contiguous = contiguous && strides[k] == int64_t(sizeof(T));
          // Element i of operand k.
          auto at_ = [&](int k, int64_t i) {
            return reinterpret_cast<T *>(ptr[k] + i * strides[k]);
          };
          for (int64_t i0 = 0; i0 < n0; i0 += BLOCK) {
            const int64_t len = std::min(BLOCK, n0 - i0);
            int64_t i = 0;
            if (contiguous) {
              T *__restrict pp = at_(P, i0);
              T *__restrict mp = at_(M, i0);
              T *__restrict vp = at_(Vq, i0);
              T *__restrict xp = F::AMS ? at_(X, i0) : nullptr;
              const T *__restrict gp = at_(G, i0);
#if defined(KILN_FUSED_VECTORIZED)
              using Vec = at::vec::Vectorized<T>;
              constexpr int64_t W = Vec::size();
              for (; i + 2 * W <= len; i += 2 * W) {
                for (int64_t h = 0; h < 2 * W; h += W) {
                  Vec m = Vec::loadu(mp + i + h), v = Vec::loadu(vp + i + h);
                  Vec x = F::AMS ? Vec::loadu(xp + i + h) : Vec(T(0));
                  Vec r = adam_moments<FMA, F, T>(Vec::loadu(pp + i + h), Vec::loadu(gp + i + h),
                                                  m, v, x, s);
                  m.store(mp + i + h);
                  v.store(vp + i + h);
                  if constexpr (F::AMS) x.store(xp + i + h);
                  r.store(root + i + h);
                }
              }
#endif
              for (; i < len; ++i) {
                T x = F::AMS ? xp[i] : T(0);
                root[i] = adam_moments<FMA, F, T>(pp[i], gp[i], mp[i], vp[i], x, s);
                if constexpr (F::AMS) xp[i] = x;
              }
              vsqrt(root, root, len);
              i = 0;
#if defined(KILN_FUSED_VECTORIZED)
              for (; i + 2 * W <= len; i += 2 * W) {
                for (int64_t h = 0; h < 2 * W; h += W) {
                  Vec p = adam_param<F, T>(Vec::loadu(pp + i + h), Vec::loadu(mp + i + h),
                                           Vec::loadu(root + i + h), s);
                  p.store(pp + i + h);
                }
              }
#endif
              for (; i < len; ++i) pp[i] = adam_param<F, T>(pp[i], mp[i], root[i], s);
            } else {
              for (i = 0; i < len; ++i) {
                const int64_t e = i0 + i;
                T x = F::AMS ? *at_(X, e) : T(0);
                root[i] = adam_moments<FMA, F, T>(*at_(P, e), *at_(G, e), *at_(M, e), *at_(Vq, e),
                                                  x, s);
                if constexpr (F::AMS) *at_(X, e) = x;
              }
              vsqrt(root, root, len);
              for (i = 0; i < len; ++i) {
                const int64_t e = i0 + i;
                *at_(P, e) = adam_param<F, T>(*at_(P, e), *at_(M, e), root[i], s);
              }
            }
          }
        }
      },
      at::internal::GRAIN_SIZE);
}

template <bool FMA, typename T>
void adam_dispatch(at::TensorIterator &iter, const AdamScalars<T> &s) {
  with_bool(s.maximize, [&](auto max) {
    with_bool(s.has_wd && !s.decoupled, [&](auto l2) {
      with_bool(s.has_wd && s.decoupled, [&](auto decoupled) {
        with_bool(s.small_w, [&](auto small_w) {
          with_bool(s.amsgrad, [&](auto ams) {
            using F = AdamFlags<decltype(max)::value, decltype(l2)::value,
                                decltype(decoupled)::value, decltype(small_w)::value,
                                decltype(ams)::value>;
            adam_loop<FMA, F, T>(iter, s);
          });
        });
      });
    });
  });
}

at::TensorIteratorConfig config() {
  at::TensorIteratorConfig c;
  c.check_all_same_dtype(true)
      .resize_outputs(false)
      .promote_inputs_to_common_dtype(false)
      .cast_common_dtype_to_outputs(false)
      .enforce_safe_casting_to_output(false);
  return c;
}

}  // namespace

void sgd(const at::Tensor &param, const at::Tensor &grad, const at::Tensor &buf, bool first,
         const Sgd &h, bool fma) {
  const bool has_m = h.momentum != 0.0;
  auto c = config();
  c.add_output(param);
  if (has_m) c.add_output(buf);
  c.add_const_input(param).add_const_input(grad);
  if (has_m) c.add_const_input(buf);
  auto iter = c.build();
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "kiln_fused_sgd", [&] {
    SgdScalars<scalar_t> s{static_cast<scalar_t>(h.weight_decay),
                           static_cast<scalar_t>(h.momentum),
                           static_cast<scalar_t>(1.0 - h.dampening),
                           static_cast<scalar_t>(-h.lr),
                           h.weight_decay != 0.0,
                           has_m,
                           first,
                           h.nesterov,
                           h.maximize};
    if (fma) {
      sgd_dispatch<true, scalar_t>(iter, s);
    } else {
      sgd_dispatch<false, scalar_t>(iter, s);
    }
  });
}

void adam(const at::Tensor &param, const at::Tensor &grad, const at::Tensor &exp_avg,
          const at::Tensor &exp_avg_sq, const at::Tensor &max_exp_avg_sq, const Adam &h,
          bool fma) {
  auto c = config();
  c.add_output(param).add_output(exp_avg).add_output(exp_avg_sq);
  if (h.amsgrad) c.add_output(max_exp_avg_sq);
  c.add_const_input(param).add_const_input(grad).add_const_input(exp_avg).add_const_input(exp_avg_sq);
  if (h.amsgrad) c.add_const_input(max_exp_avg_sq);
  auto iter = c.build();
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "kiln_fused_adam", [&] {
    using T = scalar_t;
    // lerp's weight as libtorch's kernel takes it (cast to the dtype first).
    const T w = static_cast<T>(1.0 - h.beta1);
    AdamScalars<T> s{static_cast<T>(h.weight_decay),
                     static_cast<T>(1.0 - h.lr * h.weight_decay),
                     w,
                     static_cast<T>(w - T(1)),
                     static_cast<T>(h.beta2),
                     static_cast<T>(1.0 - h.beta2),
                     static_cast<T>(h.bias_correction2_sqrt),
                     static_cast<T>(h.eps),
                     static_cast<T>(-h.step_size),
                     h.weight_decay != 0.0,
                     h.decoupled_weight_decay,
                     std::abs(w) < T(0.5),
                     h.amsgrad,
                     h.maximize};
    if (fma) {
      adam_dispatch<true, T>(iter, s);
    } else {
      adam_dispatch<false, T>(iter, s);
    }
  });
}

}  // namespace KILN_FUSED_ISA
}  // namespace fused
}  // namespace kiln
