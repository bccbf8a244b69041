// See cpu_model_runner.h.
#include "engine/cpu_model_runner.h"

#include <stdexcept>

#include "backend/cpu/thread_pool.h"
#include "engine/engine.h"
#include "kv/kv_cache.h"

namespace tg {
namespace {

class CpuModelRunner : public ModelRunner {
 public:
  CpuModelRunner(const EngineOptions& o, Communicator& comm)
      : pool_(std::make_unique<ThreadPool>(o.threads)),
        model_(std::make_unique<LlamaModel>(o.config, o.model_dir, comm, *pool_)) {}

  const TpSlice& slice() const override { return model_->slice(); }
  int64_t weight_bytes() const override { return model_->weight_bytes(); }
  int64_t kv_bytes_per_block(int64_t block_size) const override {
    const ModelConfig& c = model_->config();
    return KvCache::BytesPerBlock(block_size, c.num_layers, model_->slice().kv_heads, c.head_dim);
  }
  std::string attention_impl() const override { return "cpu-paged"; }

  void AllocateKvCache(int64_t num_blocks, int64_t block_size) override {
    const ModelConfig& c = model_->config();
    cache_.reset();
    cache_ = std::make_unique<KvCache>(num_blocks, block_size, c.num_layers, model_->slice().kv_heads, c.head_dim);
  }
  int64_t num_blocks() const override { return cache_ ? cache_->num_blocks() : 0; }

  void Forward(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
               std::vector<float>* logits) override {
    if (!cache_) throw std::runtime_error("forward before the KV cache is allocated");
    model_->Forward(seqs, logit_rows, *cache_, logits);
  }

 private:
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<KvCache> cache_;
};

}  // namespace

std::unique_ptr<ModelRunner> MakeCpuModelRunner(const EngineOptions& options, Communicator& comm) {
  return std::make_unique<CpuModelRunner>(options, comm);
}

}  // namespace tg
