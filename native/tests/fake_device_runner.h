// A stand-in for the GPU runner in the engine's unit tests: a ModelRunner with a device
// sampler that runs steps ahead (model_runner.h), cheap enough for CI, which has no GPU.
// Its "model" samples for each row a fixed function of the row's input token, its
// position, the tokens its KV blocks hold before it and, when the request samples, the
// draw's seed and counter: a token fed wrongly, a KV write lost or misplaced, or a draw
// with the wrong counter changes the tokens that follow. A step is computed when it is
// queued, in the order the device's stream would run it, and handed back by FinishStep.
// A breach of the slot protocol throws, which fails the test.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/model_runner.h"

namespace tgtest {

class FakeDeviceRunner : public tg::ModelRunner {
 public:
  // What the device was asked to compute, so that a test can tell where results came from.
  struct Counts {
    int64_t steps = 0;        // queued by EnqueueStep, ForwardAndSample or Forward
    int64_t ahead_steps = 0;  // queued by EnqueueDecodeAhead
  };
  // As the CUDA sampler's: no watermark, and a few top-n at most.
  static constexpr int32_t kMaxDeviceTopN = 5;

  explicit FakeDeviceRunner(int64_t vocab) : vocab_(vocab) {}

  const Counts& counts() const { return counts_; }
  // The next FinishStep fails as the CUDA runner's does when a row has no finite logit:
  // the slot is free again and the step's results are lost.
  void FailNextFinish() { fail_next_finish_ = true; }
  int busy_slots() const {
    int busy = 0;
    for (const Slot& s : slots_) busy += s.busy ? 1 : 0;
    return busy;
  }

  const tg::TpSlice& slice() const override { return slice_; }
  int64_t weight_bytes() const override { return 0; }
  int64_t kv_bytes_per_block(int64_t) const override { return 0; }
  std::string attention_impl() const override { return "fake"; }

  void AllocateKvCache(int64_t num_blocks, int64_t block_size) override {
    // A step still in flight would write into the new cache.
    if (busy_slots() > 0) throw std::logic_error("fake runner: AllocateKvCache with a step in flight");
    block_size_ = block_size;
    kv_.assign(static_cast<size_t>(num_blocks * block_size), kUnwritten);
    num_blocks_ = num_blocks;
  }
  int64_t num_blocks() const override { return num_blocks_; }

  int32_t device_penalty_slots() const override { return 4; }
  bool CanSampleOnDevice(const tg::SamplingParams& params, int32_t top_n) const override {
    return !params.watermark && top_n <= kMaxDeviceTopN;
  }
  bool runs_ahead() const override { return true; }

  // As the CUDA runner: both are a step in slot 0, queued and finished at once.
  void Forward(const std::vector<tg::ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
               std::vector<float>* logits) override {
    std::vector<tg::SampleResult> none;
    ForwardAndSample(seqs, logit_rows, static_cast<int64_t>(logit_rows.size()), {}, logits, &none);
  }
  void ForwardAndSample(const std::vector<tg::ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                        int64_t host_rows, const std::vector<tg::DeviceSample>& samples, std::vector<float>* logits,
                        std::vector<tg::SampleResult>* sampled) override {
    EnqueueStep(0, seqs, logit_rows, host_rows, samples);
    FinishStep(0, logits, sampled);
  }

  void EnqueueStep(int slot, const std::vector<tg::ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                   int64_t host_rows, const std::vector<tg::DeviceSample>& samples) override {
    if (host_rows < 0 || host_rows + static_cast<int64_t>(samples.size()) != static_cast<int64_t>(logit_rows.size())) {
      throw std::logic_error("fake runner: logit_rows must be host_rows rows, then one per sample");
    }
    std::vector<std::vector<int32_t>> tokens;
    for (const tg::ForwardSequence& q : seqs) tokens.emplace_back(q.tokens, q.tokens + q.count);
    Queue(slot, seqs, tokens, logit_rows, host_rows, samples);
    ++counts_.steps;
  }

  void FinishStep(int slot, std::vector<float>* logits, std::vector<tg::SampleResult>* sampled) override {
    if (slot < 0 || slot >= kStepSlots || !slots_[slot].busy) {
      throw std::logic_error("fake runner: FinishStep of slot " + std::to_string(slot) + ", which holds no step");
    }
    Slot& s = slots_[slot];
    s.busy = false;
    if (fail_next_finish_) {
      fail_next_finish_ = false;
      throw std::runtime_error("fake runner: the sampler found no finite logit in a row");
    }
    *logits = std::move(s.logits);
    *sampled = std::move(s.sampled);
  }

  bool EnqueueDecodeAhead(int slot, const std::vector<tg::ForwardSequence>& seqs,
                          const std::vector<tg::DeviceSample>& samples) override {
    if (seqs.empty()) return false;  // as the CUDA runner: no step of no sequences ahead
    if (samples.size() != seqs.size()) throw std::logic_error("fake runner: a step ahead samples every row");
    // The device reads the tokens where the step queued last left its samples.
    std::vector<std::vector<int32_t>> tokens;
    std::vector<int64_t> logit_rows;
    for (const tg::ForwardSequence& q : seqs) {
      if (q.count != 1) throw std::logic_error("fake runner: a step ahead has one token a sequence");
      const int32_t row = q.tokens[0];
      if (row < 0 || row >= static_cast<int32_t>(last_sampled_.size())) {
        throw std::logic_error("fake runner: sample row " + std::to_string(row) + " of a step ahead is not one of the " +
                               std::to_string(last_sampled_.size()) + " the step queued last sampled");
      }
      tokens.push_back({last_sampled_[static_cast<size_t>(row)]});
      logit_rows.push_back(static_cast<int64_t>(logit_rows.size()));
    }
    Queue(slot, seqs, tokens, logit_rows, 0, samples);
    ++counts_.ahead_steps;
    return true;
  }

 private:
  static constexpr int32_t kUnwritten = -1;
  // Host rows' logits peak at the model's token by this much, which greedy sampling
  // picks through mild penalties or the watermark's bias.
  static constexpr float kPeakLogit = 8.0f;

  struct Slot {
    bool busy = false;
    std::vector<float> logits;
    std::vector<tg::SampleResult> sampled;
  };

  static uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }

  int32_t& KvAt(const tg::ForwardSequence& q, int64_t position) {
    const int64_t index = position / block_size_;
    if (index >= q.num_blocks || q.blocks[index] < 0 || q.blocks[index] >= num_blocks_) {
      throw std::logic_error("fake runner: position " + std::to_string(position) + " has no KV block");
    }
    return kv_[static_cast<size_t>(q.blocks[index] * block_size_ + position % block_size_)];
  }

  // The model: the token a row at `position` with input `token` comes to, given the KV
  // its sequence holds before it; `draw` is 0 for greedy rows.
  int32_t ModelToken(const tg::ForwardSequence& q, int32_t token, int64_t position, uint64_t draw) {
    uint64_t context = 0;
    for (int64_t p = 0; p < position; ++p) context = Mix(context + static_cast<uint64_t>(KvAt(q, p) + 2));
    const uint64_t mixed = 31u * static_cast<uint64_t>(token) + 7u * static_cast<uint64_t>(position) + context + draw;
    return static_cast<int32_t>(mixed % static_cast<uint64_t>(vocab_));
  }

  tg::SampleResult DeviceResult(int32_t token, const tg::DeviceSample& d) const {
    tg::SampleResult r;
    r.token = token;
    r.logprob = -0.01f * static_cast<float>(token % 97);
    for (int32_t j = 0; j < d.top_n; ++j) {
      r.top_ids.push_back(static_cast<int32_t>((token + j) % vocab_));
      r.top_logprobs.push_back(r.logprob - static_cast<float>(j));
    }
    return r;
  }

  void Queue(int slot, const std::vector<tg::ForwardSequence>& seqs, const std::vector<std::vector<int32_t>>& tokens,
             const std::vector<int64_t>& logit_rows, int64_t host_rows, const std::vector<tg::DeviceSample>& samples) {
    if (slot < 0 || slot >= kStepSlots || slots_[slot].busy) {
      throw std::logic_error("fake runner: a step queued into slot " + std::to_string(slot) + ", which is busy");
    }
    if (num_blocks_ == 0) throw std::logic_error("fake runner: a step before AllocateKvCache");
    // Every row's KV first: a row attends to the rows of its sequence before it.
    std::vector<std::pair<size_t, int64_t>> rows;  // (sequence, token index) of each row
    for (size_t i = 0; i < seqs.size(); ++i) {
      for (int64_t j = 0; j < seqs[i].count; ++j) {
        KvAt(seqs[i], seqs[i].position + j) = tokens[i][static_cast<size_t>(j)];
        rows.emplace_back(i, j);
      }
    }
    Slot& out = slots_[slot];
    out.logits.assign(static_cast<size_t>(host_rows * vocab_), 0.0f);
    out.sampled.clear();
    for (size_t k = 0; k < logit_rows.size(); ++k) {
      const auto [i, j] = rows.at(static_cast<size_t>(logit_rows[k]));
      const int32_t input = tokens[i][static_cast<size_t>(j)];
      const int64_t position = seqs[i].position + j;
      if (static_cast<int64_t>(k) < host_rows) {
        out.logits[k * static_cast<size_t>(vocab_) + ModelToken(seqs[i], input, position, 0)] = kPeakLogit;
        continue;
      }
      const tg::DeviceSample& d = samples[k - static_cast<size_t>(host_rows)];
      const uint64_t draw = d.params.Samples() ? Mix(d.params.seed ^ Mix(static_cast<uint64_t>(d.generated_index))) : 0;
      out.sampled.push_back(DeviceResult(ModelToken(seqs[i], input, position, draw), d));
    }
    if (!out.sampled.empty()) {
      last_sampled_.clear();
      for (const tg::SampleResult& r : out.sampled) last_sampled_.push_back(r.token);
    }
    out.busy = true;
  }

  int64_t vocab_;
  tg::TpSlice slice_;
  int64_t num_blocks_ = 0, block_size_ = 0;
  std::vector<int32_t> kv_;  // the token each KV slot was written with
  Slot slots_[kStepSlots];
  std::vector<int32_t> last_sampled_;  // the samples of the step queued last that sampled
  Counts counts_;
  bool fail_next_finish_ = false;
};

}  // namespace tgtest
