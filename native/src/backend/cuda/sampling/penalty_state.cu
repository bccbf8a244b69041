// GpuPenaltyState: the device memory of the per-slot (token, count) lists,
// their upload, and the kernel that adds tokens chosen outside the sampler.
#include <stdexcept>
#include <unordered_map>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling/gpu_sampler.h"
#include "backend/cuda/sampling/penalties.cuh"

namespace tg {
namespace cuda {
namespace sampling {
namespace {

__global__ void __launch_bounds__(kThreads) ObserveKernel(GpuPenaltyView pen, const int32_t* slots,
                                                          const int32_t* offsets, const int32_t* tokens) {
  __shared__ RowShared s;
  const int32_t r = blockIdx.x;
  for (int32_t i = offsets[r]; i < offsets[r + 1]; ++i) ObserveToken(s, pen, slots[r], tokens[i]);
}

__global__ void SetSizeKernel(int32_t* sizes, int32_t slot, int32_t size) { sizes[slot] = size; }

}  // namespace
}  // namespace sampling

GpuPenaltyState::GpuPenaltyState(int32_t slots, int32_t capacity) : slots_(slots) {
  if (slots <= 0 || capacity <= 0) throw std::invalid_argument("gpu penalty state: slots and capacity must be positive");
  view_.capacity = capacity;
  TG_CUDA_CHECK(cudaMalloc(&view_.pairs, sizeof(int2) * static_cast<size_t>(slots) * capacity));
  TG_CUDA_CHECK(cudaMalloc(&view_.sizes, sizeof(int32_t) * static_cast<size_t>(slots)));
  TG_CUDA_CHECK(cudaMemset(view_.sizes, 0, sizeof(int32_t) * static_cast<size_t>(slots)));
}

GpuPenaltyState::~GpuPenaltyState() {
  cudaFree(view_.pairs);
  cudaFree(view_.sizes);
}

void GpuPenaltyState::SetCounts(int32_t slot, const int2* pairs, int32_t count, cudaStream_t stream) {
  if (slot < 0 || slot >= slots_) throw std::out_of_range("gpu penalty state: slot out of range");
  if (count > view_.capacity) count = view_.capacity;  // as the kernel does: the rest are dropped
  if (count > 0) {
    TG_CUDA_CHECK(cudaMemcpyAsync(view_.pairs + static_cast<int64_t>(slot) * view_.capacity, pairs,
                                  sizeof(int2) * static_cast<size_t>(count), cudaMemcpyHostToDevice, stream));
  }
  sampling::SetSizeKernel<<<1, 1, 0, stream>>>(view_.sizes, slot, count);
  TG_CUDA_CHECK_LAUNCH("SetSizeKernel");
}

void GpuPenaltyState::Clear(int32_t slot, cudaStream_t stream) { SetCounts(slot, nullptr, 0, stream); }

void GpuPenaltyState::ObserveTokens(const int32_t* slots, const int32_t* offsets, const int32_t* tokens,
                                    int32_t rows, cudaStream_t stream) {
  if (rows <= 0) return;
  sampling::ObserveKernel<<<rows, sampling::kThreads, 0, stream>>>(view_, slots, offsets, tokens);
  TG_CUDA_CHECK_LAUNCH("ObserveKernel");
}

std::vector<int2> CountTokens(const int32_t* tokens, int64_t count) {
  std::unordered_map<int32_t, int32_t> counts;
  std::vector<int2> pairs;
  for (int64_t i = 0; i < count; ++i) {
    auto [it, added] = counts.emplace(tokens[i], static_cast<int32_t>(pairs.size()));
    if (added) pairs.push_back(make_int2(tokens[i], 0));
    ++pairs[static_cast<size_t>(it->second)].y;
  }
  return pairs;
}

}  // namespace cuda
}  // namespace tg
