// Fused softmax / log-softmax / logsumexp / cross-entropy for CPU tensors (float32, float64).
//
// Every op works on a contiguous (rows, cols) matrix and reduces along cols; the Python wrapper moves the
// reduced dim last. Rows are spread over threads with OpenMP; each row is read once from memory for its
// statistics, in L1-sized chunks, keeping a running max and a running sum of exp(x - max) ("online softmax").
//
// Registered with the PyTorch dispatcher as torch.ops.tgb_softmax.*: the schema is defined here and the CPU
// kernels are attached to the CPU dispatch key; softmax_cuda.cpp attaches CUDA kernels to the same schema.
#include <torch/library.h>
#include <torch/autograd.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "cpu_alloc.h"
#include "fast_math.h"

namespace {

using tgb::exp_nonpos;  // every exp here has an argument <= 0 (x - max, a log-probability, -|x|)
constexpr int64_t CHUNK = 2048;  // elements per chunk: 8 KiB of float32 stays in L1 between the two sweeps

// Statistics of one row: its max m and s = sum(exp(x - m)), accumulated across chunks in double.
template <typename T> struct RowStats { T max; double sum; };

// ---- whole-vector loops ----
// A row of 100 floats is 6 AVX-512 vectors and 4 leftover elements. GCC finishes such a loop with a scalar epilogue
// (up to 15 scalar exps), which at classifier sizes costs as much as the vectorised body: (256, 100)
// ran at 2x the time of (256, 96). So a row at least one vector long ends with one more full vector that overlaps
// the body: harmless for a max and for an output that is written twice with the same value; a sum masks the lanes
// the body already counted.
template <typename T> constexpr int64_t LANES = 64 / sizeof(T);  // one 64-byte register: AVX-512, or 2 AVX2 ones

// A row shorter than one vector is copied into a padded block (masked loads with AVX-512), then runs as one vector.
template <typename T>
static inline void padded_block(const T* x, int64_t n, T pad, T* out) {
#pragma omp simd
  for (int64_t j = 0; j < LANES<T>; ++j) out[j] = j < n ? x[j] : pad;
}

template <typename T>
static inline T row_max(const T* x, int64_t n) {
  T m = -INFINITY;
  if (n < LANES<T>) {
    alignas(64) T b[LANES<T>];
    padded_block(x, n, T(-INFINITY), b);
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < LANES<T>; ++j) m = b[j] > m ? b[j] : m;
    return m;
  }
  const int64_t body = n - n % LANES<T>;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < body; ++j) m = x[j] > m ? x[j] : m;
  if (body < n) {
    const T* last = x + n - LANES<T>;  // the last full vector, overlapping the body
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < LANES<T>; ++j) m = last[j] > m ? last[j] : m;
  }
  return m;
}

// Sum of a block of LANES partial sums, as a tree. (A `#pragma omp simd reduction(+)` ends with the lanes added one
// after another, in order, because float addition is not associative: 16 dependent adds per row.)
template <typename T>
static inline T lane_sum(T* acc) {
  for (int64_t w = LANES<T> / 2; w >= 1; w /= 2) {
#pragma omp simd
    for (int64_t l = 0; l < w; ++l) acc[l] += acc[l + w];
  }
  return acc[0];
}

// sum over j of exp(x[j] - m), also written to y[j] when y is not null (y must not alias x). Accumulated per lane.
template <typename T>
static inline T exp_sum(const T* x, int64_t n, T m, T* y) {
  alignas(64) T acc[LANES<T>] = {};
  if (n < LANES<T>) {
    alignas(64) T b[LANES<T>];
    padded_block(x, n, T(-INFINITY), b);  // exp(-inf - m) = 0: the padding adds nothing
#pragma omp simd aligned(b, acc : 64)
    for (int64_t l = 0; l < LANES<T>; ++l) {
      b[l] = exp_nonpos<T>(b[l] - m);
      acc[l] = b[l];
    }
    if (y) std::copy(b, b + n, y);
    return lane_sum(acc);
  }
  const int64_t body = n - n % LANES<T>;
  for (int64_t j0 = 0; j0 < body; j0 += LANES<T>) {
    const T* xb = x + j0;
    if (y) {
      T* yb = y + j0;
#pragma omp simd aligned(acc : 64)
      for (int64_t l = 0; l < LANES<T>; ++l) {
        const T e = exp_nonpos<T>(xb[l] - m);
        yb[l] = e;
        acc[l] += e;
      }
    } else {
#pragma omp simd aligned(acc : 64)
      for (int64_t l = 0; l < LANES<T>; ++l) acc[l] += exp_nonpos<T>(xb[l] - m);
    }
  }
  if (body < n) {  // the last full vector, overlapping the body: lanes [0, seen) were already counted
    const int64_t start = n - LANES<T>, seen = body - start;
    const T* xb = x + start;
    T* yb = y ? y + start : nullptr;
#pragma omp simd aligned(acc : 64)
    for (int64_t l = 0; l < LANES<T>; ++l) {
      const T e = exp_nonpos<T>(xb[l] - m);
      if (yb) yb[l] = e;
      acc[l] += l < seen ? T(0) : e;
    }
  }
  return lane_sum(acc);
}

// out[j] = f(a[j], b[j]) for j < n (b may be null: f then gets 0); out must not alias a or b (the last vector is
// computed twice). f must be cheap and branch-free: it is inlined into a simd loop.
template <typename T, typename F>
static inline void map_lanes(const T* a, const T* b, T* out, int64_t n, F f) {
  if (n < LANES<T>) {
    alignas(64) T ab[LANES<T>], bb[LANES<T>], ob[LANES<T>];
    padded_block(a, n, T(0), ab);
    if (b) padded_block(b, n, T(0), bb);
#pragma omp simd
    for (int64_t j = 0; j < LANES<T>; ++j) ob[j] = f(ab[j], b ? bb[j] : T(0));
    std::copy(ob, ob + n, out);
    return;
  }
  const int64_t body = n - n % LANES<T>;
  auto run = [&](int64_t j0, int64_t len) {
    const T *ap = a + j0, *bp = b ? b + j0 : nullptr;
    T* op = out + j0;
    if (bp) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) op[j] = f(ap[j], bp[j]);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) op[j] = f(ap[j], T(0));
    }
  };
  run(0, body);
  if (body < n) run(n - LANES<T>, LANES<T>);
}

// Fold the max of x[c0:c1] into the running max m; if it grew, rescale the running sum s to the new max.
template <typename T>
static inline void update_max(const T* x, int64_t c0, int64_t c1, T& m, double& s) {
  const T cm = row_max(x + c0, c1 - c0);
  if (cm > m) {
    if (s != 0.0) s *= std::exp(double(m) - double(cm));  // (the first chunk has nothing to rescale: skip the exp)
    m = cm;
  }
}

// One sweep of a row: the max and the sum of exp(x - max). With `exps`, each chunk's exponentials are also written
// there, relative to the running max of the moment, which is appended to `chunk_max` (softmax_row rescales them).
template <typename T>
static RowStats<T> row_stats(const T* x, int64_t n, T* exps = nullptr, std::vector<T>* chunk_max = nullptr) {
  T m = -INFINITY;
  double s = 0.0;
  for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
    const int64_t c1 = std::min(n, c0 + CHUNK);
    update_max(x, c0, c1, m, s);
    T cs = 0;
    if (m == -INFINITY) {
      // Nothing above -inf yet, so exp(x - m) would be exp(-inf + inf) = NaN. The chunk holds only -inf entries
      // (which contribute 0) and NaNs (which must poison the row, as in torch): x itself for NaN, else 0.
#pragma omp simd reduction(+ : cs)
      for (int64_t j = c0; j < c1; ++j) {
        const T v = x[j] == -INFINITY ? T(0) : x[j];
        if (exps) exps[j] = v;
        cs += v;
      }
      if (exps) chunk_max->push_back(m);
    } else {
      cs = exp_sum(x + c0, c1 - c0, m, exps ? exps + c0 : nullptr);
      if (exps) chunk_max->push_back(m);
    }
    s += double(cs);
  }
  return {m, s};
}

// log(sum(exp(x))) from the statistics; an all -inf row gives -inf and a +inf entry gives +inf, as torch does.
template <typename T> static double row_lse(const RowStats<T>& st) {
  return std::isinf(st.max) ? double(st.max) : double(st.max) + std::log(st.sum);
}

// sum over j < n of w[j] * (x[j] - shift) (w == nullptr means all ones), accumulated per lane like exp_sum.
template <typename T>
static inline T dot_sum(const T* x, const T* w, int64_t n, T shift) {
  alignas(64) T acc[LANES<T>] = {};
  const int64_t body = n - n % LANES<T>;  // (0 for a row shorter than a vector)
  for (int64_t j0 = 0; j0 < body; j0 += LANES<T>) {
    const T* xb = x + j0;
    if (w) {
      const T* wb = w + j0;
#pragma omp simd aligned(acc : 64)
      for (int64_t l = 0; l < LANES<T>; ++l) acc[l] += wb[l] * (xb[l] - shift);
    } else {
#pragma omp simd aligned(acc : 64)
      for (int64_t l = 0; l < LANES<T>; ++l) acc[l] += xb[l] - shift;
    }
  }
  T rest = 0;  // the last n % LANES (a short row: all of it); a masked overlapping vector gained nothing here
  for (int64_t j = body; j < n; ++j) rest += (w ? w[j] : T(1)) * (x[j] - shift);
  return lane_sum(acc) + rest;
}

// sum(w[j] * (x[j] - shift)) (w == nullptr means all ones), chunked with a double accumulator.
template <typename T>
static double row_dot(const T* x, const T* w, int64_t n, T shift) {
  double acc = 0.0;
  for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
    const int64_t c1 = std::min(n, c0 + CHUNK);
    acc += double(dot_sum(x + c0, w ? w + c0 : nullptr, c1 - c0, shift));
  }
  return acc;
}

// Threads for a kernel over `work` elements: one below PAR_MIN. Waking the OpenMP team costs microseconds, more than
// a classifier-sized softmax ((64, 10): 640 elements) takes on one core. 8192 elements is 32 KiB of float32, where
// torch's own log_softmax starts splitting rows over threads (at::internal::GRAIN_SIZE bytes per task).
constexpr int64_t PAR_MIN = 1 << 13;
static int num_threads(int64_t work) { return work < PAR_MIN ? 1 : std::max(1, at::get_num_threads()); }

static void check_matrix(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2, name, " must be a 2-D (rows, cols) tensor, got ", x.dim(), " dims");
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", x.scalar_type());
}

// ---- kernels: plain loops over raw pointers, one template per op (a #pragma cannot sit inside AT_DISPATCH) ----

// softmax of one row with one exp per element: row_stats writes each chunk's exps relative to the running max of
// the moment; one more pass over the row, still in L2, rescales them to the final max and sum.
template <typename T>
static void softmax_row(const T* x, T* y, int64_t n, std::vector<T>& chunk_max) {
  if (n <= CHUNK) {  // a short row (most classifiers): one max, one exp per element, one scale; no per-chunk bookkeeping
    const T m = row_max(x, n);
    if (m != -INFINITY) {  // (an all -inf or all-NaN row takes the general path below, with its special cases)
      const T s = exp_sum(x, n, m, y);
      const T f = T(1.0 / double(s));
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) y[j] *= f;
      return;
    }
  }
  chunk_max.clear();
  const auto st = row_stats(x, n, y, &chunk_max);
  for (int64_t c0 = 0, c = 0; c0 < n; c0 += CHUNK, ++c) {
    const int64_t c1 = std::min(n, c0 + CHUNK);
    const T f = T(std::exp(double(chunk_max[c]) - double(st.max)) / st.sum);
#pragma omp simd
    for (int64_t j = c0; j < c1; ++j) y[j] *= f;
  }
}

// Rows of at most CHUNK elements are processed in groups of ROW_GROUP, phase by phase: every row's max, then every
// row's sum of exps, then every row's output. Within one row each phase waits on the one before (max -> exps -> sum
// -> log), so a row at a time leaves the core idle; the rows of a group are independent and their phases overlap.
// (256, 100) log_softmax: 20% faster than one row at a time. torch's lastdim kernels batch rows the same way.
constexpr int64_t ROW_GROUP = 8;

// Statistics of rows [i0, i1) of a (rows, n) matrix with n <= CHUNK; with Y, each row's exp(x - max) is written there.
// A row with no entry above -inf (all -inf, or NaN) gets row_stats' special cases, and nothing in Y: its max stays
// -inf, which the caller checks.
template <typename T>
static void group_stats(const T* X, int64_t i0, int64_t i1, int64_t n, RowStats<T>* st, T* Y) {
  for (int64_t i = i0; i < i1; ++i) st[i - i0].max = row_max(X + i * n, n);
  for (int64_t i = i0; i < i1; ++i) {
    RowStats<T>& r = st[i - i0];
    if (r.max == -INFINITY) r = row_stats(X + i * n, n);
    else r.sum = double(exp_sum(X + i * n, n, r.max, Y ? Y + i * n : nullptr));
  }
}

// Rows [i0, i1) of softmax or log_softmax.
template <typename T>
static void softmax_rows(const T* X, T* Y, int64_t i0, int64_t i1, int64_t cols, bool log, std::vector<T>& chunk_max) {
  if (cols > CHUNK) {  // long rows: one at a time, in chunks
    for (int64_t i = i0; i < i1; ++i) {
      const T* xr = X + i * cols;
      T* yr = Y + i * cols;
      if (!log) { softmax_row(xr, yr, cols, chunk_max); continue; }
      const auto st = row_stats(xr, cols);
      const T m = st.max, ls = T(std::log(st.sum));
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - ls;
    }
    return;
  }
  RowStats<T> st[ROW_GROUP];
  group_stats(X, i0, i1, cols, st, log ? nullptr : Y);
  for (int64_t i = i0; i < i1; ++i) {
    const T* xr = X + i * cols;
    T* yr = Y + i * cols;
    const RowStats<T>& r = st[i - i0];
    if (log) {
      // (x - m) - log(s): subtracting m first keeps the digits that m + log(s) would round away
      const T m = r.max, ls = T(std::log(r.sum));
      map_lanes(xr, (const T*)nullptr, yr, cols, [=](T xj, T) { return (xj - m) - ls; });
    } else if (r.max == -INFINITY) {
      softmax_row(xr, yr, cols, chunk_max);  // its general path: the special cases
    } else {
      const T f = T(1.0 / r.sum);
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) yr[j] *= f;
    }
  }
}

template <typename T>
void softmax_fwd_kernel(const T* X, T* Y, int64_t rows, int64_t cols, bool log) {
  const int64_t groups = (rows + ROW_GROUP - 1) / ROW_GROUP;
#pragma omp parallel num_threads(num_threads(rows * cols))
  {
    std::vector<T> chunk_max;
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g)
      softmax_rows(X, Y, g * ROW_GROUP, std::min(rows, (g + 1) * ROW_GROUP), cols, log, chunk_max);
  }
}

// Backward of y = softmax(x):      dx = y * (g - sum(g * y))
// Backward of y = log_softmax(x):  dx = g - exp(y) * sum(g)
template <typename T>
void softmax_bwd_kernel(const T* G, const T* Y, T* GX, int64_t rows, int64_t cols, bool log) {
#pragma omp parallel for schedule(static) num_threads(num_threads(rows * cols))
  for (int64_t i = 0; i < rows; ++i) {
    const T* g = G + i * cols;
    const T* yr = Y + i * cols;
    T* o = GX + i * cols;
    if (log) {
      const T s = T(row_dot<T>(g, nullptr, cols, T(0)));
      map_lanes(g, yr, o, cols, [s](T gj, T yj) { return gj - exp_nonpos<T>(yj) * s; });
    } else {
      const T s = T(row_dot<T>(g, yr, cols, T(0)));
      map_lanes(g, yr, o, cols, [s](T gj, T yj) { return yj * (gj - s); });
    }
  }
}

template <typename T>
void logsumexp_kernel(const T* X, T* O, int64_t rows, int64_t cols) {
  const int64_t groups = (rows + ROW_GROUP - 1) / ROW_GROUP;
#pragma omp parallel for schedule(static) num_threads(num_threads(rows * cols))
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i0 = g * ROW_GROUP, i1 = std::min(rows, i0 + ROW_GROUP);
    RowStats<T> st[ROW_GROUP];
    if (cols <= CHUNK) group_stats(X, i0, i1, cols, st, (T*)nullptr);
    for (int64_t i = i0; i < i1; ++i) O[i] = T(row_lse(cols <= CHUNK ? st[i - i0] : row_stats(X + i * cols, cols)));
  }
}

// Cross-entropy of each row (0 for ignored rows), written to L when it is not null, and the row's logsumexp in float64
// (kept for the backward). Returns {sum of the losses, sum of w[t] over the rows not ignored}: a 'sum' or 'mean'
// reduction needs no pass of its own, and no (rows,) tensor at all.
//   loss_i = (1 - eps) * w[t] * (lse - x[t]) + eps / C * sum_j w[j] * (lse - x[j])
template <typename T>
std::pair<double, double> cross_entropy_fwd_kernel(const T* X, const int64_t* Tg, const T* Wt, double W, T* L,
                                                   double* LSE, int64_t rows, int64_t C, int64_t ignore_index,
                                                   double eps) {
  double total = 0.0, denom = 0.0;
  const int64_t groups = (rows + ROW_GROUP - 1) / ROW_GROUP;
#pragma omp parallel for schedule(static) reduction(+ : total, denom) num_threads(num_threads(rows * C))
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i0 = g * ROW_GROUP, i1 = std::min(rows, i0 + ROW_GROUP);
    RowStats<T> group[ROW_GROUP];
    if (C <= CHUNK) group_stats(X, i0, i1, C, group, (T*)nullptr);  // (ignored rows too: simpler than skipping them)
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = Tg[i];
      if (t == ignore_index) {
        if (L) L[i] = 0;
        LSE[i] = 0;
        continue;
      }
      const T* xr = X + i * C;
      const auto st = C <= CHUNK ? group[i - i0] : row_stats(xr, C);
      const double m = double(st.max), log_s = std::log(st.sum);
      LSE[i] = std::isinf(st.max) ? m : m + log_s;  // row_lse, without a second log
      const double wt = Wt ? double(Wt[t]) : 1.0;
      // lse - x[t] = (m - x[t]) + log(s): no cancellation between two large numbers
      double l = (1.0 - eps) * wt * ((m - double(xr[t])) + log_s);
      // sum_j w[j] (lse - x[j]) = W log(s) - sum_j w[j] (x[j] - m)
      if (eps > 0) l += eps / double(C) * (W * log_s - row_dot(xr, Wt, C, st.max));
      if (L) L[i] = T(l);
      total += double(T(l));  // rounded to T first, so 'sum' equals the sum of the 'none' losses
      denom += wt;
    }
  }
  return {total, denom};
}

// d loss_i / d x_ik = g_i * [ (1-eps) w[t] (p_ik - [k==t]) + eps/C (W p_ik - w[k]) ],  p = softmax(x_i)
// G holds one upstream gradient per row (g_stride 1), or one for all rows (g_stride 0, 'sum'/'mean'), times `scale`.
template <typename T>
void cross_entropy_bwd_kernel(const T* G, int64_t g_stride, double scale, const T* X, const int64_t* Tg,
                              const double* LSE, const T* Wt, double W, T* GX, int64_t rows, int64_t C,
                              int64_t ignore_index, double eps) {
#pragma omp parallel for schedule(static) num_threads(num_threads(rows * C))
  for (int64_t i = 0; i < rows; ++i) {
    T* o = GX + i * C;
    const int64_t t = Tg[i];
    if (t == ignore_index) { std::fill(o, o + C, T(0)); continue; }
    const T* xr = X + i * C;
    const double gi = double(G[i * g_stride]) * scale, wt = Wt ? double(Wt[t]) : 1.0;
    const T a = T(gi * ((1.0 - eps) * wt + eps / double(C) * W));  // coefficient of p_ik
    const T c = T(gi * eps / double(C));                           // coefficient of w[k]
    // lse split into hi + lo so that (x - hi) - lo keeps float64's precision in float32 arithmetic
    const T hi = T(LSE[i]), lo = T(LSE[i] - double(hi));
    if (Wt) map_lanes(xr, Wt, o, C, [=](T xk, T wk) { return a * exp_nonpos<T>((xk - hi) - lo) - c * wk; });
    else map_lanes(xr, (const T*)nullptr, o, C, [=](T xk, T) { return a * exp_nonpos<T>((xk - hi) - lo) - c; });
    o[t] -= T(gi * (1.0 - eps) * wt);
  }
}

// ---- ops: check the tensors, allocate outputs, dispatch on dtype ----

at::Tensor softmax_fwd_cpu(const at::Tensor& x, bool log) {
  check_matrix(x, "x");
  auto y = tgb::empty_like_hugepages(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softmax_fwd_cpu", [&] {
    softmax_fwd_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), x.size(0), x.size(1),
                                 log);
  });
  return y;
}

at::Tensor softmax_bwd_cpu(const at::Tensor& grad, const at::Tensor& y, bool log) {
  check_matrix(grad, "grad");
  check_matrix(y, "y");
  TORCH_CHECK(grad.sizes() == y.sizes() && grad.scalar_type() == y.scalar_type(),
              "grad and y must have the same shape and dtype");
  auto gx = tgb::empty_like_hugepages(y);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "softmax_bwd_cpu", [&] {
    softmax_bwd_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                 gx.mutable_data_ptr<scalar_t>(), y.size(0), y.size(1), log);
  });
  return gx;
}

at::Tensor logsumexp_fwd_cpu(const at::Tensor& x) {
  check_matrix(x, "x");
  auto out = at::empty({x.size(0)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "logsumexp_fwd_cpu", [&] {
    logsumexp_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), x.size(0), x.size(1));
  });
  return out;
}

// Validates class-index targets and the optional class weights; returns sum(weight) (C without weights).
// The index range is checked here, before any thread starts, so a bad index never reaches a kernel: an IndexError in
// Python, as torch's own CPU kernel raises (and the same check runs inside torch.compile'd code, where Python-side
// `if bad.any()` would break the graph).
static double check_targets(const at::Tensor& x, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                            int64_t ignore_index, double eps, bool check_range) {
  check_matrix(x, "logits");
  TORCH_CHECK(target.scalar_type() == at::kLong, "target must be int64 class indices, got ", target.scalar_type());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == x.size(0) && target.is_contiguous(),
              "target must be a contiguous 1-D tensor with one class index per row of logits");
  const int64_t C = x.size(1);
  const int64_t* t = target.const_data_ptr<int64_t>();
  if (check_range)
    for (int64_t i = 0; i < target.size(0); ++i)
      TORCH_CHECK_INDEX(t[i] == ignore_index || (t[i] >= 0 && t[i] < C), "target ", t[i], " is out of bounds for ",
                        C, " classes (valid: 0..", C - 1, " or ignore_index=", ignore_index, ")");
  if (!weight.has_value()) return double(C);
  const auto& w = *weight;
  TORCH_CHECK(w.dim() == 1 && w.size(0) == C && w.is_contiguous() && w.scalar_type() == x.scalar_type(),
              "weight must be a contiguous 1-D tensor of length ", C, " and the logits' dtype");
  if (eps == 0) return 0.0;  // sum(weight) is needed only with label smoothing
  double W = 0;
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "weight_sum", [&] {
    const scalar_t* p = w.const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < C; ++k) W += double(p[k]);
  });
  return W;
}

// reduction: 0 'none' (loss has one entry per row), 1 'sum', 2 'mean' (0-dim loss). Returns (loss, lse, denom):
// lse (rows,) float64 for the backward; denom, 0-dim float64, the mean's divisor: sum of w[t] over rows not ignored.
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_fwd_cpu(const at::Tensor& x, const at::Tensor& target,
                                                                     const std::optional<at::Tensor>& weight,
                                                                     int64_t ignore_index, double label_smoothing,
                                                                     int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (sum) or 2 (mean)");
  const double W = check_targets(x, target, weight, ignore_index, label_smoothing, true);
  auto loss = reduction == 0 ? at::empty({x.size(0)}, x.options()) : at::empty({}, x.options());
  auto lse = at::empty({x.size(0)}, x.options().dtype(at::kDouble));
  auto denom = at::empty({}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_entropy_fwd_cpu", [&] {
    const auto [total, den] = cross_entropy_fwd_kernel<scalar_t>(
        x.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(),
        weight ? weight->const_data_ptr<scalar_t>() : nullptr, W,
        reduction == 0 ? loss.mutable_data_ptr<scalar_t>() : nullptr, lse.mutable_data_ptr<double>(), x.size(0),
        x.size(1), ignore_index, label_smoothing);
    *denom.mutable_data_ptr<double>() = den;
    if (reduction == 1) *loss.mutable_data_ptr<scalar_t>() = scalar_t(total);
    if (reduction == 2) *loss.mutable_data_ptr<scalar_t>() = scalar_t(total / den);  // 0/0 = NaN when all ignored, as torch
  });
  return {loss, lse, denom};
}

// grad: (rows,) for reduction 'none', else 0-dim; for 'mean' it is divided by denom here.
at::Tensor cross_entropy_bwd_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& target,
                                 const at::Tensor& lse, const at::Tensor& denom,
                                 const std::optional<at::Tensor>& weight, int64_t ignore_index,
                                 double label_smoothing, int64_t reduction) {
  const double W = check_targets(x, target, weight, ignore_index, label_smoothing, false);  // range checked forward
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() &&
                  (reduction == 0 ? grad.dim() == 1 && grad.size(0) == x.size(0) : grad.numel() == 1),
              "grad must have one entry per row ('none') or be a scalar ('sum', 'mean'), in the logits' dtype");
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == x.size(0) && lse.scalar_type() == at::kDouble,
              "lse must be float64 (rows,)");
  TORCH_CHECK(denom.numel() == 1 && denom.scalar_type() == at::kDouble, "denom must be a float64 scalar");
  auto g = grad.contiguous();
  auto gx = tgb::empty_like_hugepages(x);
  const double scale = reduction == 2 ? 1.0 / *denom.const_data_ptr<double>() : 1.0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cross_entropy_bwd_cpu", [&] {
    cross_entropy_bwd_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), reduction == 0 ? 1 : 0, scale,
                                       x.const_data_ptr<scalar_t>(), target.const_data_ptr<int64_t>(),
                                       lse.const_data_ptr<double>(),
                                       weight ? weight->const_data_ptr<scalar_t>() : nullptr, W,
                                       gx.mutable_data_ptr<scalar_t>(), x.size(0), x.size(1), ignore_index,
                                       label_smoothing);
  });
  return gx;
}

// ---- binary cross-entropy with logits: elementwise, one pass ----
//   loss = (1 - y) x - c log(sigmoid(x)),  c = 1 + (pos_weight - 1) y,  log(sigmoid(x)) = -(max(-x, 0) + log1p(exp(-|x|)))
//   d loss / dx = c sigmoid(x) - pos_weight y          (both times weight)
// weight and pos_weight are either full (one per element) or one per column of the last dim (period C).

constexpr int64_t SPAN = 16384;  // elements per parallel work item; spans never cross a row

// Calls f(begin, end, col0) over spans of [0, n) that stay within one row of C columns; returns the sum of f's results.
template <typename F>
static double for_each_span(int64_t n, int64_t C, F f) {
  if (n == 0) return 0.0;
  const int64_t rows = n / C, per_row = (C + SPAN - 1) / SPAN;
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) num_threads(num_threads(n))
  for (int64_t s = 0; s < rows * per_row; ++s) {
    const int64_t r = s / per_row, col0 = (s % per_row) * SPAN;
    const int64_t b = r * C + col0, e = std::min(r * C + C, b + SPAN);
    total += f(b, e, col0);
  }
  return total;
}

template <typename T> static inline T log_sigmoid(T x) {
  return -((-x > T(0) ? -x : T(0)) + tgb::log1p_exp_neg<T>(x < T(0) ? -x : x));
}

template <typename T> static inline T sigmoid(T x) {
  const T t = exp_nonpos<T>(x < T(0) ? x : -x);  // exp(-|x|) <= 1: never overflows
  const T r = T(1) / (T(1) + t);               // computed unconditionally, so the select below vectorises
  return x >= T(0) ? r : t * r;
}

// One span of the forward: writes the elementwise loss to `out` (STORE) or returns its sum.
// Sums go through blocks of 256 in T and across blocks in double: float32 sums of 16384 terms would lose digits.
template <typename T, bool HAS_W, bool HAS_PW, bool STORE>
static double bce_fwd_span(const T* x, const T* y, const T* w, const T* pw, T* out, int64_t len) {
  double total = 0.0;
  for (int64_t b = 0; b < len; b += 256) {
    const int64_t e = std::min(len, b + 256);
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = b; k < e; ++k) {
      const T c = HAS_PW ? T(1) + (pw[k] - T(1)) * y[k] : T(1);
      T l = (T(1) - y[k]) * x[k] - c * log_sigmoid<T>(x[k]);
      if (HAS_W) l *= w[k];
      if (STORE) out[k] = l; else acc += l;
    }
    total += double(acc);
  }
  return total;
}

template <typename T, bool HAS_W, bool HAS_PW, bool FULL_G>
static void bce_bwd_span(const T* g, const T* x, const T* y, const T* w, const T* pw, T* gx, int64_t len) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    const T p = HAS_PW ? pw[k] : T(1);
    T d = (T(1) + (p - T(1)) * y[k]) * sigmoid<T>(x[k]) - p * y[k];
    if (HAS_W) d *= w[k];
    gx[k] = (FULL_G ? g[k] : g[0]) * d;
  }
}

// weight / pos_weight: nullptr, full (numel n) or per column (numel C); returns the pointer for a span.
template <typename T> struct Operand {
  const T* p = nullptr;
  bool full = false;
  const T* at(int64_t b, int64_t col0) const { return p ? (full ? p + b : p + col0) : nullptr; }
};

template <typename T>
static Operand<T> operand(const std::optional<at::Tensor>& t, const at::Tensor& x, int64_t C, const char* name) {
  Operand<T> o;
  if (!t.has_value()) return o;
  TORCH_CHECK(t->is_contiguous() && t->scalar_type() == x.scalar_type() && t->device() == x.device(), name,
              " must be contiguous, on the logits' device, in their dtype");
  TORCH_CHECK(t->numel() == x.numel() || t->numel() == C, name, " must have one entry per element (", x.numel(),
              ") or per column of the last dimension (", C, "), got ", t->numel());
  o.p = t->const_data_ptr<T>();
  o.full = t->numel() == x.numel() && !(t->numel() == C && x.dim() <= 1);
  return o;
}

template <typename T, bool HAS_W, bool HAS_PW>
static double bce_fwd_run(const T* X, const T* Y, Operand<T> w, Operand<T> pw, T* out, int64_t n, int64_t C) {
  return for_each_span(n, C, [&](int64_t b, int64_t e, int64_t col0) {
    return out ? bce_fwd_span<T, HAS_W, HAS_PW, true>(X + b, Y + b, w.at(b, col0), pw.at(b, col0), out + b, e - b)
               : bce_fwd_span<T, HAS_W, HAS_PW, false>(X + b, Y + b, w.at(b, col0), pw.at(b, col0), nullptr, e - b);
  });
}

template <typename T, bool HAS_W, bool HAS_PW>
static void bce_bwd_run(const T* G, bool full_g, const T* X, const T* Y, Operand<T> w, Operand<T> pw, T* GX, int64_t n,
                        int64_t C) {
  for_each_span(n, C, [&](int64_t b, int64_t e, int64_t col0) {
    if (full_g) bce_bwd_span<T, HAS_W, HAS_PW, true>(G + b, X + b, Y + b, w.at(b, col0), pw.at(b, col0), GX + b, e - b);
    else bce_bwd_span<T, HAS_W, HAS_PW, false>(G, X + b, Y + b, w.at(b, col0), pw.at(b, col0), GX + b, e - b);
    return 0.0;
  });
}

static void check_bce(const at::Tensor& x, const at::Tensor& y) {
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous(), "logits and target must be contiguous");
  TORCH_CHECK(x.sizes() == y.sizes() && x.scalar_type() == y.scalar_type(),
              "target must have the logits' shape and dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "logits must be float32 or float64");
}

// reduction: 0 none (elementwise loss), 1 sum, 2 mean (0-dim result)
at::Tensor bce_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const std::optional<at::Tensor>& weight,
                       const std::optional<at::Tensor>& pos_weight, int64_t reduction) {
  check_bce(x, y);
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (sum) or 2 (mean)");
  const int64_t n = x.numel(), C = x.dim() ? std::max<int64_t>(x.size(-1), 1) : 1;
  at::Tensor out = reduction == 0 ? tgb::empty_like_hugepages(x) : at::empty({}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bce_fwd_cpu", [&] {
    const auto w = operand<scalar_t>(weight, x, C, "weight");
    const auto pw = operand<scalar_t>(pos_weight, x, C, "pos_weight");
    const scalar_t *X = x.const_data_ptr<scalar_t>(), *Y = y.const_data_ptr<scalar_t>();
    scalar_t* O = reduction == 0 ? out.mutable_data_ptr<scalar_t>() : nullptr;
    double total;
    if (w.p && pw.p) total = bce_fwd_run<scalar_t, true, true>(X, Y, w, pw, O, n, C);
    else if (w.p) total = bce_fwd_run<scalar_t, true, false>(X, Y, w, pw, O, n, C);
    else if (pw.p) total = bce_fwd_run<scalar_t, false, true>(X, Y, w, pw, O, n, C);
    else total = bce_fwd_run<scalar_t, false, false>(X, Y, w, pw, O, n, C);
    if (reduction == 1) out.fill_(total);
    if (reduction == 2) out.fill_(n ? total / double(n) : NAN);
  });
  return out;
}

// grad: 0-dim (the scalar upstream gradient, already divided by n for a mean) or the logits' shape
at::Tensor bce_bwd_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                       const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& pos_weight) {
  check_bce(x, y);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && (grad.numel() == 1 || grad.sizes() == x.sizes()),
              "grad must be a scalar or have the logits' shape, in their dtype");
  const auto g = grad.contiguous();
  const bool full_g = grad.dim() > 0 && grad.sizes() == x.sizes();
  const int64_t n = x.numel(), C = x.dim() ? std::max<int64_t>(x.size(-1), 1) : 1;
  auto gx = tgb::empty_like_hugepages(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bce_bwd_cpu", [&] {
    const auto w = operand<scalar_t>(weight, x, C, "weight");
    const auto pw = operand<scalar_t>(pos_weight, x, C, "pos_weight");
    const scalar_t *G = g.const_data_ptr<scalar_t>(), *X = x.const_data_ptr<scalar_t>(), *Y = y.const_data_ptr<scalar_t>();
    scalar_t* GX = gx.mutable_data_ptr<scalar_t>();
    if (w.p && pw.p) bce_bwd_run<scalar_t, true, true>(G, full_g, X, Y, w, pw, GX, n, C);
    else if (w.p) bce_bwd_run<scalar_t, true, false>(G, full_g, X, Y, w, pw, GX, n, C);
    else if (pw.p) bce_bwd_run<scalar_t, false, true>(G, full_g, X, Y, w, pw, GX, n, C);
    else bce_bwd_run<scalar_t, false, false>(G, full_g, X, Y, w, pw, GX, n, C);
  });
  return gx;
}

// ---- linear + cross-entropy without the (N, V) logits ----
// loss_i = CE(h_i W^T + b, t_i): logits are produced one (row chunk x vocab chunk) tile at a time by a matmul, folded
// into each row's running (max, sum of exp) with the online logsumexp, and dropped. The backward recomputes each tile
// and turns it into d loss / d logits in place, then into gradient contributions with two more matmuls. Memory: one
// tile, plus the gradients themselves, instead of the logits and their gradient.
constexpr int64_t LCE_ROWS = 1024, LCE_VOCAB = 4096;  // tile: 16 MiB of float32; large enough for efficient matmuls

// The running statistics of one row, merged with those of one more tile of its logits.
template <typename T>
static inline void merge_stats(T& m, double& s, const RowStats<T>& st) {
  if (st.max == -INFINITY) return;  // the tile adds exp(-inf) = 0
  if (st.max > m) {
    s = s * std::exp(double(m) - double(st.max)) + st.sum;
    m = st.max;
  } else {
    s += st.sum * std::exp(double(st.max) - double(m));
  }
}

static void check_linear_ce(const at::Tensor& h, const at::Tensor& w, const std::optional<at::Tensor>& b,
                            const at::Tensor& target) {
  check_matrix(h, "hidden");
  check_matrix(w, "weight");
  TORCH_CHECK(h.size(1) == w.size(1) && h.scalar_type() == w.scalar_type(),
              "hidden (N, d) and weight (V, d) must share d and dtype, got ", h.sizes(), " and ", w.sizes());
  TORCH_CHECK(!b.has_value() || (b->dim() == 1 && b->size(0) == w.size(0) && b->is_contiguous() &&
                                 b->scalar_type() == w.scalar_type()),
              "bias must be a contiguous (V,) tensor in weight's dtype");
  TORCH_CHECK(target.scalar_type() == at::kLong && target.dim() == 1 && target.size(0) == h.size(0) &&
                  target.is_contiguous(),
              "target must be a contiguous int64 (N,) tensor");
}

// The logits tile hidden[r0:r1] @ weight[v0:v1]^T (+ bias[v0:v1]), written into `tile` ((r1-r0) x (v1-v0)).
static at::Tensor logits_tile(const at::Tensor& h, const at::Tensor& w, const std::optional<at::Tensor>& b,
                              at::Tensor& buf, int64_t r0, int64_t r1, int64_t v0, int64_t v1) {
  auto tile = buf.narrow(0, 0, (r1 - r0) * (v1 - v0)).view({r1 - r0, v1 - v0});
  const auto hs = h.narrow(0, r0, r1 - r0), ws = w.narrow(0, v0, v1 - v0);
  if (b.has_value()) at::addmm_out(tile, b->narrow(0, v0, v1 - v0), hs, ws.t());
  else at::mm_out(tile, hs, ws.t());
  return tile;
}

// The forward's tile loop: per row, the running max and sum of exp, the target's logit and the sum of the logits.
template <typename T>
static void lce_fwd_tiles(const at::Tensor& h, const at::Tensor& w, const std::optional<at::Tensor>& b, at::Tensor& buf,
                          const int64_t* tg, int64_t ignore_index, double eps, T* m, double* s, double* x_t,
                          double* x_sum) {
  const int64_t N = h.size(0), V = w.size(0);
  for (int64_t r0 = 0; r0 < N; r0 += LCE_ROWS) {
    const int64_t r1 = std::min(N, r0 + LCE_ROWS);
    for (int64_t v0 = 0; v0 < V; v0 += LCE_VOCAB) {
      const int64_t v1 = std::min(V, v0 + LCE_VOCAB), vc = v1 - v0;
      const T* z = logits_tile(h, w, b, buf, r0, r1, v0, v1).const_data_ptr<T>();
#pragma omp parallel for schedule(static) num_threads(num_threads((r1 - r0) * vc))
      for (int64_t i = r0; i < r1; ++i) {
        if (tg[i] == ignore_index) continue;
        const T* zr = z + (i - r0) * vc;
        merge_stats(m[i], s[i], row_stats(zr, vc));
        if (tg[i] >= v0 && tg[i] < v1) x_t[i] = double(zr[tg[i] - v0]);
        if (eps > 0) x_sum[i] += row_dot<T>(zr, nullptr, vc, T(0));
      }
    }
  }
}

// Returns (loss, lse, denom) like cross_entropy_fwd; reduction 0 none, 1 sum, 2 mean.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_cross_entropy_fwd_cpu(
    const at::Tensor& h, const at::Tensor& w, const std::optional<at::Tensor>& b, const at::Tensor& target,
    int64_t ignore_index, double eps, int64_t reduction) {
  check_linear_ce(h, w, b, target);
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (sum) or 2 (mean)");
  const int64_t N = h.size(0), V = w.size(0);
  const int64_t* tg = target.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i)
    TORCH_CHECK_INDEX(tg[i] == ignore_index || (tg[i] >= 0 && tg[i] < V), "target ", tg[i], " is out of bounds for ",
                      V, " classes (valid: 0..", V - 1, " or ignore_index=", ignore_index, ")");
  auto loss = reduction == 0 ? at::empty({N}, h.options()) : at::empty({}, h.options());
  auto lse = at::empty({N}, h.options().dtype(at::kDouble));
  auto denom = at::empty({}, h.options().dtype(at::kDouble));
  auto buf = at::empty({std::min(N, LCE_ROWS) * std::min(V, LCE_VOCAB)}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_cross_entropy_fwd_cpu", [&] {
    using T = scalar_t;
    std::vector<T> m(N, -INFINITY);
    std::vector<double> s(N, 0.0), x_t(N, 0.0), x_sum(N, 0.0);
    lce_fwd_tiles<T>(h, w, b, buf, tg, ignore_index, eps, m.data(), s.data(), x_t.data(), x_sum.data());
    T* L = reduction == 0 ? loss.mutable_data_ptr<T>() : nullptr;
    double* LSE = lse.mutable_data_ptr<double>();
    double total = 0.0, count = 0.0;
    for (int64_t i = 0; i < N; ++i) {
      if (tg[i] == ignore_index) {
        if (L) L[i] = 0;
        LSE[i] = 0;
        continue;
      }
      const double l_se = row_lse(RowStats<T>{m[i], s[i]});
      LSE[i] = l_se;
      // (1 - eps) (lse - x_t) + eps / V * sum_j (lse - x_j)
      const double l = (1.0 - eps) * (l_se - x_t[i]) + (eps > 0 ? eps * (l_se - x_sum[i] / double(V)) : 0.0);
      if (L) L[i] = T(l);
      total += double(T(l));
      count += 1.0;
    }
    *denom.mutable_data_ptr<double>() = count;
    if (reduction == 1) *loss.mutable_data_ptr<T>() = T(total);
    if (reduction == 2) *loss.mutable_data_ptr<T>() = T(total / count);
  });
  return {loss, lse, denom};
}

// Gradients (d hidden, d weight, d bias) from the upstream gradient; the logits are recomputed tile by tile.
//   d loss_i / d z_ij = g_i [ p_ij - (1 - eps) [j == t_i] - eps / V ],  p_ij = exp(z_ij - lse_i)
template <typename T>
static void lce_bwd_tiles(const T* G, int64_t g_stride, double scale, const at::Tensor& h, const at::Tensor& w,
                          const std::optional<at::Tensor>& b, at::Tensor& buf, const int64_t* tg, const double* LSE,
                          int64_t ignore_index, double eps, at::Tensor& gh, at::Tensor& gw, at::Tensor& gb) {
  const int64_t N = h.size(0), V = w.size(0);
  for (int64_t r0 = 0; r0 < N; r0 += LCE_ROWS) {
    const int64_t r1 = std::min(N, r0 + LCE_ROWS);
    auto gh_r = gh.narrow(0, r0, r1 - r0);
    for (int64_t v0 = 0; v0 < V; v0 += LCE_VOCAB) {
      const int64_t v1 = std::min(V, v0 + LCE_VOCAB), vc = v1 - v0;
      auto tile = logits_tile(h, w, b, buf, r0, r1, v0, v1);
      T* z = tile.mutable_data_ptr<T>();
#pragma omp parallel for schedule(static) num_threads(num_threads((r1 - r0) * vc))
      for (int64_t i = r0; i < r1; ++i) {  // the tile becomes d loss / d logits, in place
        T* zr = z + (i - r0) * vc;
        const int64_t t = tg[i];
        if (t == ignore_index) { std::fill(zr, zr + vc, T(0)); continue; }
        const double gi = double(G[i * g_stride]) * scale;
        const T a = T(gi), c = T(gi * eps / double(V));
        const T hi = T(LSE[i]), lo = T(LSE[i] - double(hi));  // lse in two parts: float64 precision in T
#pragma omp simd
        for (int64_t j = 0; j < vc; ++j) zr[j] = a * exp_nonpos<T>((zr[j] - hi) - lo) - c;
        if (t >= v0 && t < v1) zr[t - v0] -= T(gi * (1.0 - eps));
      }
      gh_r.addmm_(tile, w.narrow(0, v0, vc));                          // (rows, d) += (rows, vc) @ (vc, d)
      gw.narrow(0, v0, vc).addmm_(tile.t(), h.narrow(0, r0, r1 - r0));  // (vc, d) += (vc, rows) @ (rows, d)
      if (b.has_value()) gb.narrow(0, v0, vc).add_(tile.sum(0));
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_cross_entropy_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& h, const at::Tensor& w, const std::optional<at::Tensor>& b,
    const at::Tensor& target, const at::Tensor& lse, const at::Tensor& denom, int64_t ignore_index, double eps,
    int64_t reduction) {
  check_linear_ce(h, w, b, target);
  const int64_t N = h.size(0), V = w.size(0);
  TORCH_CHECK(grad.scalar_type() == h.scalar_type() &&
                  (reduction == 0 ? grad.dim() == 1 && grad.size(0) == N : grad.numel() == 1),
              "grad must have one entry per row ('none') or be a scalar ('sum', 'mean'), in hidden's dtype");
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == N && lse.scalar_type() == at::kDouble, "lse must be float64 (N,)");
  auto g = grad.contiguous();
  auto gh = at::zeros_like(h), gw = at::zeros_like(w);
  auto gb = at::zeros({V}, w.options());
  auto buf = at::empty({std::min(N, LCE_ROWS) * std::min(V, LCE_VOCAB)}, h.options());
  const double scale = reduction == 2 ? 1.0 / *denom.const_data_ptr<double>() : 1.0;
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "linear_cross_entropy_bwd_cpu", [&] {
    lce_bwd_tiles<scalar_t>(g.const_data_ptr<scalar_t>(), reduction == 0 ? 1 : 0, scale, h, w, b, buf,
                            target.const_data_ptr<int64_t>(), lse.const_data_ptr<double>(), ignore_index, eps, gh, gw,
                            gb);
  });
  return {gh, gw, gb};
}

}  // namespace

TORCH_LIBRARY(tgb_softmax, m) {
  // The fake (meta) kernels, which give torch.compile and meta tensors the output shapes, are registered in Python
  // (torch.library.register_fake in tinygrad_book/softmax.py): this tells torch which module holds them.
  m.set_python_module("tinygrad_book.softmax");
  m.def("softmax_fwd(Tensor x, bool log) -> Tensor");
  m.def("softmax_bwd(Tensor grad, Tensor y, bool log) -> Tensor");
  m.def("logsumexp_fwd(Tensor x) -> Tensor");
  m.def("cross_entropy_fwd(Tensor x, Tensor target, Tensor? weight, int ignore_index, float label_smoothing,"
        " int reduction) -> (Tensor, Tensor, Tensor)");
  m.def("cross_entropy_bwd(Tensor grad, Tensor x, Tensor target, Tensor lse, Tensor denom, Tensor? weight,"
        " int ignore_index, float label_smoothing, int reduction) -> Tensor");
  m.def("linear_cross_entropy_fwd(Tensor hidden, Tensor weight, Tensor? bias, Tensor target, int ignore_index,"
        " float label_smoothing, int reduction) -> (Tensor, Tensor, Tensor)");
  m.def("linear_cross_entropy_bwd(Tensor grad, Tensor hidden, Tensor weight, Tensor? bias, Tensor target, Tensor lse,"
        " Tensor denom, int ignore_index, float label_smoothing, int reduction) -> (Tensor, Tensor, Tensor)");
  m.def("bce_fwd(Tensor x, Tensor y, Tensor? weight, Tensor? pos_weight, int reduction) -> Tensor");
  m.def("bce_bwd(Tensor grad, Tensor x, Tensor y, Tensor? weight, Tensor? pos_weight) -> Tensor");
}

TORCH_LIBRARY_IMPL(tgb_softmax, CPU, m) {
  m.impl("softmax_fwd", &softmax_fwd_cpu);
  m.impl("softmax_bwd", &softmax_bwd_cpu);
  m.impl("logsumexp_fwd", &logsumexp_fwd_cpu);
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_cpu);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_cpu);
  m.impl("linear_cross_entropy_fwd", &linear_cross_entropy_fwd_cpu);
  m.impl("linear_cross_entropy_bwd", &linear_cross_entropy_bwd_cpu);
  m.impl("bce_fwd", &bce_fwd_cpu);
  m.impl("bce_bwd", &bce_bwd_cpu);
}

// ---- eager autograd in C++: the graph node without Python ----
// In plain eager mode (no torch.func transform, no forward-mode AD, no torch.compile) the Python wrappers call these
// two ops instead of the autograd.Function classes of softmax.py. Same kernels, same saved tensors, and for double
// backward (create_graph) the same differentiable formulas as those classes' backward; what goes is the Python: the
// Function's forward/setup_context/backward frames, about 10 us per fwd+bwd at (64, 10).
// Registered as CompositeImplicitAutograd: the op is its own autograd (the Function below), and calls the device ops
// through the dispatcher, so it runs wherever softmax_fwd & co. have a kernel.
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Sig> static c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

struct SoftmaxEager : public torch::autograd::Function<SoftmaxEager> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, bool log) {
    static const auto fwd = op_handle<at::Tensor(const at::Tensor&, bool)>("tgb_softmax::softmax_fwd");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto y = fwd.call(x, log);
    ctx->saved_data["log"] = log;
    ctx->save_for_backward({y});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, bool)>("tgb_softmax::softmax_bwd");
    const auto y = ctx->get_saved_variables()[0];
    const bool log = ctx->saved_data["log"].toBool();
    const at::Tensor& g = grads[0];
    at::Tensor gx;
    if (at::GradMode::is_enabled())  // differentiating the gradient: the differentiable formula (_SoftmaxFn.backward)
      gx = log ? g - y.exp() * g.sum(-1, true) : y * (g - (g * y).sum(-1, true));
    else
      gx = bwd.call(g.contiguous(), y, log);
    return {gx, at::Tensor()};
  }
};

at::Tensor softmax_eager(const at::Tensor& x, bool log) { return SoftmaxEager::apply(x, log); }

// d loss_i / d x times the per-row upstream gradient, in differentiable ops (softmax.py's _ce_grad_torch):
//   g_i [ (1-eps) w[t] (p_ik - [k==t]) + eps/C (W p_ik - w[k]) ],   p = softmax(x_i), W = sum(w)
static at::Tensor ce_grad_formula(const at::Tensor& g_rows, const at::Tensor& x, const at::Tensor& target,
                                  const at::Tensor& weight, int64_t ignore_index, double eps) {
  const int64_t C = x.size(-1);
  const auto valid = target.ne(ignore_index);
  const auto t = at::where(valid, target, at::zeros_like(target));
  const auto g = at::where(valid, g_rows, at::zeros_like(g_rows));                               // (R,)
  const auto wt = weight.defined() ? weight.index_select(0, t) : at::ones_like(g);               // (R,)
  const auto W = weight.defined() ? weight.sum() : at::scalar_tensor(double(C), x.options());
  const auto p = SoftmaxEager::apply(x, false);                                                  // (R, C)
  const auto onehot = at::arange(C, target.options()).eq(t.unsqueeze(1)).to(x.scalar_type());   // (R, C)
  auto gx = (g * ((1 - eps) * wt + eps / double(C) * W)).unsqueeze(1) * p - (g * (1 - eps) * wt).unsqueeze(1) * onehot;
  if (eps > 0) gx = gx - (g * (eps / double(C))).unsqueeze(1) * (weight.defined() ? weight : at::ones({C}, x.options()));
  return gx;
}

struct CrossEntropyEager : public torch::autograd::Function<CrossEntropyEager> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& target,
                            const std::optional<at::Tensor>& weight, int64_t ignore_index, double label_smoothing,
                            int64_t reduction) {
    using Fwd = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                               const std::optional<at::Tensor>&, int64_t, double, int64_t);
    static const auto fwd = op_handle<Fwd>("tgb_softmax::cross_entropy_fwd");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse, denom] = fwd.call(x, target, weight, ignore_index, label_smoothing, reduction);
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["reduction"] = reduction;
    ctx->save_for_backward({x, target, lse, denom, weight.value_or(at::Tensor())});
    return loss;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Bwd = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const std::optional<at::Tensor>&, int64_t, double, int64_t);
    static const auto bwd = op_handle<Bwd>("tgb_softmax::cross_entropy_bwd");
    const auto s = ctx->get_saved_variables();
    const at::Tensor &x = s[0], &target = s[1], &lse = s[2], &denom = s[3], &weight = s[4];
    const int64_t ii = ctx->saved_data["ignore_index"].toInt(), red = ctx->saved_data["reduction"].toInt();
    const double eps = ctx->saved_data["label_smoothing"].toDouble();
    const at::Tensor& g = grads[0];
    at::Tensor gx;
    if (at::GradMode::is_enabled()) {  // differentiating the gradient: the differentiable formula
      const auto g_rows = red == 0 ? g : (red == 2 ? g / denom.to(g.scalar_type()) : g).expand({x.size(0)});
      gx = ce_grad_formula(g_rows, x, target, weight, ii, eps);
    } else {
      gx = bwd.call(g.contiguous(), x, target, lse, denom,
                    weight.defined() ? std::optional<at::Tensor>(weight) : std::nullopt, ii, eps, red);
    }
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor cross_entropy_eager(const at::Tensor& x, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                               int64_t ignore_index, double label_smoothing, int64_t reduction) {
  return CrossEntropyEager::apply(x, target, weight, ignore_index, label_smoothing, reduction);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tgb_softmax, m) {
  m.def("softmax_eager(Tensor x, bool log) -> Tensor");
  m.def("cross_entropy_eager(Tensor x, Tensor target, Tensor? weight, int ignore_index, float label_smoothing,"
        " int reduction) -> Tensor");
}

TORCH_LIBRARY_IMPL(tgb_softmax, CompositeImplicitAutograd, m) {
  m.impl("softmax_eager", &softmax_eager);
  m.impl("cross_entropy_eager", &cross_entropy_eager);
}
