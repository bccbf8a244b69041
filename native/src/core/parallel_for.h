// Splits [0, n) over short-lived threads for bulk work on the loading path (weight
// conversion and copies out of the memory-mapped checkpoint, gigabytes at a time),
// where starting a few threads per tensor costs nothing next to the work and no
// long-lived pool is wanted. Small ranges run on the calling thread.
#pragma once
#include <algorithm>
#include <cstddef>
#include <exception>
#include <thread>
#include <vector>

namespace tg {

// Calls fn(begin, end) over disjoint pieces covering [0, n), each at least `grain` long
// (except a last shorter one), on up to std::thread::hardware_concurrency() threads
// (at most 16). Rethrows the first exception a piece threw, after all have finished.
template <typename Fn>
void ParallelFor(size_t n, size_t grain, Fn fn) {
  const size_t hw = std::max<size_t>(1, std::min<size_t>(16, std::thread::hardware_concurrency()));
  const size_t pieces = std::min(hw, grain > 0 ? n / grain : hw);
  if (pieces <= 1) {
    if (n > 0) fn(size_t{0}, n);
    return;
  }
  const size_t step = (n + pieces - 1) / pieces;
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(pieces);
  for (size_t p = 1; p < pieces; ++p) {
    threads.emplace_back([&, p] {
      try {
        fn(std::min(n, p * step), std::min(n, (p + 1) * step));
      } catch (...) {
        errors[p] = std::current_exception();
      }
    });
  }
  try {
    fn(size_t{0}, std::min(n, step));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace tg
