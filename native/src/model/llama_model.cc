// See llama_model.h.
#include "model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/thread_pool.h"
#include "comm/communicator.h"
#include "kv/kv_cache.h"

namespace tg {

LlamaModel::LlamaModel(const ModelConfig& config, const std::string& model_dir, Communicator& comm, ThreadPool& pool)
    : config_(config),
      slice_(MakeTpSlice(config, comm.rank(), comm.world_size())),
      comm_(comm),
      pool_(pool),
      weights_(LoadLlamaWeights(model_dir, config, slice_)),
      inv_freq_(cpu::RopeInvFreq(config.rope, config.head_dim, config.max_position_embeddings,
                                 config.max_position_embeddings)) {}

void LlamaModel::Embed(const std::vector<int32_t>& tokens, float* x) {
  const int64_t hidden = config_.hidden_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    int64_t local = static_cast<int64_t>(tokens[i]) - slice_.vocab_begin;
    float* row = x + static_cast<int64_t>(i) * hidden;
    if (local >= 0 && local < slice_.vocab_size) {
      std::memcpy(row, weights_.embed.data() + local * hidden, sizeof(float) * hidden);
    } else {
      std::memset(row, 0, sizeof(float) * hidden);
    }
  }
  if (slice_.world_size > 1) comm_.AllReduceSum(x, tokens.size() * hidden);
}

void LlamaModel::Attention(int64_t layer, const std::vector<ForwardSequence>& seqs,
                           const std::vector<int64_t>& row_seq, const std::vector<int64_t>& row_pos, const float* q,
                           KvCache& cache, float* out) {
  const int64_t d = config_.head_dim, heads = slice_.q_heads, group = slice_.q_heads / slice_.kv_heads;
  const int64_t bs = cache.block_size(), rows = static_cast<int64_t>(row_seq.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Split only when each thread gets enough keys to be worth waking it for.
  int64_t keys = 0;
  for (int64_t pos : row_pos) keys += pos + 1;
  const int64_t keys_per_task = std::max<int64_t>(1, keys / std::max<int64_t>(1, rows));
  const int64_t grain = std::max<int64_t>(1, 32768 / (keys_per_task * d));
  pool_.ParallelFor(rows * heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / heads, h = task % heads, kvh = h / group;
      const ForwardSequence& s = seqs[static_cast<size_t>(row_seq[static_cast<size_t>(row)])];
      const int64_t pos = row_pos[static_cast<size_t>(row)];
      int64_t first = 0;
      if (config_.sliding_window > 0) first = std::max<int64_t>(0, pos - config_.sliding_window + 1);
      const int64_t count = pos + 1 - first;
      if (static_cast<int64_t>(scores.size()) < count) scores.resize(static_cast<size_t>(count));
      auto slot = [&](int64_t j, bool v) {
        int64_t p = first + j;
        return cache.Slot(s.blocks[p / bs], layer, v, p % bs) + kvh * d;
      };
      cpu::AttendOneHead(
          q + (row * heads + h) * d, d, count, scale, [&](int64_t j) { return slot(j, false); },
          [&](int64_t j) { return slot(j, true); }, scores.data(), out + (row * heads + h) * d);
    }
  });
}

void LlamaModel::Logits(const float* x, const std::vector<int64_t>& rows, std::vector<float>* logits) {
  const int64_t hidden = config_.hidden_size, r = static_cast<int64_t>(rows.size());
  const int64_t vp = slice_.vocab_size, vocab = config_.vocab_size;
  std::vector<float> picked(static_cast<size_t>(r * hidden)), normed(picked.size());
  for (int64_t i = 0; i < r; ++i) {
    std::memcpy(picked.data() + i * hidden, x + rows[static_cast<size_t>(i)] * hidden, sizeof(float) * hidden);
  }
  cpu::RmsNorm(picked.data(), weights_.final_norm.data(), r, hidden, config_.rms_norm_eps, normed.data());
  std::vector<float> local(static_cast<size_t>(r * vp));
  cpu::Matmul(pool_, normed.data(), weights_.lm_head_data(), nullptr, r, vp, hidden, local.data());
  logits->assign(static_cast<size_t>(r * vocab), 0.0f);
  if (slice_.world_size == 1) {
    for (int64_t i = 0; i < r; ++i) std::memcpy(logits->data() + i * vocab, local.data() + i * vp, sizeof(float) * vocab);
    return;
  }
  // Each rank contributes [r, vp]; rank k's block holds vocab ids [k * vp, (k + 1) * vp).
  std::vector<float> gathered(static_cast<size_t>(slice_.world_size * r * vp));
  comm_.AllGather(local.data(), local.size(), gathered.data());
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t v = 0; v < vocab; ++v) {
      (*logits)[static_cast<size_t>(i * vocab + v)] = gathered[static_cast<size_t>((v / vp) * r * vp + i * vp + v % vp)];
    }
  }
}

void LlamaModel::Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                         KvCache& cache, std::vector<float>* logits) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size, d = c.head_dim, bs = cache.block_size();
  const int64_t qw = slice_.q_heads * d, kvw = slice_.kv_heads * d, inter = slice_.inter_size;

  std::vector<int32_t> tokens;
  std::vector<int64_t> row_seq, row_pos;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t i = 0; i < seqs[s].count; ++i) {
      tokens.push_back(seqs[s].tokens[i]);
      row_seq.push_back(static_cast<int64_t>(s));
      row_pos.push_back(seqs[s].position + i);
    }
  }
  const int64_t t = static_cast<int64_t>(tokens.size());
  // RoPE frequencies per sequence (they differ only under dynamic NTK scaling).
  std::vector<std::vector<float>> seq_inv_freq;
  if (cpu::RopeDependsOnLength(c.rope)) {
    for (const auto& s : seqs) {
      seq_inv_freq.push_back(cpu::RopeInvFreq(c.rope, d, c.max_position_embeddings, s.position + s.count));
    }
  }
  auto inv_freq_of = [&](int64_t row) {
    return seq_inv_freq.empty() ? inv_freq_.data() : seq_inv_freq[static_cast<size_t>(row_seq[row])].data();
  };

  std::vector<float> x(static_cast<size_t>(t * hidden)), h(x.size()), proj(x.size());
  std::vector<float> q(static_cast<size_t>(t * qw)), k(static_cast<size_t>(t * kvw)), v(k.size());
  std::vector<float> attn(q.size());
  std::vector<float> gate(static_cast<size_t>(t * inter)), up(gate.size());
  Embed(tokens, x.data());

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LlamaLayerWeights& L = weights_.layers[static_cast<size_t>(l)];
    cpu::RmsNorm(x.data(), L.input_norm.data(), t, hidden, c.rms_norm_eps, h.data());
    auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
    cpu::Matmul(pool_, h.data(), L.q.data(), bias(L.q_bias), t, qw, hidden, q.data());
    cpu::Matmul(pool_, h.data(), L.k.data(), bias(L.k_bias), t, kvw, hidden, k.data());
    cpu::Matmul(pool_, h.data(), L.v.data(), bias(L.v_bias), t, kvw, hidden, v.data());
    for (int64_t row = 0; row < t; ++row) {
      const int64_t pos = row_pos[static_cast<size_t>(row)];
      cpu::ApplyRope(q.data() + row * qw, slice_.q_heads, d, pos, inv_freq_of(row));
      cpu::ApplyRope(k.data() + row * kvw, slice_.kv_heads, d, pos, inv_freq_of(row));
      const ForwardSequence& s = seqs[static_cast<size_t>(row_seq[static_cast<size_t>(row)])];
      const int64_t block = s.blocks[pos / bs];
      std::memcpy(cache.Slot(block, l, false, pos % bs), k.data() + row * kvw, sizeof(float) * kvw);
      std::memcpy(cache.Slot(block, l, true, pos % bs), v.data() + row * kvw, sizeof(float) * kvw);
    }
    Attention(l, seqs, row_seq, row_pos, q.data(), cache, attn.data());
    cpu::Matmul(pool_, attn.data(), L.o.data(), nullptr, t, hidden, qw, proj.data());
    if (slice_.world_size > 1) comm_.AllReduceSum(proj.data(), proj.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

    cpu::RmsNorm(x.data(), L.post_norm.data(), t, hidden, c.rms_norm_eps, h.data());
    cpu::Matmul(pool_, h.data(), L.gate.data(), nullptr, t, inter, hidden, gate.data());
    cpu::Matmul(pool_, h.data(), L.up.data(), nullptr, t, inter, hidden, up.data());
    cpu::SiluMul(gate.data(), up.data(), static_cast<int64_t>(gate.size()), gate.data());
    cpu::Matmul(pool_, gate.data(), L.down.data(), nullptr, t, hidden, inter, proj.data());
    if (slice_.world_size > 1) comm_.AllReduceSum(proj.data(), proj.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
  }
  Logits(x.data(), logit_rows, logits);
}

}  // namespace tg
