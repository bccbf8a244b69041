// CudaLlamaModel: the Llama-family forward (llama, mistral, qwen2) on one GPU,
// the same function as the CPU backend's LlamaModel with bf16/fp16 weights,
// activations and KV cache, f32 accumulation, an f32 residual stream and f32 logits.
//
// Per step, every input the kernels need (tokens, positions, KV slots, the
// attention work items, RoPE frequencies, logit rows, sampling rows) is packed on
// the host into one pinned buffer and copied with one cudaMemcpyAsync; the only
// host synchronisation is the copy back of the step's results. Rows the engine
// samples on the device (ForwardAndSample) go through the GPU sampler
// (sampling/gpu_sampler.h) after lm_head, and only their tokens, logprobs and
// top-n come back; rows that need logits on the host (prompt logprobs, requests
// the GPU sampler does not cover) come back as f32 logits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_model_runner.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/elem_type.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/sampling/gpu_sampler.h"
#include "core/dtype.h"
#include "engine/engine.h"
#include "model/llama_weights.h"

namespace tg {
namespace cuda {
namespace {

struct LayerWeights {
  DeviceBuffer input_norm, post_norm;  // f32 [hidden]
  DeviceBuffer qkv;                    // [(q_heads + 2 kv_heads) * d, hidden]
  DeviceBuffer qkv_bias;               // f32, empty unless attention_bias
  DeviceBuffer o;                      // [hidden, q_heads * d]
  DeviceBuffer gate_up;                // [2 * inter, hidden]: gate rows then up rows
  DeviceBuffer down;                   // [hidden, inter]
};

// Sequences that can hold device penalty counts at once; a penalised sequence
// beyond them is sampled on the host (Engine::Step). 64 slots of up to a whole
// vocabulary of (token, count) pairs is 64 MiB at V = 128256.
constexpr int32_t kPenaltySlots = 64;

class CudaLlamaModel : public ModelRunner {
 public:
  explicit CudaLlamaModel(const EngineOptions& o);
  ~CudaLlamaModel() override;

  const TpSlice& slice() const override { return slice_; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  int64_t kv_bytes_per_block(int64_t block_size) const override {
    return 2 * config_.num_layers * block_size * slice_.kv_heads * config_.head_dim *
           static_cast<int64_t>(ElemSize(type_));
  }
  std::string attention_impl() const override { return "cuda-paged"; }
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
                        std::vector<SampleResult>* sampled) override;
  DeviceMemory memory_info() const override;

 private:
  DeviceBuffer Upload(const std::vector<float>& host, ElemType as);
  DeviceBuffer UploadConcat(const std::vector<const std::vector<float>*>& parts, ElemType as);
  KvLayer CacheLayer(int64_t layer) const;

  ModelConfig config_;
  TpSlice slice_;
  ElemType type_;
  int device_ = 0;  // the process's first visible GPU; set on every thread that calls in
  cudaStream_t stream_ = nullptr;
  int sm_count_ = 0;
  std::unique_ptr<Gemm> gemm_;
  int64_t weight_bytes_ = 0;

  DeviceBuffer embed_, final_norm_, lm_head_;  // lm_head_ empty when tied to embed_
  std::vector<LayerWeights> layers_;
  std::vector<float> inv_freq_;  // for RoPE that doesn't depend on length

  DeviceBuffer kv_;
  int64_t num_blocks_ = 0, block_size_ = 0;
  std::unique_ptr<GpuPenaltyState> penalties_;  // sized with the KV cache

  // Per-step buffers, grown as needed.
  PinnedBuffer host_in_, host_logits_, host_sampled_;
  DeviceBuffer sampled_;  // the sampler's outputs, one block copied back
  DeviceBuffer dev_in_, x_, h_, qkv_, q_, attn_, proj_, gate_up_, act_, normed_, logits_, attn_workspace_;
};

CudaLlamaModel::CudaLlamaModel(const EngineOptions& o)
    : config_(o.config), slice_(MakeTpSlice(o.config, 0, 1)), type_(ParseComputeDtype(o.dtype)) {
  if (o.world_size != 1) throw std::runtime_error("device cuda does not support tensor parallelism yet");
  if (config_.head_dim % 8 != 0 || config_.head_dim > 256) {
    throw std::runtime_error("device cuda supports head_dim multiples of 8 up to 256, this model has " +
                             std::to_string(config_.head_dim));
  }
  TG_CUDA_CHECK(cudaSetDevice(device_));
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_));
  gemm_ = std::make_unique<Gemm>();
  inv_freq_ = cpu::RopeInvFreq(config_.rope, config_.head_dim, config_.max_position_embeddings,
                               config_.max_position_embeddings);

  // Host f32 weights, converted and uploaded layer by layer.
  LlamaWeights w = LoadLlamaWeights(o.model_dir, config_, slice_);
  embed_ = Upload(w.embed, type_);
  if (!w.lm_head.empty()) lm_head_ = Upload(w.lm_head, type_);
  final_norm_ = Upload(w.final_norm, ElemType::kF32);
  for (auto& L : w.layers) {
    LayerWeights d;
    d.input_norm = Upload(L.input_norm, ElemType::kF32);
    d.post_norm = Upload(L.post_norm, ElemType::kF32);
    d.qkv = UploadConcat({&L.q, &L.k, &L.v}, type_);
    if (config_.attention_bias) d.qkv_bias = UploadConcat({&L.q_bias, &L.k_bias, &L.v_bias}, ElemType::kF32);
    d.o = Upload(L.o, type_);
    d.gate_up = UploadConcat({&L.gate, &L.up}, type_);
    d.down = Upload(L.down, type_);
    layers_.push_back(std::move(d));
    L = LlamaLayerWeights{};  // free the host copy as we go
  }
  TG_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaLlamaModel::~CudaLlamaModel() {
  if (stream_) cudaStreamDestroy(stream_);
}

DeviceBuffer CudaLlamaModel::UploadConcat(const std::vector<const std::vector<float>*>& parts, ElemType as) {
  size_t count = 0;
  for (auto* p : parts) count += p->size();
  DeviceBuffer buf(count * ElemSize(as));
  size_t at = 0;
  for (auto* p : parts) {
    if (as == ElemType::kF32) {
      TG_CUDA_CHECK(cudaMemcpy(buf.as<char>() + at * 4, p->data(), p->size() * 4, cudaMemcpyHostToDevice));
    } else {
      std::vector<uint16_t> half(p->size());
      for (size_t i = 0; i < p->size(); ++i) half[i] = as == ElemType::kBF16 ? F32ToBf16((*p)[i]) : F32ToF16((*p)[i]);
      TG_CUDA_CHECK(cudaMemcpy(buf.as<char>() + at * 2, half.data(), half.size() * 2, cudaMemcpyHostToDevice));
    }
    at += p->size();
  }
  weight_bytes_ += static_cast<int64_t>(buf.bytes());
  return buf;
}

DeviceBuffer CudaLlamaModel::Upload(const std::vector<float>& host, ElemType as) { return UploadConcat({&host}, as); }

void CudaLlamaModel::AllocateKvCache(int64_t num_blocks, int64_t block_size) {
  TG_CUDA_CHECK(cudaSetDevice(device_));  // steps come from the addon's worker threads
  if (num_blocks < 1) throw std::runtime_error("KV cache needs at least 1 block, got " + std::to_string(num_blocks));
  kv_ = DeviceBuffer();
  num_blocks_ = 0;
  penalties_.reset();
  kv_.Resize(static_cast<size_t>(num_blocks * kv_bytes_per_block(block_size)));
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
  // [layer][k|v][block][kv head][slot][head dim]
  const int64_t half_bytes = num_blocks_ * block_size_ * slice_.kv_heads * config_.head_dim *
                             static_cast<int64_t>(ElemSize(type_));
  char* base = kv_.as<char>() + 2 * layer * half_bytes;
  return KvLayer{base, base + half_bytes, block_size_};
}

// The host-side plan of one step, packed as int32 words for one copy.
struct StepPlan {
  std::vector<int32_t> words;
  size_t Add(const std::vector<int32_t>& v) {
    size_t at = words.size();
    words.insert(words.end(), v.begin(), v.end());
    while (words.size() % 4) words.push_back(0);  // keep every array 16-byte aligned
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

void CudaLlamaModel::ForwardAndSample(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                                      int64_t host_rows, const std::vector<DeviceSample>& samples,
                                      std::vector<float>* logits, std::vector<SampleResult>* sampled) {
  if (num_blocks_ == 0) throw std::runtime_error("forward before the KV cache is allocated");
  if (host_rows < 0 || host_rows + static_cast<int64_t>(samples.size()) != static_cast<int64_t>(logit_rows.size())) {
    throw std::logic_error("ForwardAndSample: logit_rows must be host_rows rows, then one per sample");
  }
  logits->clear();
  sampled->clear();
  if (seqs.empty()) return;
  TG_CUDA_CHECK(cudaSetDevice(device_));  // steps come from the addon's worker threads
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, d = c.head_dim, qh = slice_.q_heads, kvh = slice_.kv_heads;
  const int64_t inter = slice_.inter_size, vocab = c.vocab_size, group = qh / kvh, bs = block_size_;
  const int64_t qkv_width = (qh + 2 * kvh) * d;
  const bool dynamic_rope = cpu::RopeDependsOnLength(c.rope);

  // Rows, KV slots and attention work items.
  std::vector<int32_t> tokens, positions, slot_block, slot_offset, freq_index;
  HostAttentionBatch attention;
  std::vector<float> inv_freq = dynamic_rope ? std::vector<float>() : inv_freq_;
  int64_t max_keys = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const ForwardSequence& q = seqs[s];
    max_keys = std::max(max_keys, q.position + q.count);
    attention.Add(q.position, q.count, q.blocks, bs, group);
    if (dynamic_rope) {
      auto f = cpu::RopeInvFreq(c.rope, d, c.max_position_embeddings, q.position + q.count);
      inv_freq.insert(inv_freq.end(), f.begin(), f.end());
    }
    for (int64_t i = 0; i < q.count; ++i) {
      const int64_t pos = q.position + i;
      tokens.push_back(q.tokens[i]);
      positions.push_back(static_cast<int32_t>(pos));
      slot_block.push_back(q.blocks[pos / bs]);
      slot_offset.push_back(static_cast<int32_t>(pos % bs));
      freq_index.push_back(dynamic_rope ? static_cast<int32_t>(s) : 0);
    }
  }
  const int64_t t = static_cast<int64_t>(tokens.size());
  const int64_t r = static_cast<int64_t>(logit_rows.size());
  std::vector<int32_t> rows32(logit_rows.begin(), logit_rows.end());
  static_assert(sizeof(GpuSamplingRow) % sizeof(int32_t) == 0, "sampling rows travel as int32 words");
  const int32_t ns = static_cast<int32_t>(samples.size());
  std::vector<GpuSamplingRow> sample_rows;
  int32_t top_stride = 0;
  for (const DeviceSample& d : samples) {
    sample_rows.push_back(MakeGpuSamplingRow(d.params, d.generated_index, d.top_n, d.penalty_slot,
                                             /*observe=*/d.penalty_slot >= 0));
    top_stride = std::max(top_stride, d.top_n);
  }

  StepPlan plan;
  const size_t o_tokens = plan.Add(tokens), o_pos = plan.Add(positions), o_sb = plan.Add(slot_block),
               o_so = plan.Add(slot_offset), o_fi = plan.Add(freq_index), o_rs = plan.Add(attention.seq_row_start),
               o_rn = plan.Add(attention.seq_rows), o_sp = plan.Add(attention.seq_position),
               o_bs = plan.Add(attention.seq_block_start), o_bt = plan.Add(attention.block_tables),
               o_it = plan.Add(attention.items), o_lr = plan.Add(rows32),
               o_if = plan.AddFloats(inv_freq),
               o_sr = plan.AddBytes(sample_rows.data(), sample_rows.size() * sizeof(GpuSamplingRow));
  const size_t in_bytes = plan.words.size() * sizeof(int32_t);
  host_in_.Reserve(in_bytes);
  std::memcpy(host_in_.as<char>(), plan.words.data(), in_bytes);
  dev_in_.Reserve(in_bytes);
  TG_CUDA_CHECK(cudaMemcpyAsync(dev_in_.get(), host_in_.as<char>(), in_bytes, cudaMemcpyHostToDevice, stream_));
  const int32_t* in = dev_in_.as<int32_t>();
  auto at = [&](size_t offset) { return in + offset; };

  // Activations, grown to this step's size.
  const size_t es = ElemSize(type_);
  x_.Reserve(t * hidden * 4);
  h_.Reserve(t * hidden * es);
  qkv_.Reserve(t * qkv_width * es);
  q_.Reserve(t * qh * d * es);
  attn_.Reserve(t * qh * d * es);
  proj_.Reserve(t * hidden * es);
  gate_up_.Reserve(t * 2 * inter * es);
  act_.Reserve(t * inter * es);
  normed_.Reserve(std::max<int64_t>(r, 1) * hidden * es);
  logits_.Reserve(std::max<int64_t>(r, 1) * vocab * 4);

  AttentionBatch batch;
  batch.seq_row_start = at(o_rs);
  batch.seq_rows = at(o_rn);
  batch.seq_position = at(o_sp);
  batch.seq_block_start = at(o_bs);
  batch.block_tables = at(o_bt);
  batch.items = at(o_it);
  batch.num_items = attention.num_items();
  const int splits = AttentionSplits(batch.num_items, kvh, max_keys, sm_count_);
  attn_workspace_.Reserve(AttentionWorkspaceBytes(batch.num_items, kvh, d, splits));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float* inv_freq_dev = reinterpret_cast<const float*>(at(o_if));

  LaunchEmbedding(stream_, type_, embed_.get(), at(o_tokens), t, hidden, x_.as<float>());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = layers_[static_cast<size_t>(l)];
    // The previous layer's MLP output joins the residual here (none before layer 0).
    LaunchAddRmsNorm(stream_, type_, x_.as<float>(), l == 0 ? nullptr : proj_.get(), L.input_norm.as<float>(),
                     nullptr, t, hidden, eps, true, h_.get());
    gemm_->Run(stream_, h_.get(), L.qkv.get(), qkv_.get(), t, qkv_width, hidden, type_, type_);
    LaunchRopeKvWrite(stream_, type_, qkv_.get(), L.qkv_bias.bytes() ? L.qkv_bias.as<float>() : nullptr, at(o_pos),
                      inv_freq_dev, dynamic_rope ? at(o_fi) : nullptr, at(o_sb), at(o_so), t, qh, kvh, d, q_.get(),
                      CacheLayer(l));
    LaunchPagedAttention(stream_, type_, q_.get(), CacheLayer(l), batch, qh, kvh, d, c.sliding_window, scale, splits,
                         attn_workspace_.as<float>(), attn_.get());
    gemm_->Run(stream_, attn_.get(), L.o.get(), proj_.get(), t, hidden, qh * d, type_, type_);
    LaunchAddRmsNorm(stream_, type_, x_.as<float>(), proj_.get(), L.post_norm.as<float>(), nullptr, t, hidden, eps,
                     true, h_.get());
    gemm_->Run(stream_, h_.get(), L.gate_up.get(), gate_up_.get(), t, 2 * inter, hidden, type_, type_);
    LaunchSiluMul(stream_, type_, gate_up_.get(), t, inter, act_.get());
    gemm_->Run(stream_, act_.get(), L.down.get(), proj_.get(), t, hidden, inter, type_, type_);
  }
  logits->assign(static_cast<size_t>(host_rows * vocab), 0.0f);
  // Sampler outputs: tokens, logprobs, then top ids and top logprobs ([ns][top_stride]).
  const size_t sampled_words = static_cast<size_t>(ns) * (2 + 2 * static_cast<size_t>(top_stride));
  std::vector<std::vector<int2>> counts;  // pageable: cudaMemcpyAsync has read them when it returns
  if (r > 0) {
    // Only the rows that need logits: the last residual add and the final norm, gathered.
    LaunchAddRmsNorm(stream_, type_, x_.as<float>(), proj_.get(), final_norm_.as<float>(), at(o_lr), r, hidden, eps,
                     false, normed_.get());
    const void* head = lm_head_.bytes() ? lm_head_.get() : embed_.get();
    gemm_->Run(stream_, normed_.get(), head, logits_.get(), r, vocab, hidden, type_, ElemType::kF32);
    if (host_rows > 0) {
      host_logits_.Reserve(host_rows * vocab * 4);
      TG_CUDA_CHECK(cudaMemcpyAsync(host_logits_.as<float>(), logits_.get(), host_rows * vocab * 4,
                                    cudaMemcpyDeviceToHost, stream_));
    }
  }
  if (ns > 0) {
    for (const DeviceSample& d : samples) {
      if (d.penalty_slot < 0 || d.reset_counts == nullptr) continue;
      counts.push_back(CountTokens(d.reset_counts->data(), static_cast<int64_t>(d.reset_counts->size())));
      penalties_->SetCounts(d.penalty_slot, counts.back().data(), static_cast<int32_t>(counts.back().size()), stream_);
    }
    sampled_.Reserve(sampled_words * 4);
    GpuSamplingOutputs out;
    out.tokens = sampled_.as<int32_t>();
    out.logprobs = reinterpret_cast<float*>(out.tokens + ns);
    out.top_stride = top_stride;
    if (top_stride > 0) {
      out.top_ids = out.tokens + 2 * ns;
      out.top_logprobs = reinterpret_cast<float*>(out.top_ids + static_cast<size_t>(ns) * top_stride);
    }
    // After the host rows' copy on the same stream: the sampler changes its rows in place.
    LaunchGpuSampling(stream_, logits_.as<float>() + host_rows * vocab, ns, static_cast<int32_t>(vocab),
                      reinterpret_cast<const GpuSamplingRow*>(at(o_sr)), penalties_->view(), out);
    host_sampled_.Reserve(sampled_words * 4);
    TG_CUDA_CHECK(cudaMemcpyAsync(host_sampled_.as<int32_t>(), sampled_.get(), sampled_words * 4,
                                  cudaMemcpyDeviceToHost, stream_));
  }
  TG_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (host_rows > 0) std::memcpy(logits->data(), host_logits_.as<float>(), host_rows * vocab * 4);
  if (ns > 0) {
    const int32_t* tokens_out = host_sampled_.as<int32_t>();
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
      for (int32_t j = 0; j < samples[static_cast<size_t>(k)].top_n; ++j) {
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
