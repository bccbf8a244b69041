// Unit tests of the CPU sampler: greedy, penalties, each warper's kept set and
// frequencies, seeding, logprobs and top-n, and the watermark.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "sampling/sampler.h"
#include "test_util.h"

using tg::SampleResult;
using tg::SamplingParams;
using tg::SequenceSampler;

namespace {

std::vector<float> RandomLogits(int64_t vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& l : logits) l = normal(rng);
  return logits;
}

std::vector<float> LogitsOfProbs(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

std::vector<double> Softmax(const std::vector<float>& logits, const std::set<int32_t>& keep = {}) {
  std::vector<double> p(logits.size(), 0.0);
  double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!keep.empty() && !keep.count(static_cast<int32_t>(i))) continue;
    p[i] = std::exp(logits[i] - max);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

// Samples `draws` times (generated_index 0..draws-1) and returns token frequencies.
std::vector<double> Frequencies(const SamplingParams& params, const std::vector<float>& logits, int draws) {
  SequenceSampler sampler(params, static_cast<int64_t>(logits.size()));
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) {
    std::vector<float> copy = logits;
    SampleResult r = sampler.Sample(copy.data(), i, 0);
    freq[static_cast<size_t>(r.token)] += 1.0 / draws;
  }
  return freq;
}

// Frequencies must be zero outside `keep` and match the renormalised softmax inside it.
void CheckDrawsFollow(const SamplingParams& params, const std::vector<float>& logits, const std::set<int32_t>& keep,
                      int draws = 20000, double tolerance = 0.02) {
  std::vector<double> freq = Frequencies(params, logits, draws);
  std::vector<double> expected = Softmax(logits, keep);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!keep.count(static_cast<int32_t>(i))) {
      CHECK(freq[i] == 0.0);
    } else {
      CHECK_NEAR(freq[i], expected[i], tolerance);
    }
  }
}

SamplingParams Sampling() {
  SamplingParams p;
  p.do_sample = true;
  p.seed = 1234;
  return p;
}

}  // namespace

TG_TEST(greedy_matches_argmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = RandomLogits(1000, seed);
    int32_t argmax = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    SequenceSampler sampler(SamplingParams{}, 1000);
    std::vector<float> copy = logits;
    CHECK(sampler.Sample(copy.data(), seed, 0).token == argmax);
    CHECK(copy == logits);  // no penalties, no temperature: logits untouched
  }
  std::vector<float> ties = {0.0f, 1.0f, 0.5f, 2.0f, 2.0f, -1.0f, 2.0f};
  SequenceSampler sampler(SamplingParams{}, 7);
  CHECK(sampler.Sample(ties.data(), 0, 0).token == 3);
}

TG_TEST(greedy_unless_sampling_or_a_warper_is_asked_for) {
  SamplingParams p;
  CHECK(!p.Samples());
  p.seed = 7;
  p.repetition_penalty = 1.3f;
  CHECK(!p.Samples());
  p.top_k = 3;
  CHECK(p.Samples());
}

TG_TEST(repetition_penalty_changes_exactly_the_seen_tokens) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  SequenceSampler sampler(p, 6);
  const int32_t prompt[] = {1, 1, 4};
  const int32_t generated[] = {5};
  sampler.Observe(prompt, 3);
  sampler.Observe(generated, 1);
  std::vector<float> logits = {3.0f, 4.0f, 1.0f, 2.0f, -1.0f, 0.0f};
  SampleResult r = sampler.Sample(logits.data(), 0, 0);
  // Positive logits are divided, negative multiplied; repeats do not compound.
  std::vector<float> expected = {3.0f, 2.0f, 1.0f, 2.0f, -2.0f, 0.0f};
  CHECK(logits == expected);
  CHECK(r.token == 0);  // 4.0 fell below 3.0
}

TG_TEST(frequency_penalty_subtracts_per_occurrence) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  SequenceSampler sampler(p, 5);
  const int32_t tokens[] = {2, 2, 2, 0};
  sampler.Observe(tokens, 4);
  std::vector<float> logits = {1.0f, 1.0f, 2.0f, -1.0f, 0.5f};
  sampler.Sample(logits.data(), 0, 0);
  std::vector<float> expected = {0.5f, 1.0f, 0.5f, -1.0f, 0.5f};
  CHECK(logits == expected);
}

TG_TEST(repetition_then_frequency_penalty) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 1.0f;
  SequenceSampler sampler(p, 3);
  const int32_t tokens[] = {0, 0, 1, 7, -1};  // out-of-vocab ids are ignored
  sampler.Observe(tokens, 5);
  std::vector<float> logits = {4.0f, -2.0f, 1.0f};
  sampler.Sample(logits.data(), 0, 0);
  std::vector<float> expected = {4.0f / 2.0f - 2.0f, -2.0f * 2.0f - 1.0f, 1.0f};
  CHECK(logits == expected);
}

TG_TEST(presence_penalty_subtracts_once_after_frequency) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  SequenceSampler sampler(p, 4);
  const int32_t tokens[] = {1, 1, 1, 3};
  sampler.Observe(tokens, 4);
  std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f};
  sampler.Sample(logits.data(), 0, 0);
  std::vector<float> expected = {1.0f, 2.0f - 1.5f - 0.25f, 0.0f, -1.0f - 0.5f - 0.25f};
  CHECK(logits == expected);
  // On its own it still counts tokens (Observe must not skip them).
  SamplingParams only;
  only.presence_penalty = 1.0f;
  SequenceSampler alone(only, 2);
  alone.Observe(tokens, 2);
  std::vector<float> two = {3.0f, 3.0f};
  alone.Sample(two.data(), 0, 0);
  CHECK(two[0] == 3.0f && two[1] == 2.0f);
}

TG_TEST(temperature_scales_the_distribution) {
  std::vector<float> logits = {1.0f, 2.0f, 0.0f, -1.0f, 1.5f};
  SamplingParams p = Sampling();
  p.temperature = 0.5f;
  std::vector<float> scaled;
  for (float l : logits) scaled.push_back(l / 0.5f);
  std::vector<double> freq = Frequencies(p, logits, 20000);
  std::vector<double> expected = Softmax(scaled);
  for (size_t i = 0; i < logits.size(); ++i) CHECK_NEAR(freq[i], expected[i], 0.02);
  // Sampling at temperature 1 follows the softmax itself.
  CheckDrawsFollow(Sampling(), logits, {0, 1, 2, 3, 4});
}

TG_TEST(top_k_keeps_the_k_most_likely) {
  std::vector<float> logits = RandomLogits(50, 7, 1.0f);
  std::vector<int32_t> order(50);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  SamplingParams p = Sampling();
  p.top_k = 5;
  CheckDrawsFollow(p, logits, std::set<int32_t>(order.begin(), order.begin() + 5));
  p.top_k = 1;
  CheckDrawsFollow(p, logits, {order[0]}, 200);
}

TG_TEST(top_p_keeps_the_smallest_set_reaching_the_mass) {
  // Probabilities 0.1, 0.4, 0.2, 0.3 at ids 0..3.
  std::vector<float> logits = LogitsOfProbs({0.1, 0.4, 0.2, 0.3});
  SamplingParams p = Sampling();
  p.top_p = 0.65f;
  CheckDrawsFollow(p, logits, {1, 3});
  p.top_p = 0.75f;
  CheckDrawsFollow(p, logits, {1, 2, 3});
  p.top_p = 0.3f;  // the most likely token alone already reaches it
  CheckDrawsFollow(p, logits, {1}, 200);
}

TG_TEST(typical_p_keeps_the_most_typical_tokens) {
  // p = 0.5, 0.2, 0.2, 0.1: entropy 1.2206; |surprisal - entropy| = 0.527, 0.389, 0.389, 1.082.
  std::vector<float> logits = LogitsOfProbs({0.5, 0.2, 0.2, 0.1});
  SamplingParams p = Sampling();
  p.typical_p = 0.3f;
  CheckDrawsFollow(p, logits, {1, 2});
  p.typical_p = 0.5f;
  CheckDrawsFollow(p, logits, {0, 1, 2});
  p.typical_p = 0.95f;
  CheckDrawsFollow(p, logits, {0, 1, 2, 3});
}

TG_TEST(warpers_apply_in_order_top_k_top_p_typical) {
  // top_k=3 keeps 0.4, 0.3, 0.2 (renormalised 4/9, 3/9, 2/9); top_p=0.7 of that keeps 0.4 and 0.3.
  std::vector<float> logits = LogitsOfProbs({0.1, 0.4, 0.2, 0.3});
  SamplingParams p = Sampling();
  p.top_k = 3;
  p.top_p = 0.7f;
  CheckDrawsFollow(p, logits, {1, 3});
  // Typical after top-k: entropy of {4/9, 3/9, 2/9} = 1.0609; surprisals 0.811, 1.099, 1.504,
  // distances 0.250, 0.038, 0.443, so the 3/9 token comes first (mass 1/3), then 4/9.
  p.top_p = 1.0f;
  p.typical_p = 0.3f;
  CheckDrawsFollow(p, logits, {3}, 500);
  p.typical_p = 0.5f;
  CheckDrawsFollow(p, logits, {1, 3});
}

// The kept sets over a large random vocabulary match a brute-force full sort.
TG_TEST(large_vocab_kept_sets_match_brute_force) {
  const int64_t vocab = 128256;
  std::vector<float> logits = RandomLogits(vocab, 99, 2.0f);
  std::vector<double> probs = Softmax(logits);
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::set<int32_t> nucleus;
  double cumulative = 0.0;
  for (int32_t id : order) {
    nucleus.insert(id);
    cumulative += probs[id];
    if (cumulative >= 0.9) break;
  }
  // Typical set over the whole vocabulary.
  double entropy = 0.0;
  for (double q : probs) if (q > 0) entropy -= q * std::log(q);
  std::vector<int32_t> typical_order = order;
  std::sort(typical_order.begin(), typical_order.end(), [&](int32_t a, int32_t b) {
    return std::fabs(-std::log(probs[a]) - entropy) < std::fabs(-std::log(probs[b]) - entropy);
  });
  std::set<int32_t> typical;
  cumulative = 0.0;
  for (int32_t id : typical_order) {
    typical.insert(id);
    cumulative += probs[id];
    if (cumulative >= 0.5) break;
  }

  SamplingParams top_p = Sampling();
  top_p.top_p = 0.9f;
  SamplingParams typical_p = Sampling();
  typical_p.typical_p = 0.5f;
  SequenceSampler top_p_sampler(top_p, vocab), typical_sampler(typical_p, vocab);
  auto start = std::chrono::steady_clock::now();
  const int draws = 50;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> copy = logits;
    CHECK(nucleus.count(top_p_sampler.Sample(copy.data(), i, 5).token));
    copy = logits;
    CHECK(typical.count(typical_sampler.Sample(copy.data(), i, 5).token));
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("  vocab %ld: nucleus %zu tokens, typical %zu tokens, %.2f ms per top-p + typical pair\n",
              static_cast<long>(vocab), nucleus.size(), typical.size(), ms / draws);
}

TG_TEST(same_seed_and_index_give_the_same_token) {
  std::vector<float> logits = RandomLogits(1000, 3, 1.0f);
  SamplingParams a = Sampling();
  SamplingParams b = Sampling();
  b.seed = a.seed + 1;
  SequenceSampler sa(a, 1000), sa2(a, 1000), sb(b, 1000);
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    std::vector<float> c1 = logits, c2 = logits, c3 = logits;
    int32_t t1 = sa.Sample(c1.data(), i, 0).token;
    CHECK(t1 == sa2.Sample(c2.data(), i, 0).token);
    differ += t1 != sb.Sample(c3.data(), i, 0).token;
  }
  CHECK(differ > 150);
}

TG_TEST(logprob_is_log_softmax_after_penalties_and_temperature) {
  std::vector<float> logits = RandomLogits(300, 11);
  SamplingParams p = Sampling();
  p.temperature = 0.7f;
  p.top_k = 10;
  p.repetition_penalty = 1.5f;
  SequenceSampler sampler(p, 300);
  const int32_t seen[] = {4, 17, 17};
  sampler.Observe(seen, 3);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> processed = logits;
    SampleResult r = sampler.Sample(processed.data(), i, 3);
    // `processed` now holds the penalised, tempered logits; logprobs are over the whole vocabulary.
    std::vector<float> expected(300);
    tg::LogSoftmax(processed.data(), 300, expected.data());
    CHECK_NEAR(r.logprob, expected[r.token], 1e-5);
    for (size_t j = 0; j < r.top_ids.size(); ++j) CHECK_NEAR(r.top_logprobs[j], expected[r.top_ids[j]], 1e-5);
    float l = logits[17] > 0 ? logits[17] / 1.5f : logits[17] * 1.5f;
    CHECK_NEAR(processed[17], l / 0.7f, 1e-5);
  }
  std::vector<float> out(3);
  const float three[] = {0.0f, 0.0f, 0.0f};
  tg::LogSoftmax(three, 3, out.data());
  CHECK_NEAR(out[1], -std::log(3.0), 1e-6);
}

TG_TEST(top_n_is_sorted_with_ties_to_the_lower_id) {
  std::vector<float> logits = {0.5f, 2.0f, 1.0f, 2.0f, -3.0f, 1.0f, 0.9f};
  SequenceSampler sampler(SamplingParams{}, 7);
  std::vector<float> copy = logits;
  SampleResult r = sampler.Sample(copy.data(), 0, 4);
  CHECK((r.top_ids == std::vector<int32_t>{1, 3, 2, 5}));
  CHECK(r.top_logprobs.size() == 4);
  CHECK(r.top_logprobs[0] == r.top_logprobs[1] && r.top_logprobs[1] > r.top_logprobs[2]);
  CHECK(r.top_logprobs[0] == r.logprob);
  copy = logits;
  r = sampler.Sample(copy.data(), 0, 0);
  CHECK(r.top_ids.empty() && r.top_logprobs.empty());
  copy = logits;
  r = sampler.Sample(copy.data(), 0, 100);
  CHECK((r.top_ids == std::vector<int32_t>{1, 3, 2, 5, 6, 0, 4}));
}

TG_TEST(nan_logits_are_never_chosen) {
  std::vector<float> logits = {NAN, 1.0f, NAN, 0.5f};
  SamplingParams p = Sampling();
  p.top_p = 0.9f;
  SequenceSampler sampler(p, 4);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> copy = logits;
    int32_t t = sampler.Sample(copy.data(), i, 2).token;
    CHECK(t == 1 || t == 3);
  }
}

TG_TEST(uniform_from_seed_is_pure_and_uniform) {
  CHECK(tg::UniformFromSeed(42, 7) == tg::UniformFromSeed(42, 7));
  CHECK(tg::UniformFromSeed(42, 7) != tg::UniformFromSeed(43, 7));
  CHECK(tg::UniformFromSeed(42, 7) != tg::UniformFromSeed(42, 8));
  const int n = 200000;
  std::vector<int> bins(20, 0);
  double sum = 0.0;
  bool in_range = true;
  for (int i = 0; i < n; ++i) {
    // Neighbouring seeds and counters both, as requests use them.
    double u = tg::UniformFromSeed(static_cast<uint64_t>(i % 1000), static_cast<uint64_t>(i / 1000));
    in_range = in_range && u >= 0.0 && u < 1.0;
    sum += u;
    ++bins[static_cast<size_t>(u * 20)];
  }
  CHECK(in_range);
  CHECK_NEAR(sum / n, 0.5, 0.005);
  for (int b : bins) CHECK_NEAR(b, n / 20.0, n / 20.0 * 0.05);
}

// --- watermark ---------------------------------------------------------------

namespace {

SamplingParams Watermarked(float gamma, float delta) {
  SamplingParams p;
  p.watermark = true;
  p.watermark_gamma = gamma;
  p.watermark_delta = delta;
  return p;
}

std::vector<bool> Greenlist(int32_t prev, int64_t vocab, float gamma) {
  std::vector<bool> green(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) green[static_cast<size_t>(i)] = tg::WatermarkIsGreen(prev, static_cast<int32_t>(i), gamma);
  return green;
}

}  // namespace

TG_TEST(watermark_greenlist_holds_gamma_of_the_vocab) {
  const int64_t vocab = 32000;
  for (float gamma : {0.25f, 0.5f, 0.75f}) {
    for (int32_t prev : {1, 2, 17, 31999}) {
      std::vector<bool> green = Greenlist(prev, vocab, gamma);
      const double fraction = static_cast<double>(std::count(green.begin(), green.end(), true)) / vocab;
      // Binomial(V, gamma): the standard deviation of the fraction is below 0.003 here.
      CHECK_NEAR(fraction, gamma, 0.015);
    }
  }
}

TG_TEST(watermark_raises_green_logits_by_exactly_delta) {
  const int64_t vocab = 1000;
  SequenceSampler sampler(Watermarked(0.5f, 2.0f), vocab);
  const int32_t prompt[] = {5, 9, 42};
  sampler.Observe(prompt, 3);
  std::vector<float> logits = RandomLogits(vocab, 3);
  std::vector<float> copy = logits;
  sampler.Sample(copy.data(), 0, 0);
  std::vector<bool> green = Greenlist(42, vocab, 0.5f);  // seeded by the last observed token
  bool exact = true;
  for (int64_t i = 0; i < vocab; ++i) {
    const float want = green[static_cast<size_t>(i)] ? logits[static_cast<size_t>(i)] + 2.0f : logits[static_cast<size_t>(i)];
    exact = exact && copy[static_cast<size_t>(i)] == want;
  }
  CHECK(exact);
}

TG_TEST(watermark_greenlist_depends_only_on_the_previous_token) {
  const int64_t vocab = 5000;
  CHECK(Greenlist(7, vocab, 0.5f) == Greenlist(7, vocab, 0.5f));
  CHECK(Greenlist(7, vocab, 0.5f) != Greenlist(8, vocab, 0.5f));
  // Different previous tokens give (nearly) independent lists: about half the ids agree.
  std::vector<bool> a = Greenlist(100, vocab, 0.5f), b = Greenlist(101, vocab, 0.5f);
  int same = 0;
  for (int64_t i = 0; i < vocab; ++i) same += a[static_cast<size_t>(i)] == b[static_cast<size_t>(i)];
  CHECK_NEAR(static_cast<double>(same) / vocab, 0.5, 0.05);
  // The sampler follows the previous token, whatever came before it.
  SequenceSampler x(Watermarked(0.5f, 1.0f), vocab), y(Watermarked(0.5f, 1.0f), vocab);
  const int32_t px[] = {1, 2, 3, 77}, py[] = {9, 77};
  x.Observe(px, 4);
  y.Observe(py, 2);
  std::vector<float> lx(static_cast<size_t>(vocab), 0.0f), ly(static_cast<size_t>(vocab), 0.0f);
  x.Sample(lx.data(), 0, 0);
  y.Sample(ly.data(), 0, 0);
  CHECK(lx == ly);
}

TG_TEST(watermark_runs_before_the_penalties_and_greedy_sees_it) {
  const int64_t vocab = 64;
  const int32_t prev = 3;
  std::vector<bool> green = Greenlist(prev, vocab, 0.5f);
  int32_t g = -1, r = -1;  // a green and a red id
  for (int32_t i = 0; i < vocab && (g < 0 || r < 0); ++i) (green[static_cast<size_t>(i)] ? g : r) = i;
  CHECK(g >= 0 && r >= 0);
  SamplingParams p = Watermarked(0.5f, 2.0f);
  p.repetition_penalty = 2.0f;
  SequenceSampler sampler(p, vocab);
  const int32_t seen[] = {g, prev};
  sampler.Observe(seen, 2);
  std::vector<float> logits(static_cast<size_t>(vocab), -10.0f);
  logits[static_cast<size_t>(g)] = 2.0f;
  logits[static_cast<size_t>(r)] = 2.5f;
  SampleResult out = sampler.Sample(logits.data(), 0, 0);
  CHECK(logits[static_cast<size_t>(g)] == (2.0f + 2.0f) / 2.0f);  // bias first, then the penalty divides
  CHECK(logits[static_cast<size_t>(r)] == 2.5f);
  CHECK(out.token == r);
  SequenceSampler plain(Watermarked(0.5f, 2.0f), vocab);
  plain.Observe(&prev, 1);
  std::vector<float> l2(static_cast<size_t>(vocab), -10.0f);
  l2[static_cast<size_t>(g)] = 2.0f;
  l2[static_cast<size_t>(r)] = 2.5f;
  CHECK(plain.Sample(l2.data(), 0, 0).token == g);  // greedy picks the boosted green id
}

TG_TEST(watermark_with_a_large_delta_makes_sampled_tokens_green) {
  const int64_t vocab = 2000;
  const float gamma = 0.25f;
  SamplingParams p = Watermarked(gamma, 8.0f);
  p.do_sample = true;
  p.seed = 99;
  SamplingParams off = p;
  off.watermark = false;
  SequenceSampler marked(p, vocab), plain(off, vocab);
  int32_t prev_marked = 1, prev_plain = 1;
  marked.Observe(&prev_marked, 1);
  plain.Observe(&prev_plain, 1);
  int green_marked = 0, green_plain = 0;
  const int steps = 400;
  for (int i = 0; i < steps; ++i) {
    std::vector<float> logits = RandomLogits(vocab, 1000 + static_cast<uint32_t>(i), 1.0f);
    std::vector<float> copy = logits;
    const int32_t t = marked.Sample(copy.data(), i, 0).token;
    green_marked += tg::WatermarkIsGreen(prev_marked, t, gamma);
    marked.Observe(&t, 1);
    prev_marked = t;
    const int32_t u = plain.Sample(logits.data(), i, 0).token;
    green_plain += tg::WatermarkIsGreen(prev_plain, u, gamma);
    plain.Observe(&u, 1);
    prev_plain = u;
  }
  // The detector's z-score: (green - gamma T) / sqrt(T gamma (1 - gamma)).
  auto z = [&](int green) { return (green - gamma * steps) / std::sqrt(steps * gamma * (1.0 - gamma)); };
  CHECK(green_marked > 0.9 * steps);
  CHECK(z(green_marked) > 10.0);
  CHECK(std::fabs(z(green_plain)) < 4.0);
}

TG_TEST(watermark_off_or_without_a_previous_token_leaves_logits_alone) {
  std::vector<float> logits = RandomLogits(500, 8);
  SamplingParams p = Watermarked(0.5f, 2.0f);
  SequenceSampler unseeded(p, 500);
  std::vector<float> copy = logits;
  unseeded.Sample(copy.data(), 0, 0);
  CHECK(copy == logits);
  p.watermark = false;
  SequenceSampler off(p, 500);
  const int32_t prev = 4;
  off.Observe(&prev, 1);
  off.Sample(copy.data(), 0, 0);
  CHECK(copy == logits);
}

TG_TEST_MAIN()
