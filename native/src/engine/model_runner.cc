// See model_runner.h: picks the backend for options.device.
#include "engine/model_runner.h"

#include <stdexcept>

#include "engine/cpu_model_runner.h"
#include "engine/engine.h"
#ifdef TG_HAVE_CUDA
#include "backend/cuda/cuda_model_runner.h"
#include "backend/cuda/device_info.h"
#endif

namespace tg {

void ModelRunner::ForwardAndSample(const std::vector<ForwardSequence>& seqs, const std::vector<int64_t>& logit_rows,
                                   int64_t host_rows, const std::vector<DeviceSample>& samples,
                                   std::vector<float>* logits, std::vector<SampleResult>* sampled) {
  if (!samples.empty() || host_rows != static_cast<int64_t>(logit_rows.size())) {
    throw std::logic_error("this runner has no device sampler");
  }
  sampled->clear();
  Forward(seqs, logit_rows, logits);
}

void ModelRunner::EnqueueStep(int, const std::vector<ForwardSequence>&, const std::vector<int64_t>&, int64_t,
                              const std::vector<DeviceSample>&) {
  throw std::logic_error("this runner does not run steps ahead");
}

void ModelRunner::FinishStep(int, std::vector<float>*, std::vector<SampleResult>*) {
  throw std::logic_error("this runner does not run steps ahead");
}

bool ModelRunner::EnqueueDecodeAhead(int, const std::vector<ForwardSequence>&, const std::vector<DeviceSample>&) {
  return false;
}

std::unique_ptr<ModelRunner> MakeModelRunner(const EngineOptions& options, Communicator& comm) {
  if (options.device == "cpu") return MakeCpuModelRunner(options, comm);
  if (options.device != "cuda") {
    throw std::runtime_error("device \"" + options.device + "\" is not supported; use \"cpu\" or \"cuda\"");
  }
#ifdef TG_HAVE_CUDA
  if (CudaDeviceCount() == 0) throw std::runtime_error("device cuda requested but no CUDA device visible");
  return MakeCudaModelRunner(options);
#else
  (void)comm;
  throw std::runtime_error("device cuda requested but this build has no CUDA backend");
#endif
}

}  // namespace tg
