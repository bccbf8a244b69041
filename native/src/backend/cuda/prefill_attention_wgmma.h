// The prefill attention's Hopper kernel (prefill_attention_wgmma.cu): the same work items,
// masking and output as prefill_attention.cu's kernel, with the two matrix products on
// warpgroup tensor-core instructions (wgmma, sm_90a only) and K/V brought by bulk tensor
// copies. LaunchPrefillAttention picks it where PrefillWgmmaTakes the shape and the cache's
// num_blocks is known.
#pragma once
#include <cuda_runtime.h>

#include "backend/cuda/prefill_attention.h"

namespace tg {
namespace cuda {

// What every prefill attention kernel needs of the model's attention shape.
struct PrefillShape {
  int q_heads, kv_heads, group, block_size, window;
  float scale_log2;  // softmax scale × log2(e): scores go through exp2
};

// True when this build has sm_90a code (CMake's TG_CUDA_SM90A) and the current device is
// compute capability 9.0, the only one that runs it.
bool PrefillWgmmaAvailable();

// Head dim 128, 128-row items, blocks of a power of two of at least 8 keys (a tile's
// copies are whole boxes starting 1,024-byte aligned), where PrefillWgmmaAvailable().
bool PrefillWgmmaTakes(int64_t head_dim, int64_t block_size, int tile_rows);

// Throws unless PrefillWgmmaTakes(128, cache.block_size, batch.tile_rows) and
// cache.num_blocks > 0 (the copies' tensor maps need the cache's extent).
void LaunchPrefillAttentionWgmma(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                                 const PrefillBatch& batch, const PrefillShape& sh, void* out);

}  // namespace cuda
}  // namespace tg
