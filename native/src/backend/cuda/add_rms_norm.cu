// Residual add fused with RMSNorm: one CTA per row; the sum of squares in f32
// (a block reduction), the row kept in the f32 residual stream.
//
// At decode the kernel runs on one or a few rows, so its time is latency, not bytes: each
// thread issues all its loads at once (float4 of the residual, four elements of the delta)
// and keeps the row in registers between the reduction and the output, so a row costs one
// round trip to memory instead of one per loop iteration. Rows whose width is not a
// multiple of 4 or wider than the register path holds take the plain loop.
#include <cstdint>
#include <stdexcept>

#include "backend/cuda/cta_sum.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pdl.cuh"

namespace tg {
namespace cuda {
namespace {

constexpr int kLoopThreads = 256;
constexpr int kMaxThreads = 1024;
constexpr int kMaxVecs = 8;  // float4s per thread on the register path: hidden <= 32768

// Four consecutive elements of type T as one 8-byte access.
template <typename T>
struct alignas(8) Four {
  T v[4];
};

// hidden % 4 == 0 and hidden <= 4 · kVecs · blockDim.x.
template <typename T, int kVecs>
__global__ void __launch_bounds__(kMaxThreads)
    AddRmsNormVecKernel(float* __restrict__ residual, const T* __restrict__ delta, const float* __restrict__ weight,
                        const int32_t* __restrict__ row_index, int hidden, float eps, bool write_residual,
                        T* __restrict__ out) {
  PdlStartShortKernel();
  const int64_t i = blockIdx.x;
  const int64_t r = row_index ? row_index[i] : i;
  const int quads = hidden >> 2;
  float4* x = reinterpret_cast<float4*>(residual + r * hidden);
  const Four<T>* d = delta ? reinterpret_cast<const Four<T>*>(delta + r * hidden) : nullptr;
  const float4* w = reinterpret_cast<const float4*>(weight);
  // The weight is loaded with the row, not after the reduction: a decode step has long
  // evicted it from L2, and its round trip would otherwise come after the barrier. Past four
  // float4s a thread (hidden > 16,384) that many registers spill, so it comes after.
  constexpr bool kWeightEarly = kVecs <= 4;
  float4 v[kVecs], wv[kVecs];
  float sum = 0.0f;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    const int q = threadIdx.x + u * blockDim.x;
    if (q >= quads) continue;
    v[u] = x[q];
    if (kWeightEarly) wv[u] = w[q];
    if (d) {
      const Four<T> dv = d[q];
      v[u].x += ToFloat(dv.v[0]);
      v[u].y += ToFloat(dv.v[1]);
      v[u].z += ToFloat(dv.v[2]);
      v[u].w += ToFloat(dv.v[3]);
    }
    sum += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
  }
  if (write_residual) {
#pragma unroll
    for (int u = 0; u < kVecs; ++u) {
      const int q = threadIdx.x + u * blockDim.x;
      if (q < quads) x[q] = v[u];
    }
  }
  const float inv = rsqrtf(CtaSum<kMaxThreads>(sum) / static_cast<float>(hidden) + eps);
  Four<T>* o = reinterpret_cast<Four<T>*>(out + i * hidden);
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    const int q = threadIdx.x + u * blockDim.x;
    if (q >= quads) continue;
    if (!kWeightEarly) wv[u] = w[q];
    Four<T> ov;
    ov.v[0] = FromFloat<T>(wv[u].x * (v[u].x * inv));
    ov.v[1] = FromFloat<T>(wv[u].y * (v[u].y * inv));
    ov.v[2] = FromFloat<T>(wv[u].z * (v[u].z * inv));
    ov.v[3] = FromFloat<T>(wv[u].w * (v[u].w * inv));
    o[q] = ov;
  }
}

template <typename T>
__global__ void AddRmsNormLoopKernel(float* residual, const T* delta, const float* weight, const int32_t* row_index,
                                     int64_t hidden, float eps, bool write_residual, T* out) {
  PdlStartShortKernel();
  const int64_t i = blockIdx.x;
  const int64_t r = row_index ? row_index[i] : i;
  float* x = residual + r * hidden;
  const T* d = delta ? delta + r * hidden : nullptr;
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float v = x[c] + (d ? ToFloat(d[c]) : 0.0f);
    if (write_residual) x[c] = v;
    sum += v * v;
  }
  const float inv = rsqrtf(CtaSum<kMaxThreads>(sum) / static_cast<float>(hidden) + eps);
  T* o = out + i * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    // Each thread re-reads the columns it wrote itself, so no barrier is needed.
    float v = write_residual ? x[c] : x[c] + (d ? ToFloat(d[c]) : 0.0f);
    o[c] = FromFloat<T>(weight[c] * (v * inv));
  }
}

template <typename T, int kVecs>
void LaunchVec(cudaStream_t stream, int threads, float* residual, const T* delta, const float* weight,
               const int32_t* row_index, int64_t rows, int64_t hidden, float eps, bool write_residual, T* out) {
  LaunchWithPdl(PdlKernel::kNorm, AddRmsNormVecKernel<T, kVecs>, dim3(static_cast<unsigned>(rows)), dim3(threads), 0,
                stream, residual, delta, weight, row_index, static_cast<int>(hidden), eps, write_residual, out);
}

template <typename T>
void Launch(cudaStream_t stream, float* residual, const void* delta_bytes, const float* weight,
            const int32_t* row_index, int64_t rows, int64_t hidden, float eps, bool write_residual, void* out_bytes) {
  const T* delta = static_cast<const T*>(delta_bytes);
  T* out = static_cast<T*>(out_bytes);
  const int64_t quads = hidden / 4;
  const bool vectors = hidden % 4 == 0 && quads <= int64_t{kMaxThreads} * kMaxVecs && Aligned(residual, 16) &&
                       Aligned(weight, 16) && Aligned(delta, 8) && Aligned(out, 8);
  if (!vectors) {
    LaunchWithPdl(PdlKernel::kNorm, AddRmsNormLoopKernel<T>, dim3(static_cast<unsigned>(rows)), dim3(kLoopThreads), 0,
                  stream, residual, delta, weight, row_index, hidden, eps, write_residual, out);
    return;
  }
  // The fewest float4s per thread that keep the CTA within kMaxThreads, then the fewest warps.
  int vecs = 1;
  while (quads > int64_t{kMaxThreads} * vecs) vecs *= 2;
  const int threads = static_cast<int>((quads + vecs - 1) / vecs + 31) / 32 * 32;
  auto launch = vecs == 1   ? LaunchVec<T, 1>
                : vecs == 2 ? LaunchVec<T, 2>
                : vecs == 4 ? LaunchVec<T, 4>
                            : LaunchVec<T, 8>;
  launch(stream, threads, residual, delta, weight, row_index, rows, hidden, eps, write_residual, out);
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
