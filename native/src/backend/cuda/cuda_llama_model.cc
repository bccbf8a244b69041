// CudaLlamaModel: the Llama-family forward (llama, mistral, qwen2) on one GPU, or
// on one GPU per rank with Megatron tensor parallelism over NCCL: the same function
// as the CPU backend's LlamaModel with bf16/fp16 weights, activations and KV cache,
// f32 accumulation, an f32 residual stream and f32 logits. On one GPU the o and down
// projections add their products into the residual stream themselves (Gemm::RunAddTo).
//
// Per step, every input the kernels need (tokens, positions, KV slots, the
// attention work items, RoPE frequencies, logit rows, sampling rows) is packed on
// the host into one pinned buffer and copied with one cudaMemcpyAsync; the only
// host synchronisation is the copy back of the step's results. Decode steps replay
// a CUDA graph of their batch-size bucket (decode_graphs.h), padded with rows that
// write into a scratch KV block no sequence owns. Rows the engine samples on the
// device (ForwardAndSample) go through the GPU sampler (sampling/gpu_sampler.h), or
// when every one is greedy through sampling/greedy_rows.h's two passes, after lm_head,
// and only their tokens, logprobs and top-n come back; rows that need
// logits on the host (prompt logprobs, requests the GPU sampler does not cover) come
// back as f32 logits.
//
// Tensor parallelism: each rank holds its query heads (with their KV heads), its
// share of the MLP and of the vocabulary; the embedding, the attention and the MLP outputs
// are all-reduced together with the residual add and RMSNorm after them
// (DeviceCommunicator::AllReduceAddRmsNorm: one kernel with the peer collectives; a decode
// step's o and down GEMVs sum the ranks' products themselves, GemvExchange),
// and every rank samples the same tokens: from the vocab-parallel logits all-gathered, or
// for a step of greedy rows from the pieces of each rank's shard (greedy_rows.h), which are
// a few hundred bytes a row. TEXT_GEN_STEP_PROFILE times each op (step_profiler.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_model_runner.h"
#include "backend/cuda/cuda_weights.h"
#include "backend/cuda/decode_graphs.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/elem_type.h"
#include "backend/cuda/env_switch.h"
#include "backend/cuda/gate_up_choice.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/nccl/device_communicator.h"
#include "backend/cuda/peer/peer_communicator.h"
#include "backend/cuda/prefill_attention.h"
#include "backend/cuda/sampling/gpu_sampler.h"
#include "backend/cuda/sampling/greedy_rows.h"
#include "backend/cuda/silu_gate_up_gemm.h"
#include "backend/cuda/step_profiler.h"
#include "core/dtype.h"
#include "engine/engine.h"

namespace tg {
namespace cuda {
namespace {

// Sequences that can hold device penalty counts at once; a penalised sequence
// beyond them is sampled on the host (Engine::Step). 64 slots of up to a whole
// vocabulary of (token, count) pairs is 64 MiB at V = 128256.
constexpr int32_t kPenaltySlots = 64;
// Whether the o and down projections add straight into the f32 residual (Gemm::RunAddTo),
// so that the norms after them only read it: 6 bytes per element instead of 12, and the
// products join the residual unrounded. Only without tensor parallelism, where the
// all-reduce must sum the ranks' partial products first; TEXT_GEN_RESIDUAL_IN_GEMM=0 turns
// it off (read at every step, like TEXT_GEN_SILU_GEMM).
bool ResidualInGemm() { return SwitchedOn("TEXT_GEN_RESIDUAL_IN_GEMM"); }

// Whether a decode step's gate/up GEMV writes SiLU-mul itself (Gemm::RunGateUpSilu), so that
// the down projection is a plain GEMV instead of one that computes SiLU-mul in every CTA.
// TEXT_GEN_SILU_GEMV=0 turns it off (read at every step; a captured graph keeps its choice).
bool SiluInGateUpGemv() { return SwitchedOn("TEXT_GEN_SILU_GEMV"); }

// Whether a decode step's qkv GEMV does RoPE and the KV-cache write in its epilogue
// (Gemm::RunQkvRope): one kernel less per layer. TEXT_GEN_ROPE_GEMV=0 turns it off (read at
// every step; a captured graph keeps its choice).
bool RopeInQkvGemv() { return SwitchedOn("TEXT_GEN_ROPE_GEMV"); }

// Whether a decode step's o and down GEMVs feed the norm after their residual add, and the qkv
// and gate/up GEMVs scale by it (GemvNorm), so that no norm kernel runs between them.
// TEXT_GEN_NORM_LINK=0 turns it off (read at every step; a captured graph keeps its choice).
bool NormLinkInGemv() { return SwitchedOn("TEXT_GEN_NORM_LINK"); }

// The activations of one forward, grown to the largest step seen. Decode graphs
// have their own set, allocated once at their largest bucket, since a graph holds
// its buffers' addresses.
struct Activations {
  DeviceBuffer x, h, qkv, q, attn, proj, gate_up, act, normed, logits, shard_logits, gathered, attn_workspace;
  DeviceBuffer attn_counters;  // AttentionBatch::split_counters: zeroed when allocated, left zero by every call
  DeviceBuffer norm_parts;     // GemvNorm::sum_squares of a step whose GEMVs link its norms
};

// The host-side plan of one step, packed as int32 words for one copy.
struct StepPlan {
  std::vector<int32_t> words;
  // Appends `v`, zero-filled to `capacity` entries when that is larger, 16-byte aligned.
  size_t Add(const std::vector<int32_t>& v, size_t capacity = 0) {
    size_t at = words.size();
    words.insert(words.end(), v.begin(), v.end());
    if (capacity > v.size()) words.resize(at + capacity, 0);
    while (words.size() % 4) words.push_back(0);
    return at;
  }
  size_t AddFloats(const std::vector<float>& v) { return AddBytes(v.data(), v.size() * sizeof(float)); }
  // Plain structs whose size is a multiple of 4 bytes (GpuSamplingRow).
  size_t AddBytes(const void* data, size_t bytes) {
    std::vector<int32_t> bits(bytes / sizeof(int32_t));
    if (bytes > 0) std::memcpy(bits.data(), data, bytes);
    return Add(bits);
  }
};

// Where each array of a packed step starts (in int32 words), and its sizes.
struct StepLayout {
  size_t tokens, positions, slot_block, slot_offset, freq_index, seq_row_start, seq_rows, seq_position,
      seq_block_start, items, logit_rows, inv_freq, block_tables, sample_rows;
  int64_t rows = 0, logit_row_count = 0, num_items = 0, max_keys = 0;
  bool all_greedy_rows = false;  // every sample row is one greedy_rows.h serves (GreedyRowsServe)
  // The sequences that go to the tensor-core prefill kernel (prefill_attention.h).
  size_t p_seq_row_start, p_seq_rows, p_seq_position, p_seq_block_start, p_block_tables, p_items;
  int64_t p_num_items = 0;
  int p_tile_rows = kPrefillTileRowsLarge;
};

class CudaLlamaModel : public ModelRunner {
 public:
  explicit CudaLlamaModel(const EngineOptions& o);
  ~CudaLlamaModel() override;

  const TpSlice& slice() const override { return slice_; }
  int64_t weight_bytes() const override { return weights_.bytes; }
  int64_t kv_bytes_per_block(int64_t block_size) const override {
    return 2 * config_.num_layers * block_size * slice_.kv_heads * config_.head_dim *
           static_cast<int64_t>(ElemSize(type_));
  }
  std::string attention_impl() const override { return "cuda-paged"; }
  // The graph buckets (a size's first step tunes its GEMMs' row buckets, its second captures the
  // graph); without graphs the default buckets still reach every row bucket a decode step tunes.
  std::vector<int32_t> warmup_batch_sizes() const override {
    return graphs_.max_bucket() > 0 ? graphs_.buckets() : DefaultGraphBuckets();
  }
  void AllocateKvCache(int64_t num_blocks, int64_t block_size) override;
  int64_t num_blocks() const override { return num_blocks_; }
  void Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
               std::vector<float>* logits) override {
    std::vector<SampleResult> none;
    ForwardAndSample(seqs, logit_rows, static_cast<int64_t>(logit_rows.size()), {}, logits, &none);
  }
  int32_t device_penalty_slots() const override { return kPenaltySlots; }
  bool CanSampleOnDevice(const SamplingParams& params, int32_t top_n) const override {
    return GpuSamplerSupports(params, top_n);
  }
  void ForwardAndSample(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                        int64_t host_rows, const std::vector<DeviceSample>& samples, std::vector<float>* logits,
                        std::vector<SampleResult>* sampled) override {
    EnqueueStep(0, seqs, logit_rows, host_rows, samples);
    FinishStep(0, logits, sampled);
  }
  DeviceMemory memory_info() const override;
  bool runs_ahead() const override { return true; }
  void EnqueueStep(int slot, const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                   int64_t host_rows, const std::vector<DeviceSample>& samples) override {
    Enqueue(slot, seqs, logit_rows, host_rows, samples, false);
  }
  void FinishStep(int slot, std::vector<float>* logits, std::vector<SampleResult>* sampled) override;
  bool EnqueueDecodeAhead(int slot, const std::vector<ForwardSequence>& seqs,
                          const std::vector<DeviceSample>& samples) override;

 private:
  // The host side of a step in flight.
  struct StepSlot {
    bool busy = false;
    bool queued = false;  // false for a step of no sequences: nothing to wait for
    PinnedBuffer in, sampled;  // the step's packed inputs, and its sampler outputs copied back
    cudaEvent_t done = nullptr;  // after the step's last copy back
    int32_t ns = 0, top_stride = 0;
    std::vector<int32_t> top_n;  // per sampled row
    int64_t host_rows = 0;
    int profile_kind = 0, profile_step = -1;
  };
  // EnqueueStep, and EnqueueDecodeAhead with tokens_are_sample_rows (then false, with
  // nothing queued, when the step isn't a graph bucket's or would move a buffer that
  // the steps in flight use).
  bool Enqueue(int slot, const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
               int64_t host_rows, const std::vector<DeviceSample>& samples, bool tokens_are_sample_rows);
  // Before a buffer that a step in flight may use moves: waits for the steps queued and not
  // yet finished (usually none: the engine waits for a step run ahead before an eager one).
  void WaitForStepsInFlight() {
    if (std::any_of(std::begin(slots_), std::end(slots_), [](const StepSlot& s) { return s.busy && s.queued; })) {
      TG_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
  }
  KvLayer CacheLayer(int64_t layer) const;
  // Packs the step's inputs. With pad_to > 0 (a decode graph's bucket) every per-row and
  // per-sequence array is padded to pad_to entries (rows that read and write only the
  // scratch KV block) and laid out at capacity max_bucket, so the offsets are the same
  // for every bucket and step.
  StepLayout Pack(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                  const std::vector<DeviceSample>& samples, int32_t pad_to, StepPlan* plan) const;
  // Enqueues the forward from the packed inputs at `in` to a.logits ([logit rows, vocab] f32),
  // or under tensor parallelism to the rank's a.shard_logits ([logit rows, vocab shard]);
  // `kind` is the step's kind for the profiler (StepProfiler).
  void EnqueueForward(const int32_t* in, const StepLayout& L, int splits, Activations& a, int kind);
  // Tensor parallelism: the ranks' shard logits of `r` rows, all-gathered into a.logits. Outside
  // the decode graphs, so that a greedy step (EnqueueGreedyRows) can leave it out.
  void GatherLogits(Activations& a, int64_t r);
  // The `ns` sampled rows after `host_rows` when every one is a greedy row (GreedyRowsServe):
  // greedy_rows.h's two passes, and under tensor parallelism an all-gather of their pieces
  // in place of the logits'.
  void EnqueueGreedyRows(Activations& a, int64_t host_rows, int32_t ns, const GpuSamplingRow* rows,
                         const GpuSamplingOutputs& out);
  // Whether EnqueueGreedyRows's buffers hold a step of `ns` rows without moving.
  bool GreedyBuffersFit(int32_t ns, int32_t top_stride) const;
  // The logits' columns each rank's greedy first pass reads: its vocabulary shard, or all of it.
  int32_t GreedyColumns() const {
    return static_cast<int32_t>(comm_ ? slice_.vocab_size : config_.vocab_size);
  }
  // `attention_items`: the most attention work items of a step these activations serve.
  void ReserveActivations(Activations& a, int64_t rows, int64_t logit_rows, int64_t attention_items,
                          size_t workspace_bytes);
  int GraphSplits(int32_t bucket) const;
  // Attention work items of one decode row: its query heads per KV head, in items of
  // kAttentionItemQueries.
  int64_t ItemsPerDecodeRow() const;
  // AttentionSplits for this model's slice and GPU.
  int Splits(int64_t items, int64_t max_keys) const;
  int64_t GraphMaxKeys() const;

  ModelConfig config_;
  TpSlice slice_;
  ElemType type_;
  int device_ = 0;  // the process's first visible GPU; set on every thread that calls in
  cudaStream_t stream_ = nullptr;
  int sm_count_ = 0;
  std::unique_ptr<Gemm> gemm_;
  GateUpChoice gate_up_choice_;  // the MLP's gate/up path per row bucket, timed at first use
  std::unique_ptr<DeviceCommunicator> comm_;  // null without tensor parallelism
  CudaWeights weights_;
  std::vector<float> inv_freq_;  // for RoPE that doesn't depend on length
  bool dynamic_rope_ = false;
  bool prefill_kernel_ = false;  // long prefill rows to the tensor-core kernel
  // TEXT_GEN_ATTENTION_MERGE=kernel: split-KV merged by a second kernel (A/B timings).
  bool merge_in_kernel_ = true;
  // TEXT_GEN_ATTENTION_WAVES=N sizes split-KV for N waves of CTAs (AttentionSplits; A/B timings).
  int split_waves_ = 1;

  DeviceBuffer kv_;
  int64_t num_blocks_ = 0, block_size_ = 0;  // kv_ holds one more block: the padding rows' scratch
  std::unique_ptr<GpuPenaltyState> penalties_;  // sized with the KV cache

  // Per-step buffers. Only a step in slot 0 has rows whose logits come back (the engine
  // runs no other step with it), so host_logits_ is one.
  StepSlot slots_[kStepSlots];
  PinnedBuffer host_logits_;
  DeviceBuffer sampled_;  // the sampler's outputs, one block copied back
  // EnqueueGreedyRows's pieces: this rank's, and under tensor parallelism every rank's gathered.
  DeviceBuffer greedy_partials_, greedy_gathered_;
  // TEXT_GEN_GREEDY_ROWS=0 sends greedy rows through the sampling kernel too (A/B timings).
  bool greedy_rows_ = true;
  DeviceBuffer dev_in_;   // eager steps' inputs
  Activations eager_;
  DecodeGraphs graphs_;
  DeviceBuffer graph_in_;  // decode graphs' inputs (fixed address)
  Activations graph_act_;
  StepProfiler profiler_;
};

CudaLlamaModel::CudaLlamaModel(const EngineOptions& o)
    : config_(o.config),
      slice_(MakeTpSlice(o.config, o.rank, o.world_size)),
      type_(ParseComputeDtype(o.dtype)),
      graphs_(o.cuda_graphs.value_or(DefaultGraphBuckets())),
      profiler_("rank " + std::to_string(o.rank)) {
  if (config_.head_dim % 8 != 0 || config_.head_dim > 256) {
    throw std::runtime_error("device cuda supports head_dim multiples of 8 up to 256, this model has " +
                             std::to_string(config_.head_dim));
  }
  TG_CUDA_CHECK(cudaSetDevice(device_));
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_));
  if (o.world_size > 1) {
    if (o.nccl_id.empty()) throw std::runtime_error("device cuda with world size > 1 needs the NCCL unique id");
    std::string why_not;
    comm_ = WithPeerCollectives(MakeNcclCommunicator(o.nccl_id, o.rank, o.world_size, device_), device_, &why_not);
    // Worth a line: without the peer kernels a TP decode step's ~65 small all-reduces cost several times more.
    if (!why_not.empty()) std::fprintf(stderr, "text-gen rank %d: collectives through NCCL only (%s)\n", o.rank, why_not.c_str());
  }
  gemm_ = std::make_unique<Gemm>();
  dynamic_rope_ = cpu::RopeDependsOnLength(config_.rope);
  // TEXT_GEN_PREFILL_ATTENTION=0 keeps every row on the paged kernel (for A/B timings).
  prefill_kernel_ = PrefillAttentionSupports(config_.head_dim) && SwitchedOn("TEXT_GEN_PREFILL_ATTENTION");
  const char* merge_env = std::getenv("TEXT_GEN_ATTENTION_MERGE");
  merge_in_kernel_ = !(merge_env && std::string(merge_env) == "kernel");
  if (const char* waves_env = std::getenv("TEXT_GEN_ATTENTION_WAVES")) split_waves_ = std::max(1, std::atoi(waves_env));
  greedy_rows_ = SwitchedOn("TEXT_GEN_GREEDY_ROWS");
  inv_freq_ = cpu::RopeInvFreq(config_.rope, config_.head_dim, config_.max_position_embeddings,
                               config_.max_position_embeddings);
  weights_ = UploadLlamaWeights(o.model_dir, config_, slice_, type_);
  // The decode graphs' activations now, so that the memory measured after the
  // warm-up (which sizes the KV cache) already counts them.
  if (graphs_.max_bucket() > 0 && !dynamic_rope_) {
    size_t workspace = 0;
    const int64_t items_per_seq = ItemsPerDecodeRow();
    for (int32_t b : graphs_.buckets()) {
      workspace = std::max(workspace, AttentionWorkspaceBytes(b * items_per_seq, slice_.kv_heads, config_.head_dim,
                                                              GraphSplits(b)));
    }
    ReserveActivations(graph_act_, graphs_.max_bucket(), graphs_.max_bucket(), graphs_.max_bucket() * items_per_seq,
                       workspace);
  }
  TG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaLlamaModel::~CudaLlamaModel() {
  if (stream_) cudaStreamSynchronize(stream_);  // steps left in flight (run ahead) use the buffers
  graphs_.Clear();
  for (StepSlot& slot : slots_) {
    if (slot.done) cudaEventDestroy(slot.done);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaLlamaModel::AllocateKvCache(int64_t num_blocks, int64_t block_size) {
  TG_CUDA_CHECK(cudaSetDevice(device_));  // steps come from the addon's worker threads
  if (num_blocks < 1) throw std::runtime_error("KV cache needs at least 1 block, got " + std::to_string(num_blocks));
  graphs_.Clear();  // they hold the old cache's address
  kv_ = DeviceBuffer();
  num_blocks_ = 0;
  penalties_.reset();
  kv_.Resize(static_cast<size_t>((num_blocks + 1) * kv_bytes_per_block(block_size)));
  num_blocks_ = num_blocks;
  block_size_ = block_size;
  // A sequence has at most as many distinct tokens as the cache holds tokens, and
  // as the vocabulary has ids.
  const int64_t capacity = std::max<int64_t>(1, std::min(config_.vocab_size, num_blocks * block_size));
  penalties_ = std::make_unique<GpuPenaltyState>(kPenaltySlots, static_cast<int32_t>(capacity));
}

DeviceMemory CudaLlamaModel::memory_info() const {
  TG_CUDA_CHECK(cudaSetDevice(device_));
  size_t free_bytes = 0, total_bytes = 0;
  TG_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

KvLayer CudaLlamaModel::CacheLayer(int64_t layer) const {
  // [layer][k|v][block][kv head][slot][head dim], num_blocks_ + 1 blocks (the last one scratch)
  const int64_t half_bytes = (num_blocks_ + 1) * block_size_ * slice_.kv_heads * config_.head_dim *
                             static_cast<int64_t>(ElemSize(type_));
  char* base = kv_.as<char>() + 2 * layer * half_bytes;
  return KvLayer{base, base + half_bytes, block_size_, num_blocks_ + 1};
}

int64_t CudaLlamaModel::GraphMaxKeys() const {
  int64_t keys = config_.max_position_embeddings;
  if (num_blocks_ > 0) keys = std::min(keys, num_blocks_ * block_size_);
  return std::max<int64_t>(keys, 1);
}

// Graphs fix the split-KV factor at capture, so it is chosen for the longest context
// the cache can hold; shorter sequences leave some splits empty (cheap CTAs).
int CudaLlamaModel::GraphSplits(int32_t bucket) const { return Splits(bucket * ItemsPerDecodeRow(), GraphMaxKeys()); }

int64_t CudaLlamaModel::ItemsPerDecodeRow() const {
  return (slice_.q_heads / slice_.kv_heads + kAttentionItemQueries - 1) / kAttentionItemQueries;
}

int CudaLlamaModel::Splits(int64_t items, int64_t max_keys) const {
  return AttentionSplits(items, slice_.kv_heads, max_keys, sm_count_, split_waves_);
}

void CudaLlamaModel::ReserveActivations(Activations& a, int64_t t, int64_t r, int64_t attention_items,
                                        size_t workspace_bytes) {
  const ModelConfig& c = config_;
  const size_t es = ElemSize(type_);
  const int64_t hidden = c.hidden_size, d = c.head_dim, qh = slice_.q_heads, kvh = slice_.kv_heads;
  const int64_t rr = std::max<int64_t>(r, 1);
  a.x.Reserve(t * hidden * 4);
  a.h.Reserve(t * hidden * es);
  a.qkv.Reserve(t * (qh + 2 * kvh) * d * es);
  a.q.Reserve(t * qh * d * es);
  a.attn.Reserve(t * qh * d * es);
  a.proj.Reserve(t * hidden * es);
  a.gate_up.Reserve(t * 2 * slice_.inter_size * es);
  a.act.Reserve(t * slice_.inter_size * es);
  a.normed.Reserve(rr * hidden * es);
  a.norm_parts.Reserve(std::min(t, kGemvMaxRows) * ((hidden + 15) / 16) * 4);
  a.logits.Reserve(rr * c.vocab_size * 4);
  if (comm_) {
    a.shard_logits.Reserve(rr * slice_.vocab_size * 4);
    a.gathered.Reserve(rr * slice_.vocab_size * slice_.world_size * 4);
  }
  a.attn_workspace.Reserve(workspace_bytes);
  const size_t counter_bytes = sizeof(int32_t) * static_cast<size_t>(AttentionCounterCount(attention_items, kvh));
  if (counter_bytes > a.attn_counters.bytes()) {
    a.attn_counters.Resize(counter_bytes);
    TG_CUDA_CHECK(cudaMemsetAsync(a.attn_counters.get(), 0, counter_bytes, stream_));
  }
}

StepLayout CudaLlamaModel::Pack(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                                const std::vector<DeviceSample>& samples, int32_t pad_to, StepPlan* plan) const {
  const ModelConfig& c = config_;
  const int64_t d = c.head_dim, group = slice_.q_heads / slice_.kv_heads, bs = block_size_;
  const int32_t scratch = static_cast<int32_t>(num_blocks_);
  std::vector<int32_t> tokens, positions, slot_block, slot_offset, freq_index;
  HostAttentionBatch attention;
  std::vector<float> inv_freq = dynamic_rope_ ? std::vector<float>() : inv_freq_;
  StepLayout L;
  const int64_t min_rows = PrefillMinRows(d, bs);
  auto to_prefill_kernel = [&](const ForwardSequence& q) { return prefill_kernel_ && q.count >= min_rows; };
  int64_t prefill_rows = 0;
  for (const ForwardSequence& q : seqs) prefill_rows += to_prefill_kernel(q) ? q.count : 0;
  HostPrefillBatch prefill(PrefillTileRows(prefill_rows, slice_.q_heads, config_.head_dim, block_size_, sm_count_));
  for (size_t s = 0; s < seqs.size(); ++s) {
    const ForwardSequence& q = seqs[s];
    if (to_prefill_kernel(q)) {
      prefill.Add(attention.rows, q.position, q.count, q.blocks, bs);
      attention.rows += q.count;  // rows the paged kernel skips
    } else {
      L.max_keys = std::max(L.max_keys, q.position + q.count);
      attention.Add(q.position, q.count, q.blocks, bs, group);
    }
    if (dynamic_rope_) {
      auto f = cpu::RopeInvFreq(c.rope, d, c.max_position_embeddings, q.position + q.count);
      inv_freq.insert(inv_freq.end(), f.begin(), f.end());
    }
    for (int64_t i = 0; i < q.count; ++i) {
      const int64_t pos = q.position + i;
      tokens.push_back(q.tokens[i]);
      positions.push_back(static_cast<int32_t>(pos));
      slot_block.push_back(q.blocks[pos / bs]);
      slot_offset.push_back(static_cast<int32_t>(pos % bs));
      freq_index.push_back(dynamic_rope_ ? static_cast<int32_t>(s) : 0);
    }
  }
  std::vector<int32_t> rows32(logit_rows.begin(), logit_rows.end());
  size_t capacity = 0, item_capacity = 0;
  if (pad_to > 0) {
    // Padding sequences: one row at position 0 whose K/V go to the scratch block.
    for (int64_t s = static_cast<int64_t>(seqs.size()); s < pad_to; ++s) {
      attention.Add(0, 1, &scratch, bs, group);
      rows32.push_back(static_cast<int32_t>(tokens.size()));
      tokens.push_back(0);
      positions.push_back(0);
      slot_block.push_back(scratch);
      slot_offset.push_back(0);
      freq_index.push_back(0);
    }
    capacity = static_cast<size_t>(graphs_.max_bucket());
    item_capacity = capacity * static_cast<size_t>(ItemsPerDecodeRow()) * 2;
  }
  std::vector<GpuSamplingRow> sample_rows;
  for (const DeviceSample& ds : samples) {
    sample_rows.push_back(MakeGpuSamplingRow(ds.params, ds.generated_index, ds.top_n, ds.penalty_slot,
                                             /*observe=*/ds.penalty_slot >= 0));
  }
  L.all_greedy_rows = std::all_of(sample_rows.begin(), sample_rows.end(), GreedyRowsServe);
  static_assert(sizeof(GpuSamplingRow) % sizeof(int32_t) == 0, "sampling rows travel as int32 words");
  L.tokens = plan->Add(tokens, capacity);
  L.positions = plan->Add(positions, capacity);
  L.slot_block = plan->Add(slot_block, capacity);
  L.slot_offset = plan->Add(slot_offset, capacity);
  L.freq_index = plan->Add(freq_index, capacity);
  L.seq_row_start = plan->Add(attention.seq_row_start, capacity);
  L.seq_rows = plan->Add(attention.seq_rows, capacity);
  L.seq_position = plan->Add(attention.seq_position, capacity);
  L.seq_block_start = plan->Add(attention.seq_block_start, capacity);
  L.items = plan->Add(attention.items, item_capacity);
  L.logit_rows = plan->Add(rows32, capacity);
  L.inv_freq = plan->AddFloats(inv_freq);
  // Variable-length parts last: a graph reads them through the fixed arrays above.
  L.block_tables = plan->Add(attention.block_tables);
  L.sample_rows = plan->AddBytes(sample_rows.data(), sample_rows.size() * sizeof(GpuSamplingRow));
  L.p_seq_row_start = plan->Add(prefill.seq_row_start);
  L.p_seq_rows = plan->Add(prefill.seq_rows);
  L.p_seq_position = plan->Add(prefill.seq_position);
  L.p_seq_block_start = plan->Add(prefill.seq_block_start);
  L.p_block_tables = plan->Add(prefill.block_tables);
  L.p_items = plan->Add(prefill.items);
  L.p_num_items = prefill.num_items();
  L.p_tile_rows = prefill.tile_rows;
  L.rows = static_cast<int64_t>(tokens.size());
  L.logit_row_count = static_cast<int64_t>(rows32.size());
  L.num_items = attention.num_items();
  return L;
}

void CudaLlamaModel::EnqueueForward(const int32_t* in, const StepLayout& L, int splits, Activations& a, int kind) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, d = c.head_dim, qh = slice_.q_heads, kvh = slice_.kv_heads;
  const int64_t inter = slice_.inter_size, t = L.rows, r = L.logit_row_count;
  const int64_t qkv_width = (qh + 2 * kvh) * d;
  auto at = [&](size_t offset) { return in + offset; };
  AttentionBatch batch;
  batch.seq_row_start = at(L.seq_row_start);
  batch.seq_rows = at(L.seq_rows);
  batch.seq_position = at(L.seq_position);
  batch.seq_block_start = at(L.seq_block_start);
  batch.block_tables = at(L.block_tables);
  batch.items = at(L.items);
  batch.num_items = L.num_items;
  batch.split_counters = merge_in_kernel_ ? a.attn_counters.as<int32_t>() : nullptr;
  PrefillBatch prefill;
  prefill.seq_row_start = at(L.p_seq_row_start);
  prefill.seq_rows = at(L.p_seq_rows);
  prefill.seq_position = at(L.p_seq_position);
  prefill.seq_block_start = at(L.p_seq_block_start);
  prefill.block_tables = at(L.p_block_tables);
  prefill.items = at(L.p_items);
  prefill.num_items = L.p_num_items;
  prefill.tile_rows = L.p_tile_rows;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float eps = static_cast<float>(c.rms_norm_eps);
  const bool residual_in_gemm = comm_ == nullptr && ResidualInGemm();
  const bool silu_in_gemv = SiluInGateUpGemv();
  const bool rope_in_gemv = RopeInQkvGemv();
  const float* inv_freq = reinterpret_cast<const float*>(at(L.inv_freq));
  auto mark = [&](const char* op) { profiler_.Mark(stream_, op); };
  auto all_reduce = [&](void* data, size_t count, ElemType type) {
    if (!comm_) return;
    comm_->AllReduceSum(data, count, type, stream_);
    mark("all_reduce");
  };
  profiler_.BeginRecording(kind, stream_);

  // Under tensor parallelism the ranks' embedding rows are summed by the first norm's fused
  // all-reduce (add_norm below, with this delta), as a projection's are: no all-reduce of its own.
  const bool embedding_in_norm = comm_ && !profiler_.Skips("add_rms_norm") && !profiler_.Skips("all_reduce");
  if (embedding_in_norm) {
    LaunchEmbeddingShard(stream_, type_, weights_.embed.get(), slice_.vocab_begin, slice_.vocab_size, at(L.tokens), t,
                         hidden, a.proj.get(), a.x.as<float>());
  } else {
    LaunchEmbedding(stream_, type_, weights_.embed.get(), slice_.vocab_begin, slice_.vocab_size, at(L.tokens), t,
                    hidden, a.x.as<float>());
  }
  mark("embedding");
  if (!embedding_in_norm) all_reduce(a.x.get(), static_cast<size_t>(t * hidden), ElemType::kF32);
  // The residual add and RMSNorm after a row-parallel projection (o, down), with its
  // all-reduce folded in under tensor parallelism (one kernel with the peer collectives).
  // A null delta (layer 0, or a projection that added itself in) leaves the residual as it is.
  auto add_norm = [&](void* delta, const float* weight) {
    if (profiler_.Skips("add_rms_norm")) return;
    if (comm_ && delta && !profiler_.Skips("all_reduce")) {
      comm_->AllReduceAddRmsNorm(delta, a.x.as<float>(), weight, t, hidden, eps, type_, a.h.get(), stream_);
      mark("all_reduce_norm");
    } else {
      LaunchAddRmsNorm(stream_, type_, a.x.as<float>(), delta, weight, nullptr, t, hidden, eps, delta != nullptr,
                       a.h.get());
      mark("add_rms_norm");
    }
  };
  float* const residual = a.x.as<float>();
  const CudaLayerWeights& first = weights_.layers.front();
  // Under tensor parallelism a decode step's o and down GEMVs may sum the ranks' products
  // themselves and add them into the residual (GemvExchange): no all-reduce kernel. Every rank
  // must decide it alike, so it depends on the shapes, the type and the kernel's occupancy
  // (GemvSupports), never on a timing.
  GemvNorm rank_exchange;
  if (comm_ && comm_->gemv_exchange() && t <= kGemvMaxRows && !profiler_.SkipsAny()) {
    rank_exchange.exchange = *comm_->gemv_exchange();
  }
  const bool exchanging =
      rank_exchange.exchanges() &&
      GemvSupports(a.attn.get(), first.o.get(), t, hidden, qh * d, type_, ElemType::kF32, GemvInput::kPlain,
                   GemvOutput::kAddTo, {}, &rank_exchange) &&
      GemvSupports(a.act.get(), first.down.get(), t, hidden, inter, type_, ElemType::kF32, GemvInput::kPlain,
                   GemvOutput::kAddTo, {}, &rank_exchange);
  // Whether the o and down projections add into the f32 residual themselves; otherwise their
  // output is a.proj (delta), which the norm after it adds (after the all-reduce under TP).
  const bool adds_in_gemm = residual_in_gemm || exchanging;
  void* const delta = adds_in_gemm ? nullptr : a.proj.get();
  // A decode step in bf16 whose four products take the GEMV kernel (o and down by exchanging,
  // under TP) links its norms (GemvNorm): o and down feed the norm after their residual add with
  // the next norm's weight, and qkv and gate/up scale by it. Only layer 0's input norm and the
  // final norm run as kernels. fp16 is left out: h ⊙ weight need not fit its range.
  auto takes_gemv = [&](const void* x, const DeviceBuffer& w, void* out, int64_t n, int64_t k, bool add_to) {
    return gemm_->TakesGemv(stream_, x, w.get(), out, t, n, k, type_, add_to ? ElemType::kF32 : type_, add_to);
  };
  const bool link_norms =
      adds_in_gemm && silu_in_gemv && type_ == ElemType::kBF16 && inter % 8 == 0 && t <= kGemvMaxRows &&
      NormLinkInGemv() && !profiler_.SkipsAny() &&
      (exchanging || (takes_gemv(a.attn.get(), first.o, residual, hidden, qh * d, true) &&
                      takes_gemv(a.act.get(), first.down, residual, hidden, inter, true))) &&
      takes_gemv(a.h.get(), first.qkv, a.qkv.get(), qkv_width, hidden, false) &&
      takes_gemv(a.h.get(), first.gate_up, a.gate_up.get(), 2 * inter, hidden, false);
  const GemvNorm scaled_by_norm{a.norm_parts.as<float>(), nullptr, nullptr, eps};
  // A row-parallel projection (o, or down from act) of x ([t, k]) by w into the residual or
  // delta, exchanging its products with the other ranks' and feeding the norm with
  // `next_norm` (when not null) where the step does.
  auto project = [&](const void* x, const void* w, int64_t k, const DeviceBuffer* next_norm) {
    if (!adds_in_gemm) {
      gemm_->Run(stream_, x, w, a.proj.get(), t, hidden, k, type_, type_);
      return;
    }
    GemvNorm norm = rank_exchange;
    if (link_norms && next_norm) {
      norm.sum_squares = a.norm_parts.as<float>();
      norm.weight = next_norm->as<float>();
      norm.scaled = a.h.get();
    }
    gemm_->RunAddTo(stream_, x, w, residual, t, hidden, k, type_, norm.exchanges() || norm.feeds() ? &norm : nullptr);
  };
  // Where LaunchRopeKvWrite would put layer l's q, k and v, for a qkv GEMV that does it.
  auto rope_targets = [&](int64_t l, const CudaLayerWeights& W) {
    GemvRopeKv rope;
    rope.bias = W.qkv_bias.bytes() ? W.qkv_bias.as<float>() : nullptr;
    rope.positions = at(L.positions);
    rope.inv_freq = inv_freq;
    rope.slot_block = at(L.slot_block);
    rope.slot_offset = at(L.slot_offset);
    rope.q_heads = static_cast<int>(qh);
    rope.kv_heads = static_cast<int>(kvh);
    rope.head_dim = static_cast<int>(d);
    rope.q_out = a.q.get();
    const KvLayer cache = CacheLayer(l);
    rope.k_cache = cache.k;
    rope.v_cache = cache.v;
    rope.block_size = cache.block_size;
    return rope;
  };
  // Whether the MLPs take the Hopper gate/up GEMM, where it times faster than cuBLASLt's GEMM and
  // the SiLU-mul pass for this many rows (GateUpChoice): decided once a step, on layer 0's
  // weights, since every layer's gate/up has the same shape.
  const bool gate_up_fused =
      SiluGateUpGemmTakes(a.h.get(), first.gate_up.get(), t, inter, hidden, type_) &&
      gate_up_choice_.Fused(
          stream_, t,
          [&] { LaunchSiluGateUpGemm(stream_, type_, a.h.get(), first.gate_up.get(), a.act.get(), t, inter, hidden); },
          [&] {
            gemm_->Run(stream_, a.h.get(), first.gate_up.get(), a.gate_up.get(), t, 2 * inter, hidden, type_, type_);
            LaunchSiluMul(stream_, type_, a.gate_up.get(), t, inter, a.act.get());
          });
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const CudaLayerWeights& W = weights_.layers[static_cast<size_t>(l)];
    // The previous layer's MLP output joins the residual here (none before layer 0), and its
    // down GEMV has fed this norm where the step links them.
    const GemvNorm* input_norm_fed = link_norms && l > 0 ? &scaled_by_norm : nullptr;
    if (!input_norm_fed) add_norm(l > 0 ? delta : embedding_in_norm ? a.proj.get() : nullptr, W.input_norm.as<float>());
    // A decode step's GEMV may do RoPE and the KV write itself (one table of frequencies).
    bool roped = false;
    if (!profiler_.Skips("qkv")) {
      if (rope_in_gemv && !dynamic_rope_ && !profiler_.Skips("rope_kv_write")) {
        roped = gemm_->RunQkvRope(stream_, a.h.get(), W.qkv.get(), rope_targets(l, W), t, qkv_width, hidden, type_,
                                  input_norm_fed);
      }
      if (!roped) {
        gemm_->Run(stream_, a.h.get(), W.qkv.get(), a.qkv.get(), t, qkv_width, hidden, type_, type_,
                   input_norm_fed);
      }
      mark(roped ? "qkv_rope" : "qkv");
    }
    if (!roped && !profiler_.Skips("rope_kv_write")) {
      LaunchRopeKvWrite(stream_, type_, a.qkv.get(), W.qkv_bias.bytes() ? W.qkv_bias.as<float>() : nullptr,
                        at(L.positions), inv_freq, dynamic_rope_ ? at(L.freq_index) : nullptr, at(L.slot_block),
                        at(L.slot_offset), t, qh, kvh, d, a.q.get(), CacheLayer(l));
      mark("rope_kv_write");
    }
    if (!profiler_.Skips("attention")) {
      LaunchPagedAttention(stream_, type_, a.q.get(), CacheLayer(l), batch, qh, kvh, d, c.sliding_window, scale,
                           splits, a.attn_workspace.as<float>(), a.attn.get());
      mark("attention");
    }
    if (prefill.num_items > 0 && !profiler_.Skips("prefill_attention")) {
      LaunchPrefillAttention(stream_, type_, a.q.get(), CacheLayer(l), prefill, qh, kvh, d, c.sliding_window, scale,
                             a.attn.get());
      mark("prefill_attention");
    }
    if (!profiler_.Skips("o")) {
      project(a.attn.get(), W.o.get(), qh * d, &W.post_norm);
      mark(link_norms ? "o_norm" : "o");
    }
    if (!link_norms) add_norm(delta, W.post_norm.as<float>());
    // A step of many rows may take the Hopper gate/up GEMM with SiLU-mul in its epilogue (no
    // [t, 2·inter] buffer; gate_up_fused), then the down projection of its output; other steps
    // cuBLASLt's or the GEMV's gate/up GEMM, then RunSiluDown(AddTo), which may fold SiLU-mul into
    // the GEMV.
    const bool silu_in_gemm =
        gate_up_fused && SiluGateUpGemmTakes(a.h.get(), W.gate_up.get(), t, inter, hidden, type_);
    // A decode step's GEMV may write SiLU-mul itself (gate and up rows of the same outputs in
    // one CTA); then the down projection takes act as it is.
    bool act_ready = silu_in_gemm;
    if (!profiler_.Skips("gate_up")) {
      if (silu_in_gemm) {
        LaunchSiluGateUpGemm(stream_, type_, a.h.get(), W.gate_up.get(), a.act.get(), t, inter, hidden);
      } else if (silu_in_gemv && gemm_->RunGateUpSilu(stream_, a.h.get(), W.gate_up.get(), a.act.get(), t, inter,
                                                       hidden, type_, link_norms ? &scaled_by_norm : nullptr)) {
        act_ready = true;
      } else if (link_norms) {
        throw std::logic_error("a step that links its norms needs the gate/up GEMV's SiLU-mul");
      } else {
        gemm_->Run(stream_, a.h.get(), W.gate_up.get(), a.gate_up.get(), t, 2 * inter, hidden, type_, type_);
      }
      mark(act_ready ? "gate_up_silu" : "gate_up");
    }
    if (!profiler_.Skips("silu_down")) {
      if (act_ready || exchanging) {
        // An exchanging down projection runs whatever this rank's gate/up did: its peers' does.
        if (!act_ready) LaunchSiluMul(stream_, type_, a.gate_up.get(), t, inter, a.act.get());
        // The last layer's down projection feeds no norm: the final one runs on the logit rows.
        project(a.act.get(), W.down.get(), inter,
                l + 1 < c.num_layers ? &weights_.layers[static_cast<size_t>(l + 1)].input_norm : nullptr);
      } else if (residual_in_gemm) {
        gemm_->RunSiluDownAddTo(stream_, a.gate_up.get(), a.act.get(), W.down.get(), residual, t, hidden, inter, type_);
      } else {
        gemm_->RunSiluDown(stream_, a.gate_up.get(), a.act.get(), W.down.get(), a.proj.get(), t, hidden, inter, type_,
                           type_);
      }
      mark(act_ready ? "down" : "silu_down");
    }
  }
  if (r == 0) return;
  // Only the rows that need logits: the last residual add (unless the down projection made
  // it) and the final norm, gathered.
  if (!adds_in_gemm) all_reduce(a.proj.get(), static_cast<size_t>(t * hidden), type_);
  LaunchAddRmsNorm(stream_, type_, residual, delta, weights_.final_norm.as<float>(), at(L.logit_rows), r, hidden, eps,
                   false, a.normed.get());
  mark("final_norm");
  if (!comm_) {
    gemm_->Run(stream_, a.normed.get(), weights_.head(), a.logits.get(), r, c.vocab_size, hidden, type_, ElemType::kF32);
    mark("lm_head");
    return;
  }
  gemm_->Run(stream_, a.normed.get(), weights_.head(), a.shard_logits.get(), r, slice_.vocab_size, hidden, type_,
             ElemType::kF32);
  mark("lm_head");
}

void CudaLlamaModel::GatherLogits(Activations& a, int64_t r) {
  const int64_t vocab = config_.vocab_size;
  // One row of logits whose vocabulary the ranks split evenly is gathered in vocabulary order
  // already ([ranks][rows][shard]): straight into the logits, with no pass to put it in order.
  const bool gathered_in_order = r == 1 && slice_.world_size * slice_.vocab_size == vocab;
  comm_->AllGather(a.shard_logits.get(), static_cast<size_t>(r * slice_.vocab_size), ElemType::kF32,
                   gathered_in_order ? a.logits.get() : a.gathered.get(), stream_);
  if (gathered_in_order) return;
  LaunchGatherVocabShards(stream_, a.gathered.as<float>(), slice_.world_size, r, slice_.vocab_size, vocab,
                          a.logits.as<float>());
}

bool CudaLlamaModel::GreedyBuffersFit(int32_t ns, int32_t top_stride) const {
  const size_t bytes = GreedyPartialFloats(ns, GreedyColumns(), top_stride) * 4;
  return greedy_partials_.bytes() >= bytes && (!comm_ || greedy_gathered_.bytes() >= bytes * slice_.world_size);
}

void CudaLlamaModel::EnqueueGreedyRows(Activations& a, int64_t host_rows, int32_t ns, const GpuSamplingRow* rows,
                                       const GpuSamplingOutputs& out) {
  const int32_t vocab = static_cast<int32_t>(config_.vocab_size);
  // Under tensor parallelism each rank reads its own shard of the logits (no host rows then).
  const float* logits = comm_ ? a.shard_logits.as<float>() : a.logits.as<float>() + host_rows * vocab;
  const int32_t cols = GreedyColumns();
  const int32_t world = comm_ ? slice_.world_size : 1;
  const size_t floats = GreedyPartialFloats(ns, cols, out.top_stride);
  if (!GreedyBuffersFit(ns, out.top_stride)) {
    WaitForStepsInFlight();  // one may still read them
    greedy_partials_.Reserve(floats * 4);
    if (comm_) greedy_gathered_.Reserve(floats * 4 * world);
  }
  LaunchGreedyPartials(stream_, logits, ns, cols, static_cast<int32_t>(slice_.vocab_begin), vocab, rows,
                       out.top_stride, greedy_partials_.as<float>());
  const float* pieces = greedy_partials_.as<float>();
  if (comm_) {
    comm_->AllGather(greedy_partials_.get(), floats, ElemType::kF32, greedy_gathered_.get(), stream_);
    pieces = greedy_gathered_.as<float>();
  }
  LaunchGreedyMerge(stream_, pieces, world, ns, cols, vocab, rows, out.top_stride, out);
}

bool CudaLlamaModel::EnqueueDecodeAhead(int slot, const std::vector<ForwardSequence>& seqs,
                                        const std::vector<DeviceSample>& samples) {
  if (seqs.empty() || samples.size() != seqs.size()) return false;
  std::vector<int64_t> logit_rows(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) logit_rows[i] = static_cast<int64_t>(i);
  return Enqueue(slot, seqs, logit_rows, 0, samples, true);
}

bool CudaLlamaModel::Enqueue(int slot, const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                             int64_t host_rows, const std::vector<DeviceSample>& samples,
                             bool tokens_are_sample_rows) {
  if (num_blocks_ == 0) throw std::runtime_error("forward before the KV cache is allocated");
  if (host_rows < 0 || host_rows + static_cast<int64_t>(samples.size()) != static_cast<int64_t>(logit_rows.size())) {
    throw std::logic_error("ForwardAndSample: logit_rows must be host_rows rows, then one per sample");
  }
  if (slot < 0 || slot >= kStepSlots || slots_[slot].busy) throw std::logic_error("EnqueueStep: slot in use");
  StepSlot& out_slot = slots_[slot];
  out_slot.ns = 0;
  out_slot.host_rows = 0;
  out_slot.profile_step = -1;
  out_slot.queued = false;
  if (seqs.empty()) {
    out_slot.busy = true;  // finishes with nothing
    return true;
  }
  TG_CUDA_CHECK(cudaSetDevice(device_));  // steps come from the addon's worker threads
  profiler_.EnterStep();

  // A decode step (one new token per sequence, each with logits) runs in a graph.
  const bool decode = std::all_of(seqs.begin(), seqs.end(), [](const ForwardSequence& q) { return q.count == 1; }) &&
                      logit_rows.size() == seqs.size();
  const int32_t bucket = decode && !dynamic_rope_ ? graphs_.BucketFor(static_cast<int64_t>(seqs.size())) : 0;
  // A step run ahead is a graph bucket's, so that it moves no buffer the step before
  // it may still be using: the graphs' inputs and activations stay where they are.
  if (tokens_are_sample_rows && bucket == 0) return false;

  const int32_t ns = static_cast<int32_t>(samples.size());
  int32_t top_stride = 0;
  for (const DeviceSample& ds : samples) top_stride = std::max(top_stride, ds.top_n);
  // Sampler outputs: tokens, logprobs, then top ids and top logprobs ([ns][top_stride]).
  const size_t sampled_words = static_cast<size_t>(ns) * (2 + 2 * static_cast<size_t>(top_stride));
  if (tokens_are_sample_rows && sampled_.bytes() < sampled_words * 4) return false;

  const int profile_kind = bucket > 0 ? bucket : decode ? StepProfiler::kEagerDecode : StepProfiler::kPrefill;
  StepPlan plan;
  const StepLayout L = Pack(seqs, logit_rows, samples, bucket, &plan);
  const size_t in_bytes = plan.words.size() * sizeof(int32_t);
  if (tokens_are_sample_rows && graph_in_.bytes() < in_bytes) return false;
  // Greedy rows merge their pieces (greedy_rows.h); under tensor parallelism that needs no
  // logits gathered, unless host rows want them. Every rank decides alike: from the step.
  const bool greedy_rows = greedy_rows_ && ns > 0 && L.all_greedy_rows && (!comm_ || host_rows == 0);
  if (tokens_are_sample_rows && greedy_rows && !GreedyBuffersFit(ns, top_stride)) return false;
  const int profile_step = profiler_.StepBegin(stream_);
  out_slot.in.Reserve(in_bytes);
  std::memcpy(out_slot.in.as<char>(), plan.words.data(), in_bytes);
  Activations* act = &eager_;
  if (bucket > 0) {
    if (graph_in_.bytes() < in_bytes) {
      // Room for the largest bucket's block tables at the longest context, so that the
      // buffer (whose address the graphs hold) rarely has to move.
      const size_t tables = static_cast<size_t>(graphs_.max_bucket()) *
                            static_cast<size_t>((GraphMaxKeys() + block_size_ - 1) / block_size_ + 1);
      const size_t want = in_bytes + tables * sizeof(int32_t) + graphs_.max_bucket() * sizeof(GpuSamplingRow);
      graphs_.Clear();
      WaitForStepsInFlight();  // one may still read it
      graph_in_.Resize(std::max(want, graph_in_.bytes() * 2));
    }
    TG_CUDA_CHECK(cudaMemcpyAsync(graph_in_.get(), out_slot.in.as<char>(), in_bytes, cudaMemcpyHostToDevice, stream_));
    if (tokens_are_sample_rows) {
      // The tokens the step before sampled, still on the device, replace the sample rows.
      LaunchTokensFromSamples(stream_, sampled_.as<int32_t>(), graph_in_.as<int32_t>() + L.tokens,
                              static_cast<int64_t>(seqs.size()));
    }
    act = &graph_act_;
    const int32_t* in = graph_in_.as<int32_t>();
    graphs_.Run(bucket, stream_, [&] { EnqueueForward(in, L, GraphSplits(bucket), graph_act_, profile_kind); });
  } else {
    // An eager step may grow these buffers: the steps in flight must be done with them.
    WaitForStepsInFlight();
    dev_in_.Reserve(in_bytes);
    TG_CUDA_CHECK(cudaMemcpyAsync(dev_in_.get(), out_slot.in.as<char>(), in_bytes, cudaMemcpyHostToDevice, stream_));
    const int splits = Splits(L.num_items, L.max_keys);
    ReserveActivations(eager_, L.rows, L.logit_row_count, L.num_items,
                       AttentionWorkspaceBytes(L.num_items, slice_.kv_heads, config_.head_dim, splits));
    EnqueueForward(dev_in_.as<int32_t>(), L, splits, eager_, profile_kind);
  }
  const int32_t* in = bucket > 0 ? graph_in_.as<int32_t>() : dev_in_.as<int32_t>();

  if (comm_ && !greedy_rows && L.logit_row_count > 0) GatherLogits(*act, L.logit_row_count);
  const int64_t vocab = config_.vocab_size;
  std::vector<std::vector<int2>> counts;  // pageable: cudaMemcpyAsync has read them when it returns
  if (host_rows > 0) {
    host_logits_.Reserve(host_rows * vocab * 4);
    TG_CUDA_CHECK(cudaMemcpyAsync(host_logits_.as<float>(), act->logits.get(), host_rows * vocab * 4,
                                  cudaMemcpyDeviceToHost, stream_));
  }
  if (ns > 0) {
    for (const DeviceSample& ds : samples) {
      if (ds.penalty_slot < 0 || ds.reset_counts == nullptr) continue;
      counts.push_back(CountTokens(ds.reset_counts->data(), static_cast<int64_t>(ds.reset_counts->size())));
      penalties_->SetCounts(ds.penalty_slot, counts.back().data(), static_cast<int32_t>(counts.back().size()), stream_);
    }
    if (sampled_.bytes() < sampled_words * 4) {
      WaitForStepsInFlight();  // one may still copy it back
      sampled_.Reserve(sampled_words * 4);
    }
    GpuSamplingOutputs out;
    out.tokens = sampled_.as<int32_t>();
    out.logprobs = reinterpret_cast<float*>(out.tokens + ns);
    out.top_stride = top_stride;
    if (top_stride > 0) {
      out.top_ids = out.tokens + 2 * ns;
      out.top_logprobs = reinterpret_cast<float*>(out.top_ids + static_cast<size_t>(ns) * top_stride);
    }
    const auto* rows = reinterpret_cast<const GpuSamplingRow*>(in + L.sample_rows);
    if (greedy_rows) {
      EnqueueGreedyRows(*act, host_rows, ns, rows, out);
    } else {
      // After the host rows' copy on the same stream: the sampler changes its rows in place.
      LaunchGpuSampling(stream_, act->logits.as<float>() + host_rows * vocab, ns, static_cast<int32_t>(vocab), rows,
                        penalties_->view(), out);
    }
    out_slot.sampled.Reserve(sampled_words * 4);
    TG_CUDA_CHECK(cudaMemcpyAsync(out_slot.sampled.as<int32_t>(), sampled_.get(), sampled_words * 4,
                                  cudaMemcpyDeviceToHost, stream_));
  }
  profiler_.StepEnd(profile_step, stream_);
  if (!out_slot.done) TG_CUDA_CHECK(cudaEventCreateWithFlags(&out_slot.done, cudaEventDisableTiming));
  TG_CUDA_CHECK(cudaEventRecord(out_slot.done, stream_));
  out_slot.busy = true;
  out_slot.queued = true;
  out_slot.ns = ns;
  out_slot.top_stride = top_stride;
  out_slot.top_n.clear();
  for (const DeviceSample& ds : samples) out_slot.top_n.push_back(ds.top_n);
  out_slot.host_rows = host_rows;
  out_slot.profile_kind = profile_kind;
  out_slot.profile_step = profile_step;
  return true;
}

void CudaLlamaModel::FinishStep(int slot, std::vector<float>* logits, std::vector<SampleResult>* sampled) {
  if (slot < 0 || slot >= kStepSlots || !slots_[slot].busy) throw std::logic_error("FinishStep: no step in this slot");
  StepSlot& s = slots_[slot];
  s.busy = false;
  logits->clear();
  sampled->clear();
  if (!s.queued) return;
  TG_CUDA_CHECK(cudaSetDevice(device_));
  TG_CUDA_CHECK(cudaEventSynchronize(s.done));
  profiler_.Collect(s.profile_kind, s.profile_step);
  const int64_t vocab = config_.vocab_size;
  if (s.host_rows > 0) {
    logits->resize(static_cast<size_t>(s.host_rows * vocab));
    std::memcpy(logits->data(), host_logits_.as<float>(), s.host_rows * vocab * 4);
  }
  const int32_t ns = s.ns, top_stride = s.top_stride;
  if (ns > 0) {
    const int32_t* tokens_out = s.sampled.as<int32_t>();
    const float* logprobs_out = reinterpret_cast<const float*>(tokens_out + ns);
    const int32_t* top_ids_out = tokens_out + 2 * ns;
    const float* top_lp_out = reinterpret_cast<const float*>(top_ids_out + static_cast<size_t>(ns) * top_stride);
    sampled->resize(static_cast<size_t>(ns));
    for (int32_t k = 0; k < ns; ++k) {
      SampleResult& res = (*sampled)[static_cast<size_t>(k)];
      if (tokens_out[k] < 0) {
        throw std::runtime_error("the GPU sampler found no finite logit in a row (NaN or -inf everywhere)");
      }
      res.token = tokens_out[k];
      res.logprob = logprobs_out[k];
      for (int32_t j = 0; j < s.top_n[static_cast<size_t>(k)]; ++j) {
        const size_t at_k = static_cast<size_t>(k) * top_stride + j;
        if (top_ids_out[at_k] < 0) break;
        res.top_ids.push_back(top_ids_out[at_k]);
        res.top_logprobs.push_back(top_lp_out[at_k]);
      }
    }
  }
}

}  // namespace
}  // namespace cuda

std::unique_ptr<ModelRunner> MakeCudaModelRunner(const EngineOptions& options) {
  return std::make_unique<cuda::CudaLlamaModel>(options);
}

}  // namespace tg
