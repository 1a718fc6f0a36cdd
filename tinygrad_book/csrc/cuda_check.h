// Turns the cudaError_t that the .cu launchers return into a Python exception (for the *_cuda.cpp bindings).
#pragma once
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

namespace tgb {

inline void check_launch(cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace tgb
