// CSR and 2:4 compressed linear layers as plain CUDA: no torch headers, raw pointers in, so `nvcc -c sparse.cu`
// checks it anywhere. sparse_cuda.cpp binds these launchers to the tgb_sparse ops. Layouts as in sparse.cpp.
//
// One warp per output element (b, o): its 32 lanes stride over the nonzeros (CSR) or the groups of four (2:4) of
// weight row o, so consecutive lanes read consecutive values and column indices (coalesced), and a warp shuffle
// sums the partial dot products.
#include <cuda_runtime.h>
#include <cstdint>

namespace {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int d = 16; d > 0; d >>= 1) v += __shfl_down_sync(0xffffffffu, v, d);
  return v;
}

template <typename T>
__global__ void csr_linear_kernel(const T* __restrict__ x, const int32_t* __restrict__ rp, const int32_t* __restrict__ col,
                                  const T* __restrict__ val, const T* __restrict__ bias, T* __restrict__ y, int64_t B,
                                  int64_t K, int64_t O) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; w < B * O; w += warps) {
    const int64_t b = w / O, o = w % O;
    const T* xb = x + b * K;
    T acc = T(0);
    for (int32_t j = rp[o] + lane; j < rp[o + 1]; j += 32) acc += val[j] * xb[col[j]];
    acc = warp_sum(acc);
    if (lane == 0) y[b * O + o] = acc + (bias ? bias[o] : T(0));
  }
}

template <typename T>
__global__ void nm24_linear_kernel(const T* __restrict__ x, const T* __restrict__ values, const uint8_t* __restrict__ meta,
                                   const T* __restrict__ bias, T* __restrict__ y, int64_t B, int64_t K, int64_t O) {
  const int lane = threadIdx.x & 31;
  const int64_t G = K / 4, mstride = (G + 1) / 2;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
  for (int64_t w = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; w < B * O; w += warps) {
    const int64_t b = w / O, o = w % O;
    const T* xb = x + b * K;
    const T* v = values + o * (K / 2);
    const uint8_t* m = meta + o * mstride;
    T acc = T(0);
    for (int64_t g = lane; g < G; g += 32) {
      const int nib = (m[g >> 1] >> ((g & 1) * 4)) & 0xF;
      acc += v[2 * g] * xb[4 * g + (nib & 3)] + v[2 * g + 1] * xb[4 * g + (nib >> 2)];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[b * O + o] = acc + (bias ? bias[o] : T(0));
  }
}

inline unsigned grid_for_warps(int64_t warps, int threads) {
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  return unsigned(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);  // grid-stride loop covers the rest
}

}  // namespace

// Launchers: return the launch's cudaError_t so the C++ side can raise a Python exception.
#define TGB_SPARSE_LAUNCHERS(T, SUFFIX)                                                                                \
  cudaError_t tgb_csr_linear_##SUFFIX(const T* x, const int32_t* rp, const int32_t* col, const T* val, const T* bias, \
                                      T* y, int64_t B, int64_t K, int64_t O, cudaStream_t stream) {                   \
    if (B * O == 0) return cudaSuccess;                                                                               \
    csr_linear_kernel<T><<<grid_for_warps(B * O, 256), 256, 0, stream>>>(x, rp, col, val, bias, y, B, K, O);          \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  cudaError_t tgb_nm24_linear_##SUFFIX(const T* x, const T* values, const uint8_t* meta, const T* bias, T* y,         \
                                       int64_t B, int64_t K, int64_t O, cudaStream_t stream) {                        \
    if (B * O == 0) return cudaSuccess;                                                                               \
    nm24_linear_kernel<T><<<grid_for_warps(B * O, 256), 256, 0, stream>>>(x, values, meta, bias, y, B, K, O);         \
    return cudaGetLastError();                                                                                        \
  }
TGB_SPARSE_LAUNCHERS(float, f32)
TGB_SPARSE_LAUNCHERS(double, f64)
