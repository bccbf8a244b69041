// The CPU sampler: logits processors and warpers with Hugging Face semantics,
// applied to one sequence's logits in this order:
//
//   watermark -> repetition penalty -> frequency penalty -> presence penalty -> temperature
//   -> top-k -> top-p -> typical-p -> seeded draw (or argmax when greedy)
//
// (TGI's HeterogeneousNextTokenChooser runs the watermark before the penalties,
// and greedy decoding sees its bias too.) The reported logprobs (chosen token and
// top-n) come from the distribution after the watermark, penalties and
// temperature, before any truncation. The draw is an inverse CDF over the kept
// tokens walked in ascending id order, with the uniform from
// UniformFromSeed(seed, generated_index), so a GPU kernel can reproduce it with a
// prefix sum. Ties are always broken towards the lower id.
#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>
#include <stdexcept>
#include <string>

namespace tg {
namespace {

// "a ranks before b": higher logit first, lower id on ties.
struct ByLogitDesc {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  }
};

// exp(logit - max), the unnormalised probability. Float exp (a few ulps) is
// ample for sampling and logprobs, and several times faster than double exp;
// the sums over the vocabulary are kept in double.
inline double Weight(float logit, float max) { return std::exp(logit - max); }

// Statistics of the softmax over the whole vocabulary.
struct SoftmaxStats {
  float max = 0.0f;
  double log_sum = 0.0;  // log sum_j exp(l_j - max)
  double LogProb(float logit) const { return static_cast<double>(logit) - max - log_sum; }
};

// NaN logits would break the orderings below; they are treated as impossible tokens.
SoftmaxStats SanitizeAndMeasure(float* logits, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) logits[i] = -std::numeric_limits<float>::infinity();
    max = std::max(max, logits[i]);
  }
  if (!std::isfinite(max)) throw std::runtime_error("sampler: every logit is -inf or NaN");
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += Weight(logits[i], max);
  return {max, std::log(sum)};
}

// Reorders `ids` so that its first n entries, sorted by `before`, are the
// smallest prefix (in `before` order) whose `weight` sum reaches `target`, and
// returns n (at least 1). Sorts in growing windows so that a small kept set
// over a 128k vocabulary costs a few linear passes, not a full sort.
template <class Before, class Weight>
size_t KeepSmallestPrefixReaching(std::vector<int32_t>& ids, const Before& before, const Weight& weight,
                                  double target) {
  size_t sorted = 0;
  size_t window = std::min<size_t>(ids.size(), 256);
  double cumulative = 0.0;
  while (true) {
    if (window < ids.size()) std::nth_element(ids.begin() + sorted, ids.begin() + window, ids.end(), before);
    std::sort(ids.begin() + sorted, ids.begin() + window, before);
    for (size_t i = sorted; i < window; ++i) {
      cumulative += weight(ids[i]);
      if (cumulative >= target) return i + 1;
    }
    if (window == ids.size()) return ids.size();  // rounding kept the target just out of reach
    sorted = window;
    window = std::min(ids.size(), window * 4);
  }
}

// Draws from the kept tokens (already in ascending id order) by inverse CDF.
// `id_at(i)` for i < count lists the candidate ids in ascending order.
template <typename IdAt>
int32_t DrawInIdOrder(int64_t count, IdAt id_at, const float* logits, float max, double u) {
  double total = 0.0;
  for (int64_t i = 0; i < count; ++i) total += Weight(logits[id_at(i)], max);
  double target = u * total;
  double cumulative = 0.0;
  int32_t last_possible = id_at(0);
  for (int64_t i = 0; i < count; ++i) {
    const int32_t id = id_at(i);
    double w = Weight(logits[id], max);
    if (w <= 0.0) continue;
    last_possible = id;
    cumulative += w;
    if (cumulative > target) return id;
  }
  return last_possible;  // u * total rounded up to total
}

// The warpers that truncate, then the draw. `logits` already carry penalties and temperature.
int32_t DrawToken(const SamplingParams& p, const float* logits, int64_t vocab, const SoftmaxStats& stats,
                  int64_t generated_index) {
  const double u = UniformFromSeed(p.seed, static_cast<uint64_t>(generated_index));
  const bool top_k = p.top_k > 0 && p.top_k < vocab;
  const bool top_p = p.top_p < 1.0f;
  const bool typical = p.typical_p < 1.0f;
  auto weight = [&](int32_t id) { return Weight(logits[id], stats.max); };

  if (!top_k && !top_p && !typical) {
    // No truncation: every id is a candidate, so no per-token index array is needed.
    return DrawInIdOrder(vocab, [](int64_t i) { return static_cast<int32_t>(i); }, logits, stats.max, u);
  }
  std::vector<int32_t> kept(static_cast<size_t>(vocab));
  std::iota(kept.begin(), kept.end(), 0);

  const ByLogitDesc by_logit{logits};
  if (top_k) {
    std::nth_element(kept.begin(), kept.begin() + p.top_k, kept.end(), by_logit);
    kept.resize(static_cast<size_t>(p.top_k));
  }
  if (top_p) {
    double mass = 0.0;
    for (int32_t id : kept) mass += weight(id);
    kept.resize(KeepSmallestPrefixReaching(kept, by_logit, weight, p.top_p * mass));
  }
  if (typical) {
    // Entropy of the kept set renormalised; a token's typicality is how far its
    // surprisal -log p is from that entropy: |(log Z - l) - H| = |C - l|.
    double mass = 0.0;
    for (int32_t id : kept) mass += weight(id);
    const double log_mass = std::log(mass);
    double entropy = 0.0;
    for (int32_t id : kept) {
      double w = weight(id);
      if (w > 0.0) entropy -= (w / mass) * (static_cast<double>(logits[id]) - stats.max - log_mass);
    }
    const double center = stats.max + log_mass - entropy;
    auto more_typical = [&](int32_t a, int32_t b) {
      double da = std::fabs(center - logits[a]), db = std::fabs(center - logits[b]);
      return da != db ? da < db : a < b;
    };
    kept.resize(KeepSmallestPrefixReaching(kept, more_typical, weight, p.typical_p * mass));
  }
  std::sort(kept.begin(), kept.end());
  return DrawInIdOrder(static_cast<int64_t>(kept.size()), [&](int64_t i) { return kept[static_cast<size_t>(i)]; },
                       logits, stats.max, u);
}

// The n most likely ids, most likely first, in O(vocab log n).
std::vector<int32_t> TopIds(const float* logits, int64_t vocab, int32_t n) {
  const size_t count = static_cast<size_t>(std::clamp<int64_t>(n, 0, vocab));
  if (count == 0) return {};
  const ByLogitDesc better{logits};
  // Heap whose top is the worst of the best `count` seen so far.
  std::priority_queue<int32_t, std::vector<int32_t>, ByLogitDesc> heap(better);
  for (int32_t i = 0; i < vocab; ++i) {
    if (heap.size() < count) {
      heap.push(i);
    } else if (better(i, heap.top())) {
      heap.pop();
      heap.push(i);
    }
  }
  std::vector<int32_t> ids(count);
  for (size_t i = count; i-- > 0;) {
    ids[i] = heap.top();
    heap.pop();
  }
  return ids;
}

uint64_t Mix64(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// UniformFromSeed in two halves, so that a loop over counters mixes the seed once.
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
uint64_t SeedState(uint64_t seed) { return Mix64(seed + kGolden); }
double UniformFromState(uint64_t state, uint64_t counter) {
  const uint64_t x = Mix64(state ^ (counter * kGolden + 0xD1B54A32D192ED03ULL));
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

uint64_t WatermarkSeed(int32_t prev_token) { return kWatermarkHashKey * static_cast<uint64_t>(prev_token); }

// Adds delta to every green logit: one pass over the vocabulary, no permutation.
void ApplyWatermark(float* logits, int64_t vocab, int32_t prev_token, float gamma, float delta) {
  const uint64_t state = SeedState(WatermarkSeed(prev_token));
  for (int64_t i = 0; i < vocab; ++i) {
    if (UniformFromState(state, static_cast<uint64_t>(i)) < gamma) logits[i] += delta;
  }
}

}  // namespace

SequenceSampler::SequenceSampler(const SamplingParams& params, int64_t vocab_size)
    : params_(params), vocab_size_(vocab_size) {
  if (vocab_size <= 0) throw std::invalid_argument("sampler: vocab_size must be positive");
}

void SequenceSampler::Observe(const int32_t* tokens, int64_t count) {
  const SamplingParams& p = params_;
  if (count > 0) last_token_ = tokens[count - 1];
  if (p.repetition_penalty == 1.0f && p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f) return;  // nothing reads them
  for (int64_t i = 0; i < count; ++i) ++counts_[tokens[i]];
}

SampleResult SequenceSampler::Sample(float* logits, int64_t generated_index, int32_t top_n) const {
  const SamplingParams& p = params_;
  // No previous token (never observed) leaves nothing to seed from: TGI would fail; we skip.
  if (p.watermark && last_token_ >= 0) ApplyWatermark(logits, vocab_size_, last_token_, p.watermark_gamma, p.watermark_delta);
  for (const auto& [token, count] : counts_) {
    if (token < 0 || token >= vocab_size_) continue;
    float& l = logits[token];
    if (p.repetition_penalty != 1.0f) l = l < 0.0f ? l * p.repetition_penalty : l / p.repetition_penalty;
    if (p.frequency_penalty != 0.0f) l -= p.frequency_penalty * static_cast<float>(count);
    if (p.presence_penalty != 0.0f && count > 0) l -= p.presence_penalty;
  }
  const bool samples = p.Samples();
  if (samples && p.temperature > 0.0f && p.temperature != 1.0f) {
    for (int64_t i = 0; i < vocab_size_; ++i) logits[i] /= p.temperature;
  }
  const SoftmaxStats stats = SanitizeAndMeasure(logits, vocab_size_);

  SampleResult result;
  if (samples) {
    result.token = DrawToken(p, logits, vocab_size_, stats, generated_index);
  } else {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab_size_; ++i) {
      if (logits[i] > logits[best]) best = i;
    }
    result.token = best;
  }
  result.logprob = static_cast<float>(stats.LogProb(logits[result.token]));
  result.top_ids = TopIds(logits, vocab_size_, top_n);
  for (int32_t id : result.top_ids) result.top_logprobs.push_back(static_cast<float>(stats.LogProb(logits[id])));
  return result;
}

void LogSoftmax(const float* logits, int64_t vocab_size, float* out) {
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < vocab_size; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < vocab_size; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  const double log_sum = std::log(sum);
  for (int64_t i = 0; i < vocab_size; ++i) out[i] = static_cast<float>(logits[i] - max - log_sum);
}

// Two rounds of mixing so that neighbouring seeds and neighbouring counters
// give unrelated streams; the top 53 bits make a double in [0, 1).
double UniformFromSeed(uint64_t seed, uint64_t counter) { return UniformFromState(SeedState(seed), counter); }

bool WatermarkIsGreen(int32_t prev_token, int32_t token, float gamma) {
  if (prev_token < 0 || token < 0) return false;
  return UniformFromState(SeedState(WatermarkSeed(prev_token)), static_cast<uint64_t>(token)) < gamma;
}

}  // namespace tg
