// The interface between ndarray_cuda.cpp (torch binding, host) and ndarray.cu (plain CUDA kernels): argument
// structs passed to the kernels by value, op codes, and the raw-pointer launchers. No torch headers.
//
// Pointers are already advanced by each view's offset; strides are in elements and may be negative or 0.
#pragma once
#include <cstdint>
#include <cuda_runtime_api.h>

namespace tgb_nd {

constexpr int kMaxDims = 8;      // dimensions after collapsing (ndarray_layout.h); the binding checks
constexpr int kMaxOperands = 4;  // out + up to 3 inputs (where)

enum DType : int { F32 = 0, F64 = 1, I64 = 2 };
enum UnaryOp : int { NEG, EXP, LOG, TANH, SIGMOID, SQRT, ABS, SIGN, N_UNARY };
enum BinaryOp : int { ADD, SUB, MUL, DIV, POW, MAXIMUM, MINIMUM, EQ, NE, LT, LE, GT, GE, N_BINARY };
enum ReduceOp : int { SUM, MAX, MIN, ARGMAX, ARGMIN, N_REDUCE };

// An elementwise problem over a collapsed shape; operand 0 is the output.
struct Strided {
  int nd;
  int64_t numel;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxOperands][kMaxDims];
};

// A reduction: each output element (kept multi-index) reduces n_red elements (reduced multi-index).
struct ReduceArgs {
  int knd, rnd;
  int64_t n_out, n_red;
  int64_t kshape[kMaxDims], kstride[kMaxDims], rshape[kMaxDims], rstride[kMaxDims];
};

// Batched C (batch, M, N) = A (batch, M, K) @ B (batch, K, N); batch dims broadcast (stride 0 allowed), C compact.
struct MatmulArgs {
  int bnd;
  int64_t batch, M, N, K;
  int64_t bshape[kMaxDims], a_bstride[kMaxDims], b_bstride[kMaxDims];
  int64_t a_rs, a_cs, b_rs, b_cs;
};

cudaError_t launch_unary(int op, int dtype, const void* a, void* out, const Strided& s, cudaStream_t stream);
cudaError_t launch_binary(int op, int dtype, const void* a, const void* b, void* out, const Strided& s, cudaStream_t stream);
// the scalar is passed both ways: as a double (float dtypes) and exactly as an int64 (int64 dtype)
cudaError_t launch_scalar(int op, int dtype, const void* a, double s_f, int64_t s_i, bool reverse, void* out,
                          const Strided& s, cudaStream_t stream);
cudaError_t launch_where(int dtype, const void* c, const void* a, const void* b, void* out, const Strided& s,
                         cudaStream_t stream);
cudaError_t launch_copy(int dst_dtype, int src_dtype, const void* src, void* dst, const Strided& s, cudaStream_t stream);
cudaError_t launch_fill(int dtype, double v_f, int64_t v_i, void* dst, const Strided& s, cudaStream_t stream);
cudaError_t launch_reduce(int op, int dtype, const void* a, void* out, const ReduceArgs& r, cudaStream_t stream);
cudaError_t launch_matmul(int dtype, const void* a, const void* b, void* out, const MatmulArgs& m, cudaStream_t stream);

}  // namespace tgb_nd
