// See rope.h. Formulas follow transformers' modeling_rope_utils; the default
// frequencies are formed in float32 as torch does, so angles match its rounding.
#include "backend/cpu/rope.h"

#include <cmath>

namespace tg {
namespace cpu {

static std::vector<float> DefaultInvFreq(double base, int64_t head_dim) {
  std::vector<float> inv(head_dim / 2);
  float fbase = static_cast<float>(base);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[i] = 1.0f / std::pow(fbase, exponent);
  }
  return inv;
}

std::vector<float> RopeInvFreq(const RopeConfig& rope, int64_t head_dim, int64_t max_position_embeddings,
                               int64_t seq_len) {
  switch (rope.scaling) {
    case RopeScaling::kNone:
      return DefaultInvFreq(rope.theta, head_dim);
    case RopeScaling::kLinear: {
      auto inv = DefaultInvFreq(rope.theta, head_dim);
      for (auto& f : inv) f = f / static_cast<float>(rope.factor);
      return inv;
    }
    case RopeScaling::kDynamic: {
      double base = rope.theta;
      if (seq_len > max_position_embeddings) {
        double d = static_cast<double>(head_dim);
        base = base * std::pow(rope.factor * static_cast<double>(seq_len) / max_position_embeddings -
                                   (rope.factor - 1.0),
                               d / (d - 2.0));
      }
      return DefaultInvFreq(base, head_dim);
    }
    case RopeScaling::kLlama3: {
      auto inv = DefaultInvFreq(rope.theta, head_dim);
      const double pi = 3.14159265358979323846;
      double old_len = static_cast<double>(rope.original_max_position_embeddings);
      double low_freq_wavelen = old_len / rope.low_freq_factor;
      double high_freq_wavelen = old_len / rope.high_freq_factor;
      for (auto& f : inv) {
        double freq = f;
        double wavelen = 2.0 * pi / freq;
        double scaled = wavelen > low_freq_wavelen ? freq / rope.factor : freq;
        bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        if (medium) {
          double smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
          scaled = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
        }
        f = static_cast<float>(scaled);
      }
      return inv;
    }
  }
  return DefaultInvFreq(rope.theta, head_dim);
}

}  // namespace cpu
}  // namespace tg
