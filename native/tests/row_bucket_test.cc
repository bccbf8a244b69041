// The row buckets of the CUDA backend's timed choices (backend/cuda/row_bucket.h): a pure
// function, so it is checked here, without a GPU, where CI runs it.
#include <cstdint>
#include <cstdio>
#include <utility>

#include "backend/cuda/row_bucket.h"
#include "test_util.h"

using tg::cuda::TimingRowBucket;

namespace {

void ExpectBuckets(std::initializer_list<std::pair<int64_t, int64_t>> rows_bucket) {
  for (const auto& [rows, bucket] : rows_bucket) {
    if (TimingRowBucket(rows) != bucket) {
      std::printf("  rows %lld: bucket %lld, want %lld\n", static_cast<long long>(rows),
                  static_cast<long long>(TimingRowBucket(rows)), static_cast<long long>(bucket));
      ++tgtest::Failures();
    }
  }
}

}  // namespace

TG_TEST(row_buckets_are_powers_of_two_up_to_16_rows) {
  ExpectBuckets({{1, 1}, {2, 2}, {3, 4}, {5, 8}, {9, 16}, {16, 16}});
}

// The decode graphs of 160 and 192 rows must not share a tuned algorithm (cuda-notes run 130),
// nor those of 56 and 64 (run 150).
TG_TEST(row_buckets_step_by_8_rows_to_64_by_16_to_256_then_by_32_to_1024) {
  ExpectBuckets({{17, 24},
                 {24, 24},
                 {25, 32},
                 {33, 40},
                 {56, 56},
                 {57, 64},
                 {64, 64},
                 {65, 80},
                 {160, 160},
                 {161, 176},
                 {177, 192},
                 {192, 192},
                 {256, 256},
                 {257, 288},
                 {1000, 1024},
                 {1024, 1024}});
}

TG_TEST(row_buckets_are_powers_of_two_to_8192_then_its_multiples) {
  ExpectBuckets({{1025, 2048}, {2049, 4096}, {8192, 8192}, {8193, 16384}, {16385, 24576}});
}

TG_TEST(every_row_count_lies_in_its_bucket_and_buckets_never_shrink) {
  int64_t previous = 0;
  for (int64_t rows = 1; rows <= 40000; ++rows) {
    const int64_t bucket = TimingRowBucket(rows);
    CHECK(bucket >= rows);
    CHECK(bucket >= previous);
    CHECK(TimingRowBucket(bucket) == bucket);
    previous = bucket;
  }
}

TG_TEST_MAIN()
