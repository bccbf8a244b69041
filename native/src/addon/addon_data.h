// Per-environment state of the addon (one per Node isolate / worker thread),
// kept as Node-API instance data rather than in globals.
#pragma once
#include <napi.h>

namespace tg {
namespace addon {

struct AddonData {
  Napi::FunctionReference engine_constructor;
};

inline AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

}  // namespace addon
}  // namespace tg
