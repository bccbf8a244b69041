// The text_gen_engine Node-API module: loadEngine, inspectSafetensors,
// cudaDeviceCount, hasCuda and ncclUniqueId, typed in native/engine-types.ts.
#include <memory>
#include <string>

#include <napi.h>

#include "addon/addon_data.h"
#include "addon/addon_engine.h"
#include "addon/js_convert.h"
#include "core/dtype.h"
#include "core/safetensors.h"
#include "engine/engine.h"
#ifdef TG_HAVE_CUDA
#include "backend/cuda/device_info.h"
#include "backend/cuda/nccl/device_communicator.h"
#endif

namespace tg {
namespace addon {
namespace {

// Loads the weights (and meets the other ranks) off the JS thread.
class AddonLoadEngineWorker : public Napi::AsyncWorker {
 public:
  AddonLoadEngineWorker(Napi::Env env, EngineOptions options)
      : Napi::AsyncWorker(env, "text_gen_engine.loadEngine"),
        options_(std::move(options)),
        deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      engine_ = std::make_shared<Engine>(options_);
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("loading the engine failed with an unknown error");
    }
  }

  void OnOK() override {
    try {
      deferred_.Resolve(AddonEngine::NewInstance(Env(), std::move(engine_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  EngineOptions options_;
  std::shared_ptr<Engine> engine_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value LoadEngine(const Napi::CallbackInfo& info) {
  if (info.Length() < 1) throw Napi::TypeError::New(info.Env(), "loadEngine(options) needs an options object");
  EngineOptions options = ParseEngineOptions(info[0]);
  auto* worker = new AddonLoadEngineWorker(info.Env(), std::move(options));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value InspectSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "inspectSafetensors(modelDir) needs a string");
  std::string dir = info[0].As<Napi::String>().Utf8Value();
  std::unique_ptr<SafetensorsArchive> archive;
  try {
    archive = std::make_unique<SafetensorsArchive>(dir);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  const auto& tensors = archive->tensors();
  Napi::Array out = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", t.name);
    o.Set("dtype", DTypeName(t.dtype));
    Napi::Array shape = Napi::Array::New(env, t.shape.size());
    for (size_t j = 0; j < t.shape.size(); ++j) shape.Set(static_cast<uint32_t>(j), Napi::Number::New(env, static_cast<double>(t.shape[j])));
    o.Set("shape", shape);
    o.Set("file", t.file);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

Napi::Value CudaDeviceCountJs(const Napi::CallbackInfo& info) {
#ifdef TG_HAVE_CUDA
  return Napi::Number::New(info.Env(), CudaDeviceCount());
#else
  return Napi::Number::New(info.Env(), 0);
#endif
}

Napi::Value HasCuda(const Napi::CallbackInfo& info) {
#ifdef TG_HAVE_CUDA
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// Rank 0's side of the NCCL rendezvous: a fresh ncclUniqueId for the other ranks.
Napi::Value NcclUniqueIdJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef TG_HAVE_CUDA
  std::string id;
  try {
    id = cuda::NewNcclUniqueId();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return Napi::Buffer<char>::Copy(env, id.data(), id.size());
#else
  throw Napi::Error::New(env, "NCCL is needed for --num-shard > 1 on GPUs, and this build of the native engine has no "
                              "CUDA backend (nvcc was not found at build time)");
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->engine_constructor = Napi::Persistent(AddonEngine::DefineClass(env));
  env.SetInstanceData<AddonData>(data);  // deleted by Node when the environment goes away
  exports.Set("loadEngine", Napi::Function::New(env, LoadEngine, "loadEngine"));
  exports.Set("inspectSafetensors", Napi::Function::New(env, InspectSafetensors, "inspectSafetensors"));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCountJs, "cudaDeviceCount"));
  exports.Set("hasCuda", Napi::Function::New(env, HasCuda, "hasCuda"));
  exports.Set("ncclUniqueId", Napi::Function::New(env, NcclUniqueIdJs, "ncclUniqueId"));
  return exports;
}

}  // namespace
}  // namespace addon
}  // namespace tg

// NODE_API_MODULE pastes the name into an identifier, so it needs an unqualified one.
static Napi::Object InitTextGenEngine(Napi::Env env, Napi::Object exports) { return tg::addon::Init(env, exports); }

NODE_API_MODULE(text_gen_engine, InitTextGenEngine)
