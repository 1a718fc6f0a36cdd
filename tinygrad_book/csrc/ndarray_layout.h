// Strided layouts of NDArray views, shared by the C++ (ndarray.cpp) and CUDA (ndarray_cuda.cpp) bindings.
// Plain C++ (no torch headers) so that host code on either side can use it.
//
// An elementwise op over N operands (operand 0 is the output) sees each operand as (offset, strides) over one
// common shape. Before looping, `collapse` simplifies the problem without changing which elements meet:
//   1. dimensions of size 1 are dropped (their strides never matter);
//   2. dimensions are ordered by the output's stride, largest first, so the innermost loop walks the output's
//      memory in order (a dense transposed output is swept front to back);
//   3. neighbouring dimensions that are contiguous with each other in *every* operand are merged
//      (outer stride == inner stride * inner size), so a compact array of any rank becomes one long loop.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace tgb {

template <int N> struct Layout {
  std::vector<int64_t> shape;                  // collapsed shape, outermost first (empty: one element)
  std::vector<std::array<int64_t, N>> stride;  // stride[d][k]: stride of operand k along dimension d
  bool empty = false;                          // some dimension has size 0: nothing to do
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return empty ? 0 : n;
  }
};

template <int N>
Layout<N> collapse(const std::vector<int64_t>& shape, const std::array<const int64_t*, N>& strides) {
  Layout<N> L;
  std::vector<int> dims;
  for (int d = 0; d < (int)shape.size(); ++d) {
    if (shape[d] == 0) { L.empty = true; return L; }
    if (shape[d] != 1) dims.push_back(d);
  }
  std::stable_sort(dims.begin(), dims.end(),
                   [&](int a, int b) { return std::llabs(strides[0][a]) > std::llabs(strides[0][b]); });
  for (int d : dims) {
    std::array<int64_t, N> s;
    for (int k = 0; k < N; ++k) s[k] = strides[k][d];
    if (!L.shape.empty()) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k) mergeable &= L.stride.back()[k] == s[k] * shape[d];
      if (mergeable) {
        L.shape.back() *= shape[d];
        L.stride.back() = s;
        continue;
      }
    }
    L.shape.push_back(shape[d]);
    L.stride.push_back(s);
  }
  return L;
}

// Empty if the view (shape, strides, offset) stays inside a buffer of `numel` elements, else what is wrong:
// the kernels trust their arguments, so the bindings check every operand first.
inline std::string view_bounds_error(const std::vector<int64_t>& shape, const int64_t* strides, size_t n_strides,
                                     int64_t offset, int64_t numel) {
  if (n_strides != shape.size())
    return std::to_string(n_strides) + " strides for " + std::to_string(shape.size()) + " dimensions";
  int64_t lo = offset, hi = offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return "";  // no element: nothing is read
    if (shape[d] < 0) return "negative size " + std::to_string(shape[d]);
    const int64_t span = (shape[d] - 1) * strides[d];
    (span < 0 ? lo : hi) += span;
  }
  if (lo < 0 || hi >= numel)
    return "the view reaches elements [" + std::to_string(lo) + ", " + std::to_string(hi) + "] of a buffer of " +
           std::to_string(numel);
  return "";
}

// A reduction over the last n_reduce dims of (shape, strides), split into the kept part (collapsed with the
// compact output's strides, so the output's order is kept) and the reduced part (collapsed in any order: the
// innermost is then the one with the smallest stride).
struct ReduceLayout {
  std::vector<int64_t> kshape, kstride, rshape, rstride;
};

inline ReduceLayout split_reduce(const std::vector<int64_t>& shape, const int64_t* strides, int64_t n_reduce) {
  ReduceLayout R;
  const int64_t nk = (int64_t)shape.size() - n_reduce;
  std::vector<int64_t> ks(shape.begin(), shape.begin() + nk), kin(strides, strides + nk), kout(nk);
  for (int64_t d = nk - 1, acc = 1; d >= 0; --d) { kout[d] = acc; acc *= ks[d]; }
  auto K = collapse<2>(ks, {kout.data(), kin.data()});
  for (size_t d = 0; d < K.shape.size(); ++d) { R.kshape.push_back(K.shape[d]); R.kstride.push_back(K.stride[d][1]); }
  std::vector<int64_t> rs(shape.begin() + nk, shape.end()), rin(strides + nk, strides + shape.size());
  auto Rl = collapse<1>(rs, {rin.data()});
  for (size_t d = 0; d < Rl.shape.size(); ++d) { R.rshape.push_back(Rl.shape[d]); R.rstride.push_back(Rl.stride[d][0]); }
  return R;
}

}  // namespace tgb
