// A minimal assertion harness for the C++ unit tests: each CHECK failure is
// printed with file and line, and main() returns non-zero if any failed.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace tgtest {

inline int& Failures() { static int n = 0; return n; }
inline std::vector<std::pair<std::string, std::function<void()>>>& Registry() {
  static std::vector<std::pair<std::string, std::function<void()>>> r;
  return r;
}
struct Register {
  Register(const char* name, std::function<void()> fn) { Registry().emplace_back(name, std::move(fn)); }
};

inline int RunAll() {
  int failed_tests = 0;
  for (auto& [name, fn] : Registry()) {
    int before = Failures();
    try {
      fn();
    } catch (const std::exception& e) {
      std::printf("  unexpected exception: %s\n", e.what());
      ++Failures();
    }
    bool ok = Failures() == before;
    if (!ok) ++failed_tests;
    std::printf("%s %s\n", ok ? "ok" : "not ok", name.c_str());
  }
  std::printf("%d passed, %d failed\n", static_cast<int>(Registry().size()) - failed_tests, failed_tests);
  return failed_tests == 0 ? 0 : 1;
}

}  // namespace tgtest

#define TG_TEST(name) \
  static void name(); \
  static tgtest::Register name##_registered(#name, name); \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) { std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); ++tgtest::Failures(); } } while (0)

#define CHECK_NEAR(a, b, tol) \
  do { double _a = (a), _b = (b); if (!(std::fabs(_a - _b) <= (tol))) { \
    std::printf("  %s:%d: CHECK_NEAR(%s, %s) failed: %g vs %g\n", __FILE__, __LINE__, #a, #b, _a, _b); \
    ++tgtest::Failures(); } } while (0)

#define CHECK_THROWS_WITH(stmt, substring) \
  do { bool _threw = false; try { stmt; } catch (const std::exception& _e) { _threw = true; \
    if (std::string(_e.what()).find(substring) == std::string::npos) { \
      std::printf("  %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, _e.what(), substring); ++tgtest::Failures(); } } \
    if (!_threw) { std::printf("  %s:%d: %s did not throw\n", __FILE__, __LINE__, #stmt); ++tgtest::Failures(); } } while (0)

#define TG_TEST_MAIN() int main() { return tgtest::RunAll(); }
