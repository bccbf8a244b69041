// See decode_graphs.h.
#include "backend/cuda/decode_graphs.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/cuda/cuda_check.h"

namespace tg {
namespace cuda {

std::vector<int32_t> DefaultGraphBuckets() {
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128};
  for (int32_t n = 160; n <= 256; n += 32) b.push_back(n);
  return b;
}

DecodeGraphs::DecodeGraphs(std::vector<int32_t> buckets) : buckets_(std::move(buckets)) {
  buckets_.erase(std::remove_if(buckets_.begin(), buckets_.end(), [](int32_t b) { return b <= 0; }), buckets_.end());
  std::sort(buckets_.begin(), buckets_.end());
  buckets_.erase(std::unique(buckets_.begin(), buckets_.end()), buckets_.end());
}

DecodeGraphs::~DecodeGraphs() { Clear(); }

int32_t DecodeGraphs::BucketFor(int64_t batch) const {
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), batch);
  return it == buckets_.end() ? 0 : *it;
}

void DecodeGraphs::Clear() {
  for (auto& [bucket, e] : entries_) {
    if (e.exec) cudaGraphExecDestroy(e.exec);
  }
  entries_.clear();
}

int DecodeGraphs::captured() const {
  int n = 0;
  for (const auto& [bucket, e] : entries_) n += e.exec != nullptr;
  return n;
}

void DecodeGraphs::Run(int32_t bucket, cudaStream_t stream, const std::function<void()>& forward) {
  Entry& e = entries_[bucket];
  if (e.exec) {
    TG_CUDA_CHECK(cudaGraphLaunch(e.exec, stream));
    return;
  }
  if (e.uses++ == 0) {
    forward();
    return;
  }
  // Thread-local mode: only this thread's CUDA calls are checked against the capture,
  // other engines' threads in the process go on unaffected.
  TG_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    forward();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  TG_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaError_t status = cudaGraphInstantiate(&e.exec, graph, 0);
  cudaGraphDestroy(graph);
  if (status != cudaSuccess) {
    e.exec = nullptr;
    throw std::runtime_error("cannot instantiate the decode CUDA graph of batch " + std::to_string(bucket) + ": " +
                             cudaGetErrorString(status));
  }
  TG_CUDA_CHECK(cudaGraphLaunch(e.exec, stream));
}

}  // namespace cuda
}  // namespace tg
