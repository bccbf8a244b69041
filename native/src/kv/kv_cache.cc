// See kv_cache.h.
#include "kv/kv_cache.h"

#include <stdexcept>
#include <string>

namespace tg {

KvCache::KvCache(int64_t num_blocks, int64_t block_size, int64_t num_layers, int64_t kv_heads, int64_t head_dim)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      num_layers_(num_layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim) {
  if (num_blocks < 1) throw std::runtime_error("KV cache needs at least 1 block, got " + std::to_string(num_blocks));
  if (block_size < 1) throw std::runtime_error("KV block size must be positive, got " + std::to_string(block_size));
  int64_t floats = num_blocks * BytesPerBlock(block_size, num_layers, kv_heads, head_dim) / 4;
  try {
    data_.assign(static_cast<size_t>(floats), 0.0f);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("cannot allocate a KV cache of " + std::to_string(num_blocks) + " blocks (" +
                             std::to_string(floats * 4) + " bytes)");
  }
}

}  // namespace tg
