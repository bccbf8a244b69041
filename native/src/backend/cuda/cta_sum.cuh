// The sum of one float per thread over a CTA, for the row reductions of the norm kernels.
#pragma once

namespace tg {
namespace cuda {

// The sum of `v` over the CTA, in every thread. blockDim.x must be a multiple of 32 and at
// most kMaxThreads; every thread must call it, and a second call in the same kernel must
// come after a __syncthreads() (it reuses its shared array).
template <int kMaxThreads>
__device__ __forceinline__ float CtaSum(float v) {
  __shared__ float warp_sums[kMaxThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  const int warps = static_cast<int>(blockDim.x >> 5);
  for (int w = 0; w < warps; ++w) total += warp_sums[w];
  return total;
}

}  // namespace cuda
}  // namespace tg
