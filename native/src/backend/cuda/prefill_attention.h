// Tensor-core attention for prefill: the causal (optionally sliding-window)
// attention of sequences with many new rows in a step, over the paged KV cache,
// FlashAttention-2 style (prefill_attention.cu). It computes what
// LaunchPagedAttention (kernels.h) computes for the same rows, up to rounding;
// decode rows and short chunks stay on that kernel. The model sends a sequence
// here when it has at least kPrefillMinRows rows in the step and
// PrefillAttentionSupports(head_dim); both launches write disjoint rows of one
// output, so the step runs one after the other on its stream.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "backend/cuda/kernels.h"

namespace tg {
namespace cuda {

// Rows a sequence needs in a step to go to the mma.sync prefill kernel. Below this the paged
// kernel (tensor-core decode attention with split-KV) is faster: on an H100 at the
// Llama-3-8B head shape, a chunk after 4,096 cached keys took 0.03/0.05/0.08/0.13 ms
// there for 16/32/64/128 rows against ~0.18 ms here, and 0.50 against 0.23 ms at 512
// rows (bench/results/cuda-notes.md, run 13).
constexpr int64_t kPrefillMinRows = 256;

// Query rows per work item (one CTA per item and query head): 128 reads each K/V
// tile from shared memory once per 32 rows of a warp, 64 gives twice the CTAs for
// short prompts. The kernel is compiled for exactly these two.
constexpr int kPrefillTileRowsLarge = 128;
constexpr int kPrefillTileRowsSmall = 64;

// The prefill sequences of one attention call, device pointers (all int32 arrays).
struct PrefillBatch {
  const int32_t* seq_row_start = nullptr;    // [seqs] first row of the sequence in q/out
  const int32_t* seq_rows = nullptr;         // [seqs] rows (query tokens) of the sequence in this step
  const int32_t* seq_position = nullptr;     // [seqs] position of its first row (cached keys before it)
  const int32_t* seq_block_start = nullptr;  // [seqs] offset of its block table in `block_tables`
  const int32_t* block_tables = nullptr;
  const int32_t* items = nullptr;  // [num_items][2]: sequence, first row of the item (a multiple of tile_rows)
  int64_t num_items = 0;
  int tile_rows = kPrefillTileRowsLarge;  // rows per item: kPrefillTileRowsLarge or kPrefillTileRowsSmall
};

// The host side of a PrefillBatch, built per step; every array is int32, so they pack
// into the step's one host-to-device copy (StepPlan in cuda_llama_model.cc).
struct HostPrefillBatch {
  // item_rows: kPrefillTileRowsLarge or kPrefillTileRowsSmall (PrefillTileRows).
  explicit HostPrefillBatch(int item_rows) : tile_rows(item_rows) {}

  std::vector<int32_t> seq_row_start, seq_rows, seq_position, seq_block_start, block_tables, items;
  int tile_rows;
  int64_t rows = 0;  // query rows added so far

  // Appends a sequence whose `count` new tokens are rows [row_start, row_start + count)
  // of q/out, after `position` cached ones; its KV blocks are
  // blocks[0, ceil((position + count) / block_size)). Rows need not be contiguous
  // across sequences: rows of other sequences belong to the paged kernel.
  void Add(int64_t row_start, int64_t position, int64_t count, const int32_t* blocks, int64_t block_size) {
    if (count <= 0) return;
    const int32_t seq = static_cast<int32_t>(seq_rows.size());
    seq_row_start.push_back(static_cast<int32_t>(row_start));
    seq_rows.push_back(static_cast<int32_t>(count));
    seq_position.push_back(static_cast<int32_t>(position));
    seq_block_start.push_back(static_cast<int32_t>(block_tables.size()));
    block_tables.insert(block_tables.end(), blocks, blocks + (position + count + block_size - 1) / block_size);
    // Items stay ordered by their last key, most first: the GPU starts CTAs in
    // order, so the longest run first and the short ones fill the tail.
    std::vector<Item> mine, merged;
    for (int64_t first = (count - 1) / tile_rows * tile_rows; first >= 0; first -= tile_rows) {
      mine.push_back({position + std::min<int64_t>(first + tile_rows, count), seq, static_cast<int32_t>(first)});
    }
    std::merge(sorted_.begin(), sorted_.end(), mine.begin(), mine.end(), std::back_inserter(merged),
               [](const Item& a, const Item& b) { return a.key_end > b.key_end; });
    sorted_.swap(merged);
    items.clear();
    for (const Item& it : sorted_) {
      items.push_back(it.seq);
      items.push_back(it.first_row);
    }
    rows += count;
  }
  int64_t num_items() const { return static_cast<int64_t>(items.size() / 2); }

 private:
  struct Item {
    int64_t key_end;
    int32_t seq, first_row;
  };
  std::vector<Item> sorted_;
};

// Whether the prefill kernel is compiled for this head dim (64 and 128); otherwise use
// LaunchPagedAttention for every row.
bool PrefillAttentionSupports(int64_t head_dim);

// Which kernel takes the items: kBest the Hopper one (prefill_attention_wgmma.h) where it
// takes the shape (head dim 128, 128-row items, blocks of a power of two >= 8 keys, the
// cache's num_blocks known) and TEXT_GEN_PREFILL_WGMMA is not 0, else the mma.sync one,
// which kMmaSync always takes (the tests compare the two).
enum class PrefillKernel { kBest, kMmaSync };

// Whether LaunchPrefillAttention runs the Hopper kernel for a cache of this block size
// whose num_blocks is known.
bool PrefillUsesWgmma(int64_t head_dim, int64_t block_size, int tile_rows, PrefillKernel kernel = PrefillKernel::kBest);

// Rows a sequence needs in a step to go to the prefill kernels: kPrefillMinRows, or 128
// where the Hopper kernel takes the shape. After 4,096 cached keys (H100, the 8B's heads) it
// took 0.084 ms for a chunk of 128 rows against 0.125 in the paged kernel, and 0.085 against
// 0.068 for 64 (cuda-notes, session 7).
inline int64_t PrefillMinRows(int64_t head_dim, int64_t block_size) {
  return PrefillUsesWgmma(head_dim, block_size, kPrefillTileRowsLarge) ? 128 : kPrefillMinRows;
}

// The tile rows for a step with `rows` prefill rows in total: the large tile when the
// Hopper kernel takes it (it beat the mma.sync kernel's small tile at every size timed,
// even 16 rows after 4k cached keys: cuda-notes, session 7) or when it still gives about
// two waves of mma.sync CTAs (two per SM fit), else the small one.
inline int PrefillTileRows(int64_t rows, int64_t q_heads, int64_t head_dim, int64_t block_size, int sm_count) {
  if (PrefillUsesWgmma(head_dim, block_size, kPrefillTileRowsLarge)) return kPrefillTileRowsLarge;
  const int64_t ctas = (rows + kPrefillTileRowsLarge - 1) / kPrefillTileRowsLarge * q_heads;
  return ctas >= 4 * static_cast<int64_t>(sm_count) ? kPrefillTileRowsLarge : kPrefillTileRowsSmall;
}

// prefill_attention.cu: for each row of each sequence of `batch`, causal attention of
// q ([rows, q_heads, head_dim], RoPE applied) over the cache's keys 0..position of
// the row (with window > 0 only keys > position - window), query head h reading KV
// head h / (q_heads / kv_heads); out like q. Rows outside the batch's sequences are
// not touched. bf16 or fp16; f32 softmax and accumulation. Throws for an unsupported
// head_dim or tile_rows.
void LaunchPrefillAttention(cudaStream_t stream, ElemType type, const void* q, KvLayer cache,
                            const PrefillBatch& batch, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                            int64_t window, float scale, void* out, PrefillKernel kernel = PrefillKernel::kBest);

}  // namespace cuda
}  // namespace tg
