// The vocab-parallel lm_head's logits, put back in vocabulary order: each rank
// computes logits for its range of the (padded) vocabulary, the all-gather stacks
// them rank by rank, and this kernel interleaves them into one row per sequence.
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace tg {
namespace cuda {
namespace {

__global__ void GatherVocabShardsKernel(const float* shards, int64_t rows, int64_t shard, int64_t vocab, float* out) {
  const int64_t row = blockIdx.y;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < vocab;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rank = id / shard, j = id % shard;
    out[row * vocab + id] = shards[(rank * rows + row) * shard + j];
  }
}

}  // namespace

void LaunchGatherVocabShards(cudaStream_t stream, const float* shards, int64_t ranks, int64_t rows, int64_t shard,
                             int64_t vocab, float* out) {
  if (rows <= 0) return;
  if (ranks * shard < vocab) throw std::runtime_error("vocab shards: ranks * shard must cover the vocabulary");
  const dim3 grid(static_cast<unsigned>((vocab + 255) / 256 < 64 ? (vocab + 255) / 256 : 64),
                  static_cast<unsigned>(rows));
  GatherVocabShardsKernel<<<grid, 256, 0, stream>>>(shards, rows, shard, vocab, out);
  TG_CUDA_CHECK_LAUNCH("gather vocab shards");
}

}  // namespace cuda
}  // namespace tg
