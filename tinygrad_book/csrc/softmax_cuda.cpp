// Binds the raw-pointer launchers of softmax.cu to the tgb_softmax ops under the CUDA dispatch key.
// Built only where torch.cuda.is_available(); the schemas live in softmax.cpp, which is loaded first.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "cuda_check.h"
#include <optional>

#define TGB_DECLARE(T, SUFFIX)                                                                                     \
  cudaError_t tgb_softmax_fwd_##SUFFIX(const T*, T*, int64_t, int64_t, bool, cudaStream_t);                     \
  cudaError_t tgb_softmax_bwd_##SUFFIX(const T*, const T*, T*, int64_t, int64_t, bool, cudaStream_t);           \
  cudaError_t tgb_logsumexp_##SUFFIX(const T*, T*, int64_t, int64_t, cudaStream_t);                             \
  cudaError_t tgb_cross_entropy_fwd_##SUFFIX(const T*, const int64_t*, const T*, double, T*, double*, int64_t,  \
                                             int64_t, int64_t, double, cudaStream_t);                           \
  cudaError_t tgb_cross_entropy_bwd_##SUFFIX(const T*, const T*, const int64_t*, const double*, const T*, double, \
                                             T*, int64_t, int64_t, int64_t, double, cudaStream_t);
TGB_DECLARE(float, f32)
TGB_DECLARE(double, f64)

namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_matrix(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), name, " must be a contiguous 2-D (rows, cols) tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", x.scalar_type());
}

at::Tensor softmax_fwd_cuda(const at::Tensor& x, bool log) {
  check_matrix(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_softmax_fwd_f32(x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), x.size(0), x.size(1), log, stream()));
  else
    tgb::check_launch(tgb_softmax_fwd_f64(x.const_data_ptr<double>(), y.mutable_data_ptr<double>(), x.size(0), x.size(1), log, stream()));
  return y;
}

at::Tensor softmax_bwd_cuda(const at::Tensor& g, const at::Tensor& y, bool log) {
  check_matrix(g, "grad");
  check_matrix(y, "y");
  TORCH_CHECK(g.sizes() == y.sizes() && g.scalar_type() == y.scalar_type(), "grad and y must match in shape and dtype");
  const c10::cuda::CUDAGuard guard(y.device());
  auto gx = at::empty_like(y);
  if (y.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_softmax_bwd_f32(g.const_data_ptr<float>(), y.const_data_ptr<float>(), gx.mutable_data_ptr<float>(),
                              y.size(0), y.size(1), log, stream()));
  else
    tgb::check_launch(tgb_softmax_bwd_f64(g.const_data_ptr<double>(), y.const_data_ptr<double>(), gx.mutable_data_ptr<double>(),
                              y.size(0), y.size(1), log, stream()));
  return gx;
}

at::Tensor logsumexp_fwd_cuda(const at::Tensor& x) {
  check_matrix(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({x.size(0)}, x.options());
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_logsumexp_f32(x.const_data_ptr<float>(), out.mutable_data_ptr<float>(), x.size(0), x.size(1), stream()));
  else
    tgb::check_launch(tgb_logsumexp_f64(x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), x.size(0), x.size(1), stream()));
  return out;
}

// Shapes and dtypes only: reading the targets' values here would cost a GPU->CPU synchronisation per call. The
// Python wrapper checks the index range (with a clear error); the kernels themselves never read out of bounds
// and turn a bad index into NaN. sum(weight) is needed only with label smoothing.
double check_targets(const at::Tensor& x, const at::Tensor& target, const std::optional<at::Tensor>& weight,
                     double eps) {
  check_matrix(x, "logits");
  TORCH_CHECK(target.scalar_type() == at::kLong, "target must be int64 class indices, got ", target.scalar_type());
  TORCH_CHECK(target.is_cuda() && target.dim() == 1 && target.size(0) == x.size(0) && target.is_contiguous(),
              "target must be a contiguous 1-D CUDA tensor with one class index per row of logits");
  const int64_t C = x.size(1);
  if (!weight.has_value()) return double(C);
  const auto& w = *weight;
  TORCH_CHECK(w.is_cuda() && w.dim() == 1 && w.size(0) == C && w.is_contiguous() && w.scalar_type() == x.scalar_type(),
              "weight must be a contiguous 1-D CUDA tensor of length ", C, " and the logits' dtype");
  return eps > 0 ? w.sum().item<double>() : 0.0;
}

// The mean's divisor: sum of w[t] (or the count) over rows not ignored, as a float64 scalar on the device (no sync).
at::Tensor mean_denominator(const at::Tensor& target, const std::optional<at::Tensor>& weight, int64_t ignore_index) {
  const auto valid = target.ne(ignore_index);
  if (!weight.has_value()) return valid.sum().to(at::kDouble);
  return (weight->index_select(0, at::where(valid, target, 0)).to(at::kDouble) * valid).sum();
}

// reduction: 0 'none', 1 'sum', 2 'mean'; returns (loss, lse, denom) like the CPU op. The kernels write per-row losses;
// the reductions are device-side torch ops (no GPU->CPU synchronisation).
std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_entropy_fwd_cuda(const at::Tensor& x, const at::Tensor& target,
                                                                      const std::optional<at::Tensor>& weight,
                                                                      int64_t ignore_index, double eps,
                                                                      int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "reduction must be 0 (none), 1 (sum) or 2 (mean)");
  const c10::cuda::CUDAGuard guard(x.device());
  const double W = check_targets(x, target, weight, eps);
  auto loss = at::empty({x.size(0)}, x.options());
  auto lse = at::empty({x.size(0)}, x.options().dtype(at::kDouble));
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_cross_entropy_fwd_f32(x.const_data_ptr<float>(), target.const_data_ptr<int64_t>(),
                                    weight ? weight->const_data_ptr<float>() : nullptr, W, loss.mutable_data_ptr<float>(),
                                    lse.mutable_data_ptr<double>(), x.size(0), x.size(1), ignore_index, eps, stream()));
  else
    tgb::check_launch(tgb_cross_entropy_fwd_f64(x.const_data_ptr<double>(), target.const_data_ptr<int64_t>(),
                                    weight ? weight->const_data_ptr<double>() : nullptr, W,
                                    loss.mutable_data_ptr<double>(), lse.mutable_data_ptr<double>(), x.size(0),
                                    x.size(1), ignore_index, eps, stream()));
  auto denom = mean_denominator(target, weight, ignore_index);
  if (reduction == 1) loss = loss.sum();
  if (reduction == 2) loss = (loss.sum(at::kDouble) / denom).to(x.scalar_type());
  return {loss, lse, denom};
}

at::Tensor cross_entropy_bwd_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& target,
                                  const at::Tensor& lse, const at::Tensor& denom,
                                  const std::optional<at::Tensor>& weight, int64_t ignore_index, double eps,
                                  int64_t reduction) {
  const c10::cuda::CUDAGuard guard(x.device());
  const double W = check_targets(x, target, weight, eps);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() &&
                  (reduction == 0 ? grad.dim() == 1 && grad.size(0) == x.size(0) : grad.numel() == 1),
              "grad must have one entry per row ('none') or be a scalar ('sum', 'mean'), in the logits' dtype");
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == x.size(0) && lse.scalar_type() == at::kDouble, "lse must be float64 (rows,)");
  // one upstream gradient per row, on the device: the scalar of 'sum'/'mean' broadcast (and divided for 'mean')
  auto g = reduction == 0 ? grad.contiguous()
                          : (reduction == 2 ? (grad.to(at::kDouble) / denom).to(x.scalar_type()) : grad)
                                .reshape({1}).expand({x.size(0)}).contiguous();
  auto gx = at::empty_like(x);
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_cross_entropy_bwd_f32(g.const_data_ptr<float>(), x.const_data_ptr<float>(), target.const_data_ptr<int64_t>(),
                                    lse.const_data_ptr<double>(), weight ? weight->const_data_ptr<float>() : nullptr, W,
                                    gx.mutable_data_ptr<float>(), x.size(0), x.size(1), ignore_index, eps, stream()));
  else
    tgb::check_launch(tgb_cross_entropy_bwd_f64(g.const_data_ptr<double>(), x.const_data_ptr<double>(),
                                    target.const_data_ptr<int64_t>(), lse.const_data_ptr<double>(),
                                    weight ? weight->const_data_ptr<double>() : nullptr, W,
                                    gx.mutable_data_ptr<double>(), x.size(0), x.size(1), ignore_index, eps, stream()));
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(tgb_softmax, CUDA, m) {
  m.impl("softmax_fwd", &softmax_fwd_cuda);
  m.impl("softmax_bwd", &softmax_bwd_cuda);
  m.impl("logsumexp_fwd", &logsumexp_fwd_cuda);
  m.impl("cross_entropy_fwd", &cross_entropy_fwd_cuda);
  m.impl("cross_entropy_bwd", &cross_entropy_bwd_cuda);
}
