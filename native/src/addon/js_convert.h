// Conversions between JS values and the engine's C++ structs, done on the JS
// thread before any work is queued. Every malformed argument throws a JS
// TypeError that names the field.
#pragma once
#include <vector>

#include <napi.h>

#include "engine/engine.h"

namespace tg {
namespace addon {

// EngineOptions from the object of native/engine-types.ts.
EngineOptions ParseEngineOptions(const Napi::Value& value);
// The StepSequence[] argument of step().
std::vector<StepInput> ParseStepInputs(const Napi::Value& value);
// A number[] of sequence ids.
std::vector<int64_t> ParseIds(const Napi::Value& value);
// StepOutput[] for results computed by Engine::Step.
Napi::Array StepResultsToJs(Napi::Env env, const std::vector<StepResult>& results);
Napi::Object EngineInfoToJs(Napi::Env env, const EngineInfo& info);

}  // namespace addon
}  // namespace tg
