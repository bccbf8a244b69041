// Launchers of the CUDA backend's kernels, one kernel per .cu file beside this.
// Pointers are device pointers; `type` is the element type of the bf16/fp16
// tensors (kBF16 or kF16). Every launcher checks the launch and throws on error.
// The CPU reference of each is in backend/cpu (ops.h, rope.h); the kernel test
// native/tests/cuda/cuda_ops_test.cc compares them.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/elem_type.h"

namespace tg {
namespace cuda {

// embedding.cu: x[r, :] = float(table[tokens[r] - vocab_begin, :]) for r < rows, where `table`
// holds rows [vocab_begin, vocab_begin + vocab_rows) of the vocabulary (all of it without
// tensor parallelism); rows of tokens outside that range are zero.
void LaunchEmbedding(cudaStream_t stream, ElemType type, const void* table, int64_t vocab_begin, int64_t vocab_rows,
                     const int32_t* tokens, int64_t rows, int64_t hidden, float* x);

// embedding.cu, for tensor parallelism: rows_out[r, :] = table[tokens[r] - vocab_begin, :] in `type`
// (zero outside this rank's range) and residual[r, :] = 0, so that the all-reduce of rows_out
// fused with the residual add and the first norm (DeviceCommunicator::AllReduceAddRmsNorm) leaves
// the residual holding the embedding, exactly: each element sums one rank's value and zeros.
void LaunchEmbeddingShard(cudaStream_t stream, ElemType type, const void* table, int64_t vocab_begin,
                          int64_t vocab_rows, const int32_t* tokens, int64_t rows, int64_t hidden, void* rows_out,
                          float* residual);

// embedding.cu: tokens[r] = sampled[tokens[r]] for r < rows. A decode step run ahead
// (ModelRunner::EnqueueDecodeAhead) is packed with the sampler rows of the step before in
// place of its tokens, which only the device knows yet; this puts the tokens there.
void LaunchTokensFromSamples(cudaStream_t stream, const int32_t* sampled, int32_t* tokens, int64_t rows);

// vocab_shards.cu: the all-gathered logits of a vocab-parallel lm_head, [ranks][rows][shard]
// (rank k holds vocabulary ids [k * shard, (k + 1) * shard)), into out [rows][vocab], dropping
// the padding past `vocab`.
void LaunchGatherVocabShards(cudaStream_t stream, const float* shards, int64_t ranks, int64_t rows, int64_t shard,
                             int64_t vocab, float* out);

// add_rms_norm.cu: for output row i < rows, with source row r = row_index ? row_index[i] : i:
// v = residual[r] + (delta ? delta[r] : 0); if write_residual, residual[r] = v;
// out[i] = v / sqrt(mean(v²) + eps) * weight. residual f32, delta and out in `type`.
void LaunchAddRmsNorm(cudaStream_t stream, ElemType type, float* residual, const void* delta, const float* weight,
                      const int32_t* row_index, int64_t rows, int64_t hidden, float eps, bool write_residual,
                      void* out);

// Where the paged KV cache of one layer lives: K and V each [num_blocks][kv_heads][block_size][head_dim].
struct KvLayer {
  void* k = nullptr;
  void* v = nullptr;
  int64_t block_size = 0;
  // Blocks in each of k and v, when known: the Hopper prefill kernel's bulk tensor copies
  // need the cache's extent (prefill_attention_wgmma.cu); with 0 prefills take the mma.sync kernel.
  int64_t num_blocks = 0;
};

// rope_kv_write.cu: for each row r of qkv ([rows, (q_heads + 2 kv_heads) * head_dim], q then k then v),
// adds `bias` (f32, same width, optional), rotates q and k by Hugging Face's rotate_half RoPE at
// positions[r] with inv_freq[freq_index[r] * head_dim / 2 ...] (freq_index null: table 0), writes
// rotated q to q_out ([rows, q_heads * head_dim]) and k, v into the cache at slot_block[r], slot_offset[r].
void LaunchRopeKvWrite(cudaStream_t stream, ElemType type, const void* qkv, const float* bias,
                       const int32_t* positions, const float* inv_freq, const int32_t* freq_index,
                       const int32_t* slot_block, const int32_t* slot_offset, int64_t rows, int64_t q_heads,
                       int64_t kv_heads, int64_t head_dim, void* q_out, KvLayer cache);

// The sequences of one attention call and how their queries are cut into work items.
struct AttentionBatch {
  const int32_t* seq_row_start = nullptr;  // [seqs] first row of the sequence in q/out
  const int32_t* seq_rows = nullptr;       // [seqs] rows (query tokens) of the sequence in this step
  const int32_t* seq_position = nullptr;   // [seqs] position of its first row
  const int32_t* seq_block_start = nullptr;  // [seqs] offset of its block table in `block_tables`
  const int32_t* block_tables = nullptr;
  const int32_t* items = nullptr;  // [num_items][2]: sequence, first query of the item (see below)
  int64_t num_items = 0;
  // Split-KV's arrival counts, [num_items][kv_heads] (AttentionCounterCount), zero before the
  // call and left zero by it: with them the decode attention kernel (head dims 64 and 128)
  // merges the splits itself, in the last CTA of each item and KV head to finish, instead of
  // in a second kernel. Null, or the CUDA-core kernel of other head dims: a second kernel.
  int32_t* split_counters = nullptr;
};

inline int64_t AttentionCounterCount(int64_t num_items, int64_t kv_heads) { return num_items * kv_heads; }

// Queries of one work item: a sequence's (row, head-in-group) pairs in row-major order,
// kAttentionItemQueries of them from the item's first; one item serves one KV head.
constexpr int kAttentionItemQueries = 16;

// The host side of an AttentionBatch: built per step, then copied to the device.
struct HostAttentionBatch {
  std::vector<int32_t> seq_row_start, seq_rows, seq_position, seq_block_start, block_tables, items;
  int64_t rows = 0;  // query rows so far

  // Appends a sequence of `count` new tokens after `position` cached ones; its KV blocks are
  // blocks[0, ceil((position + count) / block_size)). `group` is q_heads / kv_heads.
  void Add(int64_t position, int64_t count, const int32_t* blocks, int64_t block_size, int64_t group) {
    const int32_t seq = static_cast<int32_t>(seq_rows.size());
    seq_row_start.push_back(static_cast<int32_t>(rows));
    seq_rows.push_back(static_cast<int32_t>(count));
    seq_position.push_back(static_cast<int32_t>(position));
    seq_block_start.push_back(static_cast<int32_t>(block_tables.size()));
    block_tables.insert(block_tables.end(), blocks, blocks + (position + count + block_size - 1) / block_size);
    for (int64_t first = 0; first < count * group; first += kAttentionItemQueries) {
      items.push_back(seq);
      items.push_back(static_cast<int32_t>(first));
    }
    rows += count;
  }
  int64_t num_items() const { return static_cast<int64_t>(items.size() / 2); }
};

// paged_attention.cu: causal attention (with a sliding window when window > 0) of q
// ([rows, q_heads, head_dim]) over the cache, keys up to each query's position; out like q.
// head_dim <= 256. Prefill rows, chunks over cached prefixes and decode rows mix freely.
// With num_splits > 1 each item's keys are cut into that many ranges computed by separate
// CTAs (split-KV, for decode batches too small to fill the GPU), whose partial softmax
// states go to `workspace` (AttentionWorkspaceBytes) and are merged by the last CTA of each
// item and KV head (batch.split_counters) or by a second kernel.
void LaunchPagedAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                          const AttentionBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                          int64_t window, float scale, int num_splits, float* workspace, void* out);

// How many KV splits to use: about `waves` waves of CTAs over `sm_count` SMs (rounded
// down), no split shorter than 64 keys, at most 64. One wave is the default: on an H100 the
// decode attention took 8.5 µs per layer at 16 splits against 9.8 at two waves' 33 (batch 1,
// 1k keys), and 28.6 µs unsplit against 31.6 at 2 splits (batch 16); each split's partial
// state costs a write and a read, and more CTAs than SMs add a second round of launches.
inline int AttentionSplits(int64_t num_items, int64_t kv_heads, int64_t max_keys, int sm_count, int waves = 1) {
  const int64_t ctas = num_items * kv_heads;
  if (ctas <= 0 || ctas >= sm_count) return 1;
  int64_t by_work = waves * static_cast<int64_t>(sm_count) / ctas, by_keys = (max_keys + 63) / 64;
  int64_t splits = by_work < by_keys ? by_work : by_keys;
  return static_cast<int>(splits < 1 ? 1 : splits > 64 ? 64 : splits);
}

inline size_t AttentionWorkspaceBytes(int64_t num_items, int64_t kv_heads, int64_t head_dim, int num_splits) {
  if (num_splits <= 1) return 0;
  const int64_t states = num_items * kv_heads * num_splits * kAttentionItemQueries;  // each O (head_dim) + max + sum
  return sizeof(float) * static_cast<size_t>(states * (head_dim + 2));
}

// silu_mul.cu: out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i] for i < inter.
void LaunchSiluMul(cudaStream_t stream, ElemType type, const void* gate_up, int64_t rows, int64_t inter, void* out);

// decode_attention.cu: LaunchPagedAttention on tensor cores for head_dim 64 and 128
// (DecodeAttentionSupports), which LaunchPagedAttention hands those head dims to: the same
// arguments, result and workspace size (its split-KV partial states are laid out its own
// way within AttentionWorkspaceBytes). TEXT_GEN_DECODE_ATTENTION=0 in the environment turns
// it off, TEXT_GEN_DECODE_STAGES=2..4 overrides its pipeline depth (both for A/B timings).
bool DecodeAttentionSupports(int64_t head_dim);
void LaunchDecodeAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                           const AttentionBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                           int64_t window, float scale, int num_splits, float* workspace, void* out);

}  // namespace cuda
}  // namespace tg
