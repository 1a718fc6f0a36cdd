// CUDA kernels of tinygrad_book.ndarray's 'cuda' device: the same primitives as ndarray.cpp, on strided views.
// Plain CUDA with raw-pointer launchers (no torch headers); ndarray_cuda.cpp binds them to the tgb_ndarray ops.
//
//   elementwise (unary, binary, scalar, where, copy, fill): one thread per output element, grid-stride loop; the
//       element's multi-index is recovered from its linear index over the collapsed shape (usually 1-2 dims after
//       collapsing, so one or two divisions), then each operand's offset from its strides.
//   reduce: one block per output element; its threads stride over the reduced elements and combine in shared
//       memory. argmax/argmin combine (value, index) pairs: NaN wins, then the larger (smaller) value, then the
//       smaller index, which gives numpy's first-occurrence answer whatever order the threads visit.
//   matmul: 64x64 tiles of C per block, 16-deep slices of A and B staged in shared memory, 4x4 outputs per thread
//       held in registers (register blocking, as in the CPU micro-kernel). Any strides: loads are bounds-checked
//       and indexed through (row, column) strides, so transposed or broadcast operands need no copy.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdint>

#include "cuda_math.cuh"
#include "ndarray_cuda.h"

namespace tgb_nd {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return (int)(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);  // grid-stride loops cover the rest
}

// ------------------------------------------------------------------------------------------------ op functors
template <class T> __device__ __forceinline__ bool is_nan(T x) { return x != x; }

struct Neg { template <class T> __device__ T operator()(T a) const { return -a; } };
struct Abs { template <class T> __device__ T operator()(T a) const { return a < T(0) ? T(-a) : a; } };
struct Sign {
  template <class T> __device__ T operator()(T a) const {
    return a > T(0) ? T(1) : (a < T(0) ? T(-1) : (a == T(0) ? T(0) : a));
  }
};
struct Exp { template <class T> __device__ T operator()(T a) const { return tgb::dev_exp<T>(a); } };
struct Log { template <class T> __device__ T operator()(T a) const { return tgb::dev_log<T>(a); } };
struct Tanh {
  __device__ float operator()(float a) const { return tanhf(a); }
  __device__ double operator()(double a) const { return tanh(a); }
};
struct Sigmoid {
  template <class T> __device__ T operator()(T x) const {
    const T e = tgb::dev_exp<T>(-fabs(x));  // exp(-|x|) never overflows
    return (x >= T(0) ? T(1) : e) / (T(1) + e);
  }
};
struct Sqrt {
  __device__ float operator()(float a) const { return sqrtf(a); }
  __device__ double operator()(double a) const { return sqrt(a); }
};

struct Add { template <class T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> __device__ T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> __device__ T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> __device__ T operator()(T a, T b) const { return a / b; } };
struct Pow {
  __device__ float operator()(float a, float b) const { return powf(a, b); }
  __device__ double operator()(double a, double b) const { return pow(a, b); }
  __device__ int64_t operator()(int64_t a, int64_t b) const {  // b >= 0, checked in Python
    int64_t r = 1;
    for (int64_t e = b; e > 0; e >>= 1, a *= a)
      if (e & 1) r *= a;
    return r;
  }
};
struct Maximum { template <class T> __device__ T operator()(T a, T b) const { return (a >= b || is_nan(a)) ? a : b; } };
struct Minimum { template <class T> __device__ T operator()(T a, T b) const { return (a <= b || is_nan(a)) ? a : b; } };
struct Eq { template <class T> __device__ T operator()(T a, T b) const { return T(a == b); } };
struct Ne { template <class T> __device__ T operator()(T a, T b) const { return T(a != b); } };
struct Lt { template <class T> __device__ T operator()(T a, T b) const { return T(a < b); } };
struct Le { template <class T> __device__ T operator()(T a, T b) const { return T(a <= b); } };
struct Gt { template <class T> __device__ T operator()(T a, T b) const { return T(a > b); } };
struct Ge { template <class T> __device__ T operator()(T a, T b) const { return T(a >= b); } };

template <class Op, class T> struct WithScalar {
  T s;
  bool reverse;
  __device__ T operator()(T x) const { return reverse ? Op()(s, x) : Op()(x, s); }
};
template <class T> struct Select { __device__ T operator()(T c, T a, T b) const { return c != T(0) ? a : b; } };
template <class T> struct Constant { T v; __device__ T operator()() const { return v; } };

// float -> int64 of NaN, inf or out-of-range values is undefined in C++: give numpy's (x86) INT64_MIN
template <class D, class S> struct Convert {
  __device__ D operator()(S x) const {
    if constexpr (std::is_integral<D>::value && std::is_floating_point<S>::value) {
      const bool bad = !(x >= S(-9.2233720368547758e18) && x < S(9.2233720368547758e18));
      return bad ? INT64_MIN : D(x);
    } else {
      return D(x);
    }
  }
};

// -------------------------------------------------------------------------------------------- elementwise engine
template <int NIN, class TO, class TI, class F>
__global__ void ewise_kernel(Strided s, TO* __restrict__ out, const TI* a, const TI* b, const TI* c, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < s.numel; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[NIN + 1] = {};
    int64_t rest = i;
    for (int d = s.nd - 1; d >= 0; --d) {
      const int64_t idx = rest % s.shape[d];
      rest /= s.shape[d];
#pragma unroll
      for (int k = 0; k <= NIN; ++k) off[k] += idx * s.stride[k][d];
    }
    if constexpr (NIN == 0) out[off[0]] = f();
    else if constexpr (NIN == 1) out[off[0]] = f(a[off[1]]);
    else if constexpr (NIN == 2) out[off[0]] = f(a[off[1]], b[off[2]]);
    else out[off[0]] = f(a[off[1]], b[off[2]], c[off[3]]);
  }
}

template <int NIN, class TO, class TI, class F>
cudaError_t run_ewise(const Strided& s, TO* out, const TI* a, const TI* b, const TI* c, F f, cudaStream_t stream) {
  if (s.numel == 0) return cudaSuccess;
  ewise_kernel<NIN, TO, TI, F><<<blocks_for(s.numel), kThreads, 0, stream>>>(s, out, a, b, c, f);
  return cudaGetLastError();
}

template <class T>
cudaError_t unary_t(int op, const T* a, T* out, const Strided& s, cudaStream_t st) {
  switch (op) {
    case NEG: return run_ewise<1>(s, out, a, a, a, Neg(), st);
    case ABS: return run_ewise<1>(s, out, a, a, a, Abs(), st);
    case SIGN: return run_ewise<1>(s, out, a, a, a, Sign(), st);
    default: break;
  }
  if constexpr (std::is_floating_point<T>::value) {
    switch (op) {
      case EXP: return run_ewise<1>(s, out, a, a, a, Exp(), st);
      case LOG: return run_ewise<1>(s, out, a, a, a, Log(), st);
      case TANH: return run_ewise<1>(s, out, a, a, a, Tanh(), st);
      case SIGMOID: return run_ewise<1>(s, out, a, a, a, Sigmoid(), st);
      case SQRT: return run_ewise<1>(s, out, a, a, a, Sqrt(), st);
      default: break;
    }
  }
  return cudaErrorInvalidValue;
}

// Call k(functor) for binary op `op`.
template <class T, class K> cudaError_t with_binary(int op, K k) {
  switch (op) {
    case ADD: return k(Add());
    case SUB: return k(Sub());
    case MUL: return k(Mul());
    case DIV: if constexpr (std::is_floating_point<T>::value) return k(Div()); else return cudaErrorInvalidValue;
    case POW: return k(Pow());
    case MAXIMUM: return k(Maximum());
    case MINIMUM: return k(Minimum());
    case EQ: return k(Eq());
    case NE: return k(Ne());
    case LT: return k(Lt());
    case LE: return k(Le());
    case GT: return k(Gt());
    case GE: return k(Ge());
    default: return cudaErrorInvalidValue;
  }
}

template <class T>
cudaError_t binary_t(int op, const T* a, const T* b, T* out, const Strided& s, cudaStream_t st) {
  return with_binary<T>(op, [&](auto f) { return run_ewise<2>(s, out, a, b, b, f, st); });
}

template <class T>
cudaError_t scalar_t_(int op, const T* a, T v, bool reverse, T* out, const Strided& s, cudaStream_t st) {
  return with_binary<T>(op, [&](auto f) {
    return run_ewise<1>(s, out, a, a, a, WithScalar<decltype(f), T>{v, reverse}, st);
  });
}

// ------------------------------------------------------------------------------------------------ reductions
template <class T> struct Pair { T v; int64_t i; };

template <class T, int OP> struct Reducer;
template <class T> struct Reducer<T, SUM> {
  using A = T;
  __device__ static A init() { return T(0); }
  __device__ static A step(A acc, T x, int64_t) { return acc + x; }
  __device__ static A merge(A a, A b) { return a + b; }
  __device__ static T result(A a) { return a; }
};
template <class T> __device__ __forceinline__ T lowest() {
  if constexpr (std::is_integral<T>::value) return INT64_MIN; else return T(-INFINITY);
}
template <class T> __device__ __forceinline__ T highest() {
  if constexpr (std::is_integral<T>::value) return INT64_MAX; else return T(INFINITY);
}
template <class T> struct Reducer<T, MAX> {
  using A = T;
  __device__ static A init() { return lowest<T>(); }
  __device__ static A step(A acc, T x, int64_t) { return Maximum()(x, acc); }
  __device__ static A merge(A a, A b) { return Maximum()(a, b); }
  __device__ static T result(A a) { return a; }
};
template <class T> struct Reducer<T, MIN> {
  using A = T;
  __device__ static A init() { return highest<T>(); }
  __device__ static A step(A acc, T x, int64_t) { return Minimum()(x, acc); }
  __device__ static A merge(A a, A b) { return Minimum()(a, b); }
  __device__ static T result(A a) { return a; }
};
template <class T, bool IS_MAX> struct ArgReducer {
  using A = Pair<T>;
  __device__ static A init() { return {IS_MAX ? lowest<T>() : highest<T>(), INT64_MAX}; }
  __device__ static A merge(A a, A b) {
    const bool na = is_nan(a.v), nb = is_nan(b.v);
    if (na || nb) return (na && (!nb || a.i < b.i)) ? a : b;  // the first NaN wins
    if (a.v == b.v) return a.i < b.i ? a : b;                  // ties: the first index
    return (IS_MAX ? a.v > b.v : a.v < b.v) ? a : b;
  }
  __device__ static A step(A acc, T x, int64_t i) { return merge(acc, A{x, i}); }
  __device__ static int64_t result(A a) { return a.i; }
};
template <class T> struct Reducer<T, ARGMAX> : ArgReducer<T, true> {};
template <class T> struct Reducer<T, ARGMIN> : ArgReducer<T, false> {};

template <class T, class TO, class R>
__global__ void reduce_kernel(ReduceArgs r, const T* __restrict__ a, TO* __restrict__ out) {
  using A = typename R::A;
  __shared__ A part[kThreads];
  for (int64_t o = blockIdx.x; o < r.n_out; o += gridDim.x) {
    int64_t base = 0, rest = o;
    for (int d = r.knd - 1; d >= 0; --d) {
      base += (rest % r.kshape[d]) * r.kstride[d];
      rest /= r.kshape[d];
    }
    A acc = R::init();
    for (int64_t j = threadIdx.x; j < r.n_red; j += blockDim.x) {
      int64_t off = 0, rj = j;
      for (int d = r.rnd - 1; d >= 0; --d) {
        off += (rj % r.rshape[d]) * r.rstride[d];
        rj /= r.rshape[d];
      }
      acc = R::step(acc, a[base + off], j);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
      if (threadIdx.x < w) part[threadIdx.x] = R::merge(part[threadIdx.x], part[threadIdx.x + w]);
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = (TO)R::result(part[0]);
    __syncthreads();  // part[] is reused by the next output
  }
}

template <class T>
cudaError_t reduce_t(int op, const T* a, void* out, const ReduceArgs& r, cudaStream_t st) {
  if (r.n_out == 0) return cudaSuccess;
  const int blocks = (int)(r.n_out < 65535 * 8 ? r.n_out : 65535 * 8);
  switch (op) {
    case SUM: reduce_kernel<T, T, Reducer<T, SUM>><<<blocks, kThreads, 0, st>>>(r, a, (T*)out); break;
    case MAX: reduce_kernel<T, T, Reducer<T, MAX>><<<blocks, kThreads, 0, st>>>(r, a, (T*)out); break;
    case MIN: reduce_kernel<T, T, Reducer<T, MIN>><<<blocks, kThreads, 0, st>>>(r, a, (T*)out); break;
    case ARGMAX: reduce_kernel<T, int64_t, Reducer<T, ARGMAX>><<<blocks, kThreads, 0, st>>>(r, a, (int64_t*)out); break;
    case ARGMIN: reduce_kernel<T, int64_t, Reducer<T, ARGMIN>><<<blocks, kThreads, 0, st>>>(r, a, (int64_t*)out); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------- matmul
constexpr int TM = 64, TN = 64, TK = 16, RM = 4, RN = 4;  // block tile, k slice, per-thread register tile

template <class T>
__global__ void __launch_bounds__(256) matmul_kernel(MatmulArgs m, const T* __restrict__ A, const T* __restrict__ B,
                                                     T* __restrict__ C) {
  __shared__ T As[TK][TM + 1];  // +1: no bank conflicts when a column is written
  __shared__ T Bs[TK][TN];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // a 16x16 grid of threads, 4x4 outputs each
  const int64_t i0 = (int64_t)blockIdx.y * TM, j0 = (int64_t)blockIdx.x * TN;
  for (int64_t bi = blockIdx.z; bi < m.batch; bi += gridDim.z) {
    int64_t oa = 0, ob = 0, rest = bi;
    for (int d = m.bnd - 1; d >= 0; --d) {
      const int64_t idx = rest % m.bshape[d];
      rest /= m.bshape[d];
      oa += idx * m.a_bstride[d];
      ob += idx * m.b_bstride[d];
    }
    const T* a = A + oa;
    const T* b = B + ob;
    T acc[RM][RN] = {};
    for (int64_t k0 = 0; k0 < m.K; k0 += TK) {
      // stage A[i0:i0+64, k0:k0+16] and B[k0:k0+16, j0:j0+64]: 1024 elements each, 4 per thread, zero-padded
      for (int e = threadIdx.x; e < TM * TK; e += blockDim.x) {
        const int r = e / TK, k = e % TK;
        const int64_t gi = i0 + r, gk = k0 + k;
        As[k][r] = (gi < m.M && gk < m.K) ? a[gi * m.a_rs + gk * m.a_cs] : T(0);
      }
      for (int e = threadIdx.x; e < TK * TN; e += blockDim.x) {
        const int k = e / TN, c = e % TN;
        const int64_t gk = k0 + k, gj = j0 + c;
        Bs[k][c] = (gk < m.K && gj < m.N) ? b[gk * m.b_rs + gj * m.b_cs] : T(0);
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < TK; ++k) {
        T av[RM], bv[RN];
#pragma unroll
        for (int r = 0; r < RM; ++r) av[r] = As[k][ty + 16 * r];
#pragma unroll
        for (int c = 0; c < RN; ++c) bv[c] = Bs[k][tx + 16 * c];
#pragma unroll
        for (int r = 0; r < RM; ++r)
#pragma unroll
          for (int c = 0; c < RN; ++c) acc[r][c] += av[r] * bv[c];
      }
      __syncthreads();
    }
    T* cb = C + bi * m.M * m.N;
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < RN; ++c) {
        const int64_t gi = i0 + ty + 16 * r, gj = j0 + tx + 16 * c;
        if (gi < m.M && gj < m.N) cb[gi * m.N + gj] = acc[r][c];
      }
  }
}

template <class T>
cudaError_t matmul_t(const T* a, const T* b, T* c, const MatmulArgs& m, cudaStream_t st) {
  if (m.batch * m.M * m.N == 0) return cudaSuccess;
  const dim3 grid((unsigned)((m.N + TN - 1) / TN), (unsigned)((m.M + TM - 1) / TM),
                  (unsigned)(m.batch < 65535 ? m.batch : 65535));
  if (grid.x > 2147483647u || grid.y > 65535u) return cudaErrorInvalidConfiguration;
  matmul_kernel<T><<<grid, 256, 0, st>>>(m, a, b, c);
  return cudaGetLastError();
}

template <class D, class S>
cudaError_t copy_t(const S* src, D* dst, const Strided& s, cudaStream_t st) {
  return run_ewise<1>(s, dst, src, src, src, Convert<D, S>(), st);
}

template <class D>
cudaError_t copy_from(int src_dtype, const void* src, D* dst, const Strided& s, cudaStream_t st) {
  switch (src_dtype) {
    case F32: return copy_t<D, float>((const float*)src, dst, s, st);
    case F64: return copy_t<D, double>((const double*)src, dst, s, st);
    case I64: return copy_t<D, int64_t>((const int64_t*)src, dst, s, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------- the launchers
#define TGB_ND_DISPATCH(dtype, ...)                          \
  switch (dtype) {                                           \
    case F32: { using T = float; __VA_ARGS__; }              \
    case F64: { using T = double; __VA_ARGS__; }             \
    case I64: { using T = int64_t; __VA_ARGS__; }            \
    default: return cudaErrorInvalidValue;                   \
  }

cudaError_t launch_unary(int op, int dtype, const void* a, void* out, const Strided& s, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return unary_t<T>(op, (const T*)a, (T*)out, s, st))
}
cudaError_t launch_binary(int op, int dtype, const void* a, const void* b, void* out, const Strided& s, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return binary_t<T>(op, (const T*)a, (const T*)b, (T*)out, s, st))
}
cudaError_t launch_scalar(int op, int dtype, const void* a, double s_f, int64_t s_i, bool reverse, void* out,
                          const Strided& s, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return scalar_t_<T>(op, (const T*)a, dtype == I64 ? T(s_i) : T(s_f), reverse, (T*)out, s, st))
}
cudaError_t launch_where(int dtype, const void* c, const void* a, const void* b, void* out, const Strided& s,
                         cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return run_ewise<3>(s, (T*)out, (const T*)c, (const T*)a, (const T*)b, Select<T>(), st))
}
cudaError_t launch_copy(int dst_dtype, int src_dtype, const void* src, void* dst, const Strided& s, cudaStream_t st) {
  TGB_ND_DISPATCH(dst_dtype, return copy_from<T>(src_dtype, src, (T*)dst, s, st))
}
cudaError_t launch_fill(int dtype, double v_f, int64_t v_i, void* dst, const Strided& s, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return run_ewise<0>(s, (T*)dst, (const T*)nullptr, (const T*)nullptr, (const T*)nullptr,
                                             Constant<T>{dtype == I64 ? T(v_i) : T(v_f)}, st))
}
cudaError_t launch_reduce(int op, int dtype, const void* a, void* out, const ReduceArgs& r, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return reduce_t<T>(op, (const T*)a, out, r, st))
}
cudaError_t launch_matmul(int dtype, const void* a, const void* b, void* out, const MatmulArgs& m, cudaStream_t st) {
  TGB_ND_DISPATCH(dtype, return matmul_t<T>((const T*)a, (const T*)b, (T*)out, m, st))
}

}  // namespace tgb_nd
