// The C++ backend of tinygrad_book.ndarray: strided kernels over flat buffers.
//
// An NDArray on the 'cpu' device is a flat 1-D torch tensor (its buffer) read through a shape, strides (in
// elements) and an offset. Every op here takes those for each operand and writes into an output the caller
// allocated, so the kernels work on views (transposed, sliced with negative steps, broadcast with stride 0)
// without compacting them first:
//   copy / fill              dst[...] = src (with dtype conversion) / a scalar
//   unary / binary / scalar  elementwise ops, operands already broadcast to the output's shape
//   where                    c != 0 ? a : b
//   reduce                   sum / max / min / argmax / argmin over the last n dimensions
//   matmul                   batched (*batch, M, K) @ (*batch, K, N); naive, cache-blocked, or packed and
//                            register-blocked (the default) - the chapter measures each step
// Loops above a size threshold are spread over threads (WorkPool below); inner loops are written so that GCC
// vectorises them (OpenMP `simd` pragmas, 512-bit vectors on AVX-512 CPUs).
// GCC's -march=native on AVX-512 CPUs (Skylake-X and later) vectorises with 256-bit registers by default, to avoid
// the clock slowdown that 512-bit instructions cost on early models. Our loops are long and compute-heavy (exp,
// tanh), where twice the width wins. Set before any include, so that every function shares the same target options
// (a function cannot be inlined into one with different options).
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
#include <torch/library.h>
#include <ATen/ATen.h>
#include <omp.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fast_math.h"
#include "ndarray_layout.h"

namespace {

using IntList = c10::IntArrayRef;
using tgb::Layout;

constexpr int64_t kParallelMin = 1 << 15;  // elements below which threads cost more than they save

// ------------------------------------------------------------------------------------------------ threads
// How many threads a parallel loop over `work` elements uses: a fixed count if set_threads(n > 0) was called;
// otherwise (the default) the same choice as numpy and its BLAS: one thread for elementwise loops and reductions,
// every core for matmul (`heavy`). On a shared machine a second thread for a loop of a few milliseconds often costs
// more in waiting for a core than it saves.
std::atomic<int> g_threads{0};

int pick_threads(int64_t work, bool heavy) {
  if (work < kParallelMin) return 1;
  const int fixed = g_threads.load(std::memory_order_relaxed);
  if (fixed > 0) return std::min(omp_get_num_procs(), fixed);
  return heavy ? omp_get_num_procs() : 1;
}

int64_t set_threads(int64_t n) {
  TORCH_CHECK(n >= 0, "set_threads: n must be >= 0 (0: adaptive), got ", n);
  return g_threads.exchange((int)n);
}

// A pool of helper threads that never makes the caller wait for a helper that has not started.
// An OpenMP parallel region ends with a barrier that every thread of the team must reach. On a shared machine
// whose cores are all busy, a woken helper can wait milliseconds for a core, and the whole region waits with it
// (on the book's shared 2-core machine this made 2-thread OpenMP loops several times slower than 1 thread). Here the work is a
// list of chunks claimed one at a time from an atomic counter, by the caller and by whichever helpers are running;
// the caller waits only for chunks that were claimed and are still being computed. A helper that wakes late finds
// nothing left to claim. With no free core the caller simply does all the work, as a single thread would.
class WorkPool {
  struct Job {
    std::function<void(int64_t)> f;
    int64_t n = 0;
    std::atomic<int64_t> next{0}, done{0};
  };
  std::mutex m_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;  // the latest job; helpers hold their own reference while they work on it
  uint64_t gen_ = 0;

  static void work(Job& j) {
    for (int64_t i; (i = j.next.fetch_add(1, std::memory_order_relaxed)) < j.n;) {
      j.f(i);
      j.done.fetch_add(1, std::memory_order_release);
    }
  }
  void helper() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> j;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return gen_ != seen; });
        seen = gen_;
        j = job_;
      }
      work(*j);
    }
  }
  WorkPool() {
    for (int t = 1; t < omp_get_num_procs(); ++t) std::thread([this] { helper(); }).detach();
  }

 public:
  static WorkPool& get() {
    static WorkPool* pool = new WorkPool();  // never destroyed: helpers may still be waiting at exit
    return *pool;
  }
  // f(i) for i in [0, n), spread over the caller and the helpers; returns when every call has returned.
  // The caller claims chunks too, so this is correct (if serial) even where no helper ever runs (after fork()).
  template <class F> void run(int64_t n, const F& f) {
    auto j = std::make_shared<Job>();
    j->f = [&f](int64_t i) { f(i); };  // f outlives every call: no index >= n is ever run
    j->n = n;
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = j;
      ++gen_;
    }
    cv_.notify_all();
    work(*j);
    for (int spin = 0; j->done.load(std::memory_order_acquire) < n; ++spin)
      if (spin > 1000) std::this_thread::yield();  // a helper is finishing a chunk
  }
};

// f(i) for i in [0, n) over `work` elements in all, in parallel when it pays: chunks of about 16K elements.
template <class F> void parallel_for(int64_t n, int64_t work, bool heavy, const F& f) {
  if (n <= 1 || pick_threads(work, heavy) <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  const int64_t per = std::max<int64_t>(1, (int64_t)((double)n * 16384.0 / (double)std::max<int64_t>(work, 1)));
  const int64_t chunks = (n + per - 1) / per;
  WorkPool::get().run(chunks, [&](int64_t c) {
    const int64_t i1 = std::min(n, (c + 1) * per);
    for (int64_t i = c * per; i < i1; ++i) f(i);
  });
}

std::vector<int64_t> vec(IntList a) { return std::vector<int64_t>(a.begin(), a.end()); }

// Check that the view (shape, strides, offset) stays inside `buf`: the kernels trust their arguments.
void check_view(const at::Tensor& buf, const std::vector<int64_t>& shape, IntList strides, int64_t offset,
                const char* name) {
  TORCH_CHECK(buf.device().is_cpu() && buf.dim() == 1 && buf.is_contiguous(), name,
              ": the buffer must be a contiguous 1-D CPU tensor");
  const std::string err = tgb::view_bounds_error(shape, strides.data(), strides.size(), offset, buf.numel());
  TORCH_CHECK(err.empty(), name, ": ", err);
}

// ------------------------------------------------------------------------------------------- elementwise engine
// Inner loop over n elements. The contiguous cases (every stride 1, or 0 for a broadcast operand) are separate
// loops so the compiler emits vector code for them; anything else takes the general strided loop.
template <int NIN, class TO, class TI, class F>
inline void inner_loop(int64_t n, TO* o, int64_t so, const std::array<const TI*, NIN>& p,
                       const std::array<int64_t, NIN>& s, const F& f_) {
  const F f = f_;  // a local copy: the output cannot alias a captured scalar, so it stays in a register
  if constexpr (NIN == 0) {
    if (so == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f();
    } else
      for (int64_t i = 0; i < n; ++i) o[i * so] = f();
  } else if constexpr (NIN == 1) {
    const TI* a = p[0];
    if (so == 1 && s[0] == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i]);
    } else if (so == 1 && s[0] == 0) {
      const TO v = f(a[0]);
      for (int64_t i = 0; i < n; ++i) o[i] = v;
    } else if (n < 64) {  // a 32-wide tile of ewise's transposed walk: the buffering below measured no gain there
      for (int64_t i = 0; i < n; ++i) o[i * so] = f(a[i * s[0]]);
    } else {
      // A strided operand (a slice with a step): element by element, this loop costs little more than a copy for
      // neg, but 16x the arithmetic for exp or tanh. Gather a block into a local buffer, apply f to it as a vector
      // loop, and scatter the results: x[:, ::2].tanh() on (2048, 4096) float32 went from 5.2-7.0 ms to 3.1-4.3 ms.
      constexpr int64_t B = 128;
      TI buf[B];
      for (int64_t i0 = 0; i0 < n; i0 += B) {
        const int64_t m = std::min(B, n - i0);
        const TI* ab = a + i0 * s[0];
        for (int64_t j = 0; j < m; ++j) buf[j] = ab[j * s[0]];
        if (so == 1) {
          TO* ob = o + i0;
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) ob[j] = f(buf[j]);
        } else {
          TO res[B];
#pragma omp simd
          for (int64_t j = 0; j < m; ++j) res[j] = f(buf[j]);
          TO* ob = o + i0 * so;
          for (int64_t j = 0; j < m; ++j) ob[j * so] = res[j];
        }
      }
    }
  } else if constexpr (NIN == 2) {
    const TI *a = p[0], *b = p[1];
    if (so == 1 && s[0] == 1 && s[1] == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], b[i]);
    } else if (so == 1 && s[0] == 1 && s[1] == 0) {
      const TI bv = b[0];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f(a[i], bv);
    } else if (so == 1 && s[0] == 0 && s[1] == 1) {
      const TI av = a[0];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f(av, b[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * so] = f(a[i * s[0]], b[i * s[1]]);
    }
  } else {
    const TI *c = p[0], *a = p[1], *b = p[2];
    if (so == 1 && s[0] == 1 && s[1] == 1 && s[2] == 1) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = f(c[i], a[i], b[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * so] = f(c[i * s[0]], a[i * s[1]], b[i * s[2]]);
    }
  }
}

// Run f over every element: out = f(inputs...). `L` is the collapsed layout (operand 0 = out).
// Rows (the innermost dimension) are distributed over threads. When an input is read across its memory order
// (a transposed view: stride 1 on the second-innermost dimension, not the innermost), the two innermost dimensions
// are walked in 32x32 tiles instead, so the cache lines of that input are reused while they are still in L1.
template <int NIN, class TO, class TI, class F>
void ewise(const Layout<NIN + 1>& L, TO* out, std::array<const TI*, NIN> in, const F& f) {
  if (L.empty) return;
  const int nd = (int)L.shape.size();
  if (nd == 0) {  // a single element
    std::array<int64_t, NIN> s{};
    inner_loop<NIN, TO, TI>(1, out, 1, in, s, f);
    return;
  }
  const int64_t total = L.numel();
  bool tiled = false;
  if (nd >= 2)
    for (int k = 1; k <= NIN; ++k)
      tiled |= std::llabs(L.stride[nd - 1][k]) > 1 && std::llabs(L.stride[nd - 2][k]) == 1;
  const int64_t T = 32;
  const int64_t n_in = L.shape[nd - 1], n_mid = nd >= 2 ? L.shape[nd - 2] : 1;
  const int outer_dims = tiled ? nd - 2 : nd - 1;
  int64_t n_outer = 1;
  for (int d = 0; d < outer_dims; ++d) n_outer *= L.shape[d];
  // work items: (outer index, row tile, column tile) when tiled; else (outer index, chunk of the row), where a
  // long row is cut into chunks so that a few long rows (or one: a compact array) still spread over the threads
  const int64_t tiles_mid = tiled ? (n_mid + T - 1) / T : 1;
  const int64_t tiles_in = tiled ? (n_in + T - 1) / T : (n_outer < 64 ? std::max<int64_t>(1, n_in / 16384) : 1);
  const int64_t chunk = tiled ? T : (n_in + tiles_in - 1) / tiles_in;
  const int64_t n_items = n_outer * tiles_mid * tiles_in;
  parallel_for(n_items, total, false, [&](int64_t item) {
    int64_t rest = item / (tiles_mid * tiles_in);
    const int64_t tile = item % (tiles_mid * tiles_in);
    std::array<int64_t, NIN + 1> off{};
    for (int d = outer_dims - 1; d >= 0; --d) {
      const int64_t i = rest % L.shape[d];
      rest /= L.shape[d];
      for (int k = 0; k <= NIN; ++k) off[k] += i * L.stride[d][k];
    }
    std::array<int64_t, NIN> s_in;
    for (int k = 0; k < NIN; ++k) s_in[k] = L.stride[nd - 1][k + 1];
    const int64_t c0 = (tile % tiles_in) * chunk, c1 = std::min(n_in, c0 + chunk);
    if (!tiled) {
      std::array<const TI*, NIN> p;
      for (int k = 0; k < NIN; ++k) p[k] = in[k] + off[k + 1] + c0 * s_in[k];
      inner_loop<NIN, TO, TI>(c1 - c0, out + off[0] + c0 * L.stride[nd - 1][0], L.stride[nd - 1][0], p, s_in, f);
    } else {
      const int64_t r0 = (tile / tiles_in) * T, r1 = std::min(n_mid, r0 + T);
      for (int64_t r = r0; r < r1; ++r) {
        std::array<const TI*, NIN> p;
        for (int k = 0; k < NIN; ++k) p[k] = in[k] + off[k + 1] + r * L.stride[nd - 2][k + 1] + c0 * s_in[k];
        inner_loop<NIN, TO, TI>(c1 - c0, out + off[0] + r * L.stride[nd - 2][0] + c0 * L.stride[nd - 1][0],
                                L.stride[nd - 1][0], p, s_in, f);
      }
    }
  });
}  // ewise

// ---------------------------------------------------------------------------------------------- the ops' math
// float32 transcendentals come from fast_math.h (branch-free, vectorisable); float64 ones are the C library's.
template <class T> inline T exp_op(T x) { return tgb::exp_fast<T>(x); }

inline float log_op(float x) {
  // log_1to2_f32 handles any positive normal float (it splits off the exponent). Denormals are scaled by 2^23
  // first; then the special cases: log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, log(NaN) = NaN.
  const bool denormal = x < 1.17549435e-38f;
  const float y = tgb::log_1to2_f32(denormal ? x * 8388608.0f : x) - (denormal ? 15.9423851528787f : 0.0f);
  const float z = x == 0.0f ? -INFINITY : y;
  const float w = x < 0.0f || x != x ? NAN : z;
  return x == INFINITY ? INFINITY : w;
}
inline double log_op(double x) { return std::log(x); }

// float32 tanh, branch-free so that it vectorises. Two pieces, both computed, one selected:
//   |x| < 0.625: Cephes' odd polynomial x + x^3 P(x^2) (no cancellation near 0);
//   else:        1 - 2 / (e^{2|x|} + 1), where 2 / (e^{2|x|} + 1) <= 0.46, so its rounding errors shrink in the
//                subtraction. e^{2|x|} = 2^k e^{2t}, with k = round(2|x| / ln2) and |t| <= ln2/4; e^{2t} - 1 ~ t q(t),
//                a degree-6 minimax fit of our own (relative error 0.28 ulp with float32 coefficients).
// Cheaper than building it on exp_f32 (which it used to do): |x| is clamped to 10 (tanh rounds to 1 in float32
// from 9.011 on), so 2^k (k <= 29) is one normal float made by a shift, and no other range check is needed; and
// e^{2|x|} + 1 comes out of the last FMA. On the book's 2048x2048 benchmark this took the op from 1.61x numpy's
// time to 1.13x. The sign is put back last (so tanh(-0) = -0); NaN propagates through the clamp.
// Error, measured over all 2^32 float32 inputs against float64 tanh: at most 1.17 ulp (at x = 0.6258; the previous
// version: 1.33 ulp). tests/test_ndarray.py checks a dense sweep against 1.25 ulp.
inline float tanh_op(float x) {
  using tgb::bits_to_float, tgb::float_to_bits;
  const int32_t sign = float_to_bits(x) & int32_t(0x80000000u);
  const float ax = bits_to_float(float_to_bits(x) & 0x7fffffff), z = ax * ax;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * ax + ax;
  const float a = ax > 10.0f ? 10.0f : ax;  // NaN fails the comparison and stays NaN
  // k = round(2a / ln2) by the 1.5 * 2^23 trick, with the exponent bias 127 folded into the constant, so that
  // the low bits of kb shifted into the exponent field are 2^k
  const float kb = a * 2.88539008177792681f + (12582912.0f + 127.0f);
  const float s = bits_to_float(float_to_bits(kb) << 23);
  const float t = (kb - (12582912.0f + 127.0f)) * -0.346573590279972655f + a;  // a - k ln2 / 2
  float q = 0x1.6bec0ap-4f;
  q = q * t + 0x1.122768p-2f;
  q = q * t + 0x1.555674p-1f;
  q = q * t + 0x1.5554b0p+0f;
  q = q * t + 0x1.fffffep+0f;
  q = q * t + 2.0f;                                  // e^{2t} - 1 ~ t q
  const float big = 1.0f - 2.0f / (q * (t * s) + (s + 1.0f));  // e^{2a} + 1 = s (1 + t q) + 1
  return bits_to_float(float_to_bits(ax < 0.625f ? small : big) | sign);
}
inline double tanh_op(double x) { return std::tanh(x); }

template <class T> inline T sigmoid_op(T x) {
  // with e = exp(-|x|): 1/(1+e) for x >= 0 and e/(1+e) below; never overflows
  const T e = exp_op<T>(-std::fabs(x));
  return (x >= 0 ? T(1) : e) / (T(1) + e);
}

// std::sqrt of a negative number sets errno, a side effect that stops GCC from vectorising the loop. The argument
// |x| is never negative, so the compiler drops that path; negative inputs get their NaN from the select.
template <class T> inline T sqrt_op(T x) { const T r = std::sqrt(std::fabs(x)); return x < 0 ? T(NAN) : r; }

template <class T> inline T sign_op(T x) { return x > 0 ? T(1) : (x < 0 ? T(-1) : (x == 0 ? T(0) : x)); }

template <class T> inline T pow_op(T a, T b) {
  if constexpr (std::is_integral_v<T>) {  // b >= 0 (checked in Python): exponentiation by squaring
    T r = 1;
    for (T e = b; e > 0; e >>= 1, a *= a)
      if (e & 1) r *= a;
    return r;
  } else {
    return std::pow(a, b);
  }
}

template <class T> inline T max_op(T a, T b) { return (a >= b || a != a) ? a : b; }  // NaN wins, as numpy
template <class T> inline T min_op(T a, T b) { return (a <= b || a != a) ? a : b; }

// Call `k(f)` with the binary functor named `op`.
template <class T, class K> void with_binary(const std::string& op, const K& k) {
  if (op == "add") k([](T a, T b) { return T(a + b); });
  else if (op == "sub") k([](T a, T b) { return T(a - b); });
  else if (op == "mul") k([](T a, T b) { return T(a * b); });
  else if (op == "div") {
    if constexpr (std::is_integral_v<T>) { TORCH_CHECK(false, "binary: integer division is done in float64"); }
    else { k([](T a, T b) { return T(a / b); }); }
  }
  else if (op == "pow") k([](T a, T b) { return pow_op<T>(a, b); });
  else if (op == "maximum") k([](T a, T b) { return max_op<T>(a, b); });
  else if (op == "minimum") k([](T a, T b) { return min_op<T>(a, b); });
  else if (op == "eq") k([](T a, T b) { return T(a == b); });
  else if (op == "ne") k([](T a, T b) { return T(a != b); });
  else if (op == "lt") k([](T a, T b) { return T(a < b); });
  else if (op == "le") k([](T a, T b) { return T(a <= b); });
  else if (op == "gt") k([](T a, T b) { return T(a > b); });
  else if (op == "ge") k([](T a, T b) { return T(a >= b); });
  else { TORCH_CHECK(false, "binary: unknown op '", op, "'"); }
}

template <class T, class K> void with_unary(const std::string& op, const K& k) {
  if (op == "neg") k([](T a) { return T(-a); });
  else if (op == "abs") k([](T a) { return a < 0 ? T(-a) : a; });
  else if (op == "sign") k([](T a) { return sign_op<T>(a); });
  else if constexpr (std::is_floating_point_v<T>) {
    if (op == "exp") k([](T a) { return exp_op<T>(a); });
    else if (op == "log") k([](T a) { return log_op(a); });
    else if (op == "tanh") k([](T a) { return tanh_op(a); });
    else if (op == "sigmoid") k([](T a) { return sigmoid_op<T>(a); });
    else if (op == "sqrt") k([](T a) { return sqrt_op<T>(a); });
    else { TORCH_CHECK(false, "unary: unknown op '", op, "'"); }
  } else { TORCH_CHECK(false, "unary: op '", op, "' is not defined for int64 (it is computed in float64)"); }
}

#define TGB_DISPATCH(dtype, NAME, ...)                                                               \
  [&] {                                                                                              \
    switch (dtype) {                                                                                 \
      case at::kFloat: { using scalar_t = float; return __VA_ARGS__(); }                             \
      case at::kDouble: { using scalar_t = double; return __VA_ARGS__(); }                           \
      case at::kLong: { using scalar_t = int64_t; return __VA_ARGS__(); }                            \
      default: TORCH_CHECK(false, NAME, ": unsupported dtype ", dtype, " (float32, float64, int64)"); \
    }                                                                                                \
  }()

void check_same_dtype(const at::Tensor& a, const at::Tensor& out, const char* name) {
  TORCH_CHECK(a.scalar_type() == out.scalar_type(), name, ": operand dtype ", a.scalar_type(), " differs from output's ",
              out.scalar_type());
}

// ----------------------------------------------------------------------------------------- elementwise ops
// float -> int64 conversion is undefined behaviour in C++ for NaN, inf and out-of-range values: give numpy's
// (x86) answer, INT64_MIN, instead.
template <class D, class S> inline D convert(S x) {
  if constexpr (std::is_integral_v<D> && std::is_floating_point_v<S>) {
    const bool bad = !(x >= S(-9.2233720368547758e18) && x < S(9.2233720368547758e18));
    return bad ? std::numeric_limits<int64_t>::min() : D(bad ? S(0) : x);
  } else {
    return D(x);
  }
}

void copy_cpu(const at::Tensor& src, IntList shape_, IntList ss, int64_t so, const at::Tensor& dst, IntList ds,
              int64_t doff) {
  auto shape = vec(shape_);
  check_view(src, shape, ss, so, "copy: src");
  check_view(dst, shape, ds, doff, "copy: dst");
  auto L = tgb::collapse<2>(shape, {ds.data(), ss.data()});
  TGB_DISPATCH(dst.scalar_type(), "copy", [&] {
    using D = scalar_t;
    D* o = dst.data_ptr<D>() + doff;
    TGB_DISPATCH(src.scalar_type(), "copy", [&] {
      using S = scalar_t;
      ewise<1, D, S>(L, o, {src.data_ptr<S>() + so}, [](S x) { return convert<D, S>(x); });
    });
  });
}

void fill_cpu(const at::Tensor& dst, IntList shape_, IntList ds, int64_t doff, const at::Scalar& value) {
  auto shape = vec(shape_);
  check_view(dst, shape, ds, doff, "fill: dst");
  auto L = tgb::collapse<1>(shape, {ds.data()});
  TGB_DISPATCH(dst.scalar_type(), "fill", [&] {
    const scalar_t v = value.to<scalar_t>();
    ewise<0, scalar_t, scalar_t>(L, dst.data_ptr<scalar_t>() + doff, {}, [v]() { return v; });
  });
}

void unary_cpu(c10::string_view op_, const at::Tensor& a, IntList as, int64_t ao, const at::Tensor& out,
               IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  const std::string op(op_);
  check_view(a, shape, as, ao, "unary: a");
  check_view(out, shape, os, oo, "unary: out");
  check_same_dtype(a, out, "unary");
  auto L = tgb::collapse<2>(shape, {os.data(), as.data()});
  TGB_DISPATCH(out.scalar_type(), "unary", [&] {
    using T = scalar_t;
    with_unary<T>(op, [&](auto f) { ewise<1, T, T>(L, out.data_ptr<T>() + oo, {a.data_ptr<T>() + ao}, f); });
  });
}

void binary_cpu(c10::string_view op_, const at::Tensor& a, IntList as, int64_t ao, const at::Tensor& b, IntList bs,
                int64_t bo, const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  const std::string op(op_);
  check_view(a, shape, as, ao, "binary: a");
  check_view(b, shape, bs, bo, "binary: b");
  check_view(out, shape, os, oo, "binary: out");
  check_same_dtype(a, out, "binary");
  check_same_dtype(b, out, "binary");
  auto L = tgb::collapse<3>(shape, {os.data(), as.data(), bs.data()});
  TGB_DISPATCH(out.scalar_type(), "binary", [&] {
    using T = scalar_t;
    with_binary<T>(op, [&](auto f) {
      ewise<2, T, T>(L, out.data_ptr<T>() + oo, {a.data_ptr<T>() + ao, b.data_ptr<T>() + bo}, f);
    });
  });
}

void scalar_cpu(c10::string_view op_, const at::Tensor& a, IntList as, int64_t ao, const at::Scalar& s, bool reverse,
                const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  const std::string op(op_);
  check_view(a, shape, as, ao, "scalar: a");
  check_view(out, shape, os, oo, "scalar: out");
  check_same_dtype(a, out, "scalar");
  auto L = tgb::collapse<2>(shape, {os.data(), as.data()});
  TGB_DISPATCH(out.scalar_type(), "scalar", [&] {
    using T = scalar_t;
    const T v = s.to<T>();
    T* o = out.data_ptr<T>() + oo;
    const T* p = a.data_ptr<T>() + ao;
    if (op == "pow" && !reverse && v == T(2)) {  // x ** 2, the common case, without a pow call (same result)
      ewise<1, T, T>(L, o, {p}, [](T x) { return T(x * x); });
      return;
    }
    with_binary<T>(op, [&](auto f) {
      if (reverse) ewise<1, T, T>(L, o, {p}, [f, v](T x) { return f(v, x); });
      else ewise<1, T, T>(L, o, {p}, [f, v](T x) { return f(x, v); });
    });
  });
}

void where_cpu(const at::Tensor& c, IntList cs, int64_t co, const at::Tensor& a, IntList as, int64_t ao,
               const at::Tensor& b, IntList bs, int64_t bo, const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  check_view(c, shape, cs, co, "where: cond");
  check_view(a, shape, as, ao, "where: a");
  check_view(b, shape, bs, bo, "where: b");
  check_view(out, shape, os, oo, "where: out");
  for (auto* t : {&c, &a, &b}) check_same_dtype(*t, out, "where");
  auto L = tgb::collapse<4>(shape, {os.data(), cs.data(), as.data(), bs.data()});
  TGB_DISPATCH(out.scalar_type(), "where", [&] {
    using T = scalar_t;
    ewise<3, T, T>(L, out.data_ptr<T>() + oo, {c.data_ptr<T>() + co, a.data_ptr<T>() + ao, b.data_ptr<T>() + bo},
                   [](T cv, T x, T y) { return cv != T(0) ? x : y; });
  });
}

// ---------------------------------------------------------------------------------------------- reductions
// Accumulate float32 sums in double: a float32 running sum of 10^6 numbers is off in the 3rd digit.
template <class T> using acc_t = std::conditional_t<std::is_same_v<T, float>, double, T>;

template <class T> struct SumR {
  using A = acc_t<T>;
  static A init() { return A(0); }
  static A step(A acc, T x) { return acc + A(x); }
  static A merge(A a, A b) { return a + b; }
};
template <class T> struct MaxR {
  using A = T;
  static A init() { return std::is_integral_v<T> ? std::numeric_limits<T>::lowest() : T(-INFINITY); }
  static A step(A acc, T x) { return max_op<T>(x, acc); }  // x first: a NaN element wins and then stays
  static A merge(A a, A b) { return max_op<T>(a, b); }
};
template <class T> struct MinR {
  using A = T;
  static A init() { return std::is_integral_v<T> ? std::numeric_limits<T>::max() : T(INFINITY); }
  static A step(A acc, T x) { return min_op<T>(x, acc); }
  static A merge(A a, A b) { return min_op<T>(a, b); }
};

// Reduce a contiguous run of n elements with 16 independent accumulators (vectorisable; also shortens the
// dependency chain of the additions).
template <class T, class R> inline typename R::A reduce_run(const T* x, int64_t n) {
  using A = typename R::A;
  constexpr int W = 16;
  A acc[W];
  for (int l = 0; l < W; ++l) acc[l] = R::init();
  int64_t i = 0;
  for (; i + W <= n; i += W)
#pragma omp simd
    for (int l = 0; l < W; ++l) acc[l] = R::step(acc[l], x[i + l]);
  for (; i < n; ++i) acc[0] = R::step(acc[0], x[i]);
  for (int w = W / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] = R::merge(acc[l], acc[l + w]);
  return acc[0];
}

// Visit the element offsets of a strided block (shape, strides) with the innermost dimension as a run:
// f(offset_of_run, run_length, run_stride).
template <class F>
void for_each_run(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, const F& f) {
  const int nd = (int)shape.size();
  if (nd == 0) { f(0, 1, 1); return; }
  for (auto n : shape) if (n == 0) return;
  std::vector<int64_t> idx(nd, 0);
  int64_t off = 0;
  while (true) {
    f(off, shape[nd - 1], strides[nd - 1]);
    int d = nd - 2;
    for (; d >= 0; --d) {
      off += strides[d];
      if (++idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

using tgb::ReduceLayout;

template <class T, class R>
void reduce_kernel(const T* a, const ReduceLayout& RL, int64_t n_out, int64_t n_red, T* out) {
  using A = typename R::A;
  const int64_t work = n_out * std::max<int64_t>(n_red, 1);
  const bool rows = !RL.rstride.empty() && RL.rstride.back() == 1;  // the reduced elements run contiguously
  const bool cols = !rows && !RL.kstride.empty() && RL.kstride.back() == 1 && RL.kshape.back() >= 16;
  if (n_red == 0) {
    for (int64_t o = 0; o < n_out; ++o) out[o] = T(R::init());
    return;
  }
  if (cols) {
    // Column reductions (e.g. sum over axis 0 of a row-major matrix): the kept innermost dimension is contiguous,
    // so accumulate whole rows of it at once, vectorised, instead of walking each column down the memory.
    const int64_t nc = RL.kshape.back(), outer = n_out / nc;
    std::vector<int64_t> kshape_o(RL.kshape.begin(), RL.kshape.end() - 1), kstride_o(RL.kstride.begin(), RL.kstride.end() - 1);
    // columns per work item: up to 4096 accumulators (32 KiB of double), so a row-major matrix is read in order
    constexpr int64_t CB = 4096;
    const int64_t n_cb = (nc + CB - 1) / CB;
    parallel_for(outer * n_cb, work, false, [&](int64_t item) {
      const int64_t oi = item / n_cb, c0 = (item % n_cb) * CB, c1 = std::min(nc, c0 + CB);
      int64_t base = 0, rest = oi;
      for (int d = (int)kshape_o.size() - 1; d >= 0; --d) { base += (rest % kshape_o[d]) * kstride_o[d]; rest /= kshape_o[d]; }
      A acc[CB];
      for (int64_t c = 0; c < c1 - c0; ++c) acc[c] = R::init();
      const T* p0 = a + base + c0;
      for_each_run(RL.rshape, RL.rstride, [&](int64_t off, int64_t n, int64_t s) {
        for (int64_t i = 0; i < n; ++i) {
          const T* p = p0 + off + i * s;
#pragma omp simd
          for (int64_t c = 0; c < c1 - c0; ++c) acc[c] = R::step(acc[c], p[c]);
        }
      });
      for (int64_t c = 0; c < c1 - c0; ++c) out[oi * nc + c0 + c] = T(acc[c]);
    });
    return;
  }
  // One output element at a time: its reduced elements are visited run by run.
  parallel_for(n_out, work, false, [&](int64_t o) {
    int64_t base = 0, rest = o;
    for (int d = (int)RL.kshape.size() - 1; d >= 0; --d) { base += (rest % RL.kshape[d]) * RL.kstride[d]; rest /= RL.kshape[d]; }
    A acc = R::init();
    for_each_run(RL.rshape, RL.rstride, [&](int64_t off, int64_t n, int64_t s) {
      if (s == 1) acc = R::merge(acc, reduce_run<T, R>(a + base + off, n));
      else for (int64_t i = 0; i < n; ++i) acc = R::step(acc, a[base + off + i * s]);
    });
    out[o] = T(acc);
  });
}

// Full reductions of a contiguous run to one element: reduce fixed slices in parallel, then merge the partial
// results in order (so the answer does not depend on the number of threads).
template <class T, class R>
bool reduce_all_parallel(const T* a, const ReduceLayout& RL, int64_t n_red, T* out) {
  if (RL.rshape.size() != 1 || RL.rstride[0] != 1 || n_red < kParallelMin || !RL.kshape.empty()) return false;
  using A = typename R::A;
  const int64_t parts = std::min<int64_t>(64, n_red / 16384);
  std::vector<A> part(parts, R::init());
  parallel_for(parts, n_red, false, [&](int64_t t) {
    const int64_t lo = n_red * t / parts, hi = n_red * (t + 1) / parts;
    part[t] = reduce_run<T, R>(a + lo, hi - lo);
  });
  A acc = R::init();
  for (auto p : part) acc = R::merge(acc, p);
  out[0] = T(acc);
  return true;
}

template <class T, bool IS_MAX>
void argreduce_kernel(const T* a, const ReduceLayout& RL, int64_t n_out, int64_t n, int64_t stride, int64_t* out) {
  parallel_for(n_out, n_out * n, false, [&](int64_t o) {
    int64_t base = 0, rest = o;
    for (int d = (int)RL.kshape.size() - 1; d >= 0; --d) { base += (rest % RL.kshape[d]) * RL.kstride[d]; rest /= RL.kshape[d]; }
    const T* p = a + base;
    T best = p[0];
    int64_t bi = 0;
    if (!(best != best))
      for (int64_t i = 1; i < n; ++i) {
        const T v = p[i * stride];
        if (v != v) { bi = i; break; }  // the first NaN is the answer, as in numpy
        if (IS_MAX ? v > best : v < best) { best = v; bi = i; }
      }
    out[o] = bi;
  });
}

void reduce_cpu(c10::string_view op_, const at::Tensor& a, IntList shape_, IntList as, int64_t ao, int64_t n_reduce,
                const at::Tensor& out) {
  auto shape = vec(shape_);
  const std::string op(op_);
  check_view(a, shape, as, ao, "reduce: a");
  TORCH_CHECK(n_reduce >= 0 && n_reduce <= (int64_t)shape.size(), "reduce: n_reduce=", n_reduce, " for ", shape.size(), " dims");
  int64_t n_out = 1, n_red = 1;
  for (size_t d = 0; d < shape.size(); ++d) (d < shape.size() - n_reduce ? n_out : n_red) *= shape[d];
  TORCH_CHECK(out.is_contiguous() && out.dim() == 1 && out.numel() == n_out, "reduce: out must be a buffer of ", n_out, " elements");
  if (n_out == 0) return;
  auto RL = tgb::split_reduce(shape, as.data(), n_reduce);
  if (op == "argmax" || op == "argmin") {
    TORCH_CHECK(n_reduce == 1 && n_red > 0 && out.scalar_type() == at::kLong, "reduce: argmax/argmin reduce one non-empty axis into int64");
    TGB_DISPATCH(a.scalar_type(), "reduce", [&] {
      const scalar_t* p = a.data_ptr<scalar_t>() + ao;
      if (op == "argmax") argreduce_kernel<scalar_t, true>(p, RL, n_out, n_red, as[shape.size() - 1], out.data_ptr<int64_t>());
      else argreduce_kernel<scalar_t, false>(p, RL, n_out, n_red, as[shape.size() - 1], out.data_ptr<int64_t>());
    });
    return;
  }
  check_same_dtype(a, out, "reduce");
  TGB_DISPATCH(a.scalar_type(), "reduce", [&] {
    using T = scalar_t;
    const T* p = a.data_ptr<T>() + ao;
    T* o = out.data_ptr<T>();
    auto run = [&](auto tag) {
      using R = decltype(tag);
      if (!reduce_all_parallel<T, R>(p, RL, n_red, o)) reduce_kernel<T, R>(p, RL, n_out, n_red, o);
    };
    if (op == "sum") run(SumR<T>{});
    else if (op == "max") run(MaxR<T>{});
    else if (op == "min") run(MinR<T>{});
    else { TORCH_CHECK(false, "reduce: unknown op '", op, "'"); }
  });
}

// ------------------------------------------------------------------------------------------------- matmul
// C (M, N) = A (M, K) @ B (K, N), with A and B given by strides (any view) and C compact with row stride ldc.
struct MatView { int64_t rs, cs; };  // row and column strides

// Step 1, naive: the textbook triple loop. For each C[i, j] it walks a row of A and a column of B; the column
// of B is read with stride N (a new cache line per element), and nothing is reused from one (i, j) to the next.
template <class T>
void mm_naive(const T* A, MatView a, const T* B, MatView b, T* C, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  parallel_for(M, M * N * K, true, [&](int64_t i) {
    for (int64_t j = 0; j < N; ++j) {
      acc_t<T> acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += acc_t<T>(A[i * a.rs + k * a.cs]) * acc_t<T>(B[k * b.rs + j * b.cs]);
      C[i * ldc + j] = T(acc);
    }
  });
}

// Step 2, blocked: loop order i-k-j (the inner loop runs along a row of B and a row of C, contiguous when B is
// row-major, so it vectorises), over tiles of C and K small enough that the B tile stays in cache while a tile of
// A's rows is multiplied into it.
template <class T>
void mm_blocked(const T* A, MatView a, const T* B, MatView b, T* C, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  constexpr int64_t MB = 64, NB = 256, KB = 128;
  const int64_t tiles_j = (N + NB - 1) / NB;
  parallel_for(((M + MB - 1) / MB) * tiles_j, M * N * K, true, [&](int64_t tile) {
      const int64_t i0 = (tile / tiles_j) * MB, j0 = (tile % tiles_j) * NB;
      const int64_t i1 = std::min(M, i0 + MB), j1 = std::min(N, j0 + NB);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) C[i * ldc + j] = T(0);
      for (int64_t k0 = 0; k0 < K; k0 += KB) {
        const int64_t k1 = std::min(K, k0 + KB);
        for (int64_t i = i0; i < i1; ++i) {
          T* c = C + i * ldc;
          for (int64_t k = k0; k < k1; ++k) {
            const T aik = A[i * a.rs + k * a.cs];
            const T* bk = B + k * b.rs;
            if (b.cs == 1) {
#pragma omp simd
              for (int64_t j = j0; j < j1; ++j) c[j] += aik * bk[j];
            } else {
              for (int64_t j = j0; j < j1; ++j) c[j] += aik * bk[j * b.cs];
            }
          }
        }
      }
  });
}

// Step 3, packed and register-blocked (the structure of GotoBLAS/BLIS). A micro-kernel computes an MR x NR tile
// of C entirely in vector registers: per step k it loads NR/W vectors of a B row, broadcasts MR values of an A
// column, and issues MR*NR/W fused multiply-adds, so each value loaded from memory is used MR or NR/W times.
// Its operands are packed first: a KC x NC block of B into NR-wide column panels and an MC x KC block of A into
// MR-tall row panels, each laid out in the exact order the micro-kernel reads them (unit stride, aligned), which
// also makes any input strides (transposed, sliced, broadcast) cost nothing beyond the packing copy.
template <class T> struct MicroShape;
template <> struct MicroShape<float> { static constexpr int W = 16, MR = 12, NR = 32; };  // 24 zmm accumulators
template <> struct MicroShape<double> { static constexpr int W = 8, MR = 12, NR = 16; };
template <> struct MicroShape<int64_t> { static constexpr int W = 8, MR = 4, NR = 16; };

// 64-byte GCC vector types: one AVX-512 register (two AVX2 registers, or four SSE ones, on older CPUs)
template <class T> struct Vec64;
template <> struct Vec64<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct Vec64<double> { typedef double type __attribute__((vector_size(64))); };
template <> struct Vec64<int64_t> { typedef int64_t type __attribute__((vector_size(64))); };

template <class T>
static inline void micro_kernel(int64_t kc, const T* __restrict__ Ap, const T* __restrict__ Bp, T* C, int64_t ldc,
                                int mr, int nr, bool accumulate) {
  constexpr int W = MicroShape<T>::W, MR = MicroShape<T>::MR, NR = MicroShape<T>::NR, NV = NR / W;
  using V = typename Vec64<T>::type;
  static_assert(sizeof(V) == W * sizeof(T));
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = V{} ;
  for (int64_t k = 0; k < kc; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&b[v], Bp + k * NR + v * W, sizeof(V));
    for (int r = 0; r < MR; ++r) {
      const T ar = Ap[k * MR + r];
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * b[v];
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) {
        V c;
        if (accumulate) { std::memcpy(&c, C + r * ldc + v * W, sizeof(V)); c += acc[r][v]; }
        else c = acc[r][v];
        std::memcpy(C + r * ldc + v * W, &c, sizeof(V));
      }
  } else {  // an edge tile: only mr x nr of it is inside C
    alignas(64) T tmp[MR * NR];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) std::memcpy(tmp + r * NR + v * W, &acc[r][v], sizeof(V));
    for (int r = 0; r < mr; ++r)
      for (int j = 0; j < nr; ++j) C[r * ldc + j] = (accumulate ? C[r * ldc + j] : T(0)) + tmp[r * NR + j];
  }
}

template <class T>
void pack_B_panel(const T* B, MatView b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int64_t p, T* Bp) {
  constexpr int NR = MicroShape<T>::NR;
  T* dst = Bp + p * NR * kc;
  const int64_t jn = std::min<int64_t>(NR, nc - p * NR);
  for (int64_t k = 0; k < kc; ++k) {
    const T* src = B + (k0 + k) * b.rs + (j0 + p * NR) * b.cs;
    if (b.cs == 1 && jn == NR) std::memcpy(dst + k * NR, src, NR * sizeof(T));
    else {
      for (int64_t j = 0; j < jn; ++j) dst[k * NR + j] = src[j * b.cs];
      for (int64_t j = jn; j < NR; ++j) dst[k * NR + j] = T(0);
    }
  }
}

template <class T>
void pack_A(const T* A, MatView a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, T* Ap) {
  constexpr int MR = MicroShape<T>::MR;
  for (int64_t p = 0; p * MR < mc; ++p) {
    T* dst = Ap + p * MR * kc;
    const int64_t in = std::min<int64_t>(MR, mc - p * MR);
    const T* src = A + (i0 + p * MR) * a.rs + k0 * a.cs;
    if (a.cs == 1) {  // row-major A: read each row along k, write with stride MR
      for (int64_t r = 0; r < in; ++r)
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = src[r * a.rs + k];
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < in; ++r) dst[k * MR + r] = src[r * a.rs + k * a.cs];
    }
    for (int64_t r = in; r < MR; ++r)
      for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = T(0);
  }
}

template <class T>
void mm_packed(const T* A, MatView a, const T* B, MatView b, T* C, int64_t ldc, int64_t M, int64_t N, int64_t K) {
  constexpr int MR = MicroShape<T>::MR, NR = MicroShape<T>::NR;
  // KC x NR of B (32 KiB for float32) sits in L1 across a micro-panel sweep; MC x KC of A (128 KiB) in L2.
  constexpr int64_t KC = 256, MC = 128, NC = 3072;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i) for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = T(0);
    return;
  }
  std::vector<T> Bp(((std::min(N, NC) + NR - 1) / NR) * NR * KC);
  for (int64_t j0 = 0; j0 < N; j0 += NC) {
    const int64_t nc = std::min(NC, N - j0);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const int64_t panels = (nc + NR - 1) / NR;
      parallel_for(panels, panels * NR * kc, false, [&](int64_t p) { pack_B_panel(B, b, k0, kc, j0, nc, p, Bp.data()); });
      // blocks of MC rows of C go to the threads; each packs its own block of A
      parallel_for((M + MC - 1) / MC, M * nc * kc, true, [&](int64_t ib) {
        thread_local std::vector<T> Ap;
        Ap.resize(((MC + MR - 1) / MR) * MR * KC);
        const int64_t i0 = ib * MC, mc = std::min(MC, M - i0);
        pack_A(A, a, i0, mc, k0, kc, Ap.data());
        for (int64_t jr = 0; jr < nc; jr += NR)
          for (int64_t ir = 0; ir < mc; ir += MR)
            micro_kernel<T>(kc, Ap.data() + ir * kc, Bp.data() + jr * kc, C + (i0 + ir) * ldc + j0 + jr, ldc,
                            (int)std::min<int64_t>(MR, mc - ir), (int)std::min<int64_t>(NR, nc - jr), k0 > 0);
      });
    }
  }
}

void matmul_cpu(const at::Tensor& a, IntList ashape, IntList as, int64_t ao, const at::Tensor& b, IntList bshape,
                IntList bs, int64_t bo, const at::Tensor& out, int64_t algo) {
  const int64_t nd = (int64_t)ashape.size();
  TORCH_CHECK(nd >= 2 && (int64_t)bshape.size() == nd, "matmul: operands must have the same rank >= 2");
  for (int64_t d = 0; d < nd - 2; ++d) TORCH_CHECK(ashape[d] == bshape[d], "matmul: batch dims must be broadcast already");
  const int64_t M = ashape[nd - 2], K = ashape[nd - 1], N = bshape[nd - 1];
  TORCH_CHECK(bshape[nd - 2] == K, "matmul: inner sizes differ: ", K, " and ", bshape[nd - 2]);
  check_view(a, vec(ashape), as, ao, "matmul: a");
  check_view(b, vec(bshape), bs, bo, "matmul: b");
  check_same_dtype(a, out, "matmul");
  check_same_dtype(b, out, "matmul");
  int64_t batch = 1;
  for (int64_t d = 0; d < nd - 2; ++d) batch *= ashape[d];
  TORCH_CHECK(out.is_contiguous() && out.numel() == batch * M * N, "matmul: out must be a compact buffer of ", batch * M * N);
  TORCH_CHECK(algo >= 0 && algo <= 2, "matmul: algo must be 0 (naive), 1 (blocked) or 2 (packed), got ", algo);
  if (batch * M * N == 0) return;
  TGB_DISPATCH(out.scalar_type(), "matmul", [&] {
    using T = scalar_t;
    const T *pa = a.data_ptr<T>() + ao, *pb = b.data_ptr<T>() + bo;
    T* pc = out.data_ptr<T>();
    for (int64_t bi = 0; bi < batch; ++bi) {  // batch offsets from the (broadcast) batch strides
      int64_t oa = 0, ob = 0, rest = bi;
      for (int64_t d = nd - 3; d >= 0; --d) {
        const int64_t i = rest % ashape[d];
        rest /= ashape[d];
        oa += i * as[d];
        ob += i * bs[d];
      }
      MatView va{as[nd - 2], as[nd - 1]}, vb{bs[nd - 2], bs[nd - 1]};
      T* c = pc + bi * M * N;
      if (algo == 0) mm_naive<T>(pa + oa, va, pb + ob, vb, c, N, M, N, K);
      else if (algo == 1 || std::is_integral_v<T> || M * N * K < 4096) mm_blocked<T>(pa + oa, va, pb + ob, vb, c, N, M, N, K);
      else mm_packed<T>(pa + oa, va, pb + ob, vb, c, N, M, N, K);
    }
  });
}

}  // namespace

TORCH_LIBRARY(tgb_ndarray, m) {
  // Every op writes into `out`/`dst` (allocated by the caller) and returns nothing.
  m.def("copy(Tensor src, int[] shape, int[] src_strides, int src_offset, Tensor(a!) dst, int[] dst_strides, int dst_offset) -> ()");
  m.def("fill(Tensor(a!) dst, int[] shape, int[] strides, int offset, Scalar value) -> ()");
  m.def("unary(str op, Tensor a, int[] a_strides, int a_offset, Tensor(a!) out, int[] shape, int[] out_strides, int out_offset) -> ()");
  m.def("binary(str op, Tensor a, int[] a_strides, int a_offset, Tensor b, int[] b_strides, int b_offset, Tensor(a!) out, "
        "int[] shape, int[] out_strides, int out_offset) -> ()");
  m.def("scalar(str op, Tensor a, int[] a_strides, int a_offset, Scalar s, bool reverse, Tensor(a!) out, int[] shape, "
        "int[] out_strides, int out_offset) -> ()");
  m.def("where(Tensor c, int[] c_strides, int c_offset, Tensor a, int[] a_strides, int a_offset, Tensor b, int[] b_strides, "
        "int b_offset, Tensor(a!) out, int[] shape, int[] out_strides, int out_offset) -> ()");
  m.def("reduce(str op, Tensor a, int[] shape, int[] strides, int offset, int n_reduce, Tensor(a!) out) -> ()");
  m.def("matmul(Tensor a, int[] a_shape, int[] a_strides, int a_offset, Tensor b, int[] b_shape, int[] b_strides, "
        "int b_offset, Tensor(a!) out, int algo=2) -> ()");
  m.def("set_threads(int n) -> int", &set_threads);  // 0: adaptive (the default); returns the previous setting
}

TORCH_LIBRARY_IMPL(tgb_ndarray, CPU, m) {
  m.impl("copy", &copy_cpu);
  m.impl("fill", &fill_cpu);
  m.impl("unary", &unary_cpu);
  m.impl("binary", &binary_cpu);
  m.impl("scalar", &scalar_cpu);
  m.impl("where", &where_cpu);
  m.impl("reduce", &reduce_cpu);
  m.impl("matmul", &matmul_cpu);
}
