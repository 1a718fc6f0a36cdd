// SiLU forward/backward as plain CUDA: no torch headers, raw pointers in, so `nvcc -c silu.cu` checks it anywhere.
// silu_cuda.cpp binds these launchers to torch tensors.
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_math.cuh"

namespace {

using tgb::dev_exp;

template <typename T>
__global__ void silu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i] / (T(1) + dev_exp(-x[i]));
}

template <typename T>
__global__ void silu_bwd_kernel(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ gx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T s = T(1) / (T(1) + dev_exp(-x[i]));
    gx[i] = g[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);  // grid-stride loop covers the rest
}

}  // namespace

// Launchers: return the launch's cudaError_t so the C++ side can raise a Python exception.
#define TGB_SILU_LAUNCHERS(T, SUFFIX)                                                                  \
  cudaError_t tgb_silu_fwd_##SUFFIX(const T* x, T* y, int64_t n, cudaStream_t stream) {              \
    silu_fwd_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(x, y, n);                                  \
    return cudaGetLastError();                                                                          \
  }                                                                                                     \
  cudaError_t tgb_silu_bwd_##SUFFIX(const T* g, const T* x, T* gx, int64_t n, cudaStream_t stream) { \
    silu_bwd_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(g, x, gx, n);                             \
    return cudaGetLastError();                                                                          \
  }
TGB_SILU_LAUNCHERS(float, f32)
TGB_SILU_LAUNCHERS(double, f64)
