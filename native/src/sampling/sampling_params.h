// Per-request sampling parameters, as the router validated them.
#pragma once
#include <cstdint>

namespace tg {

struct SamplingParams {
  float temperature = 1.0f;
  int32_t top_k = 0;          // 0: off
  float top_p = 1.0f;         // 1: off
  float typical_p = 1.0f;     // 1: off
  bool do_sample = false;
  uint64_t seed = 0;
  float repetition_penalty = 1.0f;  // 1: off
  float frequency_penalty = 0.0f;   // 0: off

  // TGI's rule: greedy unless sampling or a warper is asked for.
  bool Samples() const {
    return do_sample || temperature != 1.0f || top_k != 0 || top_p < 1.0f || typical_p < 1.0f;
  }

  float presence_penalty = 0.0f;  // 0: off; OpenAI's, subtracted once per present token

  // TGI's `watermark` (Kirchenbauer et al. 2023): delta is added to the logits of
  // a greenlist of about gamma x vocab ids chosen from the previous token (sampler.h).
  bool watermark = false;
  float watermark_gamma = 0.5f;
  float watermark_delta = 2.0f;
};

}  // namespace tg
