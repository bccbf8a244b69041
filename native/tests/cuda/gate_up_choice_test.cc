// GateUpChoice (gate_up_choice.h): the MLP's gate/up path per row bucket, chosen by timing both
// paths at a bucket's first uncaptured step (its buckets: row_bucket_test.cc). The paths here are stand-ins of known cost (a
// memset of 256 MB against one of 4 KB), so which one is faster is not in doubt; the counts
// show when the choice times and when it only looks its bucket up.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/gate_up_choice.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

// A stream with a slow and a fast stand-in path, each counting its launches.
struct Paths {
  cudaStream_t stream = nullptr;
  DeviceBuffer big{size_t{256} << 20}, small{4096};
  int slow_calls = 0, fast_calls = 0;
  Paths() { TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~Paths() { cudaStreamDestroy(stream); }
  std::function<void()> slow() { return Memset(big, slow_calls); }
  std::function<void()> fast() { return Memset(small, fast_calls); }
  std::function<void()> Memset(DeviceBuffer& buffer, int& calls) {
    return [this, &buffer, &calls] {
      ++calls;
      TG_CUDA_CHECK(cudaMemsetAsync(buffer.get(), 1, buffer.bytes(), stream));
    };
  }
  int calls() const { return slow_calls + fast_calls; }
  void Reset() { slow_calls = fast_calls = 0; }
};

}  // namespace

TG_TEST(gate_up_choice_times_a_bucket_once_and_keeps_the_faster_path) {
  unsetenv("TEXT_GEN_SILU_GEMM");
  Paths p;
  GateUpChoice choice;
  // The fused path is the slow one: the bucket of 177-192 rows takes cuBLASLt's.
  CHECK(!choice.Fused(p.stream, 192, p.slow(), p.fast()));
  CHECK(p.slow_calls > 0 && p.fast_calls > 0);
  p.Reset();
  CHECK(!choice.Fused(p.stream, 180, p.fast(), p.slow()));  // the same bucket: looked up, whatever is faster now
  CHECK(p.calls() == 0);
  // Another bucket where the fused path is the fast one.
  CHECK(choice.Fused(p.stream, 300, p.fast(), p.slow()));
  CHECK(p.calls() > 0);
  p.Reset();
  CHECK(choice.Fused(p.stream, 320, p.slow(), p.fast()));
  CHECK(p.calls() == 0);
  // Up to 16 rows the GEMV path is taken, untimed.
  CHECK(!choice.Fused(p.stream, 16, p.fast(), p.slow()));
  CHECK(p.calls() == 0);
  TG_CUDA_CHECK(cudaStreamSynchronize(p.stream));
}

TG_TEST(gate_up_choice_under_a_capture_takes_the_fixed_rule_untimed) {
  unsetenv("TEXT_GEN_SILU_GEMM");
  Paths p;
  GateUpChoice choice;
  TG_CUDA_CHECK(cudaStreamBeginCapture(p.stream, cudaStreamCaptureModeThreadLocal));
  const bool at_512 = choice.Fused(p.stream, 512, p.fast(), p.slow());
  const bool at_2048 = choice.Fused(p.stream, 2048, p.fast(), p.slow());
  cudaGraph_t graph = nullptr;
  TG_CUDA_CHECK(cudaStreamEndCapture(p.stream, &graph));
  if (graph) cudaGraphDestroy(graph);
  CHECK(!at_512);
  CHECK(at_2048);
  CHECK(p.calls() == 0);
  // Nothing was decided: the first uncaptured step of the bucket times.
  CHECK(choice.Fused(p.stream, 512, p.fast(), p.slow()));
  CHECK(p.calls() > 0);
  TG_CUDA_CHECK(cudaStreamSynchronize(p.stream));
}

TG_TEST(gate_up_choice_follows_TEXT_GEN_SILU_GEMM_untimed) {
  Paths p;
  GateUpChoice choice;
  setenv("TEXT_GEN_SILU_GEMM", "0", 1);
  CHECK(!choice.Fused(p.stream, 4096, p.fast(), p.slow()));
  setenv("TEXT_GEN_SILU_GEMM", "128", 1);
  CHECK(choice.Fused(p.stream, 128, p.slow(), p.fast()));
  CHECK(!choice.Fused(p.stream, 127, p.fast(), p.slow()));
  CHECK(p.calls() == 0);
  unsetenv("TEXT_GEN_SILU_GEMM");
}

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, [] { return 0; }, [](int) {});
}
