// The GPU sampler (backend/cuda/sampling) against the CPU sampler on fresh
// random logits: greedy tokens and top-n ids identical, logprobs within 1e-4,
// seeded draws identical except for rare rounding flips (rate printed), the
// penalty lists equal to the counts they mirror; then timings at V = 128256.
// CMake builds only tests/*_test.cc, so scripts/device-sampling-test.sh builds
// this on the GPU machine, from the repository root:
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/src -Inative/tests \
//     native/tests/cuda_sampling/sampling_test.cu native/src/backend/cuda/sampling/*.cu \
//     native/src/sampling/sampler.cc -o build/cuda_sampling_test
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling/gpu_sampler.h"
#include "backend/cuda/sampling/greedy_rows.h"
#include "sampling/sampler.h"
#include "test_util.h"

using tg::SamplingParams;
using tg::SequenceSampler;
using tg::cuda::GpuPenaltyState;
using tg::cuda::GpuSamplingRow;
using tg::cuda::kMaxTopN;

namespace {

template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceArray(size_t count) : n(count) { TG_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * std::max<size_t>(n, 1))); }
  ~DeviceArray() { cudaFree(ptr); }
  void Upload(const std::vector<T>& v) { TG_CUDA_CHECK(cudaMemcpy(ptr, v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice)); }
  std::vector<T> Download() const {
    std::vector<T> v(n);
    TG_CUDA_CHECK(cudaMemcpy(v.data(), ptr, sizeof(T) * n, cudaMemcpyDeviceToHost));
    return v;
  }
  // Before each run: floats become NaN, ints -1515870811, neither a valid output.
  void Poison() { TG_CUDA_CHECK(cudaMemset(ptr, std::is_floating_point<T>::value ? 0xFF : 0xA5, sizeof(T) * n)); }
};

// The parameter sets the rows cycle through: each warper alone and together, with and without penalties.
std::vector<SamplingParams> ParamSets(int vocab) {
  auto p = [](float t, int k, float top_p, float typ, bool sample, float rep, float freq) {
    SamplingParams s;
    s.temperature = t, s.top_k = k, s.top_p = top_p, s.typical_p = typ, s.do_sample = sample;
    s.repetition_penalty = rep, s.frequency_penalty = freq;
    return s;
  };
  std::vector<SamplingParams> sets{
      p(1.0f, 0, 1.0f, 1.0f, false, 1.0f, 0.0f),      // greedy
      p(1.0f, 0, 1.0f, 1.0f, false, 1.3f, 0.5f),      // greedy with all three penalties
      p(1.0f, 0, 1.0f, 1.0f, true, 1.0f, 0.0f),       // plain draw
      p(0.7f, 0, 1.0f, 1.0f, false, 1.0f, 0.0f),      // temperature implies sampling
      p(0.8f, 40, 1.0f, 1.0f, true, 1.0f, 0.0f),      // top-k
      p(1.0f, 0, 0.9f, 1.0f, true, 1.0f, 0.0f),       // top-p
      p(1.0f, 0, 1.0f, 0.8f, true, 1.0f, 0.0f),       // typical-p
      p(1.2f, 100, 0.8f, 0.9f, true, 1.0f, 0.0f),     // all warpers
      p(0.9f, 60, 0.95f, 0.7f, true, 1.2f, 0.3f),     // all warpers and all penalties
      p(1.0f, 1, 1.0f, 1.0f, true, 1.0f, 0.0f),       // top-k 1
      p(1.5f, 0, 0.3f, 1.0f, true, 1.5f, 0.0f),       // small top-p, repetition penalty
      p(1.0f, std::min(5000, vocab - 1), 0.99f, 1.0f, true, 1.0f, 0.0f),  // wide top-k
      p(0.6f, 0, 1.0f, 0.2f, true, 1.0f, 1.0f),       // narrow typical, frequency penalty
      p(1.0f, 0, 1.0f, 1.0f, false, 0.8f, -0.4f),     // penalties that raise seen tokens
      p(1.0f, 0, 1.0f, 1.0f, true, 1.0f, 0.0f),       // presence penalty alone (set below)
  };
  sets[1].presence_penalty = 0.7f;
  sets[8].presence_penalty = 0.4f;
  sets.back().presence_penalty = 1.5f;
  return sets;
}

// Peaked (most mass on a few tokens), flat (tiny spread), or a plateau (90% of
// the row one value: every bound ties, so the radix-select paths run), with
// ties, NaN and -inf sprinkled in.
enum Shape { kPeaked, kFlat, kPlateau };
std::vector<float> RandomLogits(int vocab, Shape shape, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, shape == kPeaked ? 4.0f : shape == kFlat ? 0.05f : 1.0f);
  std::uniform_int_distribution<int> any(0, vocab - 1);
  std::vector<float> l(static_cast<size_t>(vocab));
  for (float& x : l) x = shape == kPlateau && rng() % 10 != 0 ? 1.0f : normal(rng);
  if (shape == kPeaked) l[any(rng)] += 12.0f;
  const float tied = l[any(rng)];
  for (int i = 0; i < 8; ++i) l[any(rng)] = tied;
  const float top = *std::max_element(l.begin(), l.end());
  l[any(rng)] = top, l[any(rng)] = top;  // ties at the top: the lower id wins
  l[any(rng)] = NAN;
  l[any(rng)] = -INFINITY;
  return l;
}

struct Totals {
  long sampled = 0, flips = 0;
};
Totals& Overall() {
  static Totals t;
  return t;
}

// One batch: `steps` decode steps of `batch` rows over fresh logits, every output compared with the CPU's.
void RunCase(int vocab, int batch, Shape shape, uint32_t seed, int steps) {
  std::mt19937 rng(seed);
  const auto sets = ParamSets(vocab);
  GpuPenaltyState penalties(batch, 1024);
  std::vector<SequenceSampler> cpu;
  std::vector<std::map<int32_t, int32_t>> counts(static_cast<size_t>(batch));
  std::vector<GpuSamplingRow> rows(static_cast<size_t>(batch));
  std::vector<int32_t> top_n(static_cast<size_t>(batch));
  std::vector<int32_t> obs_slots, obs_offsets{0}, obs_tokens;
  for (int r = 0; r < batch; ++r) {
    SamplingParams p = sets[(static_cast<size_t>(r) + seed) % sets.size()];
    p.seed = rng();
    cpu.emplace_back(p, vocab);
    top_n[r] = static_cast<int32_t>(rng() % (kMaxTopN + 1));
    std::vector<int32_t> prompt(20 + rng() % 300);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % std::min(vocab, 600));
    cpu.back().Observe(prompt.data(), static_cast<int64_t>(prompt.size()));
    for (int32_t t : prompt) ++counts[r][t];
    if (r % 2 == 0) {  // half through the host upload, half through the observe kernel
      const auto pairs = tg::cuda::CountTokens(prompt.data(), static_cast<int64_t>(prompt.size()));
      penalties.SetCounts(r, pairs.data(), static_cast<int32_t>(pairs.size()), nullptr);
    } else {
      obs_slots.push_back(r);
      obs_tokens.insert(obs_tokens.end(), prompt.begin(), prompt.end());
      obs_offsets.push_back(static_cast<int32_t>(obs_tokens.size()));
    }
  }
  if (!obs_slots.empty()) {
    DeviceArray<int32_t> d_slots(obs_slots.size()), d_offsets(obs_offsets.size()), d_tokens(obs_tokens.size());
    d_slots.Upload(obs_slots), d_offsets.Upload(obs_offsets), d_tokens.Upload(obs_tokens);
    penalties.ObserveTokens(d_slots.ptr, d_offsets.ptr, d_tokens.ptr, static_cast<int32_t>(obs_slots.size()), nullptr);
    TG_CUDA_CHECK(cudaDeviceSynchronize());
  }

  DeviceArray<float> d_logits(static_cast<size_t>(batch) * vocab);
  DeviceArray<GpuSamplingRow> d_rows(rows.size());
  DeviceArray<int32_t> d_tokens(batch), d_top_ids(static_cast<size_t>(batch) * kMaxTopN);
  DeviceArray<float> d_logprobs(batch), d_top_logprobs(static_cast<size_t>(batch) * kMaxTopN);
  tg::cuda::GpuSamplingOutputs out{d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN};

  const int64_t first_index = rng() % 1000;
  for (int step = 0; step < steps; ++step) {
    std::vector<float> logits;
    for (int r = 0; r < batch; ++r) {
      auto l = RandomLogits(vocab, shape, rng);
      logits.insert(logits.end(), l.begin(), l.end());
      rows[r] = tg::cuda::MakeGpuSamplingRow(cpu[r].params(), first_index + step, top_n[r], r, true);
    }
    d_logits.Upload(logits);
    d_rows.Upload(rows);
    d_tokens.Poison(), d_logprobs.Poison(), d_top_ids.Poison(), d_top_logprobs.Poison();
    tg::cuda::LaunchGpuSampling(nullptr, d_logits.ptr, batch, vocab, d_rows.ptr, penalties.view(), out);
    TG_CUDA_CHECK(cudaDeviceSynchronize());
    const auto tokens = d_tokens.Download();
    const auto logprobs = d_logprobs.Download();
    const auto top_ids = d_top_ids.Download();
    const auto top_logprobs = d_top_logprobs.Download();

    std::vector<float> processed(static_cast<size_t>(vocab)), log_softmax(static_cast<size_t>(vocab));
    for (int r = 0; r < batch; ++r) {
      std::copy(logits.begin() + static_cast<int64_t>(r) * vocab, logits.begin() + static_cast<int64_t>(r + 1) * vocab,
                processed.begin());
      const tg::SampleResult want = cpu[r].Sample(processed.data(), first_index + step, top_n[r]);
      tg::LogSoftmax(processed.data(), vocab, log_softmax.data());  // `processed` now holds penalised, scaled logits
      const int32_t got = tokens[r];
      CHECK(got >= 0 && got < vocab);
      if (got < 0 || got >= vocab) continue;
      if (!cpu[r].params().Samples()) {
        if (got != want.token) std::printf("  greedy row %d: gpu %d cpu %d\n", r, got, want.token);
        CHECK(got == want.token);
      } else {
        ++Overall().sampled;
        if (got != want.token) {
          ++Overall().flips;
          std::printf("  flip: V=%d row %d params %zu: gpu %d (lp %.6f) cpu %d (lp %.6f)\n", vocab, r,
                      (static_cast<size_t>(r) + seed) % sets.size(), got, log_softmax[got], want.token,
                      log_softmax[want.token]);
        }
      }
      CHECK_NEAR(logprobs[r], log_softmax[got], 1e-4);
      for (int i = 0; i < kMaxTopN; ++i) {
        const size_t at = static_cast<size_t>(r) * kMaxTopN + i;
        if (i < top_n[r]) {
          CHECK(top_ids[at] == want.top_ids[i]);
          CHECK_NEAR(top_logprobs[at], want.top_logprobs[i], 1e-4);
        } else {
          CHECK(top_ids[at] == -1);
        }
      }
      // Both sides observe the GPU's choice, so that their counts stay equal after a flip.
      cpu[r].Observe(&got, 1);
      const SamplingParams& p = cpu[r].params();
      if (p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
        ++counts[r][got];
      }
    }
  }
  // The device lists hold exactly the counts of the prompt and of the observed choices.
  auto view = penalties.view();
  std::vector<int32_t> sizes(static_cast<size_t>(batch));
  std::vector<int2> pairs(static_cast<size_t>(batch) * view.capacity);
  TG_CUDA_CHECK(cudaMemcpy(sizes.data(), view.sizes, sizeof(int32_t) * sizes.size(), cudaMemcpyDeviceToHost));
  TG_CUDA_CHECK(cudaMemcpy(pairs.data(), view.pairs, sizeof(int2) * pairs.size(), cudaMemcpyDeviceToHost));
  for (int r = 0; r < batch; ++r) {
    std::map<int32_t, int32_t> got;
    for (int i = 0; i < sizes[r]; ++i) got[pairs[static_cast<size_t>(r) * view.capacity + i].x] += pairs[static_cast<size_t>(r) * view.capacity + i].y;
    CHECK(got == counts[r]);
  }
}

TG_TEST(matches_cpu_sampler_over_vocab_batch_and_parameters) {
  uint32_t seed = 1;
  for (int vocab : {512, 32000, 128256}) {
    for (int batch : {1, 7, 64}) {
      for (Shape shape : {kPeaked, kFlat, kPlateau}) RunCase(vocab, batch, shape, seed++, 2);
    }
  }
  // Past 131072 ids a row has more draw segments than shared memory holds: the scan path draws.
  // 131075 is odd: rows are not 16-byte aligned, so the loads are scalar.
  for (Shape shape : {kPeaked, kFlat, kPlateau}) RunCase(131075, 7, shape, seed++, 2);
}

TG_TEST(seeded_draws_flip_rarely) {
  uint32_t seed = 100;
  for (int round = 0; round < 4; ++round) {
    RunCase(32000, 256, kPeaked, seed++, 2);
    RunCase(32000, 256, kFlat, seed++, 2);
  }
  const Totals t = Overall();
  const double rate = t.sampled ? static_cast<double>(t.flips) / t.sampled : 0.0;
  std::printf("seeded draws: %ld sampled rows, %ld differ from the CPU (%.3f%%)\n", t.sampled, t.flips, 100 * rate);
  CHECK(rate <= 0.01);
}

TG_TEST(every_logit_impossible_gives_token_minus_one) {
  const int vocab = 1000;
  std::vector<float> logits(vocab, -INFINITY);
  logits[3] = NAN;
  DeviceArray<float> d_logits(vocab);
  d_logits.Upload(logits);
  SamplingParams p;
  std::vector<GpuSamplingRow> rows{tg::cuda::MakeGpuSamplingRow(p, 0, 2, -1, false)};
  DeviceArray<GpuSamplingRow> d_rows(1);
  d_rows.Upload(rows);
  DeviceArray<int32_t> d_tokens(1), d_top_ids(kMaxTopN);
  DeviceArray<float> d_logprobs(1), d_top_logprobs(kMaxTopN);
  tg::cuda::LaunchGpuSampling(nullptr, d_logits.ptr, 1, vocab, d_rows.ptr, {},
                              {d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN});
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK(d_tokens.Download()[0] == -1);
  CHECK(d_top_ids.Download()[0] == -1);
}

// The greedy rows' two passes (greedy_rows.h) over `parts` vocabulary shards, as the ranks
// of a tensor-parallel group run them: each shard [batch][ceil(vocab / parts)], the last one
// padded with values larger than any logit (which must never win), its pieces laid out
// back to back as the all-gather lays them out, then one merge.
struct GreedyOutputs {
  std::vector<int32_t> tokens, top_ids;
  std::vector<float> logprobs, top_logprobs;
};
GreedyOutputs RunGreedyRows(const std::vector<float>& logits, int batch, int vocab, int parts,
                            const std::vector<GpuSamplingRow>& rows) {
  const int cols = (vocab + parts - 1) / parts;
  const size_t piece = tg::cuda::GreedyPartialFloats(batch, cols, kMaxTopN);
  DeviceArray<float> d_pieces(piece * parts), d_shard(static_cast<size_t>(batch) * cols);
  DeviceArray<GpuSamplingRow> d_rows(rows.size());
  d_rows.Upload(rows);
  d_pieces.Poison();
  for (int part = 0; part < parts; ++part) {
    std::vector<float> shard(static_cast<size_t>(batch) * cols, 3e38f);
    for (int r = 0; r < batch; ++r) {
      for (int c = 0; c < cols && part * cols + c < vocab; ++c) {
        shard[static_cast<size_t>(r) * cols + c] = logits[static_cast<size_t>(r) * vocab + part * cols + c];
      }
    }
    d_shard.Upload(shard);
    tg::cuda::LaunchGreedyPartials(nullptr, d_shard.ptr, batch, cols, part * cols, vocab, d_rows.ptr, kMaxTopN,
                                   d_pieces.ptr + piece * part);
    TG_CUDA_CHECK(cudaDeviceSynchronize());  // the next shard reuses d_shard
  }
  DeviceArray<int32_t> d_tokens(batch), d_top_ids(static_cast<size_t>(batch) * kMaxTopN);
  DeviceArray<float> d_logprobs(batch), d_top_logprobs(static_cast<size_t>(batch) * kMaxTopN);
  d_tokens.Poison(), d_logprobs.Poison(), d_top_ids.Poison(), d_top_logprobs.Poison();
  tg::cuda::LaunchGreedyMerge(nullptr, d_pieces.ptr, parts, batch, cols, vocab, d_rows.ptr, kMaxTopN,
                              {d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN});
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  return {d_tokens.Download(), d_top_ids.Download(), d_logprobs.Download(), d_top_logprobs.Download()};
}

TG_TEST(greedy_rows_match_the_cpu_and_the_sampling_kernel_over_shards) {
  std::mt19937 rng(11);
  SamplingParams greedy;
  for (int vocab : {512, 32000, 128256, 131075}) {
    for (int batch : {1, 7, 64}) {
      for (Shape shape : {kPeaked, kFlat, kPlateau}) {
        std::vector<float> logits;
        std::vector<GpuSamplingRow> rows;
        std::vector<int32_t> top_n;
        for (int r = 0; r < batch; ++r) {
          auto l = RandomLogits(vocab, shape, rng);
          logits.insert(logits.end(), l.begin(), l.end());
          top_n.push_back(static_cast<int32_t>(rng() % (kMaxTopN + 1)));
          rows.push_back(tg::cuda::MakeGpuSamplingRow(greedy, 0, top_n.back(), -1, false));
          CHECK(tg::cuda::GreedyRowsServe(rows.back()));
        }
        // The sampling kernel on the same rows: the path greedy rows used to take.
        DeviceArray<float> d_logits(logits.size());
        d_logits.Upload(logits);
        DeviceArray<GpuSamplingRow> d_rows(rows.size());
        d_rows.Upload(rows);
        DeviceArray<int32_t> d_tokens(batch), d_top_ids(static_cast<size_t>(batch) * kMaxTopN);
        DeviceArray<float> d_logprobs(batch), d_top_logprobs(static_cast<size_t>(batch) * kMaxTopN);
        tg::cuda::LaunchGpuSampling(nullptr, d_logits.ptr, batch, vocab, d_rows.ptr, {},
                                    {d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN});
        TG_CUDA_CHECK(cudaDeviceSynchronize());
        const auto kernel_tokens = d_tokens.Download(), kernel_top_ids = d_top_ids.Download();
        const auto kernel_logprobs = d_logprobs.Download(), kernel_top_logprobs = d_top_logprobs.Download();

        std::vector<float> row(static_cast<size_t>(vocab)), log_softmax(static_cast<size_t>(vocab));
        for (int parts : {1, 2, 3, 4}) {
          const GreedyOutputs got = RunGreedyRows(logits, batch, vocab, parts, rows);
          for (int r = 0; r < batch; ++r) {
            std::copy(logits.begin() + static_cast<int64_t>(r) * vocab,
                      logits.begin() + static_cast<int64_t>(r + 1) * vocab, row.begin());
            SequenceSampler cpu(greedy, vocab);
            const tg::SampleResult want = cpu.Sample(row.data(), 0, top_n[r]);
            tg::LogSoftmax(row.data(), vocab, log_softmax.data());
            if (got.tokens[r] != want.token) {
              std::printf("  V=%d B=%d parts %d row %d: greedy rows %d, cpu %d\n", vocab, batch, parts, r,
                          got.tokens[r], want.token);
            }
            CHECK(got.tokens[r] == want.token);
            CHECK(got.tokens[r] == kernel_tokens[r]);
            CHECK_NEAR(got.logprobs[r], log_softmax[want.token], 1e-4);
            CHECK_NEAR(got.logprobs[r], kernel_logprobs[r], 1e-5);
            for (int i = 0; i < kMaxTopN; ++i) {
              const size_t at = static_cast<size_t>(r) * kMaxTopN + i;
              CHECK(got.top_ids[at] == kernel_top_ids[at]);
              if (i < top_n[r]) {
                CHECK(got.top_ids[at] == want.top_ids[i]);
                CHECK_NEAR(got.top_logprobs[at], want.top_logprobs[i], 1e-4);
              } else {
                CHECK(got.top_ids[at] == -1 && got.top_logprobs[at] == -INFINITY);
              }
            }
          }
        }
      }
    }
  }
}

TG_TEST(greedy_rows_serve_only_unpenalised_greedy_rows) {
  SamplingParams greedy, sampled, penalised, temperature;
  sampled.do_sample = true;
  penalised.repetition_penalty = 1.2f;
  temperature.temperature = 0.7f;
  CHECK(tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(greedy, 0, kMaxTopN, 3, true)));
  CHECK(tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(penalised, 0, 0, -1, false)));  // no slot: no penalty
  CHECK(!tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(penalised, 0, 0, 3, true)));
  CHECK(!tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(sampled, 0, 0, -1, false)));
  CHECK(!tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(temperature, 0, 0, -1, false)));
  CHECK(!tg::cuda::GreedyRowsServe(tg::cuda::MakeGpuSamplingRow(greedy, 0, kMaxTopN + 1, -1, false)));
}

TG_TEST(greedy_rows_with_no_finite_logit_give_token_minus_one) {
  const int vocab = 5000;
  std::vector<float> logits(2 * vocab, -INFINITY);
  logits[3] = NAN;
  logits[vocab + 4000] = 2.5f;  // the second row has one finite logit, in the last shard
  SamplingParams p;
  const std::vector<GpuSamplingRow> rows{tg::cuda::MakeGpuSamplingRow(p, 0, 2, -1, false),
                                         tg::cuda::MakeGpuSamplingRow(p, 0, 2, -1, false)};
  for (int parts : {1, 2}) {
    const GreedyOutputs got = RunGreedyRows(logits, 2, vocab, parts, rows);
    CHECK(got.tokens[0] == -1 && std::isnan(got.logprobs[0]));
    CHECK(got.top_ids[0] == -1 && got.top_ids[1] == -1 && got.top_ids[2] == -1);
    CHECK(got.tokens[1] == 4000 && got.logprobs[1] == 0.0f);
    // The row's other ids are -inf: its top-2 ends with one of them, as on the CPU.
    std::vector<float> row(logits.begin() + vocab, logits.end());
    const tg::SampleResult want = SequenceSampler(p, vocab).Sample(row.data(), 0, 2);
    CHECK(want.top_ids.size() == 2 && got.top_ids[kMaxTopN] == 4000);
    CHECK(want.top_ids.size() == 2 && got.top_ids[kMaxTopN + 1] == want.top_ids[1]);
    CHECK(got.top_logprobs[kMaxTopN + 1] == -INFINITY);
  }
}

// The floor of one block per row: a kernel that only reads each row once
// (float4 loads, 8 tiles in flight per thread) and sums it.
template <int kThreads>
__global__ void ReadRowsKernel(const float* logits, int vocab, float* out) {
  const float4* row = reinterpret_cast<const float4*>(logits + static_cast<size_t>(blockIdx.x) * vocab);
  const int quads = vocab / 4;
  float sum = 0.0f;
  for (int q0 = threadIdx.x; q0 < quads; q0 += 8 * kThreads) {
    float4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const int q = q0 + u * kThreads;
      v[u] = q < quads ? row[q] : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) sum += v[u].x + v[u].y + v[u].z + v[u].w;
  }
  atomicAdd(out + blockIdx.x, sum);
}

// Median microseconds of launch(i) over 50 runs after 10 warm-ups (events on the default
// stream); after(i) runs untimed after each.
template <class Launch, class After>
float MedianMicros(cudaEvent_t start, cudaEvent_t stop, Launch launch, After after) {
  std::vector<float> times;
  for (int i = 0; i < 60; ++i) {
    TG_CUDA_CHECK(cudaEventRecord(start));
    launch(i);
    TG_CUDA_CHECK(cudaEventRecord(stop));
    TG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    if (i >= 10) times.push_back(ms * 1000.0f);
    after(i);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Median microseconds of the greedy rows' two passes as one rank of `parts` runs them: the
// first pass over its shard of the row, then the merge of every rank's pieces (the others'
// filled beforehand; the all-gather between them is not timed here).
void TimeGreedyRows(const float* sets, int batch, int vocab, int kSets, double floor_us, cudaEvent_t start,
                    cudaEvent_t stop) {
  for (int top_n : {0, 5}) {
    SamplingParams greedy;
    std::vector<GpuSamplingRow> rows(static_cast<size_t>(batch), tg::cuda::MakeGpuSamplingRow(greedy, 0, top_n, -1, false));
    DeviceArray<GpuSamplingRow> d_rows(rows.size());
    d_rows.Upload(rows);
    DeviceArray<int32_t> d_tokens(batch), d_top_ids(static_cast<size_t>(batch) * kMaxTopN);
    DeviceArray<float> d_logprobs(batch), d_top_logprobs(static_cast<size_t>(batch) * kMaxTopN);
    const tg::cuda::GpuSamplingOutputs out{d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN};
    for (int parts : {1, 2, 4}) {
      const int cols = (vocab + parts - 1) / parts;
      const size_t piece = tg::cuda::GreedyPartialFloats(batch, cols, kMaxTopN);
      DeviceArray<float> pieces(piece * parts);
      // Rank 0's shard: the first `cols` columns of each row, as a [batch][cols] array.
      DeviceArray<float> shard(static_cast<size_t>(batch) * cols * kSets);
      for (int set = 0; set < kSets; ++set) {
        TG_CUDA_CHECK(cudaMemcpy2D(shard.ptr + static_cast<size_t>(set) * batch * cols, cols * sizeof(float),
                                   sets + static_cast<size_t>(set) * batch * vocab, vocab * sizeof(float),
                                   cols * sizeof(float), batch, cudaMemcpyDeviceToDevice));
      }
      for (int part = 0; part < parts; ++part) {
        tg::cuda::LaunchGreedyPartials(nullptr, shard.ptr, batch, cols, part * cols, vocab, d_rows.ptr, kMaxTopN,
                                       pieces.ptr + piece * part);
      }
      const float us = MedianMicros(
          start, stop,
          [&](int i) {
            tg::cuda::LaunchGreedyPartials(nullptr, shard.ptr + static_cast<size_t>(i % kSets) * batch * cols,
                                           batch, cols, 0, vocab, d_rows.ptr, kMaxTopN, pieces.ptr);
            tg::cuda::LaunchGreedyMerge(nullptr, pieces.ptr, parts, batch, cols, vocab, d_rows.ptr, kMaxTopN, out);
          },
          [](int) {});
      std::printf("timing B=%-3d V=%d peaked greedy rows, top_n=%d, one rank of %d  %8.1f us  (floor %.1f us)\n",
                  batch, vocab, top_n, parts, us, floor_us / parts);
    }
  }
}

// Median microseconds of one sampling launch over a batch at V = 128256, per parameter set.
TG_TEST(timing) {
  const int vocab = 128256;
  // The copy bandwidth the floor is measured against: 1 GiB device-to-device, read + write.
  const size_t copy_bytes = size_t{1} << 29;
  DeviceArray<char> a(copy_bytes), b(copy_bytes);
  TG_CUDA_CHECK(cudaMemset(a.ptr, 1, copy_bytes));
  cudaEvent_t start, stop;
  TG_CUDA_CHECK(cudaEventCreate(&start));
  TG_CUDA_CHECK(cudaEventCreate(&stop));
  float copy_ms = 1e9f;
  for (int i = 0; i < 5; ++i) {
    TG_CUDA_CHECK(cudaEventRecord(start));
    TG_CUDA_CHECK(cudaMemcpy(b.ptr, a.ptr, copy_bytes, cudaMemcpyDeviceToDevice));
    TG_CUDA_CHECK(cudaEventRecord(stop));
    TG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    copy_ms = std::min(copy_ms, ms);
  }
  const double bandwidth = 2.0 * copy_bytes / (copy_ms * 1e-3);
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", bandwidth / 1e9);

  struct Config { const char* name; SamplingParams p; int top_n; };
  SamplingParams greedy, temp, nucleus, warped, all;
  temp.temperature = 0.7f;
  nucleus.temperature = 0.7f, nucleus.top_p = 0.9f;
  warped.temperature = 0.7f, warped.top_k = 50, warped.top_p = 0.9f;
  all = warped, all.typical_p = 0.95f, all.repetition_penalty = 1.1f, all.frequency_penalty = 0.1f;
  const Config configs[] = {{"greedy", greedy, 0},        {"greedy top_n=5", greedy, 5},
                            {"temperature", temp, 0},     {"T+top_p 0.9", nucleus, 0},
                            {"T+top_k 50+top_p 0.9, top_n=5", warped, 5},
                            {"+typical+penalties, top_n=5", all, 5}};
  std::mt19937 rng(7);
  for (int batch : {1, 64}) {
    constexpr int kSets = 4;  // rotate input sets so that L2 does not serve the first read
    GpuPenaltyState penalties(batch, 4096);
    std::vector<int32_t> history(2000);
    for (int32_t& t : history) t = static_cast<int32_t>(rng() % vocab);
    const auto pairs = tg::cuda::CountTokens(history.data(), static_cast<int64_t>(history.size()));
    for (int r = 0; r < batch; ++r) penalties.SetCounts(r, pairs.data(), static_cast<int32_t>(pairs.size()), nullptr);
    DeviceArray<int32_t> d_tokens(batch), d_top_ids(static_cast<size_t>(batch) * kMaxTopN);
    DeviceArray<float> d_logprobs(batch), d_top_logprobs(static_cast<size_t>(batch) * kMaxTopN);
    DeviceArray<GpuSamplingRow> d_rows(batch);
    const double floor_us = 4.0 * batch * vocab / bandwidth * 1e6;
    {  // one read of each row by one block: what any one-block-per-row pass costs at least
      DeviceArray<float> rows_in(static_cast<size_t>(batch) * vocab * kSets), sums(batch);
      TG_CUDA_CHECK(cudaMemset(rows_in.ptr, 0x3F, rows_in.n * sizeof(float)));  // 0.747f, not zeros
      for (int threads : {512, 1024}) {
        const float us = MedianMicros(
            start, stop,
            [&](int i) {
              const float* input = rows_in.ptr + static_cast<size_t>(i % kSets) * batch * vocab;
              if (threads == 512) ReadRowsKernel<512><<<batch, 512>>>(input, vocab, sums.ptr);
              else ReadRowsKernel<1024><<<batch, 1024>>>(input, vocab, sums.ptr);
              TG_CUDA_CHECK(cudaGetLastError());
            },
            [](int) {});
        std::printf("timing B=%-3d V=%d read-only pass, one block of %d per row    %8.1f us  (floor %.1f us)\n",
                    batch, vocab, threads, us, floor_us);
      }
    }
    for (Shape shape : {kPeaked, kFlat}) {
      std::vector<float> logits;
      for (int r = 0; r < batch * kSets; ++r) {
        auto l = RandomLogits(vocab, shape, rng);
        logits.insert(logits.end(), l.begin(), l.end());
      }
      // The sampler divides by the temperature and applies penalties in place, so each
      // set is restored from `pristine` after its run (untimed, and three sets before its next).
      DeviceArray<float> pristine(logits.size()), work(logits.size());
      pristine.Upload(logits);
      work.Upload(logits);
      const size_t set_floats = static_cast<size_t>(batch) * vocab;
      for (const Config& c : configs) {
        if (shape == kFlat && c.p.top_p == 1.0f && c.top_n == 0) continue;  // flat rows change only truncation
        std::vector<GpuSamplingRow> rows;
        for (int r = 0; r < batch; ++r) rows.push_back(tg::cuda::MakeGpuSamplingRow(c.p, r, c.top_n, r, false));
        d_rows.Upload(rows);
        auto input = [&](int i) { return work.ptr + (i % kSets) * set_floats; };
        const float us = MedianMicros(
            start, stop,
            [&](int i) {
              tg::cuda::LaunchGpuSampling(nullptr, input(i), batch, vocab, d_rows.ptr, penalties.view(),
                                          {d_tokens.ptr, d_logprobs.ptr, d_top_ids.ptr, d_top_logprobs.ptr, kMaxTopN});
            },
            [&](int i) {
              TG_CUDA_CHECK(cudaMemcpy(input(i), pristine.ptr + (i % kSets) * set_floats, set_floats * sizeof(float),
                                       cudaMemcpyDeviceToDevice));
            });
        std::printf("timing B=%-3d V=%d %-6s %-32s %8.1f us  (floor %.1f us)\n", batch, vocab,
                    shape == kPeaked ? "peaked" : "flat", c.name, us, floor_us);
      }
      if (shape == kPeaked) TimeGreedyRows(work.ptr, batch, vocab, kSets, floor_us, start, stop);
    }
  }
}

}  // namespace

// An argument keeps only the tests whose name contains it (the benchmark script runs "timing" alone).
int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no GPU\n");
    return 0;
  }
  if (argc > 1) {
    auto& tests = tgtest::Registry();
    tests.erase(std::remove_if(tests.begin(), tests.end(),
                               [&](const auto& t) { return t.first.find(argv[1]) == std::string::npos; }),
                tests.end());
  }
  return tgtest::RunAll();
}
