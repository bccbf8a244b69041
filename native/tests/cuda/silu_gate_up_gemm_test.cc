// The Hopper gate/up GEMM with SwiGLU in its epilogue (silu_gate_up_gemm.h) against the CPU
// backend: x · [gate; up]ᵀ in f32, gate and up rounded to the activation type, SiLU-mul in
// f32, rounded again (what the cuBLASLt GEMM then LaunchSiluMul compute). Fresh random
// inputs, outputs poisoned with NaN, rows past m must stay untouched. Shapes cover partial
// row tiles, odd row-block counts (a cluster CTA with no rows), one and several column
// tiles, k of one to many 64-element steps, more tile pairs than clusters (the persistent
// loop), bf16 and fp16.
// With --perf: the Llama-3-8B MLP's shapes against cuBLASLt's GEMM plus the SiLU-mul pass.
// Without a CUDA device, or on a GPU other than sm_90 (or a build without sm_90a), it says
// it skipped.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/prefill_attention_wgmma.h"
#include "backend/cuda/silu_gate_up_gemm.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg;
using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

int cases_run = 0;
double worst_ratio = 0.0;

// act = SiLU(gate) · up from the CPU's f32 product, rounded as the two-kernel path rounds.
std::vector<float> Reference(const Rounded& x, const Rounded& w, int64_t m, int64_t n, int64_t k, ElemType t) {
  std::vector<float> product(static_cast<size_t>(m * 2 * n));
  cpu::Matmul(CpuPool(), x.values.data(), w.values.data(), nullptr, m, 2 * n, k, product.data());
  const std::vector<float> gate_up = Round(product, t).values;
  std::vector<float> act(static_cast<size_t>(m * n));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      const float g = gate_up[static_cast<size_t>(r * 2 * n + c)], u = gate_up[static_cast<size_t>(r * 2 * n + n + c)];
      act[static_cast<size_t>(r * n + c)] = g / (1.0f + std::exp(-g)) * u;
    }
  }
  return Round(act, t).values;
}

void CheckShape(int64_t m, int64_t n, int64_t k, ElemType t) {
  ++cases_run;
  const Rounded x = Round(RandomFloats(static_cast<size_t>(m * k)), t);
  const Rounded w = Round(RandomFloats(static_cast<size_t>(2 * n * k), -0.1f, 0.1f), t);
  DeviceBuffer d_x = ToDevice(x.bits), d_w = ToDevice(w.bits);
  // Two extra rows after the output: the kernel must not write past row m - 1.
  const size_t elems = static_cast<size_t>((m + 2) * n);
  DeviceBuffer act = Poisoned(elems * ElemSize(t));
  LaunchSiluGateUpGemm(nullptr, t, d_x.get(), d_w.get(), act.get(), m, n, k);
  TG_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> got = ToHost(act, elems, t);
  const std::vector<float> want = Reference(x, w, m, n, k, t);
  const double err = RelError(std::vector<float>(got.begin(), got.begin() + m * n), want);
  const double tol = Tolerance(t);
  const std::string name =
      std::string(Name(t)) + " m " + std::to_string(m) + " n " + std::to_string(n) + " k " + std::to_string(k);
  if (!(err <= tol)) {
    std::printf("  FAIL %s: relative error %.3g (tolerance %.3g)\n", name.c_str(), err, tol);
    ++tgtest::Failures();
  }
  if (err / tol > worst_ratio) worst_ratio = err / tol;
  for (size_t i = static_cast<size_t>(m * n); i < elems; ++i) {
    if (!std::isnan(got[i])) {
      std::printf("  FAIL %s: element %zu past the last row was written\n", name.c_str(), i);
      ++tgtest::Failures();
      break;
    }
  }
}

bool Runs() {
  if (PrefillWgmmaAvailable()) return true;
  std::printf("skipped: needs an sm_90a build on an sm_90 GPU\n");
  return false;
}

}  // namespace

TG_TEST(silu_gate_up_gemm_takes_only_what_it_computes) {
  DeviceBuffer buf(4096);
  const char* b = buf.as<char>();
  const ElemType bf = ElemType::kBF16;
  const bool hopper = PrefillWgmmaAvailable();
  CHECK(SiluGateUpGemmTakes(b, b, 1, 128, 64, bf) == hopper);
  CHECK(SiluGateUpGemmTakes(b, b, 5000, 14336, 4096, ElemType::kF16) == hopper);
  CHECK(!SiluGateUpGemmTakes(b, b, 1, 192, 64, bf));   // n not a multiple of 128
  CHECK(!SiluGateUpGemmTakes(b, b, 1, 128, 96, bf));   // k not a multiple of 64
  CHECK(!SiluGateUpGemmTakes(b, b, 0, 128, 64, bf));
  CHECK(!SiluGateUpGemmTakes(b + 2, b, 1, 128, 64, bf));  // x not 16-byte aligned
  CHECK(!SiluGateUpGemmTakes(b, b, 1, 128, 64, ElemType::kF32));
  CHECK_THROWS_WITH(LaunchSiluGateUpGemm(nullptr, bf, b, b, buf.get(), 1, 192, 64), "silu_gate_up_gemm: needs");
}

TG_TEST(silu_gate_up_gemm_matches_cpu) {
  if (!Runs()) return;
  struct Shape { int64_t m, n, k; };
  // Partial row tiles (1, 77, 129, 300), an odd number of row blocks (the cluster's second
  // CTA then works on rows past m: 1, 77, 300, 2100), one and several column tiles, k of 1
  // to 64 steps; the last has more tile pairs than an H100's clusters, so they loop.
  const Shape shapes[] = {{1, 128, 64},    {77, 256, 192},  {128, 128, 4096}, {129, 384, 320},
                          {300, 640, 128}, {1000, 512, 256}, {2100, 1024, 64}};
  for (ElemType t : {ElemType::kBF16, ElemType::kF16}) {
    for (const Shape& s : shapes) CheckShape(s.m, s.n, s.k, t);
  }
}

namespace {

// Median milliseconds of `a` and of `b`, timed alternately (a, b, a, b, ...): under the
// GPU's power cap the clock drifts over a run, which would favour whichever went first.
template <typename A, typename B>
std::pair<double, double> AlternateMs(int reps, A a, B b) {
  std::vector<double> a_ms, b_ms;
  for (int i = 0; i < reps; ++i) {
    a_ms.push_back(TimeMs(1, a));
    b_ms.push_back(TimeMs(1, b));
  }
  std::sort(a_ms.begin(), a_ms.end());
  std::sort(b_ms.begin(), b_ms.end());
  return {a_ms[a_ms.size() / 2], b_ms[b_ms.size() / 2]};
}

// This kernel against cuBLASLt's gate/up GEMM followed by the SiLU-mul pass, on the same
// inputs (so the speed-up is the figure): the 8B's MLP at prefill sizes, and the 70B's MLP
// slice at tensor parallelism 4 at the decode batches of a large serving load (where
// cuBLASLt's GEMMs ran at ~400-500 TFLOP/s: cuda-notes run 130).
int Perf() {
  if (!Runs()) return 0;
  const ElemType t = ElemType::kBF16;
  struct Shape {
    const char* name;
    int64_t n, k;
    std::vector<int64_t> rows;
  };
  const Shape shapes[] = {{"Llama-3-8B", 14336, 4096, {256, 512, 1024, 2048, 4096, 8192}},
                          {"Llama-3-70B at TP 4", 7168, 8192, {64, 128, 160, 192, 256, 384, 512, 1024}}};
  for (const Shape& shape : shapes) {
    const int64_t n = shape.n, k = shape.k;
    std::printf("perf, bf16, %s gate/up (n %lld, k %lld), medians of 15 alternating runs:\n", shape.name,
                static_cast<long long>(n), static_cast<long long>(k));
    const Rounded w = Round(RandomFloats(static_cast<size_t>(2 * n * k), -0.05f, 0.05f), t);
    DeviceBuffer d_w = ToDevice(w.bits);
    Gemm gemm;
    for (int64_t m : shape.rows) {
      const Rounded x = Round(RandomFloats(static_cast<size_t>(m * k)), t);
      DeviceBuffer d_x = ToDevice(x.bits);
      DeviceBuffer gate_up(static_cast<size_t>(m * 2 * n) * 2), act(static_cast<size_t>(m * n) * 2),
          fused(static_cast<size_t>(m * n) * 2);
      const auto [two_ms, ms] = AlternateMs(
          15,
          [&] {
            gemm.Run(nullptr, d_x.get(), d_w.get(), gate_up.get(), m, 2 * n, k, t, t);
            LaunchSiluMul(nullptr, t, gate_up.get(), m, n, act.get());
          },
          [&] { LaunchSiluGateUpGemm(nullptr, t, d_x.get(), d_w.get(), fused.get(), m, n, k); });
      const double diff =
          RelError(ToHost(fused, static_cast<size_t>(m * n), t), ToHost(act, static_cast<size_t>(m * n), t));
      const double flops = 2.0 * m * 2 * n * k;
      std::printf("RESULT silu gate/up gemm %s m %lld: %.1f us, %.0f TFLOP/s; cuBLASLt GEMM + SiLU-mul %.1f us, %.0f "
                  "TFLOP/s (%+.1f%%); relative difference %.2g\n",
                  shape.name, static_cast<long long>(m), ms * 1000, flops / ms / 1e9, two_ms * 1000,
                  flops / two_ms / 1e9, 100.0 * (two_ms / ms - 1.0), diff);
      if (!(diff <= Tolerance(t))) {
        std::printf("  FAIL: the two paths disagree\n");
        ++tgtest::Failures();
      }
    }
  }
  return tgtest::Failures() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, Perf, [](int) {
    std::printf("%d shapes, worst error %.3g of its tolerance\n", cases_run, worst_ratio);
  });
}
