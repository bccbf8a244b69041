// See cuda_weights.h. The checkpoint is memory-mapped; each tensor (or group of
// tensors that become one device matrix) is converted into a pinned staging buffer
// while the previous one is still being copied to the GPU from the other half of a
// double buffer, so the disk/page cache, the conversion and the PCIe copy overlap.
#include "backend/cuda/cuda_weights.h"

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "core/dtype.h"
#include "model/llama_weights.h"
#include "model/weight_loader.h"

namespace tg {
namespace cuda {
namespace {

DType ToDType(ElemType t) { return t == ElemType::kF32 ? DType::kF32 : t == ElemType::kBF16 ? DType::kBF16 : DType::kF16; }

class Uploader {
 public:
  explicit Uploader(const std::string& model_dir) : loader_(model_dir) {
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (auto& e : done_) TG_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  ~Uploader() {
    cudaStreamSynchronize(stream_);
    for (auto& e : done_) cudaEventDestroy(e);
    cudaStreamDestroy(stream_);
  }
  const WeightLoader& loader() const { return loader_; }

  // The concatenation of `parts` (absent ones skipped) as one device buffer of `as`.
  DeviceBuffer Upload(const std::vector<const TensorRead*>& parts, ElemType as) {
    size_t count = 0;
    for (const TensorRead* p : parts) count += p->present() ? p->count : 0;
    const size_t bytes = count * ElemSize(as);
    DeviceBuffer buf(bytes);
    // The staging half we fill must no longer be in flight.
    const int half = next_;
    next_ ^= 1;
    TG_CUDA_CHECK(cudaEventSynchronize(done_[half]));
    staging_[half].Reserve(std::max<size_t>(bytes, 1));
    char* at = staging_[half].as<char>();
    for (const TensorRead* p : parts) {
      if (!p->present()) continue;
      ReadTensor(loader_, *p, ToDType(as), at);
      at += p->count * ElemSize(as);
    }
    TG_CUDA_CHECK(cudaMemcpyAsync(buf.get(), staging_[half].as<char>(), bytes, cudaMemcpyHostToDevice, stream_));
    TG_CUDA_CHECK(cudaEventRecord(done_[half], stream_));
    bytes_ += static_cast<int64_t>(bytes);
    return buf;
  }
  DeviceBuffer Upload(const TensorRead& t, ElemType as) { return Upload(std::vector<const TensorRead*>{&t}, as); }

  int64_t Finish() {
    TG_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return bytes_;
  }

 private:
  WeightLoader loader_;
  cudaStream_t stream_ = nullptr;
  PinnedBuffer staging_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int next_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace

CudaWeights UploadLlamaWeights(const std::string& model_dir, const ModelConfig& config, const TpSlice& slice,
                               ElemType type) {
  Uploader up(model_dir);
  const LlamaReads plan = PlanLlamaReads(up.loader(), model_dir, config, slice);
  CudaWeights w;
  w.embed = up.Upload(plan.embed, type);
  if (plan.lm_head.present()) w.lm_head = up.Upload(plan.lm_head, type);
  w.final_norm = up.Upload(plan.final_norm, ElemType::kF32);
  for (const LlamaLayerReads& L : plan.layers) {
    CudaLayerWeights d;
    d.input_norm = up.Upload(L.input_norm, ElemType::kF32);
    d.post_norm = up.Upload(L.post_norm, ElemType::kF32);
    d.qkv = up.Upload({&L.q, &L.k, &L.v}, type);
    if (L.q_bias.present()) d.qkv_bias = up.Upload({&L.q_bias, &L.k_bias, &L.v_bias}, ElemType::kF32);
    d.o = up.Upload(L.o, type);
    d.gate_up = up.Upload({&L.gate, &L.up}, type);
    d.down = up.Upload(L.down, type);
    w.layers.push_back(std::move(d));
  }
  w.bytes = up.Finish();
  return w;
}

}  // namespace cuda
}  // namespace tg
