// See engine.h.
#include "engine/engine.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_set>

#include "comm/communicator.h"
#include "engine/model_runner.h"
#include "sampling/sampler.h"

namespace tg {

struct Engine::Sequence {
  Sequence(const SamplingParams& params, int64_t vocab) : sampler(params, vocab) {}
  SequenceSampler sampler;
  int64_t generated = 0;
  // log_softmax of the last row of the previous step, when it computed prompt logprobs:
  // gives the logprob of the first token of the next prompt chunk.
  std::vector<float> last_logprobs;
};

static void CheckOptions(const EngineOptions& o) {
  const ModelConfig& c = o.config;
  if (c.architecture != "llama" && c.architecture != "mistral" && c.architecture != "qwen2") {
    throw std::runtime_error("unsupported architecture \"" + c.architecture + "\" (supported: llama, mistral, qwen2)");
  }
  if (c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 ||
      c.num_kv_heads <= 0 || c.head_dim <= 0 || c.vocab_size <= 0) {
    throw std::runtime_error("model config has a non-positive dimension");
  }
  if (c.head_dim % 2 != 0) throw std::runtime_error("head_dim must be even for RoPE, got " + std::to_string(c.head_dim));
  if (c.num_heads % c.num_kv_heads != 0) {
    throw std::runtime_error("num_attention_heads " + std::to_string(c.num_heads) +
                             " is not a multiple of num_key_value_heads " + std::to_string(c.num_kv_heads));
  }
  if (o.device != "cpu" && o.device != "cuda") {
    throw std::runtime_error("device \"" + o.device + "\" is not supported; use \"cpu\" or \"cuda\"");
  }
  if (o.device == "cuda" && o.world_size > 1) {
    throw std::runtime_error("device cuda does not support tensor parallelism yet (worldSize " +
                             std::to_string(o.world_size) + "); use worldSize 1 or device cpu");
  }
  if (o.block_size < 1) throw std::runtime_error("blockSize must be positive, got " + std::to_string(o.block_size));
  if (o.world_size > 1 && o.comm_name.empty()) throw std::runtime_error("worldSize > 1 needs a commName");
}

static std::unique_ptr<Communicator> MakeCommunicator(const EngineOptions& o) {
  if (o.world_size <= 1) return MakeLocalCommunicator();
  return MakeShmCommunicator(o.comm_name, o.rank, o.world_size, o.comm_timeout_ms);
}

Engine::Engine(const EngineOptions& options) : options_(options) {
  CheckOptions(options_);
  MakeTpSlice(options_.config, options_.rank, options_.world_size);  // fail before the rendezvous
  comm_ = MakeCommunicator(options_);
  runner_ = MakeModelRunner(options_, *comm_);
}

Engine::~Engine() = default;

EngineInfo Engine::Info() const {
  EngineInfo info;
  info.device = options_.device;
  info.dtype = options_.dtype;
  info.attention_impl = runner_->attention_impl();
  info.block_size = options_.block_size;
  info.kv_bytes_per_block = runner_->kv_bytes_per_block(options_.block_size);
  info.weight_bytes = runner_->weight_bytes();
  info.num_blocks = runner_->num_blocks();
  return info;
}

void Engine::AllocateKvCache(int64_t num_blocks) {
  std::lock_guard<std::mutex> lock(step_mu_);
  runner_->AllocateKvCache(num_blocks, options_.block_size);
}

void Engine::Validate(const std::vector<StepInput>& inputs) const {
  const int64_t num_blocks = runner_->num_blocks();
  if (num_blocks == 0) throw std::runtime_error("step before allocateKvCache: the KV cache is not allocated");
  const int64_t vocab = options_.config.vocab_size, bs = options_.block_size;
  std::unordered_set<int64_t> seen;
  std::lock_guard<std::mutex> lock(seq_mu_);
  for (const StepInput& in : inputs) {
    const std::string who = "sequence " + std::to_string(in.id) + ": ";
    if (!seen.insert(in.id).second) throw std::runtime_error(who + "appears twice in one step");
    if (!in.init && sequences_.find(in.id) == sequences_.end()) {
      throw std::runtime_error(who + "unknown (its first step must carry init)");
    }
    if (in.tokens.empty()) throw std::runtime_error(who + "no tokens to compute");
    if (in.position < 0) throw std::runtime_error(who + "negative position " + std::to_string(in.position));
    if (in.top_n < 0) throw std::runtime_error(who + "negative topN");
    for (int32_t t : in.tokens) {
      if (t < 0 || t >= vocab) {
        throw std::runtime_error(who + "token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                                 std::to_string(vocab) + ")");
      }
    }
    const int64_t end = in.position + static_cast<int64_t>(in.tokens.size());
    const int64_t needed = (end + bs - 1) / bs;
    if (static_cast<int64_t>(in.blocks.size()) < needed) {
      throw std::runtime_error(who + "positions up to " + std::to_string(end) + " need " + std::to_string(needed) +
                               " KV blocks, got " + std::to_string(in.blocks.size()));
    }
    for (int64_t b = 0; b < needed; ++b) {
      int32_t block = in.blocks[static_cast<size_t>(b)];
      if (block < 0 || block >= num_blocks) {
        throw std::runtime_error(who + "KV block " + std::to_string(block) + " is out of range [0, " +
                                 std::to_string(num_blocks) + ")");
      }
    }
  }
}

std::vector<StepResult> Engine::Step(const std::vector<StepInput>& inputs) {
  std::lock_guard<std::mutex> step_lock(step_mu_);
  Validate(inputs);
  const int64_t vocab = options_.config.vocab_size;

  // Sampler states, created for sequences that start here.
  std::vector<std::shared_ptr<Sequence>> states;
  {
    std::lock_guard<std::mutex> lock(seq_mu_);
    for (const StepInput& in : inputs) {
      if (in.init) {
        auto seq = std::make_shared<Sequence>(in.init->params, vocab);
        seq->sampler.Observe(in.init->prefix.data(), static_cast<int64_t>(in.init->prefix.size()));
        sequences_[in.id] = seq;
      }
      states.push_back(sequences_.at(in.id));
    }
  }

  // Rows that need logits: every row for prompt logprobs, else the last row when sampling.
  std::vector<ForwardSequence> batch;
  std::vector<int64_t> logit_rows;
  std::vector<int64_t> first_logit(inputs.size(), -1);
  int64_t row = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    batch.push_back({in.tokens.data(), n, in.position, in.blocks.data(), static_cast<int64_t>(in.blocks.size())});
    if (in.prompt_logprobs) {
      first_logit[i] = static_cast<int64_t>(logit_rows.size());
      for (int64_t j = 0; j < n; ++j) logit_rows.push_back(row + j);
    } else if (in.sample) {
      first_logit[i] = static_cast<int64_t>(logit_rows.size());
      logit_rows.push_back(row + n - 1);
    }
    row += n;
  }
  std::vector<float> logits;
  runner_->Forward(batch, logit_rows, &logits);

  std::vector<StepResult> results(inputs.size());
  std::vector<float> logprobs(static_cast<size_t>(vocab));
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    Sequence& seq = *states[i];
    StepResult& out = results[i];
    out.id = in.id;
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    seq.sampler.Observe(in.tokens.data(), n);
    if (first_logit[i] < 0) {
      seq.last_logprobs.clear();
      continue;
    }
    float* rows = logits.data() + first_logit[i] * vocab;
    float* last = in.prompt_logprobs ? rows + (n - 1) * vocab : rows;
    if (in.prompt_logprobs) {
      out.has_prompt_logprobs = true;
      out.prompt_logprobs.assign(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
      if (!seq.last_logprobs.empty() && in.position > 0) out.prompt_logprobs[0] = seq.last_logprobs[in.tokens[0]];
      for (int64_t j = 0; j + 1 < n; ++j) {
        LogSoftmax(rows + j * vocab, vocab, logprobs.data());
        out.prompt_logprobs[static_cast<size_t>(j + 1)] = logprobs[static_cast<size_t>(in.tokens[j + 1])];
      }
      seq.last_logprobs.resize(static_cast<size_t>(vocab));
      LogSoftmax(last, vocab, seq.last_logprobs.data());
    } else {
      seq.last_logprobs.clear();
    }
    if (in.sample) {
      SampleResult s = seq.sampler.Sample(last, seq.generated, in.top_n);
      ++seq.generated;
      out.sampled = true;
      out.token = s.token;
      out.logprob = s.logprob;
      out.top_ids = std::move(s.top_ids);
      out.top_logprobs = std::move(s.top_logprobs);
    }
  }
  return results;
}

void Engine::Release(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  for (int64_t id : ids) sequences_.erase(id);
}

}  // namespace tg
