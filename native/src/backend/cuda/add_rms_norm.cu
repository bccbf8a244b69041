// Residual add fused with RMSNorm: one CTA per row; the sum of squares in f32
// (a block reduction), the row kept in the f32 residual stream.
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pdl.cuh"

namespace tg {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void AddRmsNormKernel(float* residual, const T* delta, const float* weight, const int32_t* row_index,
                                 int64_t hidden, float eps, bool write_residual, T* out) {
  PdlStartShortKernel();
  const int64_t i = blockIdx.x;
  const int64_t r = row_index ? row_index[i] : i;
  float* x = residual + r * hidden;
  const T* d = delta ? delta + r * hidden : nullptr;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < hidden; c += kThreads) {
    float v = x[c] + (d ? ToFloat(d[c]) : 0.0f);
    if (write_residual) x[c] = v;
    sum += v * v;
  }
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float inv = rsqrtf(total / static_cast<float>(hidden) + eps);
  T* o = out + i * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += kThreads) {
    // Each thread re-reads the columns it wrote itself, so no barrier is needed.
    float v = write_residual ? x[c] : x[c] + (d ? ToFloat(d[c]) : 0.0f);
    o[c] = FromFloat<T>(weight[c] * (v * inv));
  }
}

template <typename T>
void Launch(cudaStream_t stream, float* residual, const void* delta, const float* weight, const int32_t* row_index,
            int64_t rows, int64_t hidden, float eps, bool write_residual, void* out) {
  LaunchWithPdl(PdlKernel::kNorm, AddRmsNormKernel<T>, dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, residual,
                static_cast<const T*>(delta), weight, row_index, hidden, eps, write_residual, static_cast<T*>(out));
}

}  // namespace

void LaunchAddRmsNorm(cudaStream_t stream, ElemType type, float* residual, const void* delta, const float* weight,
                      const int32_t* row_index, int64_t rows, int64_t hidden, float eps, bool write_residual,
                      void* out) {
  if (rows <= 0) return;
  TG_DISPATCH_HALF(type, Launch, stream, residual, delta, weight, row_index, rows, hidden, eps, write_residual, out);
  TG_CUDA_CHECK_LAUNCH("add_rms_norm");
}

}  // namespace cuda
}  // namespace tg
