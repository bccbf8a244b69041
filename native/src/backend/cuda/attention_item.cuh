// One work item of an AttentionBatch (kernels.h) on the device: which sequence and queries
// it holds and which keys they see. Both decode attention kernels (decode_attention.cu,
// paged_attention.cu) cut their work this way.
#pragma once
#include <cstdint>

#include "backend/cuda/kernels.h"

namespace tg {
namespace cuda {

// The item's queries and the keys they can see, [key_begin, key_end).
struct AttentionItem {
  int seq, first_query, queries, row_start, position, key_begin, key_end;
};

// Item `item` of `batch`, for `group` query heads per KV head and a sliding window of
// `window` keys (0: none).
__device__ __forceinline__ AttentionItem AttentionItemAt(const AttentionBatch& batch, int group, int64_t window,
                                                         int item) {
  AttentionItem it;
  it.seq = batch.items[2 * item];
  it.first_query = batch.items[2 * item + 1];
  it.row_start = batch.seq_row_start[it.seq];
  it.position = batch.seq_position[it.seq];
  it.queries = min(kAttentionItemQueries, batch.seq_rows[it.seq] * group - it.first_query);
  const int first_row = it.first_query / group, last_row = (it.first_query + it.queries - 1) / group;
  it.key_end = it.position + last_row + 1;
  // The window's first key is at or after 0 and at most the item's last position: it fits an int.
  it.key_begin =
      window > 0 ? static_cast<int>(max(int64_t{0}, static_cast<int64_t>(it.position) + first_row - window + 1)) : 0;
  return it;
}

// Split-KV: split `split` of `num_splits` holds keys [begin, end) of the item, whole
// multiples of kGranule keys (the kernel's tile), the last busy split the rest. The keys
// fill the first BusySplits splits; the others are empty (graphs fix the split count for
// the longest context, so at short contexts most are).
struct KeyRange {
  int begin, end;
};
template <int kGranule>
__device__ __forceinline__ int SplitKeys(const AttentionItem& it, int num_splits) {
  const int span = it.key_end - it.key_begin;
  return ((span + num_splits - 1) / num_splits + kGranule - 1) / kGranule * kGranule;
}
template <int kGranule>
__device__ __forceinline__ KeyRange SplitRange(const AttentionItem& it, int num_splits, int split) {
  if (num_splits == 1) return {it.key_begin, it.key_end};
  const int chunk = SplitKeys<kGranule>(it, num_splits);
  const int begin = static_cast<int>(min(static_cast<int64_t>(it.key_end),
                                         it.key_begin + static_cast<int64_t>(split) * chunk));
  return {begin, min(it.key_end, begin + chunk)};
}
template <int kGranule>
__device__ __forceinline__ int BusySplits(const AttentionItem& it, int num_splits) {
  const int chunk = SplitKeys<kGranule>(it, num_splits);
  return min(num_splits, (it.key_end - it.key_begin + chunk - 1) / chunk);
}

}  // namespace cuda
}  // namespace tg
