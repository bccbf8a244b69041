// The CPU backend as a ModelRunner: LlamaModel (float32) over a host KvCache,
// with its own thread pool.
#pragma once
#include <memory>

#include "engine/model_runner.h"

namespace tg {

std::unique_ptr<ModelRunner> MakeCpuModelRunner(const EngineOptions& options, Communicator& comm);

}  // namespace tg
