// Softmax / log-softmax / logsumexp / cross-entropy as plain CUDA (float32, float64): no torch headers, raw
// pointers in, so `nvcc -c softmax.cu` checks it on any machine with the toolkit. softmax_cuda.cpp binds it.
//
// One thread block per row. Each thread walks its strided share of the row keeping an *online* pair
// (m, s): m the running max, s the running sum of exp(x - m). Pairs merge associatively,
//   (m1, s1) + (m2, s2) = (M, s1 exp(m1 - M) + s2 exp(m2 - M)),  M = max(m1, m2),
// first across a warp with shuffles, then across warps through shared memory: one read of the row for its
// statistics, one more to write the output.
#include <cuda_runtime.h>
#include <cstdint>
#include <cmath>

#include "cuda_math.cuh"

namespace {

constexpr int kThreads = 512;  // threads per block (one block per row) for the streaming kernels
constexpr int kMaxWarps = 32;  // 1024 threads at most: the size of the shared arrays of the block reductions

using tgb::dev_exp;
using tgb::dev_log;
using tgb::neg_inf;

template <typename T> struct MaxSum { T m, s; };

// 16-byte vectors: one load instruction moves 4 floats or 2 doubles, which is what saturates HBM.
template <typename T> struct Vec16;
template <> struct Vec16<float> { using type = float4; static constexpr int n = 4; };
template <> struct Vec16<double> { using type = double2; static constexpr int n = 2; };

// Rows can be read as 16-byte vectors when every row starts 16-byte aligned.
template <typename T> __device__ __forceinline__ bool vec_ok(const void* p, int64_t cols) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && cols % Vec16<T>::n == 0;
}

// Add one element to a thread's running (max, sum): one exp per element, a rescale only when the max grows.
template <typename T> __device__ __forceinline__ void online_add(MaxSum<T>& v, T x) {
  if (x > v.m) {
    v.s = v.s * dev_exp(v.m - x) + T(1);  // v.m == -inf: exp(-inf) == 0, so s restarts at 1
    v.m = x;
  } else if (x != x) {
    v.s = x;  // NaN propagates, as in torch
  } else if (v.m != neg_inf<T>()) {
    v.s += dev_exp(x - v.m);  // (an -inf element while the max is still -inf adds nothing)
  }
}

// Merge two (max, sum) pairs. A side whose max is -inf contributes nothing (and no exp(-inf + inf) = NaN).
template <typename T> __device__ __forceinline__ MaxSum<T> merge(MaxSum<T> a, MaxSum<T> b) {
  const T M = a.m > b.m ? a.m : b.m;
  if (M == neg_inf<T>()) return {M, a.s + b.s};
  const T sa = a.m == M ? a.s : a.s * dev_exp(a.m - M);
  const T sb = b.m == M ? b.s : b.s * dev_exp(b.m - M);
  return {M, sa + sb};
}

// Block-wide merge of every thread's pair; every thread gets the row's result.
template <typename T> __device__ MaxSum<T> block_merge(MaxSum<T> v) {
  __shared__ T sm[kMaxWarps], ss[kMaxWarps];
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum<T> o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off)};
    v = merge(v, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) { sm[warp] = v.m; ss[warp] = v.s; }
  __syncthreads();
  v = lane < int(blockDim.x / 32) ? MaxSum<T>{sm[lane], ss[lane]} : MaxSum<T>{neg_inf<T>(), T(0)};
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum<T> o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off)};
    v = merge(v, o);
  }
  __syncthreads();  // the shared slots may be reused by the caller's next reduction
  return v;
}

// Block-wide reduction with `op` (sum or max); every thread gets the result.
template <typename T, typename Op> __device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T sh[kMaxWarps];
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x / 32) ? sh[lane] : identity;
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  __syncthreads();
  return v;
}

template <typename T> __device__ T block_sum(T v) {
  return block_reduce(v, [](T a, T b) { return a + b; }, T(0));
}
// Max that ignores NaN (a NaN row is caught by the sum of exps instead).
template <typename T> __device__ T block_max(T v) {
  return block_reduce(v, [](T a, T b) { return b > a ? b : a; }, neg_inf<T>());
}

// The row's (max, sum exp(x - max)) in one sweep of 16-byte loads.
template <typename T> __device__ MaxSum<T> row_stats(const T* __restrict__ x, int64_t cols, bool vec) {
  MaxSum<T> v{neg_inf<T>(), T(0)};
  if (vec) {
    using V = typename Vec16<T>::type;
    constexpr int N = Vec16<T>::n;
    const V* xv = reinterpret_cast<const V*>(x);
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < cols / N; j += blockDim.x) {
      const V q = xv[j];
      const T* e = reinterpret_cast<const T*>(&q);
#pragma unroll
      for (int k = 0; k < N; ++k) online_add(v, e[k]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) online_add(v, x[j]);
  }
  return block_merge(v);
}

// y[j] = f(x[j], j) over a row (and optionally a second input row g), with 16-byte loads and stores when aligned.
template <typename T, typename F>
__device__ __forceinline__ void row_map(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ y,
                                        int64_t cols, bool vec, F f) {
  if (vec) {
    using V = typename Vec16<T>::type;
    constexpr int N = Vec16<T>::n;
#pragma unroll 4
    for (int64_t j = threadIdx.x; j < cols / N; j += blockDim.x) {
      const V qx = reinterpret_cast<const V*>(x)[j];
      V qg = qx;
      if (g) qg = reinterpret_cast<const V*>(g)[j];
      V qy;
      const T *ex = reinterpret_cast<const T*>(&qx), *eg = reinterpret_cast<const T*>(&qg);
      T* ey = reinterpret_cast<T*>(&qy);
#pragma unroll
      for (int k = 0; k < N; ++k) ey[k] = f(ex[k], eg[k], j * N + k);
      reinterpret_cast<V*>(y)[j] = qy;
    }
  } else {
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[j] = f(x[j], g ? g[j] : x[j], j);
  }
}

template <typename T> __device__ __forceinline__ T row_lse(MaxSum<T> st) {
  return isinf(st.m) ? st.m : st.m + dev_log(st.s);
}

// Softmax of rows that fit in registers (VPT 16-byte vectors per thread): the row is read from memory once,
// its max and sum reduced across the block, and each exp computed once. One read and one write per element,
// where the streaming kernel below reads the row twice.
template <typename T, int VPT>
__global__ void __launch_bounds__(1024) softmax_fwd_regs_kernel(const T* __restrict__ X, T* __restrict__ Y,
                                                                 int64_t rows, int64_t cols, bool log) {
  using V = typename Vec16<T>::type;
  constexpr int N = Vec16<T>::n;
  const int64_t nv = cols / N;
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const V* xv = reinterpret_cast<const V*>(X + i * cols);
    V q[VPT];
    T m = neg_inf<T>();
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
      if (j < nv) {
        q[k] = xv[j];
        const T* e = reinterpret_cast<const T*>(&q[k]);
#pragma unroll
        for (int n = 0; n < N; ++n) m = e[n] > m ? e[n] : m;
      }
    }
    m = block_max(m);  // all -inf: m = -inf, x - m = NaN, and the row is NaN as in torch
    T s = 0;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      if (threadIdx.x + int64_t(k) * blockDim.x < nv) {
        T* e = reinterpret_cast<T*>(&q[k]);
#pragma unroll
        for (int n = 0; n < N; ++n) {
          const T p = dev_exp(e[n] - m);
          s += p;
          if (!log) e[n] = p;  // keep exp(x - m) for the output
        }
      }
    }
    s = block_sum(s);
    const T ls = dev_log(s), inv = T(1) / s;
    V* yv = reinterpret_cast<V*>(Y + i * cols);
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int64_t j = threadIdx.x + int64_t(k) * blockDim.x;
      if (j < nv) {
        T* e = reinterpret_cast<T*>(&q[k]);
#pragma unroll
        for (int n = 0; n < N; ++n) e[n] = log ? (e[n] - m) - ls : e[n] * inv;
        yv[j] = q[k];
      }
    }
  }
}

// Launch the register kernel when the rows are 16-byte aligned and fit in registers (1024 threads x 8 float4, or
// x 4 double2: more would spill); otherwise return false and the streaming kernel runs.
template <typename T>
bool launch_softmax_fwd_regs(const T* x, T* y, int64_t rows, int64_t cols, bool log, unsigned grid, cudaStream_t st) {
  constexpr int N = Vec16<T>::n, kMaxVpt = sizeof(T) == 4 ? 8 : 4;
  if (reinterpret_cast<uintptr_t>(x) % 16 || reinterpret_cast<uintptr_t>(y) % 16 || cols % N) return false;
  const int64_t nv = cols / N;
  if (nv == 0 || nv > 1024 * kMaxVpt) return false;
  const int threads = nv > 512 * kMaxVpt ? 1024 : nv > 128 * kMaxVpt ? 512 : 128;
  const int64_t vpt = (nv + threads - 1) / threads;
  if (vpt <= 1) softmax_fwd_regs_kernel<T, 1><<<grid, threads, 0, st>>>(x, y, rows, cols, log);
  else if (vpt <= 2) softmax_fwd_regs_kernel<T, 2><<<grid, threads, 0, st>>>(x, y, rows, cols, log);
  else if (vpt <= 4) softmax_fwd_regs_kernel<T, 4><<<grid, threads, 0, st>>>(x, y, rows, cols, log);
  else if constexpr (kMaxVpt == 8) softmax_fwd_regs_kernel<T, 8><<<grid, threads, 0, st>>>(x, y, rows, cols, log);
  else return false;  // unreachable: nv <= 1024 * kMaxVpt
  return true;
}

template <typename T>
__global__ void softmax_fwd_kernel(const T* __restrict__ X, T* __restrict__ Y, int64_t rows, int64_t cols, bool log) {
  const bool vec = vec_ok<T>(X, cols) && vec_ok<T>(Y, cols);
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const T* x = X + i * cols;
    MaxSum<T> st = row_stats(x, cols, vec);
    if (st.m == neg_inf<T>()) st.s = T(NAN);  // all -inf: torch gives NaN (exp(-inf - -inf))
    const T m = st.m;
    if (log) {
      const T ls = dev_log(st.s);
      row_map(x, (const T*)nullptr, Y + i * cols, cols, vec, [=](T xj, T, int64_t) { return (xj - m) - ls; });
    } else {
      const T inv = T(1) / st.s;
      row_map(x, (const T*)nullptr, Y + i * cols, cols, vec, [=](T xj, T, int64_t) { return dev_exp(xj - m) * inv; });
    }
  }
}

// dx = y * (g - sum(g * y)) for softmax; dx = g - exp(y) * sum(g) for log_softmax.
template <typename T>
__global__ void softmax_bwd_kernel(const T* __restrict__ G, const T* __restrict__ Y, T* __restrict__ GX, int64_t rows,
                                   int64_t cols, bool log) {
  const bool vec = vec_ok<T>(G, cols) && vec_ok<T>(Y, cols) && vec_ok<T>(GX, cols);
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const T* g = G + i * cols;
    const T* y = Y + i * cols;
    T part = 0;
    if (vec) {
      using V = typename Vec16<T>::type;
      constexpr int N = Vec16<T>::n;
#pragma unroll 4
      for (int64_t j = threadIdx.x; j < cols / N; j += blockDim.x) {
        const V qg = reinterpret_cast<const V*>(g)[j], qy = reinterpret_cast<const V*>(y)[j];
        const T *eg = reinterpret_cast<const T*>(&qg), *ey = reinterpret_cast<const T*>(&qy);
#pragma unroll
        for (int k = 0; k < N; ++k) part += log ? eg[k] : eg[k] * ey[k];
      }
    } else {
      for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) part += log ? g[j] : g[j] * y[j];
    }
    const T s = block_sum(part);
    if (log)
      row_map(y, g, GX + i * cols, cols, vec, [=](T yj, T gj, int64_t) { return gj - dev_exp(yj) * s; });
    else
      row_map(y, g, GX + i * cols, cols, vec, [=](T yj, T gj, int64_t) { return yj * (gj - s); });
  }
}

template <typename T>
__global__ void logsumexp_kernel(const T* __restrict__ X, T* __restrict__ O, int64_t rows, int64_t cols) {
  const bool vec = vec_ok<T>(X, cols);
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const MaxSum<T> st = row_stats(X + i * cols, cols, vec);
    if (threadIdx.x == 0) O[i] = row_lse(st);
  }
}

// loss_i = (1 - eps) w[t] (lse - x[t]) + eps / C * sum_j w[j] (lse - x[j]); 0 for ignored rows.
template <typename T>
__global__ void cross_entropy_fwd_kernel(const T* __restrict__ X, const int64_t* __restrict__ Tg,
                                         const T* __restrict__ Wt, double W, T* __restrict__ L,
                                         double* __restrict__ LSE, int64_t rows, int64_t C, int64_t ignore_index,
                                         double eps) {
  const bool vec = vec_ok<T>(X, C);
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t t = Tg[i];
    if (t == ignore_index) {
      if (threadIdx.x == 0) { L[i] = T(0); LSE[i] = 0.0; }
      continue;
    }
    if (t < 0 || t >= C) {  // never read out of bounds; the Python wrapper raises before this can happen
      if (threadIdx.x == 0) { L[i] = T(NAN); LSE[i] = NAN; }
      continue;
    }
    const T* x = X + i * C;
    MaxSum<T> st = row_stats(x, C, vec);
    if (st.m == neg_inf<T>()) st.s = T(NAN);
    const double log_s = double(dev_log(st.s));
    double smooth = 0.0;
    if (eps > 0) {  // sum_j w[j] (x[j] - m)
      T part = 0;
      for (int64_t j = threadIdx.x; j < C; j += blockDim.x) part += (Wt ? Wt[j] : T(1)) * (x[j] - st.m);
      smooth = double(block_sum(part));
    }
    if (threadIdx.x == 0) {
      const double wt = Wt ? double(Wt[t]) : 1.0;
      double l = (1.0 - eps) * wt * ((double(st.m) - double(x[t])) + log_s);
      if (eps > 0) l += eps / double(C) * (W * log_s - smooth);
      L[i] = T(l);
      LSE[i] = isinf(st.m) ? double(st.m) : double(st.m) + log_s;
    }
  }
}

// d loss_i / d x_ik = g_i [ (1-eps) w[t] (p_ik - [k==t]) + eps/C (W p_ik - w[k]) ],  p_ik = exp(x_ik - lse_i)
template <typename T>
__global__ void cross_entropy_bwd_kernel(const T* __restrict__ G, const T* __restrict__ X,
                                         const int64_t* __restrict__ Tg, const double* __restrict__ LSE,
                                         const T* __restrict__ Wt, double W, T* __restrict__ GX, int64_t rows,
                                         int64_t C, int64_t ignore_index, double eps) {
  const bool vec = vec_ok<T>(X, C) && vec_ok<T>(GX, C) && (Wt == nullptr || vec_ok<T>(Wt, C));
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    T* o = GX + i * C;
    const int64_t t = Tg[i];
    if (t == ignore_index || t < 0 || t >= C) {  // ignored: zero gradient; out of range: NaN, never an OOB read
      const T fill = t == ignore_index ? T(0) : T(NAN);
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) o[k] = fill;
      continue;
    }
    const double gi = double(G[i]), wt = Wt ? double(Wt[t]) : 1.0;
    const T a = T(gi * ((1.0 - eps) * wt + eps / double(C) * W));
    const T c = T(gi * eps / double(C));
    const T b = T(gi * (1.0 - eps) * wt);
    const T hi = T(LSE[i]), lo = T(LSE[i] - double(hi));  // lse = hi + lo keeps float64 precision
    row_map(X + i * C, Wt, o, C, vec, [=](T xk, T wk, int64_t k) {
      const T v = a * dev_exp((xk - hi) - lo) - c * (Wt ? wk : T(1));
      return k == t ? v - b : v;
    });
  }
}

inline unsigned grid_rows(int64_t rows) { return unsigned(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

}  // namespace

// Launchers: raw pointers and a stream in, the launch's error code out.
#define TGB_SOFTMAX_LAUNCHERS(T, SUFFIX)                                                                             \
  cudaError_t tgb_softmax_fwd_##SUFFIX(const T* x, T* y, int64_t rows, int64_t cols, bool log, cudaStream_t st) {   \
    if (!launch_softmax_fwd_regs<T>(x, y, rows, cols, log, grid_rows(rows), st))                                      \
      softmax_fwd_kernel<T><<<grid_rows(rows), kThreads, 0, st>>>(x, y, rows, cols, log);                            \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  cudaError_t tgb_softmax_bwd_##SUFFIX(const T* g, const T* y, T* gx, int64_t rows, int64_t cols, bool log,         \
                                       cudaStream_t st) {                                                             \
    softmax_bwd_kernel<T><<<grid_rows(rows), kThreads, 0, st>>>(g, y, gx, rows, cols, log);                          \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  cudaError_t tgb_logsumexp_##SUFFIX(const T* x, T* out, int64_t rows, int64_t cols, cudaStream_t st) {             \
    logsumexp_kernel<T><<<grid_rows(rows), kThreads, 0, st>>>(x, out, rows, cols);                                  \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  cudaError_t tgb_cross_entropy_fwd_##SUFFIX(const T* x, const int64_t* t, const T* w, double W, T* loss,          \
                                             double* lse, int64_t rows, int64_t C, int64_t ignore_index, double eps, \
                                             cudaStream_t st) {                                                       \
    cross_entropy_fwd_kernel<T><<<grid_rows(rows), kThreads, 0, st>>>(x, t, w, W, loss, lse, rows, C, ignore_index,  \
                                                                     eps);                                            \
    return cudaGetLastError();                                                                                        \
  }                                                                                                                   \
  cudaError_t tgb_cross_entropy_bwd_##SUFFIX(const T* g, const T* x, const int64_t* t, const double* lse,          \
                                             const T* w, double W, T* gx, int64_t rows, int64_t C,                   \
                                             int64_t ignore_index, double eps, cudaStream_t st) {                     \
    cross_entropy_bwd_kernel<T><<<grid_rows(rows), kThreads, 0, st>>>(g, x, t, lse, w, W, gx, rows, C,              \
                                                                     ignore_index, eps);                              \
    return cudaGetLastError();                                                                                        \
  }
TGB_SOFTMAX_LAUNCHERS(float, f32)
TGB_SOFTMAX_LAUNCHERS(double, f64)
