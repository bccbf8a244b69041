// The row buckets of the backend's timed choices: a choice timed once (cuBLASLt's algorithm for a
// shape, the gate/up path) holds for every row count of its bucket. Powers of two up to 16 rows,
// 8-row steps to 64, 16-row steps to 256, 32-row steps to 1,024, powers of two to 8,192, then
// multiples of 8,192. Every default decode graph size past 24 rows has a bucket of its own.
//
// Narrow where decode steps and mixed steps fall because the best choice jumps within a power of
// two. With one cuBLASLt bucket for 129–256 rows, the algorithm tuned at the 160-row graph served
// the 192–256-row graphs 40–120% slower than at 160 (the 70B's TP 4 slices, cuda-notes run 130),
// and the gate/up paths' times cross twice within 128 rows (runs 131 and 134). Below 64 rows an
// algorithm tuned at 40 or 56 rows took 1.6–1.8× its best at 48 or 64 (run 150).
#pragma once
#include <cstdint>

namespace tg {
namespace cuda {

inline int64_t TimingRowBucket(int64_t rows) {
  if (rows <= 16) {
    int64_t b = 1;
    while (b < rows) b <<= 1;
    return b;
  }
  if (rows <= 64) return (rows + 7) / 8 * 8;
  if (rows <= 256) return (rows + 15) / 16 * 16;
  if (rows <= 1024) return (rows + 31) / 32 * 32;
  if (rows <= 8192) {
    int64_t b = 2048;
    while (b < rows) b <<= 1;
    return b;
  }
  return (rows + 8191) / 8192 * 8192;
}

}  // namespace cuda
}  // namespace tg
