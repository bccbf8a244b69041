// Which of its two gate/up paths an MLP of many rows takes: the Hopper GEMM with SiLU-mul in its
// epilogue (silu_gate_up_gemm.h), or the product through Gemm (cuBLASLt) into [t, 2·inter] and
// then the SiLU-mul pass. Neither is faster at every size: on the 70B's TP 4 slice the fused GEMM
// was 20% faster at 192–256 rows, 17–24% slower at 128–160 and 384, 9% slower at 1,024
// (cuda-notes run 131), and cuBLASLt's own algorithms jump between row counts. So the first
// uncaptured step of each row bucket times both, and the bucket keeps the faster.
//
// TEXT_GEN_SILU_GEMM overrides the timing: 0 never takes the fused GEMM, N takes it from N rows
// (read at every step, so that a benchmark can alternate the paths in one process).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>

namespace tg {
namespace cuda {

class GateUpChoice {
 public:
  GateUpChoice();

  // Whether a step of `rows` rows takes the fused GEMM (`fused` launches it, `split` the other
  // path; both write the same activation, and the caller launches the chosen one afterwards).
  // Up to kGemvMaxRows rows never do: the GEMV path is theirs. An undecided bucket under a
  // capture takes the fixed rule (from 1,024 rows), its first uncaptured step times both.
  // Called at every step: only a bucket's first timing wraps the paths in std::function.
  template <typename FusedPath, typename SplitPath>
  bool Fused(cudaStream_t stream, int64_t rows, FusedPath&& fused, SplitPath&& split) {
    if (const std::optional<bool> known = Known(stream, rows)) return *known;
    return Time(stream, rows, fused, split);
  }

 private:
  // The choice where no timing is needed: the GEMV's rows, TEXT_GEN_SILU_GEMM, a decided bucket,
  // or the fixed rule under a capture. Empty when the bucket's paths must be timed now.
  std::optional<bool> Known(cudaStream_t stream, int64_t rows) const;
  bool Time(cudaStream_t stream, int64_t rows, const std::function<void()>& fused,
            const std::function<void()>& split);

  // Per bucket (row_bucket.h): both paths' times jump within 128 rows (cuBLASLt's 70B gate/up
  // slice: 120 µs at 309 rows, 248 at 456; cuda-notes run 134).
  std::map<int64_t, bool> fused_;
  bool log_ = false;               // TEXT_GEN_GEMV_LOG=1 prints each decision, as Gemm's
};

}  // namespace cuda
}  // namespace tg
