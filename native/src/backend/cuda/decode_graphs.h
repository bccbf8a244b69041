// CUDA graphs of the decode forward, one per batch-size bucket. A decode step of
// b sequences is padded to the smallest bucket >= b and replays that bucket's graph:
// one launch instead of ~10 per layer, so a small batch is bound by the GPU, not by
// the host's launch rate. A bucket is captured the second time it is used (the first
// runs eagerly, which also lets the GEMMs pick their algorithms outside a capture)
// and thrown away when the KV cache is reallocated (the graphs hold its address).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

namespace tg {
namespace cuda {

// The default buckets: every size up to 8, then steps that waste at most ~1/4.
std::vector<int32_t> DefaultGraphBuckets();

class DecodeGraphs {
 public:
  // `buckets` sorted or not; empty disables graphs.
  explicit DecodeGraphs(std::vector<int32_t> buckets);
  ~DecodeGraphs();
  DecodeGraphs(const DecodeGraphs&) = delete;
  DecodeGraphs& operator=(const DecodeGraphs&) = delete;

  int32_t max_bucket() const { return buckets_.empty() ? 0 : buckets_.back(); }
  const std::vector<int32_t>& buckets() const { return buckets_; }
  // The bucket a batch of `batch` sequences runs in, or 0 when none holds it.
  int32_t BucketFor(int64_t batch) const;

  // Runs `forward` (which enqueues the whole bucket-sized decode forward on `stream`)
  // eagerly, or captures it into the bucket's graph, or replays that graph.
  void Run(int32_t bucket, cudaStream_t stream, const std::function<void()>& forward);
  // Drops every graph (their buffers or the KV cache moved).
  void Clear();
  int captured() const;

 private:
  struct Entry {
    int uses = 0;
    cudaGraphExec_t exec = nullptr;
  };
  std::vector<int32_t> buckets_;
  std::map<int32_t, Entry> entries_;
};

}  // namespace cuda
}  // namespace tg
