// See engine.h.
#include "engine/engine.h"

#include <algorithm>
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
  SequenceSampler sampler;  // kept current for every sequence: the host path of any step
  int64_t generated = 0;
  // log_softmax of the last row of the previous step, when it computed prompt logprobs:
  // gives the logprob of the first token of the next prompt chunk.
  std::vector<float> last_logprobs;
  // Device sampling with penalties: the sequence's slot of device counts (-1: none
  // held), whether that slot holds every token so far, and those tokens (prefix,
  // prompt, fed-back samples), from which the slot is refilled when it does not.
  int32_t penalty_slot = -1;
  bool slot_current = false;
  bool keeps_history = false;
  std::vector<int32_t> history;
};

// One sequence's decode step run ahead (Engine::Step's `ahead`).
struct Engine::AheadRow {
  std::shared_ptr<Sequence> seq;  // the sequence it was run for (not one re-created under its id)
  int64_t position = 0;           // of its input token
  int32_t token = -1;             // its input token: the one the step before sampled
  int32_t top_n = 0;
  std::vector<int32_t> blocks;    // the KV blocks it used
  bool ready = false;             // its result is back
  SampleResult result;
};

static void SetSampled(SampleResult&& s, StepResult* out) {
  out->sampled = true;
  out->token = s.token;
  out->logprob = s.logprob;
  out->top_ids = std::move(s.top_ids);
  out->top_logprobs = std::move(s.top_logprobs);
}

static bool HasPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

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
  if (o.block_size < 1) throw std::runtime_error("blockSize must be positive, got " + std::to_string(o.block_size));
  if (o.world_size > 1 && o.device == "cpu" && o.comm_name.empty()) {
    throw std::runtime_error("worldSize > 1 on device cpu needs a commName");
  }
  if (o.world_size > 1 && o.device == "cuda" && o.nccl_id.size() != 128) {
    throw std::runtime_error("worldSize > 1 on device cuda needs ncclId, the 128 bytes of rank 0's ncclUniqueId (got " +
                             std::to_string(o.nccl_id.size()) + " bytes)");
  }
}

static std::unique_ptr<Communicator> MakeCommunicator(const EngineOptions& o) {
  // On cuda the ranks talk over NCCL on device memory: the model makes that
  // communicator from o.nccl_id, and this host one stays a single-rank stand-in.
  if (o.world_size <= 1 || o.device == "cuda") return MakeLocalCommunicator();
  return MakeShmCommunicator(o.comm_name, o.rank, o.world_size, o.comm_timeout_ms);
}

Engine::Engine(const EngineOptions& options) : Engine(options, nullptr) {}

Engine::Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner) : options_(options) {
  CheckOptions(options_);
  MakeTpSlice(options_.config, options_.rank, options_.world_size);  // fail before the rendezvous
  comm_ = MakeCommunicator(options_);
  runner_ = runner ? std::move(runner) : MakeModelRunner(options_, *comm_);
  for (int32_t slot = runner_->device_penalty_slots() - 1; slot >= 0; --slot) free_penalty_slots_.push_back(slot);
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
  info.warmup_batch_sizes = runner_->warmup_batch_sizes();
  return info;
}

EngineMemoryInfo Engine::MemoryInfo() const {
  DeviceMemory m = runner_->memory_info();
  return {m.free_bytes, m.total_bytes};
}

void Engine::AllocateKvCache(int64_t num_blocks) {
  std::lock_guard<std::mutex> lock(step_mu_);
  FinishAhead();  // the cache it writes goes away
  ahead_rows_.clear();
  runner_->AllocateKvCache(num_blocks, options_.block_size);
  // The runner sizes its device penalty counts with the cache and starts them empty.
  std::lock_guard<std::mutex> seq_lock(seq_mu_);
  for (auto& [id, seq] : sequences_) seq->slot_current = false;
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

std::vector<StepResult> Engine::Step(const std::vector<StepInput>& inputs, bool ahead) {
  std::lock_guard<std::mutex> step_lock(step_mu_);
  Validate(inputs);
  std::vector<StepResult> results(inputs.size());
  if (ahead_rows_.empty()) {
    RunStep(inputs, ahead, &results);
    return results;
  }
  DropStaleAhead();
  std::vector<char> hit(inputs.size(), 0);
  bool all_in_flight = ahead_slot_ >= 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    hit[i] = AheadHit(inputs[i]);
    all_in_flight = all_in_flight && hit[i] && !ahead_rows_.at(inputs[i].id).ready;
  }
  if (all_in_flight) {
    StepInFlight(inputs, ahead, &results);
  } else {
    StepPartlyAhead(inputs, hit, ahead, &results);
  }
  return results;
}

// The steady state: this whole step is in flight. Its successor goes in behind it (fed by
// its samples) before it is waited for.
void Engine::StepInFlight(const std::vector<StepInput>& inputs, bool ahead, std::vector<StepResult>* results) {
  std::vector<int64_t> source_rows;
  std::vector<std::shared_ptr<Sequence>> states;
  for (const StepInput& in : inputs) {
    source_rows.push_back(std::find(ahead_order_.begin(), ahead_order_.end(), in.id) - ahead_order_.begin());
    states.push_back(ahead_rows_.at(in.id).seq);
  }
  const int finishing = ahead_slot_;
  const std::vector<int64_t> finishing_order = std::move(ahead_order_);
  ahead_order_.clear();
  ahead_slot_ = -1;
  std::unordered_map<int64_t, AheadRow> next;  // the successor's rows, joined below
  if (ahead) StartAhead(finishing == 1 ? 2 : 1, inputs, states, source_rows, &next);
  std::vector<float> no_logits;
  std::vector<SampleResult> sampled;
  try {
    runner_->FinishStep(finishing, &no_logits, &sampled);
  } catch (...) {
    // Its results are lost (e.g. a row with no finite logit). Its rows must go: left in
    // flight, the step queued behind it would fill them with its own results, for the
    // position after theirs, and a caller trying this step again would take those. That
    // successor, fed from the lost samples, is waited for and dropped with them.
    for (int64_t id : finishing_order) ahead_rows_.erase(id);
    FinishAhead();
    throw;
  }
  KeepAheadResults(finishing_order, &sampled);
  for (size_t i = 0; i < inputs.size(); ++i) {
    TakeAheadResult(inputs[i], &(*results)[i]);
    auto row = next.find(inputs[i].id);
    if (row != next.end()) row->second.token = (*results)[i].token;
  }
  // The successor's rows join those of the sequences this step did not name, which stay,
  // ready, for a later step.
  for (auto& [id, row] : next) ahead_rows_[id] = std::move(row);
}

// The step in flight is waited for, the inputs it (or an earlier one) computed take their
// results, and the rest run now.
void Engine::StepPartlyAhead(const std::vector<StepInput>& inputs, const std::vector<char>& hit, bool ahead,
                             std::vector<StepResult>* results) {
  FinishAhead();
  std::vector<StepInput> rest;
  std::vector<size_t> rest_index;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (hit[i]) {
      TakeAheadResult(inputs[i], &(*results)[i]);
    } else {
      ahead_rows_.erase(inputs[i].id);  // computed for another token or position: never asked for
      rest.push_back(inputs[i]);
      rest_index.push_back(i);
    }
  }
  if (rest.empty()) return;
  std::vector<StepResult> rest_results(rest.size());
  RunStep(rest, ahead && rest.size() == inputs.size(), &rest_results);
  for (size_t k = 0; k < rest.size(); ++k) (*results)[rest_index[k]] = std::move(rest_results[k]);
}

void Engine::RunStep(const std::vector<StepInput>& inputs, bool ahead, std::vector<StepResult>* results_out) {
  const int64_t vocab = options_.config.vocab_size;
  const bool device_sampler = runner_->device_penalty_slots() > 0;

  // Sampler states, created for sequences that start here, and where each sampled
  // row is sampled: on the device when its sampler covers the request, else on the
  // host. The host path serves what the device sampler lacks (top_n above its
  // limit, and features being added to the CPU sampler first, such as watermarking:
  // CanSampleOnDevice says no for those), rows whose logits come back anyway
  // (prompt logprobs), and penalised sequences when every device penalty slot is
  // held. Either way the step's result is the same function of (params, seed,
  // generated index, counts).
  std::vector<std::shared_ptr<Sequence>> states;
  std::vector<char> on_device(inputs.size(), 0);
  {
    std::lock_guard<std::mutex> lock(seq_mu_);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const StepInput& in = inputs[i];
      if (in.init) {
        auto seq = std::make_shared<Sequence>(in.init->params, vocab);
        seq->sampler.Observe(in.init->prefix.data(), static_cast<int64_t>(in.init->prefix.size()));
        seq->keeps_history = device_sampler && HasPenalties(in.init->params);
        if (seq->keeps_history) seq->history = in.init->prefix;
        // A repeated init replaces the sequence: its device penalty slot must not leak.
        auto old = sequences_.find(in.id);
        if (old != sequences_.end() && old->second->penalty_slot >= 0) {
          free_penalty_slots_.push_back(old->second->penalty_slot);
        }
        sequences_[in.id] = seq;
      }
      Sequence& seq = *sequences_.at(in.id);
      states.push_back(sequences_.at(in.id));
      if (seq.keeps_history) seq.history.insert(seq.history.end(), in.tokens.begin(), in.tokens.end());
      if (!in.sample || in.prompt_logprobs || !device_sampler ||
          !runner_->CanSampleOnDevice(seq.sampler.params(), in.top_n)) {
        continue;
      }
      if (seq.keeps_history && seq.penalty_slot < 0 && !free_penalty_slots_.empty()) {
        seq.penalty_slot = free_penalty_slots_.back();
        free_penalty_slots_.pop_back();
        seq.slot_current = false;
      }
      on_device[i] = !seq.keeps_history || seq.penalty_slot >= 0;
    }
  }

  // Rows that need logits on the host (every row for prompt logprobs, else the last
  // row when sampling on the host), then the rows sampled on the device.
  std::vector<ForwardSequence> batch;
  std::vector<int64_t> logit_rows, device_rows;
  std::vector<DeviceSample> samples;
  std::vector<int64_t> first_logit(inputs.size(), -1), sample_index(inputs.size(), -1);
  int64_t row = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    Sequence& seq = *states[i];
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    batch.push_back({in.tokens.data(), n, in.position, in.blocks.data(), static_cast<int64_t>(in.blocks.size())});
    if (on_device[i]) {
      sample_index[i] = static_cast<int64_t>(samples.size());
      device_rows.push_back(row + n - 1);
      DeviceSample d;
      d.params = seq.sampler.params();
      d.generated_index = seq.generated;
      d.top_n = in.top_n;
      d.penalty_slot = seq.keeps_history ? seq.penalty_slot : -1;
      if (d.penalty_slot >= 0 && !seq.slot_current) d.reset_counts = &seq.history;
      samples.push_back(d);
    } else if (in.prompt_logprobs) {
      first_logit[i] = static_cast<int64_t>(logit_rows.size());
      for (int64_t j = 0; j < n; ++j) logit_rows.push_back(row + j);
    } else if (in.sample) {
      first_logit[i] = static_cast<int64_t>(logit_rows.size());
      logit_rows.push_back(row + n - 1);
    }
    row += n;
  }
  const int64_t host_rows = static_cast<int64_t>(logit_rows.size());
  logit_rows.insert(logit_rows.end(), device_rows.begin(), device_rows.end());
  std::vector<float> logits;
  std::vector<SampleResult> sampled;
  bool started_ahead = false;
  if (samples.empty()) {
    runner_->Forward(batch, logit_rows, &logits);
  } else if (ahead && runner_->runs_ahead()) {
    runner_->EnqueueStep(0, batch, logit_rows, host_rows, samples);
    const bool every_row_on_device = std::all_of(on_device.begin(), on_device.end(), [](char c) { return c != 0; });
    // No step is in flight here (Step waited for it), so slot 1 is free.
    started_ahead = every_row_on_device && StartAhead(1, inputs, states, sample_index, &ahead_rows_);
    runner_->FinishStep(0, &logits, &sampled);
  } else {
    runner_->ForwardAndSample(batch, logit_rows, host_rows, samples, &logits, &sampled);
  }

  std::vector<StepResult>& results = *results_out;
  std::vector<float> logprobs;  // scratch for prompt logprobs, sized only when a row asks
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    Sequence& seq = *states[i];
    StepResult& out = results[i];
    out.id = in.id;
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    seq.sampler.Observe(in.tokens.data(), n);
    // The device counts hold this step's tokens only if the device sampled it (and
    // added its choice); otherwise they are refilled from history at the next device step.
    seq.slot_current = on_device[i] != 0;
    if (on_device[i]) {
      seq.last_logprobs.clear();
      ++seq.generated;
      SetSampled(std::move(sampled[static_cast<size_t>(sample_index[i])]), &out);
      continue;
    }
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
      logprobs.resize(static_cast<size_t>(vocab));
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
      SetSampled(seq.sampler.Sample(last, seq.generated, in.top_n), &out);
      ++seq.generated;
    }
  }
  if (started_ahead) {
    for (size_t i = 0; i < inputs.size(); ++i) ahead_rows_.at(inputs[i].id).token = results[i].token;
  }
}

bool Engine::AheadHit(const StepInput& in) const {
  auto it = ahead_rows_.find(in.id);
  if (it == ahead_rows_.end()) return false;
  const AheadRow& row = it->second;
  if (in.init || !in.sample || in.prompt_logprobs || in.tokens.size() != 1 || in.tokens[0] != row.token ||
      in.position != row.position || in.top_n != row.top_n || in.blocks.size() < row.blocks.size() ||
      !std::equal(row.blocks.begin(), row.blocks.end(), in.blocks.begin())) {
    return false;
  }
  std::lock_guard<std::mutex> lock(seq_mu_);
  auto seq = sequences_.find(in.id);
  return seq != sequences_.end() && seq->second == row.seq;
}

// The host's side of a sampled decode step, as RunStep does it for a row the device sampled.
void Engine::TakeAheadResult(const StepInput& in, StepResult* out) {
  auto it = ahead_rows_.find(in.id);
  AheadRow& row = it->second;
  Sequence& seq = *row.seq;
  out->id = in.id;
  seq.sampler.Observe(in.tokens.data(), 1);
  seq.slot_current = true;
  seq.last_logprobs.clear();
  ++seq.generated;
  SetSampled(std::move(row.result), out);
  ahead_rows_.erase(it);
}

bool Engine::StartAhead(int slot, const std::vector<StepInput>& inputs,
                        const std::vector<std::shared_ptr<Sequence>>& states, const std::vector<int64_t>& source_rows,
                        std::unordered_map<int64_t, AheadRow>* rows) {
  const int64_t bs = options_.block_size;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    const int64_t next = in.position + static_cast<int64_t>(in.tokens.size());
    if (!in.sample || in.prompt_logprobs || states[i]->keeps_history || source_rows[i] < 0 ||
        static_cast<int64_t>(in.blocks.size()) < (next + 1 + bs - 1) / bs) {
      return false;
    }
  }
  std::vector<int32_t> sources(inputs.size());
  std::vector<ForwardSequence> batch;
  std::vector<DeviceSample> samples;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    const int64_t next = in.position + static_cast<int64_t>(in.tokens.size());
    sources[i] = static_cast<int32_t>(source_rows[i]);
    batch.push_back({&sources[i], 1, next, in.blocks.data(), static_cast<int64_t>(in.blocks.size())});
    DeviceSample d;
    d.params = states[i]->sampler.params();
    d.generated_index = states[i]->generated + 1;  // this step's sample comes first
    d.top_n = in.top_n;
    samples.push_back(d);
  }
  if (!runner_->EnqueueDecodeAhead(slot, batch, samples)) return false;
  ahead_slot_ = slot;
  ahead_order_.clear();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const StepInput& in = inputs[i];
    AheadRow& row = (*rows)[in.id];
    row = AheadRow();
    row.seq = states[i];
    row.position = batch[i].position;
    row.top_n = in.top_n;
    row.blocks.assign(in.blocks.begin(), in.blocks.begin() + (row.position + 1 + bs - 1) / bs);
    ahead_order_.push_back(in.id);
  }
  return true;
}

void Engine::FinishAhead() {
  if (ahead_slot_ < 0) return;
  std::vector<float> no_logits;
  std::vector<SampleResult> sampled;
  const int slot = ahead_slot_;
  ahead_slot_ = -1;
  runner_->FinishStep(slot, &no_logits, &sampled);
  KeepAheadResults(ahead_order_, &sampled);
  ahead_order_.clear();
}

// The results of a step run ahead whose rows were `order`, for the rows still waiting for them.
void Engine::KeepAheadResults(const std::vector<int64_t>& order, std::vector<SampleResult>* sampled) {
  for (size_t k = 0; k < order.size() && k < sampled->size(); ++k) {
    auto it = ahead_rows_.find(order[k]);
    if (it == ahead_rows_.end() || it->second.ready) continue;
    it->second.ready = true;
    it->second.result = std::move((*sampled)[k]);
  }
}

// Rows whose sequence was released (or re-created) since: no step can ask for them.
// Rows of the step in flight stay until it is waited for.
void Engine::DropStaleAhead() {
  std::lock_guard<std::mutex> lock(seq_mu_);
  for (auto it = ahead_rows_.begin(); it != ahead_rows_.end();) {
    auto seq = sequences_.find(it->first);
    const bool stale = seq == sequences_.end() || seq->second != it->second.seq;
    it = stale && it->second.ready ? ahead_rows_.erase(it) : std::next(it);
  }
}

void Engine::Release(const std::vector<int64_t>& ids) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  for (int64_t id : ids) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) continue;
    if (it->second->penalty_slot >= 0) free_penalty_slots_.push_back(it->second->penalty_slot);
    sequences_.erase(it);
  }
}

}  // namespace tg
