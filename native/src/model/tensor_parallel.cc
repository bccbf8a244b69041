// See tensor_parallel.h.
#include "model/tensor_parallel.h"

#include <stdexcept>
#include <string>

namespace tg {

TpSlice MakeTpSlice(const ModelConfig& c, int rank, int world_size) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("cannot split the model over " + std::to_string(world_size) + " shards: " + what);
  };
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw std::runtime_error("invalid rank " + std::to_string(rank) + " of world size " + std::to_string(world_size));
  }
  if (c.num_heads % world_size != 0) fail("num_attention_heads " + std::to_string(c.num_heads) + " is not divisible");
  if (c.num_kv_heads % world_size != 0 && world_size % c.num_kv_heads != 0) {
    fail("num_key_value_heads " + std::to_string(c.num_kv_heads) + " neither divides nor is divisible by it");
  }
  if (c.intermediate_size % world_size != 0) {
    fail("intermediate_size " + std::to_string(c.intermediate_size) + " is not divisible");
  }
  TpSlice s;
  s.rank = rank;
  s.world_size = world_size;
  s.q_heads = c.num_heads / world_size;
  s.q_head_begin = rank * s.q_heads;
  if (c.num_kv_heads >= world_size) {
    s.kv_heads = c.num_kv_heads / world_size;
    s.kv_head_begin = rank * s.kv_heads;
  } else {
    // Fewer KV heads than ranks: each rank keeps a copy of the one KV head its query heads use.
    s.kv_heads = 1;
    s.kv_head_begin = s.q_head_begin / (c.num_heads / c.num_kv_heads);
  }
  s.inter_size = c.intermediate_size / world_size;
  s.inter_begin = rank * s.inter_size;
  s.vocab_size = (c.vocab_size + world_size - 1) / world_size;
  s.vocab_begin = rank * s.vocab_size;
  return s;
}

}  // namespace tg
