// The backend's A/B switches: environment variables that turn a path off with "0".
#pragma once
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace tg {
namespace cuda {

// True unless the variable `name` is set to "0".
inline bool SwitchedOn(const char* name) {
  const char* env = std::getenv(name);
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// True when the variable `name` is set to "1" (a switch that is off unless asked for).
inline bool SetToOne(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, "1") == 0;
}

// The integer in variable `name`, or `fallback` when it is unset; anything but an integer in
// [1, max] is refused with a message naming the variable.
inline int PositiveFromEnv(const char* name, int fallback, int max) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < 1 || v > max) {
    throw std::invalid_argument(std::string(name) + " must be an integer from 1 to " + std::to_string(max) +
                                ", got '" + env + "'");
  }
  return static_cast<int>(v);
}

}  // namespace cuda
}  // namespace tg
