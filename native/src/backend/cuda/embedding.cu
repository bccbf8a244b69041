// The embedding gather: one CTA per token row, widened to the f32 residual stream (and
// the tokens of a step run ahead, from the sampler's outputs of the step before).
// With tensor parallelism each rank holds a range of the vocabulary's rows and
// writes zeros for tokens outside it; the all-reduce that follows sums the ranks. The shard
// form writes its rows in the table's own type and zeroes the residual, for the all-reduce
// fused with the first layer's residual add and norm (one kernel fewer, half the bytes).
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/elem_access.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/pdl.cuh"

namespace tg {
namespace cuda {
namespace {

template <typename T>
__global__ void EmbeddingKernel(const T* table, const int32_t* tokens, int64_t vocab_begin, int64_t vocab_rows,
                                int64_t hidden, float* x) {
  PdlStartShortKernel();
  const int64_t r = blockIdx.x;
  const int64_t row = static_cast<int64_t>(tokens[r]) - vocab_begin;
  float* dst = x + r * hidden;
  if (row < 0 || row >= vocab_rows) {
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const T* src = table + row * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = ToFloat(src[i]);
}

template <typename T>
__global__ void EmbeddingShardKernel(const T* table, const int32_t* tokens, int64_t vocab_begin, int64_t vocab_rows,
                                     int64_t hidden, T* rows_out, float* residual) {
  PdlStartShortKernel();
  const int64_t r = blockIdx.x;
  const int64_t row = static_cast<int64_t>(tokens[r]) - vocab_begin;
  const bool mine = row >= 0 && row < vocab_rows;
  const T* src = table + (mine ? row : 0) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    rows_out[r * hidden + i] = mine ? src[i] : FromFloat<T>(0.0f);
    residual[r * hidden + i] = 0.0f;
  }
}

template <typename T>
void LaunchShard(cudaStream_t stream, const void* table, const int32_t* tokens, int64_t vocab_begin,
                 int64_t vocab_rows, int64_t rows, int64_t hidden, void* rows_out, float* residual) {
  LaunchWithPdl(PdlKernel::kEmbedding, EmbeddingShardKernel<T>, dim3(static_cast<unsigned>(rows)), dim3(256), 0,
                stream, static_cast<const T*>(table), tokens, vocab_begin, vocab_rows, hidden, static_cast<T*>(rows_out),
                residual);
}

template <typename T>
void Launch(cudaStream_t stream, const void* table, const int32_t* tokens, int64_t vocab_begin, int64_t vocab_rows,
            int64_t rows, int64_t hidden, float* x) {
  LaunchWithPdl(PdlKernel::kEmbedding, EmbeddingKernel<T>, dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream,
                static_cast<const T*>(table), tokens, vocab_begin, vocab_rows, hidden, x);
}

__global__ void TokensFromSamplesKernel(const int32_t* sampled, int32_t* tokens, int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < rows) tokens[r] = sampled[tokens[r]];
}

}  // namespace

void LaunchTokensFromSamples(cudaStream_t stream, const int32_t* sampled, int32_t* tokens, int64_t rows) {
  if (rows <= 0) return;
  TokensFromSamplesKernel<<<static_cast<unsigned>((rows + 255) / 256), 256, 0, stream>>>(sampled, tokens, rows);
  TG_CUDA_CHECK_LAUNCH("tokens from samples");
}

void LaunchEmbedding(cudaStream_t stream, ElemType type, const void* table, int64_t vocab_begin, int64_t vocab_rows,
                     const int32_t* tokens, int64_t rows, int64_t hidden, float* x) {
  if (rows <= 0) return;
  TG_DISPATCH_HALF(type, Launch, stream, table, tokens, vocab_begin, vocab_rows, rows, hidden, x);
  TG_CUDA_CHECK_LAUNCH("embedding");
}

void LaunchEmbeddingShard(cudaStream_t stream, ElemType type, const void* table, int64_t vocab_begin,
                          int64_t vocab_rows, const int32_t* tokens, int64_t rows, int64_t hidden, void* rows_out,
                          float* residual) {
  if (rows <= 0) return;
  TG_DISPATCH_HALF(type, LaunchShard, stream, table, tokens, vocab_begin, vocab_rows, rows, hidden, rows_out,
                   residual);
  TG_CUDA_CHECK_LAUNCH("embedding shard");
}

}  // namespace cuda
}  // namespace tg
