// The penalty lists as the kernels use them: applying a slot's counts to a
// row of logits, and adding one occurrence of a token to a slot.
#pragma once
#include "backend/cuda/sampling/gpu_sampler.h"
#include "backend/cuda/sampling/row_ops.cuh"

namespace tg {
namespace cuda {
namespace sampling {

// The CPU's float arithmetic, unfused (nvcc would contract l - f * c into an FMA).
__device__ inline void ApplyPenalties(float* logits, int32_t vocab, const GpuSamplingRow& p, const GpuPenaltyView& pen) {
  const int32_t n = pen.sizes[p.penalty_slot];
  const int2* pairs = pen.pairs + static_cast<int64_t>(p.penalty_slot) * pen.capacity;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const int2 pair = pairs[i];
    if (pair.x < 0 || pair.x >= vocab) continue;
    float l = logits[pair.x];
    if (p.repetition_penalty != 1.0f) {
      l = l < 0.0f ? __fmul_rn(l, p.repetition_penalty) : __fdiv_rn(l, p.repetition_penalty);
    }
    if (p.frequency_penalty != 0.0f) l = __fsub_rn(l, __fmul_rn(p.frequency_penalty, static_cast<float>(pair.y)));
    if (p.presence_penalty != 0.0f && pair.y > 0) l = __fsub_rn(l, p.presence_penalty);
    logits[pair.x] = l;
  }
}

// Adds one occurrence of `token` to a slot's list. Every thread of the block calls it.
__device__ inline void ObserveToken(RowShared& s, const GpuPenaltyView& pen, int32_t slot, int32_t token) {
  int2* pairs = pen.pairs + static_cast<int64_t>(slot) * pen.capacity;
  const int32_t n = pen.sizes[slot];
  __syncthreads();
  if (threadIdx.x == 0) s.observed_at = -1;
  __syncthreads();
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    if (pairs[i].x == token) s.observed_at = i;  // tokens are distinct: one writer
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (s.observed_at >= 0) {
      pairs[s.observed_at].y += 1;
    } else if (n < pen.capacity) {
      pairs[n] = make_int2(token, 1);
      pen.sizes[slot] = n + 1;
    }
  }
  __syncthreads();
}

}  // namespace sampling
}  // namespace cuda
}  // namespace tg
