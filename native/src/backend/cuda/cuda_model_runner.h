// The CUDA backend's ModelRunner (CudaLlamaModel in cuda_llama_model.cc); plain
// C++ so that the engine includes it without CUDA headers.
#pragma once
#include <memory>

#include "engine/model_runner.h"

namespace tg {

// Loads this rank's weights onto the process's first visible CUDA device in
// options.dtype (bfloat16 or float16); with world_size > 1 joins the ranks' NCCL
// group through options.nccl_id. Throws std::runtime_error with a message for the user.
std::unique_ptr<ModelRunner> MakeCudaModelRunner(const EngineOptions& options);

}  // namespace tg
