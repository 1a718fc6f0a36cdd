// Fused optimizer updates for the C++ NDArray backend (tinygrad_book.optim).
//
// The readable optimizer (optim.py) writes Adam as about 17 array ops per parameter: each op is a Python call, a
// dispatch, a fresh output buffer and one pass over memory. These kernels do a parameter's whole update in ONE pass,
// in place, reading p, grad, exp_avg, exp_avg_sq once and writing p, exp_avg, exp_avg_sq once; and one call updates
// every parameter of a group (a list of tensors), so the per-call cost is paid once per step, not once per op.
// That is what torch.optim's `foreach=True` (one call per op for all tensors) and `fused=True` (one kernel for the
// whole update) do.
//
// Buffers are the NDArrays' flat 1-D tensors; `*_offsets` say where each array starts in its buffer. Every array
// must be compact (row-major from its offset): the Python side checks that and compacts a strided gradient first.
// The arithmetic is the reference's, operation for operation in the same order and precision (the dtype of the
// parameter, scalars rounded to it), so the fused update equals the multi-op one to the last bit; the compiler
// must not contract a*b+c into a fused multiply-add (which rounds once instead of twice), hence the pragma.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

using IntList = c10::IntArrayRef;
using at::TensorList;

// std::sqrt can set errno (for a negative argument), a side effect that keeps GCC from vectorising any loop that
// calls it; -fno-math-errno would lift that, but every op library is built with the same flags, and GCC 12 ignores
// it in a `#pragma GCC optimize`. So the square roots are taken in a loop of their own, with the vector instruction
// where the CPU has one (IEEE sqrt is correctly rounded: the same bits as std::sqrt).
template <class T> inline void sqrt_inplace(T* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_sqrt_ps(_mm512_loadu_ps(x + i)));
  else
    for (; i + 8 <= n; i += 8) _mm512_storeu_pd(x + i, _mm512_sqrt_pd(_mm512_loadu_pd(x + i)));
#elif defined(__AVX__)
  if constexpr (std::is_same_v<T, float>)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
  else
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, _mm256_sqrt_pd(_mm256_loadu_pd(x + i)));
#endif
  for (; i < n; ++i) x[i] = std::sqrt(x[i]);
}

// One parameter's Adam/AdamW update, in chunks that stay in L1: the moments (and the decayed p), then the square
// roots, then the step. vh is v, or the running max of v (AMSGrad). The scalars are the step's, already rounded to
// T: exactly the scalars the reference passes to its array ops. L2 and AMSGRAD are template flags, so that the
// loops have no branches (a branch in a loop body also stops GCC from vectorising it).
template <class T, bool L2, bool AMSGRAD>
void adam_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                 T* __restrict__ vmax, int64_t n, T decay, T wd, T b1, T one_minus_b1, T b2, T one_minus_b2,
                 T sqrt_bc2, T eps, T step_size) {
  constexpr int64_t kChunk = 512;
  alignas(64) T root[kChunk];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, n - c0);
    T *pc = p + c0, *mc = m + c0, *vc = v + c0;
    const T* gc = g + c0;
    for (int64_t i = 0; i < cn; ++i) {
      T gi = gc[i];
      if constexpr (L2) gi = gi + pc[i] * wd;           // Adam: the L2 term joins the gradient
      else pc[i] = pc[i] * decay;                        // AdamW: decoupled decay, p * (1 - lr*wd)
      const T mi = mc[i] * b1 + gi * one_minus_b1;       // first moment
      const T vi = vc[i] * b2 + gi * gi * one_minus_b2;  // second moment
      mc[i] = mi;
      vc[i] = vi;
      if constexpr (AMSGRAD) {
        const T old = vmax[c0 + i], vh = old > vi || old != old ? old : vi;  // numpy's maximum (NaN wins)
        vmax[c0 + i] = vh;
        root[i] = vh;
      } else root[i] = vi;
    }
    sqrt_inplace(root, cn);
    for (int64_t i = 0; i < cn; ++i) pc[i] = pc[i] - mc[i] / (root[i] / sqrt_bc2 + eps) * step_size;
  }
}

void check_lists(TensorList params, IntList p_off, TensorList grads, IntList g_off, IntList sizes, const char* op) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && p_off.size() == n && g_off.size() == n && sizes.size() == n, op,
              ": params, param_offsets, grads, grad_offsets and sizes must have the same length, got ", n, ", ",
              p_off.size(), ", ", grads.size(), ", ", g_off.size(), ", ", sizes.size());
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(params[i].device().is_cpu() && params[i].is_contiguous() && params[i].dim() == 1, op,
                ": param ", i, " must be a flat contiguous CPU buffer");
    TORCH_CHECK(grads[i].scalar_type() == params[i].scalar_type(), op, ": grad ", i, " has dtype ",
                grads[i].scalar_type(), ", its parameter ", params[i].scalar_type());
    TORCH_CHECK(p_off[i] >= 0 && sizes[i] >= 0 && p_off[i] + sizes[i] <= params[i].numel(), op, ": param ", i,
                " (offset ", p_off[i], ", size ", sizes[i], ") is outside its buffer of ", params[i].numel());
    TORCH_CHECK(g_off[i] >= 0 && g_off[i] + sizes[i] <= grads[i].numel(), op, ": grad ", i, " (offset ", g_off[i],
                ", size ", sizes[i], ") is outside its buffer of ", grads[i].numel());
  }
}

void check_state(TensorList state, TensorList params, IntList sizes, const char* name, const char* op) {
  TORCH_CHECK(state.size() == params.size(), op, ": ", name, " must have one buffer per parameter, got ",
              state.size(), " for ", params.size());
  for (size_t i = 0; i < state.size(); ++i)
    TORCH_CHECK(state[i].scalar_type() == params[i].scalar_type() && state[i].is_contiguous() &&
                    state[i].numel() >= sizes[i],
                op, ": ", name, " ", i, " must be a contiguous ", params[i].scalar_type(), " buffer of at least ",
                sizes[i], " elements");
}

void adam_cpu(TensorList params, IntList p_off, TensorList grads, IntList g_off, TensorList exp_avgs,
              TensorList exp_avg_sqs, TensorList max_exp_avg_sqs, IntList sizes, IntList steps, double lr,
              double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool amsgrad) {
  check_lists(params, p_off, grads, g_off, sizes, "adam_");
  check_state(exp_avgs, params, sizes, "exp_avgs", "adam_");
  check_state(exp_avg_sqs, params, sizes, "exp_avg_sqs", "adam_");
  if (amsgrad) check_state(max_exp_avg_sqs, params, sizes, "max_exp_avg_sqs", "adam_");
  TORCH_CHECK(steps.size() == params.size(), "adam_: steps must have one entry per parameter");
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(steps[i] >= 1, "adam_: step counts start at 1, got ", steps[i]);
    // the bias corrections in double, as the reference computes them in Python floats
    const double bc1 = 1.0 - std::pow(beta1, (double)steps[i]), bc2 = 1.0 - std::pow(beta2, (double)steps[i]);
    AT_DISPATCH_FLOATING_TYPES(params[i].scalar_type(), "adam_", [&] {
      using T = scalar_t;
      const bool l2 = weight_decay != 0 && !decoupled;
      // AdamW without decay multiplies by exactly 1, which changes no bit
      const T decay = (weight_decay != 0 && decoupled) ? T(1.0 - lr * weight_decay) : T(1);
      auto kernel = l2 ? (amsgrad ? adam_kernel<T, true, true> : adam_kernel<T, true, false>)
                       : (amsgrad ? adam_kernel<T, false, true> : adam_kernel<T, false, false>);
      kernel(params[i].data_ptr<T>() + p_off[i], grads[i].data_ptr<T>() + g_off[i], exp_avgs[i].data_ptr<T>(),
             exp_avg_sqs[i].data_ptr<T>(), amsgrad ? max_exp_avg_sqs[i].data_ptr<T>() : nullptr, sizes[i], decay,
             T(weight_decay), T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2), T(std::sqrt(bc2)), T(eps),
             T(lr / bc1));
    });
  }
}

// SGD: d = g + wd*p; with momentum, buf = d on a buffer's first step (INIT), else momentum*buf + (1-dampening)*d;
// the step is buf, or d + momentum*buf (Nesterov); p -= lr * step. Template flags again keep the loop branch-free.
template <class T, bool MOMENTUM, bool INIT, bool NESTEROV>
void sgd_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, int64_t n, T lr, T wd,
                bool has_wd, T momentum, T one_minus_dampening) {
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i];
    T d = has_wd ? g[i] + pi * wd : g[i];
    if constexpr (MOMENTUM) {
      const T b = INIT ? d : buf[i] * momentum + d * one_minus_dampening;
      buf[i] = b;
      d = NESTEROV ? d + b * momentum : b;
    }
    p[i] = pi - d * lr;
  }
}

void sgd_cpu(TensorList params, IntList p_off, TensorList grads, IntList g_off, TensorList momentum_buffers,
             IntList sizes, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
             bool init_buffers) {
  check_lists(params, p_off, grads, g_off, sizes, "sgd_");
  const bool has_buf = momentum != 0;
  if (has_buf) check_state(momentum_buffers, params, sizes, "momentum_buffers", "sgd_");
  for (size_t i = 0; i < params.size(); ++i) {
    AT_DISPATCH_FLOATING_TYPES(params[i].scalar_type(), "sgd_", [&] {
      using T = scalar_t;
      auto kernel = !has_buf ? sgd_kernel<T, false, false, false>
                    : init_buffers ? (nesterov ? sgd_kernel<T, true, true, true> : sgd_kernel<T, true, true, false>)
                                   : (nesterov ? sgd_kernel<T, true, false, true> : sgd_kernel<T, true, false, false>);
      kernel(params[i].data_ptr<T>() + p_off[i], grads[i].data_ptr<T>() + g_off[i],
             has_buf ? momentum_buffers[i].data_ptr<T>() : nullptr, sizes[i], T(lr), T(weight_decay),
             weight_decay != 0, T(momentum), T(1.0 - dampening));
    });
  }
}

}  // namespace

TORCH_LIBRARY(tgb_optim, m) {
  // Each updates every listed parameter (and its state) in place and returns nothing. State buffers start at 0.
  m.def("adam_(Tensor(a!)[] params, int[] param_offsets, Tensor[] grads, int[] grad_offsets, Tensor(b!)[] exp_avgs, "
        "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, int[] sizes, int[] steps, float lr, float beta1, "
        "float beta2, float eps, float weight_decay, bool decoupled, bool amsgrad) -> ()");
  m.def("sgd_(Tensor(a!)[] params, int[] param_offsets, Tensor[] grads, int[] grad_offsets, "
        "Tensor(b!)[] momentum_buffers, int[] sizes, float lr, float momentum, float dampening, float weight_decay, "
        "bool nesterov, bool init_buffers) -> ()");
}

TORCH_LIBRARY_IMPL(tgb_optim, CPU, m) {
  m.impl("adam_", &adam_cpu);
  m.impl("sgd_", &sgd_cpu);
}
