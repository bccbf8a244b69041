// The paged KV cache of one rank, float32 on the CPU. Memory is one array laid
// out [block][layer][k|v][slot in block][kv head][head dim], so a block's K/V for
// every layer is contiguous (one block is one unit of the router's allocator).
// Block 0 exists like every other; the router reserves it.
#pragma once
#include <cstdint>
#include <vector>

namespace tg {

class KvCache {
 public:
  KvCache(int64_t num_blocks, int64_t block_size, int64_t num_layers, int64_t kv_heads, int64_t head_dim);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  // Floats of one token's K (or V) in one layer.
  int64_t token_stride() const { return kv_heads_ * head_dim_; }
  static int64_t BytesPerBlock(int64_t block_size, int64_t num_layers, int64_t kv_heads, int64_t head_dim) {
    return 2 * num_layers * block_size * kv_heads * head_dim * static_cast<int64_t>(sizeof(float));
  }

  // Pointer to the K (v = false) or V (v = true) of one slot of `block` in `layer`.
  float* Slot(int64_t block, int64_t layer, bool v, int64_t slot) {
    return data_.data() + ((((block * num_layers_) + layer) * 2 + (v ? 1 : 0)) * block_size_ + slot) * token_stride();
  }
  const float* Slot(int64_t block, int64_t layer, bool v, int64_t slot) const {
    return const_cast<KvCache*>(this)->Slot(block, layer, v, slot);
  }

 private:
  int64_t num_blocks_, block_size_, num_layers_, kv_heads_, head_dim_;
  std::vector<float> data_;
};

}  // namespace tg
