// Which slice of each weight one tensor-parallel rank holds (Megatron layout):
// a contiguous range of query heads with the KV heads they read, a range of the
// MLP's intermediate features, and a range of the (padded) vocabulary.
#pragma once
#include <cstdint>

#include "model/model_config.h"

namespace tg {

struct TpSlice {
  int rank = 0;
  int world_size = 1;
  int64_t q_head_begin = 0, q_heads = 0;    // query heads [begin, begin + q_heads)
  int64_t kv_head_begin = 0, kv_heads = 0;  // KV heads; replicated across ranks when fewer than ranks
  int64_t inter_begin = 0, inter_size = 0;  // MLP intermediate features
  int64_t vocab_begin = 0, vocab_size = 0;  // vocab rows, padded to a multiple of world_size
};

// Throws std::runtime_error when heads, KV heads or the intermediate size don't divide.
TpSlice MakeTpSlice(const ModelConfig& config, int rank, int world_size);

}  // namespace tg
