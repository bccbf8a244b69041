// ParallelFor (core/parallel_for.h): every index exactly once, small ranges on the
// caller's thread, and a piece's exception reaching the caller after all pieces ran.
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/parallel_for.h"
#include "test_util.h"

TG_TEST(covers_every_index_exactly_once) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{1 << 20}}) {
    for (size_t grain : {size_t{1}, size_t{3}, size_t{4096}}) {
      std::vector<std::atomic<int>> hits(n);
      tg::ParallelFor(n, grain, [&](size_t begin, size_t end) {
        CHECK(begin < end && end <= n);
        for (size_t i = begin; i < end; ++i) hits[i].fetch_add(1);
      });
      size_t wrong = 0;
      for (auto& h : hits) wrong += h.load() != 1;
      CHECK(wrong == 0);
    }
  }
}

TG_TEST(small_ranges_stay_on_the_calling_thread) {
  const auto caller = std::this_thread::get_id();
  int calls = 0;
  tg::ParallelFor(100, 1000, [&](size_t begin, size_t end) {
    CHECK(std::this_thread::get_id() == caller);
    CHECK(begin == 0 && end == 100);
    ++calls;
  });
  CHECK(calls == 1);
}

TG_TEST(an_exception_in_a_piece_reaches_the_caller) {
  std::atomic<size_t> done{0};
  CHECK_THROWS_WITH(tg::ParallelFor(1 << 16, 1, [&](size_t begin, size_t end) {
                      done += end - begin;
                      if (end == size_t{1} << 16) throw std::runtime_error("piece failed");
                    }),
                    "piece failed");
  CHECK(done.load() == (1u << 16));  // every piece ran before the rethrow
}

TG_TEST_MAIN()
