// Chooses the next token of one sequence from its logits, and reports the
// logprob of the choice and the top-n alternatives. Deterministic: the random
// draw for the n-th generated token depends only on (seed, n), so the same seed
// gives the same text whatever the batch around it (and the GPU sampler can
// reproduce the same stream later).
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "sampling/sampling_params.h"

namespace tg {

struct SampleResult {
  int32_t token = 0;
  // log_softmax of the processed logits (after penalties and temperature,
  // before top-k/top-p/typical truncation) at the chosen token.
  float logprob = 0.0f;
  std::vector<int32_t> top_ids;      // top_n most likely ids, most likely first
  std::vector<float> top_logprobs;   // their logprobs, same distribution as `logprob`
};

// Sampler state of one sequence: its parameters and the token counts that the
// repetition, frequency and presence penalties read (prompt and generated tokens).
class SequenceSampler {
 public:
  SequenceSampler(const SamplingParams& params, int64_t vocab_size);

  // Records tokens that entered the sequence (prompt tokens or fed-back samples);
  // the last one seeds the watermark's greenlist.
  void Observe(const int32_t* tokens, int64_t count);

  // Chooses the next token. `logits` has vocab_size entries and is modified in place.
  // `generated_index` is how many tokens this sequence has generated before.
  SampleResult Sample(float* logits, int64_t generated_index, int32_t top_n) const;

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  int64_t vocab_size_;
  std::unordered_map<int32_t, int32_t> counts_;  // token -> occurrences
  int32_t last_token_ = -1;                       // the last observed token; -1 before any
};

// The watermark's greenlist (TGI's WatermarkLogitsProcessor, after Kirchenbauer et
// al. 2023): after `prev_token`, token `token` is green iff
// UniformFromSeed(kWatermarkHashKey * prev_token, token) < gamma. Each id is green
// independently with probability gamma, so the greenlist holds gamma x vocab ids on
// average (TGI takes exactly int(gamma x vocab) ids of a torch.randperm seeded the
// same way): the same statistics and the same detection test (z-score of the green
// count against gamma), but not the same ids, so a detector must use this rule.
constexpr uint64_t kWatermarkHashKey = 15485863;
bool WatermarkIsGreen(int32_t prev_token, int32_t token, float gamma);

// log_softmax of `logits` into `out` (both vocab_size long), computed in double for accuracy.
void LogSoftmax(const float* logits, int64_t vocab_size, float* out);

// Uniform in [0, 1) from a counter-based generator: a pure function of (seed, counter).
double UniformFromSeed(uint64_t seed, uint64_t counter);

}  // namespace tg
