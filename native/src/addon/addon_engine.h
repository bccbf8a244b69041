// AddonEngine: the JS NativeEngine object over one tg::Engine. Steps run on
// libuv's thread pool one at a time, in call order: a step requested while one
// is in flight waits in a queue. close() drops the engine; a step in flight
// keeps its own reference and finishes first, queued steps are rejected.
#pragma once
#include <deque>
#include <memory>
#include <vector>

#include <napi.h>

#include "engine/engine.h"

namespace tg {
namespace addon {

class AddonEngine : public Napi::ObjectWrap<AddonEngine> {
 public:
  static Napi::Function DefineClass(Napi::Env env);
  // A JS NativeEngine owning `engine` (the class must have been defined on this env).
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Engine> engine);

  explicit AddonEngine(const Napi::CallbackInfo& info);

  // Called by the step worker on the JS thread when its step has settled.
  void OnStepSettled();

 private:
  struct PendingStep {
    std::vector<StepInput> inputs;
    bool ahead = false;  // Engine::Step's
    Napi::Promise::Deferred deferred;
  };

  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value MemoryInfo(const Napi::CallbackInfo& info);
  Napi::Value AllocateKvCache(const Napi::CallbackInfo& info);
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Engine& Open(Napi::Env env);
  void StartNext();

  std::shared_ptr<Engine> engine_;
  bool step_running_ = false;
  std::deque<PendingStep> pending_;
};

}  // namespace addon
}  // namespace tg
