// Binds the raw-pointer CUDA launchers of silu.cu to the tgb_silu ops, under the CUDA dispatch key.
// Built only where torch.cuda.is_available(); the schema itself lives in silu.cpp, loaded first.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "cuda_check.h"

cudaError_t tgb_silu_fwd_f32(const float* x, float* y, int64_t n, cudaStream_t stream);
cudaError_t tgb_silu_fwd_f64(const double* x, double* y, int64_t n, cudaStream_t stream);
cudaError_t tgb_silu_bwd_f32(const float* g, const float* x, float* gx, int64_t n, cudaStream_t stream);
cudaError_t tgb_silu_bwd_f64(const double* g, const double* x, double* gx, int64_t n, cudaStream_t stream);

namespace {


at::Tensor silu_fwd_cuda(const at::Tensor& x_) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat || x_.scalar_type() == at::kDouble,
              "silu (CUDA kernel): expected float32 or float64, got ", x_.scalar_type());
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto y = at::empty_like(x);
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_silu_fwd_f32(x.const_data_ptr<float>(), y.mutable_data_ptr<float>(), x.numel(), stream));
  else
    tgb::check_launch(tgb_silu_fwd_f64(x.const_data_ptr<double>(), y.mutable_data_ptr<double>(), x.numel(), stream));
  return y;
}

at::Tensor silu_bwd_cuda(const at::Tensor& grad_, const at::Tensor& x_) {
  TORCH_CHECK(grad_.sizes() == x_.sizes(), "silu_bwd: grad and x must have the same shape");
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto g = grad_.contiguous().to(x.scalar_type());
  auto gx = at::empty_like(x);
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (x.scalar_type() == at::kFloat)
    tgb::check_launch(tgb_silu_bwd_f32(g.const_data_ptr<float>(), x.const_data_ptr<float>(), gx.mutable_data_ptr<float>(),
                           x.numel(), stream));
  else
    tgb::check_launch(tgb_silu_bwd_f64(g.const_data_ptr<double>(), x.const_data_ptr<double>(), gx.mutable_data_ptr<double>(),
                           x.numel(), stream));
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(tgb_silu, CUDA, m) {
  m.impl("silu_fwd", &silu_fwd_cuda);
  m.impl("silu_bwd", &silu_bwd_cuda);
}
