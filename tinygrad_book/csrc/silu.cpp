// The first kernel of the book: SiLU (x * sigmoid(x)) and its derivative, for CPU tensors.
// It shows the whole path from C++ to a PyTorch op: an op schema, a kernel per (device, dtype), OpenMP threads.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <cmath>

namespace {

// The loops live in templates outside AT_DISPATCH: a #pragma cannot appear inside a macro's argument.
template <typename T> void silu_fwd_kernel(const T* X, T* Y, int64_t n) {
#pragma omp parallel for simd schedule(static) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) Y[i] = X[i] / (T(1) + std::exp(-X[i]));
}

// d/dx x*s(x) = s(x) * (1 + x * (1 - s(x)))
template <typename T> void silu_bwd_kernel(const T* G, const T* X, T* O, int64_t n) {
#pragma omp parallel for simd schedule(static) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) {
    const T s = T(1) / (T(1) + std::exp(-X[i]));
    O[i] = G[i] * s * (T(1) + X[i] * (T(1) - s));
  }
}

at::Tensor silu_fwd_cpu(const at::Tensor& x_) {
  TORCH_CHECK(x_.is_floating_point(), "silu: expected a floating-point tensor, got ", x_.scalar_type());
  auto x = x_.contiguous();  // kernels index flat memory; a strided view is compacted first
  auto y = at::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "silu_fwd_cpu", [&] {  // one instantiation per dtype
    silu_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), n);
  });
  return y;
}

at::Tensor silu_bwd_cpu(const at::Tensor& grad_, const at::Tensor& x_) {
  TORCH_CHECK(grad_.sizes() == x_.sizes(), "silu_bwd: grad and x must have the same shape");
  auto x = x_.contiguous();
  auto g = grad_.contiguous().to(x.scalar_type());
  auto gx = at::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "silu_bwd_cpu", [&] {
    silu_bwd_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              gx.mutable_data_ptr<scalar_t>(), n);
  });
  return gx;
}

}  // namespace

// The schema: what the op is called and what it takes, independent of any device.
TORCH_LIBRARY(tgb_silu, m) {
  m.def("silu_fwd(Tensor x) -> Tensor");
  m.def("silu_bwd(Tensor grad, Tensor x) -> Tensor");
}

// The CPU kernels; silu_cuda.cpp registers CUDA kernels for the same ops under the CUDA key.
TORCH_LIBRARY_IMPL(tgb_silu, CPU, m) {
  m.impl("silu_fwd", &silu_fwd_cpu);
  m.impl("silu_bwd", &silu_bwd_cpu);
}
