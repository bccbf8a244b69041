// See gate_up_choice.h.
#include "backend/cuda/gate_up_choice.h"

#include <cstdio>
#include <cstdlib>

#include "backend/cuda/env_switch.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/row_bucket.h"
#include "backend/cuda/stopwatch.h"
#include "backend/cuda/stream_capture.h"

namespace tg {
namespace cuda {
namespace {

// The rule before the timing, and under a capture of an undecided bucket: at 512 rows the fused
// GEMM's tile pairs fill the SMs' last round poorly; from 1,024 rows it was 5% faster on the
// 8B's shape (cuda-notes session 8).
constexpr int64_t kFixedMinRows = 1024;
// Launches of each path per timing (BestTimes takes the better of two such runs).
constexpr int kReps = 2;

}  // namespace

GateUpChoice::GateUpChoice() : log_(SetToOne("TEXT_GEN_GEMV_LOG")) {}

std::optional<bool> GateUpChoice::Known(cudaStream_t stream, int64_t rows) const {
  if (rows <= kGemvMaxRows) return false;
  if (const char* env = std::getenv("TEXT_GEN_SILU_GEMM")) {
    const int64_t from = std::atoll(env);
    return from > 0 && rows >= from;
  }
  auto it = fused_.find(TimingRowBucket(rows));
  if (it != fused_.end()) return it->second;
  if (IsCapturing(stream)) return rows >= kFixedMinRows;
  return std::nullopt;
}

bool GateUpChoice::Time(cudaStream_t stream, int64_t rows, const std::function<void()>& fused,
                        const std::function<void()>& split) {
  const int64_t bucket = TimingRowBucket(rows);
  // Once each untimed: cuBLASLt tunes its row bucket, and both warm up.
  fused();
  split();
  const auto [fused_ms, split_ms] = BestTimes(
      stream,
      [&] {
        for (int r = 0; r < kReps; ++r) fused();
      },
      [&] {
        for (int r = 0; r < kReps; ++r) split();
      });
  const bool use = fused_ms <= split_ms;
  if (log_) {
    std::fprintf(stderr,
                 "text-gen gemm: gate/up of %lld rows (bucket %lld): fused %.1f us, cuBLASLt + SiLU-mul %.1f us: %s\n",
                 static_cast<long long>(rows), static_cast<long long>(bucket), fused_ms * 1e3f / kReps,
                 split_ms * 1e3f / kReps, use ? "fused" : "cuBLASLt");
  }
  fused_[bucket] = use;
  return use;
}

}  // namespace cuda
}  // namespace tg
