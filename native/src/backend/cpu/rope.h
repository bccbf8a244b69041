// RoPE inverse frequencies for every scaling that Hugging Face Llama-family
// configs use: none, linear, dynamic NTK and llama3.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace tg {
namespace cpu {

// inv_freq[i], i < head_dim / 2, for a sequence whose longest position so far is
// seq_len - 1. Only dynamic NTK depends on seq_len (it grows the base once the
// sequence passes max_position_embeddings, as transformers' dynamic rope does).
std::vector<float> RopeInvFreq(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                               int64_t seq_len);

// Whether RopeInvFreq depends on seq_len for this config.
inline bool RopeDependsOnLength(const RopeConfig& rope) { return rope.scaling == RopeScaling::kDynamic; }

}  // namespace cpu
}  // namespace tg
