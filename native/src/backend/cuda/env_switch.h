// The backend's A/B switches: environment variables that turn a path off with "0".
#pragma once
#include <cstdlib>
#include <cstring>

namespace tg {
namespace cuda {

// True unless the variable `name` is set to "0".
inline bool SwitchedOn(const char* name) {
  const char* env = std::getenv(name);
  return env == nullptr || std::strcmp(env, "0") != 0;
}

}  // namespace cuda
}  // namespace tg
