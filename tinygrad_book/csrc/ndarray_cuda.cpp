// Binds the raw-pointer launchers of ndarray.cu to the tgb_ndarray ops under the CUDA dispatch key.
// Built only where torch.cuda.is_available(); the schemas live in ndarray.cpp, which is loaded first.
// Same arguments as the CPU kernels: flat 1-D buffers plus each operand's shape, strides and offset.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "cuda_check.h"
#include "ndarray_cuda.h"
#include "ndarray_layout.h"

namespace {

using IntList = c10::IntArrayRef;
using namespace tgb_nd;

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

std::vector<int64_t> vec(IntList a) { return std::vector<int64_t>(a.begin(), a.end()); }

int dtype_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return F32;
    case at::kDouble: return F64;
    case at::kLong: return I64;
    default: TORCH_CHECK(false, name, ": unsupported dtype ", t.scalar_type(), " (float32, float64, int64)");
  }
  return -1;
}

void check_view(const at::Tensor& buf, const std::vector<int64_t>& shape, IntList strides, int64_t offset,
                const char* name) {
  TORCH_CHECK(buf.is_cuda() && buf.dim() == 1 && buf.is_contiguous(), name, ": the buffer must be a contiguous 1-D CUDA tensor");
  const std::string err = tgb::view_bounds_error(shape, strides.data(), strides.size(), offset, buf.numel());
  TORCH_CHECK(err.empty(), name, ": ", err);
}

void check_same(const at::Tensor& a, const at::Tensor& out, const char* name) {
  TORCH_CHECK(a.scalar_type() == out.scalar_type(), name, ": operand dtype ", a.scalar_type(), " differs from output's ",
              out.scalar_type());
  TORCH_CHECK(a.device() == out.device(), name, ": operands on different devices: ", a.device(), " and ", out.device());
}

template <int N> Strided to_strided(const tgb::Layout<N>& L) {
  TORCH_CHECK(L.shape.size() <= (size_t)kMaxDims, "ndarray (CUDA): ", L.shape.size(),
              " dimensions that cannot be merged; at most ", kMaxDims, " are supported");
  Strided s{};
  s.nd = (int)L.shape.size();
  s.numel = L.numel();
  for (int d = 0; d < s.nd; ++d) {
    s.shape[d] = L.shape[d];
    for (int k = 0; k < N; ++k) s.stride[k][d] = L.stride[d][k];
  }
  return s;
}

int op_code(const std::string& op, std::initializer_list<const char*> names, const char* what) {
  int i = 0;
  for (const char* n : names) {
    if (op == n) return i;
    ++i;
  }
  TORCH_CHECK(false, what, ": unknown op '", op, "'");
  return -1;
}
int unary_code(const std::string& op) {
  return op_code(op, {"neg", "exp", "log", "tanh", "sigmoid", "sqrt", "abs", "sign"}, "unary");
}
int binary_code(const std::string& op) {
  return op_code(op, {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"}, "binary");
}

// element `offset` of a buffer, as the untyped pointer the launchers take
const void* cptr(const at::Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.const_data_ptr()) + offset * (int64_t)t.element_size();
}
void* mptr(const at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.mutable_data_ptr()) + offset * (int64_t)t.element_size();
}

void copy_cuda(const at::Tensor& src, IntList shape_, IntList ss, int64_t so, const at::Tensor& dst, IntList ds, int64_t doff) {
  auto shape = vec(shape_);
  check_view(src, shape, ss, so, "copy: src");
  check_view(dst, shape, ds, doff, "copy: dst");
  TORCH_CHECK(src.device() == dst.device(), "copy: operands on different devices");
  const c10::cuda::CUDAGuard guard(dst.device());
  auto s = to_strided(tgb::collapse<2>(shape, {ds.data(), ss.data()}));
  tgb::check_launch(launch_copy(dtype_code(dst, "copy"), dtype_code(src, "copy"), cptr(src, so), mptr(dst, doff), s, stream()));
}

void fill_cuda(const at::Tensor& dst, IntList shape_, IntList ds, int64_t doff, const at::Scalar& value) {
  auto shape = vec(shape_);
  check_view(dst, shape, ds, doff, "fill: dst");
  const c10::cuda::CUDAGuard guard(dst.device());
  auto s = to_strided(tgb::collapse<1>(shape, {ds.data()}));
  const int64_t vi = value.isFloatingPoint() ? (int64_t)value.toDouble() : value.toLong();
  tgb::check_launch(launch_fill(dtype_code(dst, "fill"), value.toDouble(), vi, mptr(dst, doff), s, stream()));
}

void unary_cuda(c10::string_view op, const at::Tensor& a, IntList as, int64_t ao, const at::Tensor& out, IntList shape_,
                IntList os, int64_t oo) {
  auto shape = vec(shape_);
  check_view(a, shape, as, ao, "unary: a");
  check_view(out, shape, os, oo, "unary: out");
  check_same(a, out, "unary");
  const int code = unary_code(std::string(op)), dt = dtype_code(out, "unary");
  TORCH_CHECK(dt != I64 || code == NEG || code == ABS || code == SIGN, "unary: op '", std::string(op),
              "' is not defined for int64 (it is computed in float64)");
  const c10::cuda::CUDAGuard guard(out.device());
  auto s = to_strided(tgb::collapse<2>(shape, {os.data(), as.data()}));
  tgb::check_launch(launch_unary(code, dt, cptr(a, ao), mptr(out, oo), s, stream()));
}

void binary_cuda(c10::string_view op, const at::Tensor& a, IntList as, int64_t ao, const at::Tensor& b, IntList bs,
                 int64_t bo, const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  check_view(a, shape, as, ao, "binary: a");
  check_view(b, shape, bs, bo, "binary: b");
  check_view(out, shape, os, oo, "binary: out");
  check_same(a, out, "binary");
  check_same(b, out, "binary");
  const int code = binary_code(std::string(op)), dt = dtype_code(out, "binary");
  TORCH_CHECK(dt != I64 || code != DIV, "binary: integer division is done in float64");
  const c10::cuda::CUDAGuard guard(out.device());
  auto s = to_strided(tgb::collapse<3>(shape, {os.data(), as.data(), bs.data()}));
  tgb::check_launch(launch_binary(code, dt, cptr(a, ao), cptr(b, bo), mptr(out, oo), s, stream()));
}

void scalar_cuda(c10::string_view op, const at::Tensor& a, IntList as, int64_t ao, const at::Scalar& sv, bool reverse,
                 const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  check_view(a, shape, as, ao, "scalar: a");
  check_view(out, shape, os, oo, "scalar: out");
  check_same(a, out, "scalar");
  const int code = binary_code(std::string(op)), dt = dtype_code(out, "scalar");
  TORCH_CHECK(dt != I64 || code != DIV, "scalar: integer division is done in float64");
  const c10::cuda::CUDAGuard guard(out.device());
  auto s = to_strided(tgb::collapse<2>(shape, {os.data(), as.data()}));
  const int64_t vi = sv.isFloatingPoint() ? (int64_t)sv.toDouble() : sv.toLong();
  tgb::check_launch(launch_scalar(code, dt, cptr(a, ao), sv.toDouble(), vi, reverse, mptr(out, oo), s, stream()));
}

void where_cuda(const at::Tensor& c, IntList cs, int64_t co, const at::Tensor& a, IntList as, int64_t ao,
                const at::Tensor& b, IntList bs, int64_t bo, const at::Tensor& out, IntList shape_, IntList os, int64_t oo) {
  auto shape = vec(shape_);
  check_view(c, shape, cs, co, "where: cond");
  check_view(a, shape, as, ao, "where: a");
  check_view(b, shape, bs, bo, "where: b");
  check_view(out, shape, os, oo, "where: out");
  for (auto* t : {&c, &a, &b}) check_same(*t, out, "where");
  const c10::cuda::CUDAGuard guard(out.device());
  auto s = to_strided(tgb::collapse<4>(shape, {os.data(), cs.data(), as.data(), bs.data()}));
  tgb::check_launch(launch_where(dtype_code(out, "where"), cptr(c, co), cptr(a, ao), cptr(b, bo), mptr(out, oo), s, stream()));
}

void reduce_cuda(c10::string_view op_, const at::Tensor& a, IntList shape_, IntList as, int64_t ao, int64_t n_reduce,
                 const at::Tensor& out) {
  auto shape = vec(shape_);
  const std::string op(op_);
  check_view(a, shape, as, ao, "reduce: a");
  TORCH_CHECK(n_reduce >= 0 && n_reduce <= (int64_t)shape.size(), "reduce: n_reduce=", n_reduce, " for ", shape.size(), " dims");
  int64_t n_out = 1, n_red = 1;
  for (size_t d = 0; d < shape.size(); ++d) ((int64_t)d < (int64_t)shape.size() - n_reduce ? n_out : n_red) *= shape[d];
  TORCH_CHECK(out.is_cuda() && out.is_contiguous() && out.dim() == 1 && out.numel() == n_out,
              "reduce: out must be a CUDA buffer of ", n_out, " elements");
  const int code = op_code(op, {"sum", "max", "min", "argmax", "argmin"}, "reduce");
  if (code == ARGMAX || code == ARGMIN) {
    TORCH_CHECK(n_reduce == 1 && n_red > 0 && out.scalar_type() == at::kLong, "reduce: argmax/argmin reduce one non-empty axis into int64");
  } else {
    check_same(a, out, "reduce");
  }
  if (n_out == 0) return;
  auto RL = tgb::split_reduce(shape, as.data(), n_reduce);
  TORCH_CHECK(RL.kshape.size() <= (size_t)kMaxDims && RL.rshape.size() <= (size_t)kMaxDims,
              "reduce (CUDA): at most ", kMaxDims, " unmergeable kept and reduced dimensions");
  ReduceArgs r{};
  r.knd = (int)RL.kshape.size();
  r.rnd = (int)RL.rshape.size();
  r.n_out = n_out;
  r.n_red = n_red;
  for (int d = 0; d < r.knd; ++d) { r.kshape[d] = RL.kshape[d]; r.kstride[d] = RL.kstride[d]; }
  for (int d = 0; d < r.rnd; ++d) { r.rshape[d] = RL.rshape[d]; r.rstride[d] = RL.rstride[d]; }
  if (n_red == 0) r.n_red = 0;  // sums of nothing: the kernel writes the identity (0)
  const c10::cuda::CUDAGuard guard(a.device());
  tgb::check_launch(launch_reduce(code, dtype_code(a, "reduce"), cptr(a, ao), out.mutable_data_ptr(), r, stream()));
}

void matmul_cuda(const at::Tensor& a, IntList ashape, IntList as, int64_t ao, const at::Tensor& b, IntList bshape,
                 IntList bs, int64_t bo, const at::Tensor& out, int64_t algo) {
  (void)algo;  // one algorithm on the GPU (tiled, register-blocked)
  const int64_t nd = (int64_t)ashape.size();
  TORCH_CHECK(nd >= 2 && (int64_t)bshape.size() == nd, "matmul: operands must have the same rank >= 2");
  TORCH_CHECK(nd - 2 <= kMaxDims, "matmul (CUDA): at most ", kMaxDims, " batch dimensions");
  for (int64_t d = 0; d < nd - 2; ++d) TORCH_CHECK(ashape[d] == bshape[d], "matmul: batch dims must be broadcast already");
  check_view(a, vec(ashape), as, ao, "matmul: a");
  check_view(b, vec(bshape), bs, bo, "matmul: b");
  check_same(a, out, "matmul");
  check_same(b, out, "matmul");
  MatmulArgs m{};
  m.bnd = (int)(nd - 2);
  m.M = ashape[nd - 2];
  m.K = ashape[nd - 1];
  m.N = bshape[nd - 1];
  TORCH_CHECK(bshape[nd - 2] == m.K, "matmul: inner sizes differ: ", m.K, " and ", bshape[nd - 2]);
  m.batch = 1;
  for (int d = 0; d < m.bnd; ++d) {
    m.bshape[d] = ashape[d];
    m.a_bstride[d] = as[d];
    m.b_bstride[d] = bs[d];
    m.batch *= ashape[d];
  }
  m.a_rs = as[nd - 2]; m.a_cs = as[nd - 1];
  m.b_rs = bs[nd - 2]; m.b_cs = bs[nd - 1];
  TORCH_CHECK(out.is_contiguous() && out.numel() == m.batch * m.M * m.N, "matmul: out must be a compact buffer of ",
              m.batch * m.M * m.N);
  if (m.batch * m.M * m.N == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  if (m.K == 0) {  // an empty sum: zeros
    out.zero_();
    return;
  }
  tgb::check_launch(launch_matmul(dtype_code(out, "matmul"), cptr(a, ao), cptr(b, bo), out.mutable_data_ptr(), m, stream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(tgb_ndarray, CUDA, m) {
  m.impl("copy", &copy_cuda);
  m.impl("fill", &fill_cuda);
  m.impl("unary", &unary_cuda);
  m.impl("binary", &binary_cuda);
  m.impl("scalar", &scalar_cuda);
  m.impl("where", &where_cuda);
  m.impl("reduce", &reduce_cuda);
  m.impl("matmul", &matmul_cuda);
}
