// Gemm's cuBLASLt tuning per row bucket (gemm.h, row_bucket.h): an algorithm timed at one row
// count serves every row count of its bucket, so each must still compute the product.
//
// --perf times the GEMMs of a decode step in the order a server meets them: the graph buckets
// upward, then the eager steps past them, each row count's first call tuning its bucket if that
// is new. Once with the power-of-two buckets this backend had (TEXT_GEN_GEMM_POW2_BUCKETS=1),
// once with row_bucket.h's, and once with those and more candidates timed: the cost of an
// algorithm tuned at another row count than the one it serves.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/decode_graphs.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/gemm.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg;
using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

// Row counts that fall in tuned buckets out of order: each bucket is tuned at its first.
const int64_t kRowsInMeetingOrder[] = {161, 176, 170, 177, 192, 100, 97, 128, 300, 257, 288, 1000, 1025, 2048};

void ExpectEveryRowCountMatchesCpu(const char* variant) {
  const int64_t n = 520, k = 256;
  const ElemType t = ElemType::kBF16;
  Gemm gemm;
  const Rounded w = Round(RandomFloats(n * k, -0.1f, 0.1f), t);
  auto d_w = ToDevice(w.bits);
  for (int64_t m : kRowsInMeetingOrder) {
    const Rounded x = Round(RandomFloats(m * k), t);
    auto d_x = ToDevice(x.bits);
    auto d_out = Poisoned(m * n * sizeof(float));
    gemm.Run(nullptr, d_x.get(), d_w.get(), d_out.get(), m, n, k, t, ElemType::kF32);
    std::vector<float> want(m * n);
    cpu::Matmul(CpuPool(), x.values.data(), w.values.data(), nullptr, m, n, k, want.data());
    const double err = RelError(ToHost(d_out, m * n, ElemType::kF32), want);
    const bool ok = err <= Tolerance(ElemType::kF32);
    std::printf("  %s %s m %lld: relative error %.3g\n", ok ? "pass" : "FAIL", variant, static_cast<long long>(m), err);
    if (!ok) ++tgtest::Failures();
  }
}

struct Shape {
  const char* name;
  int64_t n, k;
};

// One variant's timings: µs per call of each shape at each row count, weights rotated over
// copies totalling >= 3x the L2 (a step reads each layer's from memory), in a graph as a
// decode step runs them.
void TimeServedOrder(const char* variant, const std::vector<Shape>& shapes, const std::vector<int64_t>& rows) {
  const ElemType t = ElemType::kBF16;
  int l2 = 0;
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Gemm gemm;
  for (const Shape& s : shapes) {
    const size_t w_bytes = static_cast<size_t>(s.n * s.k) * 2;
    const size_t copies = std::max<size_t>(1, (3 * static_cast<size_t>(l2) + w_bytes - 1) / w_bytes);
    std::vector<DeviceBuffer> ws;
    for (size_t c = 0; c < copies; ++c) ws.push_back(ToDevice(Round(RandomFloats(s.n * s.k, -0.1f, 0.1f), t).bits));
    const int64_t max_rows = rows.back();
    auto d_x = ToDevice(Round(RandomFloats(max_rows * s.k), t).bits);
    DeviceBuffer d_out(static_cast<size_t>(max_rows * s.n) * 2);
    double total_us = 0.0;
    for (int64_t m : rows) {
      // The step's first, eager call: tunes the bucket if it is new.
      gemm.Run(stream, d_x.get(), ws[0].get(), d_out.get(), m, s.n, s.k, t, t);
      const int reps = static_cast<int>(std::max<size_t>(copies, 4));
      const double us = GraphUs(stream, reps, [&](int i) {
        gemm.Run(stream, d_x.get(), ws[static_cast<size_t>(i) % copies].get(), d_out.get(), m, s.n, s.k, t, t);
      });
      total_us += us;
      std::printf("RESULT gemm-served %-11s %-12s m %4lld n %5lld k %5lld: %7.1f us %6.1f TFLOP/s\n", variant, s.name,
                  static_cast<long long>(m), static_cast<long long>(s.n), static_cast<long long>(s.k), us,
                  2.0 * m * s.n * s.k / us / 1e6);
    }
    std::printf("RESULT gemm-served %-11s %-12s sum over the row counts: %.1f us\n", variant, s.name, total_us);
  }
  TG_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaStreamDestroy(stream);
}

int Perf() {
  // Per-rank slices: the 70B at TP 4 (qkv 10,240 / 4, o's k 8,192 / 4, gate/up 57,344 / 4,
  // down's k 28,672 / 4), and the 8B on one GPU.
  const std::vector<Shape> shapes = {{"70b/4 qkv", 2560, 8192},    {"70b/4 o", 8192, 2048},
                                     {"70b/4 gate_up", 14336, 8192}, {"70b/4 down", 8192, 7168},
                                     {"8b qkv", 6144, 4096},         {"8b o", 4096, 4096},
                                     {"8b gate_up", 28672, 4096},    {"8b down", 4096, 14336}};
  std::vector<int64_t> rows;
  for (int32_t b : DefaultGraphBuckets()) {
    if (b > 16) rows.push_back(b);  // up to 16 rows the GEMV kernel serves a decode step
  }
  for (int64_t m : {288, 320, 384, 448, 512}) rows.push_back(m);  // eager steps
  struct Variant {
    const char* name;
    const char* env;
    const char* value;
  };
  const Variant variants[] = {{"pow2", "TEXT_GEN_GEMM_POW2_BUCKETS", "1"},
                              {"rows", nullptr, nullptr},
                              {"rows-32cand", "TEXT_GEN_GEMM_TUNE_CANDIDATES", "32"}};
  for (const Variant& v : variants) {
    unsetenv("TEXT_GEN_GEMM_POW2_BUCKETS");
    unsetenv("TEXT_GEN_GEMM_TUNE_CANDIDATES");
    if (v.env != nullptr) setenv(v.env, v.value, 1);
    TimeServedOrder(v.name, shapes, rows);
  }
  unsetenv("TEXT_GEN_GEMM_POW2_BUCKETS");
  unsetenv("TEXT_GEN_GEMM_TUNE_CANDIDATES");
  return 0;
}

}  // namespace

TG_TEST(gemm_row_bucket_algorithms_hold_at_every_row_count) {
  unsetenv("TEXT_GEN_GEMM_POW2_BUCKETS");
  ExpectEveryRowCountMatchesCpu("row buckets");
  setenv("TEXT_GEN_GEMM_POW2_BUCKETS", "1", 1);
  ExpectEveryRowCountMatchesCpu("power-of-two buckets");
  unsetenv("TEXT_GEN_GEMM_POW2_BUCKETS");
}

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, Perf, [](int) {});
}
