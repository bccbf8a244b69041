// Loading a vendor library at run time (the cuBLASLt and NCCL shims): CI and the
// build machines have no cuBLAS or NCCL headers, so we declare what we use ourselves
// and find the library when a process first needs it.
#pragma once
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace tg {
namespace cuda {

struct SharedLibrary {
  void* handle = nullptr;
  std::string path;  // the name it was opened by
  std::string tried;  // every attempt and why it failed, for the error message

  // `env_var`, when set and non-empty, names the only file tried; else `names` in order.
  SharedLibrary(const char* env_var, const std::vector<std::string>& names) {
    const char* env = std::getenv(env_var);
    if (env && *env) {
      Open(env, std::string(" from ") + env_var);
    } else {
      for (const std::string& name : names) {
        if (Open(name, "")) break;
      }
    }
  }

  // Resolves `name` into `out`; `what` names the library in the error ("cuBLASLt").
  template <typename Fn>
  void Resolve(const char* name, Fn* out, const std::string& what, const std::string& hint = "") const {
    void* sym = dlsym(handle, name);
    if (!sym) throw std::runtime_error(what + " library " + path + " has no symbol " + name + hint);
    *out = reinterpret_cast<Fn>(sym);
  }

 private:
  bool Open(const std::string& name, const std::string& note) {
    handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);  // stays loaded for the life of the process
    if (handle) {
      path = name;
      return true;
    }
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + name + note + " (" + (why ? why : "not found") + ")";
    return false;
  }
};

// The API table `load` fills, loaded on the first call in the process and kept. A failed
// load is retried on the next call (call_once rethrows and stays unset). One table per type.
template <typename Api>
const Api& LoadedOncePerProcess(Api (*load)()) {
  static std::once_flag once;
  static Api api;
  std::call_once(once, [load] { api = load(); });
  return api;
}

}  // namespace cuda
}  // namespace tg
