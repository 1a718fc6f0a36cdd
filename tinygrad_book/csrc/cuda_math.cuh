// Device math shared by the book's .cu files: exp/log overloaded on float and double (the accurate versions:
// expf, not __expf), and -inf of either type. Plain CUDA, no torch headers.
#pragma once
#include <cuda_runtime.h>
#include <cmath>

namespace tgb {

template <typename T> __device__ __forceinline__ T dev_exp(T x);
template <> __device__ __forceinline__ float dev_exp<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double dev_exp<double>(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T dev_log(T x);
template <> __device__ __forceinline__ float dev_log<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double dev_log<double>(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T neg_inf() { return -INFINITY; }

}  // namespace tgb
