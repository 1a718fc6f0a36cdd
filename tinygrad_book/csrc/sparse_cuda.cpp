// Binds the raw-pointer launchers of sparse.cu to the tgb_sparse ops under the CUDA dispatch key.
// Built only where torch.cuda.is_available(); the schemas live in sparse.cpp, which is loaded first.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "cuda_check.h"
#include <cstdint>
#include <optional>

#define TGB_DECLARE(T, SUFFIX)                                                                                      \
  cudaError_t tgb_csr_linear_##SUFFIX(const T*, const int32_t*, const int32_t*, const T*, const T*, T*, int64_t,    \
                                      int64_t, int64_t, cudaStream_t);                                              \
  cudaError_t tgb_nm24_linear_##SUFFIX(const T*, const T*, const uint8_t*, const T*, T*, int64_t, int64_t, int64_t, \
                                       cudaStream_t);
TGB_DECLARE(float, f32)
TGB_DECLARE(double, f64)

namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_common(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias, int64_t O,
                  const char* op) {
  TORCH_CHECK(x.is_cuda() && w.is_cuda(), op, ": x and the weight must be CUDA tensors");
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D (batch, in_features), got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == w.scalar_type() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              op, ": x and the weight values must both be float32 or both float64, got ", x.scalar_type(), " and ",
              w.scalar_type());
  if (bias)
    TORCH_CHECK(bias->is_cuda() && bias->dim() == 1 && bias->size(0) == O && bias->scalar_type() == x.scalar_type(),
                op, ": bias must be a CUDA tensor of shape (", O, ") and x's dtype");
}

at::Tensor csr_linear_cuda(const at::Tensor& x_, const at::Tensor& row_ptr_, const at::Tensor& col_,
                           const at::Tensor& val_, const std::optional<at::Tensor>& bias_) {
  TORCH_CHECK(row_ptr_.dim() == 1 && row_ptr_.size(0) >= 1 && row_ptr_.scalar_type() == at::kInt && row_ptr_.is_cuda(),
              "csr_linear: row_ptr must be a 1-D int32 CUDA tensor of length out_features + 1");
  TORCH_CHECK(col_.dim() == 1 && col_.scalar_type() == at::kInt && col_.is_cuda() && val_.dim() == 1 &&
                  val_.size(0) == col_.size(0),
              "csr_linear: col (int32) and val must be 1-D CUDA tensors of the same length");
  const int64_t O = row_ptr_.size(0) - 1;
  check_common(x_, val_, bias_, O, "csr_linear");
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), rp = row_ptr_.contiguous(), col = col_.contiguous(), val = val_.contiguous();
  auto bias = bias_ ? std::optional<at::Tensor>(bias_->contiguous()) : std::nullopt;
  const int64_t B = x.size(0), K = x.size(1);
  auto y = at::empty({B, O}, x.options());
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_csr_linear_f32(x.const_data_ptr<float>(), rp.const_data_ptr<int32_t>(), col.const_data_ptr<int32_t>(),
                                         val.const_data_ptr<float>(), bias ? bias->const_data_ptr<float>() : nullptr,
                                         y.mutable_data_ptr<float>(), B, K, O, stream()));
  else
    tgb::check_launch(tgb_csr_linear_f64(x.const_data_ptr<double>(), rp.const_data_ptr<int32_t>(), col.const_data_ptr<int32_t>(),
                                         val.const_data_ptr<double>(), bias ? bias->const_data_ptr<double>() : nullptr,
                                         y.mutable_data_ptr<double>(), B, K, O, stream()));
  return y;
}

at::Tensor nm24_linear_cuda(const at::Tensor& x_, const at::Tensor& values_, const at::Tensor& meta_,
                            const std::optional<at::Tensor>& bias_) {
  TORCH_CHECK(values_.dim() == 2, "nm24_linear: values must be 2-D (out_features, in_features / 2)");
  const int64_t O = values_.size(0);
  check_common(x_, values_, bias_, O, "nm24_linear");
  const int64_t B = x_.size(0), K = x_.size(1);
  TORCH_CHECK(K % 4 == 0 && values_.size(1) * 2 == K, "nm24_linear: in_features must be a multiple of 4 and twice ",
              "values.size(1), got ", K, " and ", values_.sizes());
  TORCH_CHECK(meta_.is_cuda() && meta_.scalar_type() == at::kByte && meta_.dim() == 2 && meta_.size(0) == O &&
                  meta_.size(1) == (K / 4 + 1) / 2,
              "nm24_linear: meta must be a uint8 CUDA tensor of shape (", O, ", ", (K / 4 + 1) / 2, ")");
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), values = values_.contiguous(), meta = meta_.contiguous();
  auto bias = bias_ ? std::optional<at::Tensor>(bias_->contiguous()) : std::nullopt;
  auto y = at::empty({B, O}, x.options());
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_nm24_linear_f32(x.const_data_ptr<float>(), values.const_data_ptr<float>(), meta.const_data_ptr<uint8_t>(),
                                          bias ? bias->const_data_ptr<float>() : nullptr, y.mutable_data_ptr<float>(),
                                          B, K, O, stream()));
  else
    tgb::check_launch(tgb_nm24_linear_f64(x.const_data_ptr<double>(), values.const_data_ptr<double>(), meta.const_data_ptr<uint8_t>(),
                                          bias ? bias->const_data_ptr<double>() : nullptr, y.mutable_data_ptr<double>(),
                                          B, K, O, stream()));
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(tgb_sparse, CUDA, m) {
  m.impl("csr_linear", &csr_linear_cuda);
  m.impl("nm24_linear", &nm24_linear_cuda);
}
