// See addon_engine.h.
#include "addon/addon_engine.h"

#include "addon/addon_data.h"
#include "addon/js_convert.h"

namespace tg {
namespace addon {
namespace {

// Runs Engine::Step off the JS thread. Holds the engine and a reference to the
// JS object so that neither goes away while the step runs.
class AddonStepWorker : public Napi::AsyncWorker {
 public:
  AddonStepWorker(AddonEngine* owner, std::shared_ptr<Engine> engine, std::vector<StepInput> inputs, bool ahead,
                  Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(owner->Env(), "text_gen_engine.step"),
        owner_(owner),
        engine_(std::move(engine)),
        inputs_(std::move(inputs)),
        ahead_(ahead),
        deferred_(deferred) {
    owner_->Ref();
  }
  ~AddonStepWorker() override { owner_->Unref(); }

  void Execute() override {
    try {
      results_ = engine_->Step(inputs_, ahead_);
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("engine step failed with an unknown error");
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Value value;
    try {
      value = StepResultsToJs(env, results_);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
      Settle();
      return;
    }
    deferred_.Resolve(value);
    Settle();
  }

  void OnError(const Napi::Error& e) override {
    deferred_.Reject(e.Value());
    Settle();
  }

 private:
  void Settle() {
    engine_.reset();  // a closed engine is freed as soon as its last step ends
    owner_->OnStepSettled();
  }

  AddonEngine* owner_;
  std::shared_ptr<Engine> engine_;
  std::vector<StepInput> inputs_;
  bool ahead_;
  std::vector<StepResult> results_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace

Napi::Function AddonEngine::DefineClass(Napi::Env env) {
  return ObjectWrap<AddonEngine>::DefineClass(env, "NativeEngine",
                                              {
                                                  InstanceMethod("info", &AddonEngine::Info),
                                                  InstanceMethod("memoryInfo", &AddonEngine::MemoryInfo),
                                                  InstanceMethod("allocateKvCache", &AddonEngine::AllocateKvCache),
                                                  InstanceMethod("step", &AddonEngine::Step),
                                                  InstanceMethod("release", &AddonEngine::Release),
                                                  InstanceMethod("close", &AddonEngine::Close),
                                              });
}

Napi::Object AddonEngine::NewInstance(Napi::Env env, std::shared_ptr<Engine> engine) {
  auto holder = Napi::External<std::shared_ptr<Engine>>::New(
      env, new std::shared_ptr<Engine>(std::move(engine)),
      [](Napi::Env, std::shared_ptr<Engine>* p) { delete p; });
  return GetAddonData(env).engine_constructor.New({holder});
}

AddonEngine::AddonEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonEngine>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "NativeEngine cannot be constructed directly; use loadEngine()");
  }
  engine_ = *info[0].As<Napi::External<std::shared_ptr<Engine>>>().Data();
}

Engine& AddonEngine::Open(Napi::Env env) {
  if (!engine_) throw Napi::Error::New(env, "the engine is closed");
  return *engine_;
}

Napi::Value AddonEngine::Info(const Napi::CallbackInfo& info) {
  return EngineInfoToJs(info.Env(), Open(info.Env()).Info());
}

Napi::Value AddonEngine::MemoryInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EngineMemoryInfo m;
  try {
    m = Open(env).MemoryInfo();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("freeBytes", Napi::Number::New(env, static_cast<double>(m.free_bytes)));
  o.Set("totalBytes", Napi::Number::New(env, static_cast<double>(m.total_bytes)));
  return o;
}

Napi::Value AddonEngine::AllocateKvCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& engine = Open(env);
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "allocateKvCache(numBlocks) needs a number");
  double n = info[0].As<Napi::Number>().DoubleValue();
  if (!(n >= 1 && n == static_cast<double>(static_cast<int64_t>(n)))) {
    throw Napi::TypeError::New(env, "allocateKvCache: numBlocks must be a positive integer");
  }
  if (step_running_) throw Napi::Error::New(env, "allocateKvCache: cannot reallocate the KV cache while a step is running");
  try {
    engine.AllocateKvCache(static_cast<int64_t>(n));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

Napi::Value AddonEngine::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Open(env);
  if (info.Length() < 1) throw Napi::TypeError::New(env, "step() takes an array of sequences");
  std::vector<StepInput> inputs = ParseStepInputs(info[0]);
  bool ahead = false;
  if (info.Length() >= 2 && !info[1].IsUndefined()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "step(sequences, options): options must be an object");
    Napi::Value v = info[1].As<Napi::Object>().Get("ahead");
    if (!v.IsUndefined() && !v.IsBoolean()) throw Napi::TypeError::New(env, "step options: ahead must be a boolean");
    ahead = v.IsBoolean() && v.As<Napi::Boolean>().Value();
  }
  auto deferred = Napi::Promise::Deferred::New(env);
  pending_.push_back({std::move(inputs), ahead, deferred});
  if (!step_running_) StartNext();
  return deferred.Promise();
}

void AddonEngine::StartNext() {
  if (pending_.empty()) return;
  PendingStep next = std::move(pending_.front());
  pending_.pop_front();
  step_running_ = true;
  (new AddonStepWorker(this, engine_, std::move(next.inputs), next.ahead, next.deferred))->Queue();
}

void AddonEngine::OnStepSettled() {
  step_running_ = false;
  StartNext();
}

Napi::Value AddonEngine::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine& engine = Open(env);
  if (info.Length() < 1) throw Napi::TypeError::New(env, "release() takes an array of sequence ids");
  engine.Release(ParseIds(info[0]));
  return env.Undefined();
}

Napi::Value AddonEngine::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  engine_.reset();
  while (!pending_.empty()) {
    pending_.front().deferred.Reject(Napi::Error::New(env, "the engine was closed before this step ran").Value());
    pending_.pop_front();
  }
  return env.Undefined();
}

}  // namespace addon
}  // namespace tg
