// The GEMV kernel for decode batches (gemv.h) and Gemm's choice between it and
// cuBLASLt (gemm.h), against the CPU backend's f32 Matmul on the same rounded
// inputs, in the style of cuda_ops_test.cc: fresh random inputs, outputs poisoned
// with NaN, relative L2 error with a tolerance for the output type. Covers m = 1..16,
// odd n, k not a multiple of 64 or of 32, bf16 and fp16 in, f32 out, the product added
// into an f32 output (GemvOutput::kAddTo), SiLU-mul of the gate/up halves written by the GEMV
// (GemvOutput::kSiluOfHalves), RoPE and the KV write done by the qkv GEMV (kRopeKvWrite), a
// norm linked through two GEMVs (GemvNorm); Gemm
// with TEXT_GEN_GEMV forced on, forced off
// and automatic; Prepare; and Gemm inside a CUDA graph capture (where it must not
// allocate, synchronise or time), storing and adding.
// With --perf: the Llama-3-8B shapes at m = 1, 2, 4, 8, GEMV vs cuBLASLt, each timed
// inside a CUDA graph, with W repeated (L2-resident when it fits) and rotated over
// copies that exceed the L2 (as a decode step reads it).
// Without a CUDA device it says it skipped and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/kernels.h"
#include "core/dtype.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg;
using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

// One product to check: rounded operands on host and device, and the CPU's answer.
struct Problem {
  int64_t m, n, k;
  ElemType in, out;
  Rounded x;
  const Rounded* w;  // shared between problems of one W
  DeviceBuffer d_x;
  const DeviceBuffer* d_w;
  std::vector<float> want;
  std::string name() const {
    return std::string(Name(in)) + "->" + Name(out) + " m " + std::to_string(m) + " n " + std::to_string(n) + " k " +
           std::to_string(k);
  }
};

struct Weight {
  int64_t n, k;
  Rounded host;
  DeviceBuffer dev;
};

Weight MakeWeight(int64_t n, int64_t k, ElemType t) {
  Weight w{n, k, Round(RandomFloats(static_cast<size_t>(n * k), -0.1f, 0.1f), t), {}};
  w.dev = ToDevice(w.host.bits);
  return w;
}

Problem MakeProblem(int64_t m, const Weight& w, ElemType in, ElemType out) {
  Problem p{m, w.n, w.k, in, out, Round(RandomFloats(static_cast<size_t>(m * w.k)), in), &w.host, {}, &w.dev, {}};
  p.d_x = ToDevice(p.x.bits);
  p.want.resize(static_cast<size_t>(m * w.n));
  cpu::Matmul(CpuPool(), p.x.values.data(), w.host.values.data(), nullptr, m, w.n, w.k, p.want.data());
  return p;
}

int cases_run = 0;
std::map<std::string, std::pair<double, double>> worst;  // per path and output type: error, tolerance

// Runs `compute(out)` into a NaN-poisoned output and compares it with the reference;
// prints failures only (there are hundreds of cases), the worst errors at the end.
template <typename Fn>
void Expect(const std::string& path, const Problem& p, Fn compute) {
  ++cases_run;
  DeviceBuffer out = Poisoned(static_cast<size_t>(p.m * p.n) * ElemSize(p.out));
  compute(out.get());
  const double err = RelError(ToHost(out, static_cast<size_t>(p.m * p.n), p.out), p.want);
  const double tol = Tolerance(p.out);
  if (!(err <= tol)) {
    std::printf("  FAIL %s %s: relative error %.3g (tolerance %.3g)\n", path.c_str(), p.name().c_str(), err, tol);
    ++tgtest::Failures();
  }
  auto& w = worst[path + " " + Name(p.in) + "->" + Name(p.out)];
  if (!(err <= w.first)) w = {err, tol};
}

const ElemType kTypes[] = {ElemType::kBF16, ElemType::kF16};

// A Gemm that reads TEXT_GEN_GEMV = `mode` (nullptr: unset) at construction.
std::unique_ptr<Gemm> MakeGemm(const char* mode) {
  if (mode) {
    setenv("TEXT_GEN_GEMV", mode, 1);
  } else {
    unsetenv("TEXT_GEN_GEMV");
  }
  auto gemm = std::make_unique<Gemm>();
  unsetenv("TEXT_GEN_GEMV");
  return gemm;
}

void RunGemm(Gemm& gemm, cudaStream_t stream, const Problem& p, void* out) {
  gemm.Run(stream, p.d_x.get(), p.d_w->get(), out, p.m, p.n, p.k, p.in, p.out);
}

// An f32 output that had `residual` added to it: within the f32 tolerance of the CPU's `want`
// (residual plus the CPU's product), and equal to residual + `stored` (the GEMV kernel's own
// store of the same product) up to the one f32 rounding of that add, since the sums are the same.
void ExpectAdded(const std::string& path, const std::string& name, const std::vector<float>& got,
                 const std::vector<float>& want, const std::vector<float>& residual, const std::vector<float>& stored) {
  ++cases_run;
  const double err = RelError(got, want), tol = Tolerance(ElemType::kF32);
  if (!(err <= tol)) {
    std::printf("  FAIL %s %s: relative error %.3g (tolerance %.3g)\n", path.c_str(), name.c_str(), err, tol);
    ++tgtest::Failures();
  }
  auto& w = worst[path];
  if (!(err <= w.first)) w = {err, tol};
  for (size_t i = 0; i < got.size(); ++i) {
    const float sum = residual[i] + stored[i];
    if (!(std::fabs(got[i] - sum) <= std::fabs(sum) * FLT_EPSILON)) {
      std::printf("  FAIL %s %s: element %zu is %.9g, the residual plus the stored product %.9g\n", path.c_str(),
                  name.c_str(), i, got[i], sum);
      ++tgtest::Failures();
      return;
    }
  }
}

// Captures what `enqueue` puts on `stream` into a CUDA graph in global mode (where any
// allocation or synchronisation, here or on another thread, invalidates the capture), then
// replays it once and waits. Returns false, with the failure counted, when the capture fails.
template <typename Fn>
bool CaptureAndReplayOnce(cudaStream_t stream, Fn enqueue) {
  cudaGraph_t graph = nullptr;
  TG_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  try {
    enqueue();
  } catch (const std::exception& e) {
    std::printf("  threw during capture: %s\n", e.what());
    ++tgtest::Failures();
  }
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  if (end != cudaSuccess) {
    std::printf("  capture failed: %s\n", cudaGetErrorString(end));
    ++tgtest::Failures();
    cudaGetLastError();
    return false;
  }
  cudaGraphExec_t exec = nullptr;
  TG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  TG_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  TG_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return true;
}

}  // namespace

TG_TEST(gemv_supports_only_what_it_computes) {
  DeviceBuffer buf(4096);
  const char* b = buf.as<char>();
  const ElemType bf = ElemType::kBF16, f16 = ElemType::kF16, f32 = ElemType::kF32;
  CHECK(GemvSupports(b, b, 1, 16, 64, bf, bf));
  CHECK(GemvSupports(b, b, 8, 1, 8, f16, f32));
  CHECK(GemvSupports(b, b, 3, 7, 40, bf, f32));
  CHECK(GemvSupports(b, b, 16, 7, 40, f16, f16));
  CHECK(!GemvSupports(b, b, 17, 16, 64, bf, bf));  // m > kGemvMaxRows
  CHECK(!GemvSupports(b, b, 0, 16, 64, bf, bf));
  CHECK(!GemvSupports(b, b, 1, 16, 12, bf, bf));   // k not a multiple of 8
  CHECK(!GemvSupports(b, b, 1, 0, 64, bf, bf));
  CHECK(!GemvSupports(b + 2, b, 1, 16, 64, bf, bf));  // x not 16-byte aligned
  CHECK(!GemvSupports(b, b + 8, 1, 16, 64, bf, bf));  // w not 16-byte aligned
  CHECK(!GemvSupports(b, b, 1, 16, 64, f32, f32));
  CHECK(!GemvSupports(b, b, 1, 16, 64, bf, f16));
  const GemvInput plain = GemvInput::kPlain, silu = GemvInput::kSiluOfGateUp;
  const GemvOutput store = GemvOutput::kStore, add_to = GemvOutput::kAddTo;
  CHECK(GemvSupports(b, b, 5, 16, 64, bf, bf, silu, store));
  CHECK(!GemvSupports(b, b, 5, 16, 64, bf, f32, silu, store));  // not built: the down projection stores in `in`
  CHECK(GemvSupports(b, b, 9, 17, 64, f16, f32, plain, add_to));
  CHECK(GemvSupports(b, b, 16, 17, 64, bf, f32, silu, add_to));
  CHECK(!GemvSupports(b, b, 1, 16, 64, bf, bf, plain, add_to));  // adds only into f32
  CHECK(!GemvSupports(b, b, 1, 16, 64, f16, f16, silu, add_to));
  CHECK(!GemvSupports(b, b, 17, 16, 64, bf, f32, plain, add_to));
  CHECK_THROWS_WITH(LaunchGemv(nullptr, b, b, buf.get(), kGemvMaxRows + 1, 16, 64, bf, bf), "GEMV kernel cannot");
}

TG_TEST(gemv_kernel_matches_cpu) {
  // Odd n, partial 16-row tiles, k with a partial 32-element step (40, 72, 520, 1000, 4104),
  // k below one warp's block (8..64), one to eight warps per CTA, down's and o's k.
  struct Shape { int64_t n, k; };
  const Shape shapes[] = {{1, 8},       {7, 16},     {16, 32},   {17, 40},    {33, 72},    {64, 64},  {100, 136},
                          {129, 520},   {250, 1000}, {16, 4104}, {1001, 4096}, {37, 14336}, {4096, 264}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w = MakeWeight(s.n, s.k, t);
      for (int64_t m = 1; m <= kGemvMaxRows; ++m) {
        for (ElemType out : {t, ElemType::kF32}) {
          const Problem p = MakeProblem(m, w, t, out);
          Expect("gemv", p, [&](void* o) { LaunchGemv(nullptr, p.d_x.get(), w.dev.get(), o, m, s.n, s.k, t, out); });
        }
      }
    }
  }
}

TG_TEST(gemm_matches_cpu_with_gemv_forced_off_and_auto) {
  auto forced = MakeGemm("1"), off = MakeGemm("0"), automatic = MakeGemm(nullptr);
  struct Shape { int64_t n, k; };
  // The last two have k not a multiple of 8: every mode must fall back to cuBLASLt.
  const Shape shapes[] = {{64, 64}, {129, 520}, {1001, 4096}, {37, 14336}, {96, 12}, {200, 100}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w = MakeWeight(s.n, s.k, t);
      for (int64_t m : {1, 2, 3, 5, 8, 9, 16, 17, 24}) {  // 17 and 24: cuBLASLt in every mode
        for (ElemType out : {t, ElemType::kF32}) {
          const Problem p = MakeProblem(m, w, t, out);
          Expect("gemm(gemv=1)", p, [&](void* o) { RunGemm(*forced, nullptr, p, o); });
          Expect("gemm(gemv=0)", p, [&](void* o) { RunGemm(*off, nullptr, p, o); });
          Expect("gemm(auto)", p, [&](void* o) { RunGemm(*automatic, nullptr, p, o); });
          Expect("gemm(auto, decided)", p, [&](void* o) { RunGemm(*automatic, nullptr, p, o); });
        }
      }
    }
  }
}

// The down projection with SiLU-mul folded into the GEMV's loads (GemvInput::kSiluOfGateUp,
// Gemm::RunSiluDown) against SiLU-mul then the plain product: the same bits, whether the
// fused kernel runs (GEMV forced on) or the two-kernel fallback does (forced off); and the
// CPU's SiLU-mul and Matmul within the usual tolerance.
TG_TEST(gemv_silu_input_equals_silu_then_gemv) {
  auto forced = MakeGemm("1"), off = MakeGemm("0");
  struct Shape { int64_t n, k; };
  const Shape shapes[] = {{16, 8}, {33, 72}, {129, 520}, {1001, 4096}, {64, 14336}, {4096, 264}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w = MakeWeight(s.n, s.k, t);
      for (int64_t m : {1, 2, 5, 8, 9, 16}) {
        const Rounded gate_up = Round(RandomFloats(static_cast<size_t>(m * 2 * s.k), -6.0f, 6.0f), t);
        DeviceBuffer d_gate_up = ToDevice(gate_up.bits);
        const size_t out_bytes = static_cast<size_t>(m * s.n) * ElemSize(t);
        DeviceBuffer act = Poisoned(static_cast<size_t>(m * s.k) * ElemSize(t)), two_kernels = Poisoned(out_bytes);
        LaunchSiluMul(nullptr, t, d_gate_up.get(), m, s.k, act.get());
        LaunchGemv(nullptr, act.get(), w.dev.get(), two_kernels.get(), m, s.n, s.k, t, t);
        const std::vector<float> want_bits = ToHost(two_kernels, static_cast<size_t>(m * s.n), t);
        const std::string name = std::string(Name(t)) + " m " + std::to_string(m) + " n " + std::to_string(s.n) +
                                 " k " + std::to_string(s.k);
        auto same_bits = [&](const std::string& path, const DeviceBuffer& got) {
          ++cases_run;
          const std::vector<float> g = ToHost(got, static_cast<size_t>(m * s.n), t);
          if (g != want_bits) {
            std::printf("  FAIL %s %s: differs from SiLU-mul then the GEMV\n", path.c_str(), name.c_str());
            ++tgtest::Failures();
          }
        };
        DeviceBuffer fused = Poisoned(out_bytes);
        LaunchGemv(nullptr, d_gate_up.get(), w.dev.get(), fused.get(), m, s.n, s.k, t, t, GemvInput::kSiluOfGateUp);
        same_bits("gemv(silu input)", fused);
        DeviceBuffer via_gemm = Poisoned(out_bytes), scratch = Poisoned(static_cast<size_t>(m * s.k) * ElemSize(t));
        forced->RunSiluDown(nullptr, d_gate_up.get(), scratch.get(), w.dev.get(), via_gemm.get(), m, s.n, s.k, t, t);
        same_bits("gemm.RunSiluDown(gemv=1)", via_gemm);

        // The CPU's answer, for the cuBLASLt fallback (whose sums run in another order).
        Problem p{m, s.n, s.k, t, t, SiluMulOnHost(gate_up, m, s.k, t), &w.host, {}, &w.dev, {}};
        p.want.resize(static_cast<size_t>(m * s.n));
        cpu::Matmul(CpuPool(), p.x.values.data(), w.host.values.data(), nullptr, m, s.n, s.k, p.want.data());
        Expect("gemm.RunSiluDown(gemv=0)", p, [&](void* o) {
          off->RunSiluDown(nullptr, d_gate_up.get(), scratch.get(), w.dev.get(), o, m, s.n, s.k, t, t);
        });
      }
    }
  }
  CHECK_THROWS_WITH(LaunchGemv(nullptr, nullptr, nullptr, nullptr, 1, 16, 64, ElemType::kBF16, ElemType::kF32,
                               GemvInput::kSiluOfGateUp),
                    "GEMV kernel cannot");
}

// The gate/up GEMV writing SiLU-mul itself (GemvOutput::kSiluOfHalves, Gemm::RunGateUpSilu)
// against the gate/up GEMV's store then silu_mul.cu: the same bits, one and two x tiles, k with
// partial steps; RunGateUpSilu only where Run settled on the GEMV for the gate/up product.
TG_TEST(gemv_silu_of_halves_equals_gate_up_then_silu) {
  struct Shape { int64_t inter, k; };
  const Shape shapes[] = {{8, 8}, {40, 72}, {64, 520}, {1000, 264}, {136, 4096}, {7168, 4104}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w = MakeWeight(2 * s.inter, s.k, t);
      for (int64_t m : {1, 2, 5, 8, 9, 16}) {
        const Rounded x = Round(RandomFloats(static_cast<size_t>(m * s.k), -2.0f, 2.0f), t);
        DeviceBuffer d_x = ToDevice(x.bits);
        DeviceBuffer gate_up = Poisoned(static_cast<size_t>(m * 2 * s.inter) * ElemSize(t));
        DeviceBuffer want = Poisoned(static_cast<size_t>(m * s.inter) * ElemSize(t));
        DeviceBuffer got = Poisoned(static_cast<size_t>(m * s.inter) * ElemSize(t));
        LaunchGemv(nullptr, d_x.get(), w.dev.get(), gate_up.get(), m, 2 * s.inter, s.k, t, t);
        LaunchSiluMul(nullptr, t, gate_up.get(), m, s.inter, want.get());
        LaunchGemv(nullptr, d_x.get(), w.dev.get(), got.get(), m, s.inter, s.k, t, t, GemvInput::kPlain,
                   GemvOutput::kSiluOfHalves);
        ++cases_run;
        const size_t count = static_cast<size_t>(m * s.inter);
        if (ToHost(got, count, t) != ToHost(want, count, t)) {
          std::printf("  FAIL gemv(silu of halves) %s m %lld inter %lld k %lld: differs from the store then SiLU-mul\n",
                      Name(t), static_cast<long long>(m), static_cast<long long>(s.inter), static_cast<long long>(s.k));
          ++tgtest::Failures();
        }
      }
    }
  }
  DeviceBuffer buf(4096);
  const char* b = buf.as<char>();
  const ElemType bf = ElemType::kBF16;
  const GemvOutput halves = GemvOutput::kSiluOfHalves;
  CHECK(GemvSupports(b, b, 16, 8, 64, bf, bf, GemvInput::kPlain, halves));
  CHECK(!GemvSupports(b, b, 1, 12, 64, bf, bf, GemvInput::kPlain, halves));  // n not a multiple of 8
  CHECK(!GemvSupports(b, b, 1, 16, 64, bf, ElemType::kF32, GemvInput::kPlain, halves));
  CHECK(!GemvSupports(b, b, 1, 16, 64, bf, bf, GemvInput::kSiluOfGateUp, halves));

  // Gemm::RunGateUpSilu.
  auto forced = MakeGemm("1"), off = MakeGemm("0"), automatic = MakeGemm(nullptr);
  const int64_t inter = 1024, k = 4096;
  const Weight w = MakeWeight(2 * inter, k, bf);
  DeviceBuffer x = ToDevice(Round(RandomFloats(static_cast<size_t>(k)), bf).bits);
  DeviceBuffer act = Poisoned(inter * 2), gate_up = Poisoned(2 * inter * 2);
  CHECK(forced->RunGateUpSilu(nullptr, x.get(), w.dev.get(), act.get(), 1, inter, k, bf));
  CHECK(!off->RunGateUpSilu(nullptr, x.get(), w.dev.get(), act.get(), 1, inter, k, bf));
  CHECK(!automatic->RunGateUpSilu(nullptr, x.get(), w.dev.get(), act.get(), 1, inter, k, bf));  // undecided
  automatic->Run(nullptr, x.get(), w.dev.get(), gate_up.get(), 1, 2 * inter, k, bf, bf);      // decides it by timing
  const bool picked_gemv = automatic->TakesGemv(nullptr, x.get(), w.dev.get(), gate_up.get(), 1, 2 * inter, k, bf, bf,
                                                false);
  CHECK(automatic->RunGateUpSilu(nullptr, x.get(), w.dev.get(), act.get(), 1, inter, k, bf) == picked_gemv);
  TG_CUDA_CHECK(cudaDeviceSynchronize());
}

// The qkv GEMV doing RoPE and the KV-cache write itself (GemvOutput::kRopeKvWrite,
// Gemm::RunQkvRope) against the GEMV's store then rope_kv_write.cu: q_out and both caches the
// same bits (slots left alone included), with and without a qkv bias, GQA 1, 4 and 8, head dims
// 16, 64 and 128, one and two x tiles, random positions and slots.
TG_TEST(gemv_rope_output_equals_gemv_then_rope_kv_write) {
  struct Shape { int q_heads, kv_heads, head_dim; int64_t k; };
  const Shape shapes[] = {{4, 4, 16, 64}, {8, 2, 64, 520}, {32, 8, 128, 4096}, {28, 4, 128, 264}};
  const int64_t block_size = 16, num_blocks = 40;
  auto raw = [](const DeviceBuffer& b, size_t count) {
    std::vector<uint16_t> bits(count);
    TG_CUDA_CHECK(cudaMemcpy(bits.data(), b.get(), count * 2, cudaMemcpyDeviceToHost));
    return bits;
  };
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const int64_t n = static_cast<int64_t>(s.q_heads + 2 * s.kv_heads) * s.head_dim;
      const Weight w = MakeWeight(n, s.k, t);
      std::vector<float> inv_freq(static_cast<size_t>(s.head_dim / 2));
      for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / s.head_dim);
      DeviceBuffer d_inv_freq = ToDevice(inv_freq), d_bias = ToDevice(RandomFloats(static_cast<size_t>(n)));
      for (bool with_bias : {false, true}) {
        for (int64_t m : {1, 3, 8, 9, 16}) {
          const Rounded x = Round(RandomFloats(static_cast<size_t>(m * s.k)), t);
          std::vector<int32_t> positions, blocks, offsets;
          for (int64_t r = 0; r < m; ++r) {  // distinct slots: row r in block 2r + 1
            positions.push_back(RandomInt(0, 4000));
            blocks.push_back(static_cast<int32_t>(2 * r + 1));
            offsets.push_back(RandomInt(0, static_cast<int>(block_size) - 1));
          }
          DeviceBuffer d_x = ToDevice(x.bits), d_pos = ToDevice(positions), d_blocks = ToDevice(blocks),
                       d_offsets = ToDevice(offsets);
          const size_t q_count = static_cast<size_t>(m * s.q_heads * s.head_dim);
          const size_t cache_count = static_cast<size_t>(num_blocks * s.kv_heads * block_size * s.head_dim);
          DeviceBuffer qkv = Poisoned(static_cast<size_t>(m * n) * 2);
          DeviceBuffer want_q = Poisoned(q_count * 2), want_k = Poisoned(cache_count * 2),
                       want_v = Poisoned(cache_count * 2);
          DeviceBuffer got_q = Poisoned(q_count * 2), got_k = Poisoned(cache_count * 2),
                       got_v = Poisoned(cache_count * 2);
          const float* bias = with_bias ? d_bias.as<float>() : nullptr;
          LaunchGemv(nullptr, d_x.get(), w.dev.get(), qkv.get(), m, n, s.k, t, t);
          LaunchRopeKvWrite(nullptr, t, qkv.get(), bias, d_pos.as<int32_t>(), d_inv_freq.as<float>(), nullptr,
                            d_blocks.as<int32_t>(), d_offsets.as<int32_t>(), m, s.q_heads, s.kv_heads, s.head_dim,
                            want_q.get(), KvLayer{want_k.get(), want_v.get(), block_size, num_blocks});
          GemvRopeKv rope;
          rope.bias = bias;
          rope.positions = d_pos.as<int32_t>();
          rope.inv_freq = d_inv_freq.as<float>();
          rope.slot_block = d_blocks.as<int32_t>();
          rope.slot_offset = d_offsets.as<int32_t>();
          rope.q_heads = s.q_heads;
          rope.kv_heads = s.kv_heads;
          rope.head_dim = s.head_dim;
          rope.q_out = got_q.get();
          rope.k_cache = got_k.get();
          rope.v_cache = got_v.get();
          rope.block_size = block_size;
          LaunchGemv(nullptr, d_x.get(), w.dev.get(), nullptr, m, n, s.k, t, t, GemvInput::kPlain,
                     GemvOutput::kRopeKvWrite, rope);
          TG_CUDA_CHECK(cudaDeviceSynchronize());
          ++cases_run;
          if (raw(got_q, q_count) != raw(want_q, q_count) || raw(got_k, cache_count) != raw(want_k, cache_count) ||
              raw(got_v, cache_count) != raw(want_v, cache_count)) {
            std::printf("  FAIL gemv(rope output) %s heads %d/%d d %d k %lld m %lld%s: differs from the GEMV then"
                        " rope_kv_write\n", Name(t), s.q_heads, s.kv_heads, s.head_dim, static_cast<long long>(s.k),
                        static_cast<long long>(m), with_bias ? " (bias)" : "");
            ++tgtest::Failures();
          }
          // Gemm::RunQkvRope follows the plain product's decision.
          if (t == ElemType::kBF16 && s.head_dim == 128 && m == 1 && !with_bias) {
            auto forced = MakeGemm("1"), off = MakeGemm("0"), automatic = MakeGemm(nullptr);
            CHECK(forced->RunQkvRope(nullptr, d_x.get(), w.dev.get(), rope, m, n, s.k, t));
            CHECK(!off->RunQkvRope(nullptr, d_x.get(), w.dev.get(), rope, m, n, s.k, t));
            CHECK(!automatic->RunQkvRope(nullptr, d_x.get(), w.dev.get(), rope, m, n, s.k, t));  // undecided
            automatic->Run(nullptr, d_x.get(), w.dev.get(), qkv.get(), m, n, s.k, t, t);  // decides it by timing
            const bool picked_gemv = automatic->TakesGemv(nullptr, d_x.get(), w.dev.get(), qkv.get(), m, n, s.k, t, t,
                                                          false);
            CHECK(automatic->RunQkvRope(nullptr, d_x.get(), w.dev.get(), rope, m, n, s.k, t) == picked_gemv);
            GemvRopeKv odd = rope;
            odd.head_dim = 24;  // not a multiple of 16
            CHECK(!forced->RunQkvRope(nullptr, d_x.get(), w.dev.get(), odd, m, n, s.k, t));
            TG_CUDA_CHECK(cudaDeviceSynchronize());
          }
        }
      }
    }
  }
}

// GemvOutput::kAddTo, plain and SiLU input: a random f32 residual plus the product (ExpectAdded),
// for one and two x tiles, odd n, partial k steps.
TG_TEST(gemv_adds_into_f32_output) {
  const ElemType f32 = ElemType::kF32;
  struct Shape { int64_t n, k; };
  const Shape shapes[] = {{17, 40}, {33, 72}, {129, 520}, {1001, 4096}, {37, 14336}, {4095, 264}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w = MakeWeight(s.n, s.k, t);
      for (int64_t m : {1, 5, 8, 9, 16}) {
        for (GemvInput input : {GemvInput::kPlain, GemvInput::kSiluOfGateUp}) {
          const bool silu = input == GemvInput::kSiluOfGateUp;
          // x is what the kernel reads; `product_in` what it multiplies W with (x itself, or SiLU-mul of x).
          const Rounded x = silu ? Round(RandomFloats(static_cast<size_t>(m * 2 * s.k), -6.0f, 6.0f), t)
                                 : Round(RandomFloats(static_cast<size_t>(m * s.k)), t);
          const Rounded product_in = silu ? SiluMulOnHost(x, m, s.k, t) : x;
          const DeviceBuffer d_x = ToDevice(x.bits);
          DeviceBuffer d_act;  // silu_mul.cu's output: the plain input whose store the SiLU sum equals
          if (silu) {
            d_act = Poisoned(static_cast<size_t>(m * s.k) * ElemSize(t));
            LaunchSiluMul(nullptr, t, d_x.get(), m, s.k, d_act.get());
          }
          const std::vector<float> residual = RandomFloats(static_cast<size_t>(m * s.n));
          std::vector<float> want(residual.size());
          cpu::Matmul(CpuPool(), product_in.values.data(), w.host.values.data(), nullptr, m, s.n, s.k, want.data());
          for (size_t i = 0; i < want.size(); ++i) want[i] += residual[i];

          DeviceBuffer stored = Poisoned(residual.size() * sizeof(float));
          LaunchGemv(nullptr, silu ? d_act.get() : d_x.get(), w.dev.get(), stored.get(), m, s.n, s.k, t, f32);
          DeviceBuffer added = ToDevice(residual);
          LaunchGemv(nullptr, d_x.get(), w.dev.get(), added.get(), m, s.n, s.k, t, f32, input, GemvOutput::kAddTo);
          const std::string name = std::string(Name(t)) + " m " + std::to_string(m) + " n " + std::to_string(s.n) +
                                   " k " + std::to_string(s.k);
          ExpectAdded(silu ? "gemv(silu input, add to)" : "gemv(add to)", name,
                      ToHost(added, residual.size(), f32), want, residual, ToHost(stored, residual.size(), f32));
        }
      }
    }
  }
}

TG_TEST(gemm_prepare_settles_a_shape) {
  auto gemm = MakeGemm(nullptr);
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (ElemType t : kTypes) {
    const Weight w = MakeWeight(1000, 1024, t);
    for (int64_t m : {1, 4, 8, 24}) {
      const Problem p = MakeProblem(m, w, t, t);
      // Scratch W for m = 1 and 8, the real one for 4 and 24.
      const bool real = m == 4 || m == 24;
      const bool gemv = gemm->Prepare(stream, m, w.n, w.k, t, t, real ? w.dev.get() : nullptr);
      std::printf("  Prepare %s: %s\n", p.name().c_str(), gemv ? "gemv" : "cublaslt");
      if (m > kGemvMaxRows) CHECK(!gemv);
      Expect("gemm(prepared)", p, [&](void* o) { RunGemm(*gemm, stream, p, o); });
    }
  }
  // A shape the kernel does not support: cuBLASLt, tuned.
  CHECK(!gemm->Prepare(stream, 3, 64, 100, ElemType::kBF16, ElemType::kBF16));
  TG_CUDA_CHECK(cudaStreamDestroy(stream));
}

TG_TEST(gemm_runs_inside_graph_capture) {
  auto gemm = MakeGemm(nullptr);
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const ElemType bf = ElemType::kBF16, f16 = ElemType::kF16;
  const Weight w_a = MakeWeight(200, 264, bf), w_b = MakeWeight(96, 128, bf), w_c = MakeWeight(300, 512, f16),
               w_d = MakeWeight(64, 100, f16);
  std::vector<Problem> problems;
  problems.push_back(MakeProblem(3, w_a, bf, bf));    // undecided, m ≤ 16: the GEMV kernel
  problems.push_back(MakeProblem(24, w_b, bf, ElemType::kF32));  // untuned bucket: cuBLASLt's heuristic pick
  problems.push_back(MakeProblem(2, w_c, f16, f16));  // prepared before the capture
  problems.push_back(MakeProblem(5, w_d, f16, f16));  // k % 8 != 0: untuned cuBLASLt
  gemm->Prepare(stream, 2, w_c.n, w_c.k, f16, f16, w_c.dev.get());
  std::vector<DeviceBuffer> outs;
  for (const Problem& p : problems) outs.push_back(Poisoned(static_cast<size_t>(p.m * p.n) * ElemSize(p.out)));

  const bool captured = CaptureAndReplayOnce(stream, [&] {
    CHECK_THROWS_WITH(gemm->Prepare(stream, 1, 64, 64, bf, bf), "capture");
    for (size_t i = 0; i < problems.size(); ++i) RunGemm(*gemm, stream, problems[i], outs[i].get());
  });
  if (captured) {
    for (size_t i = 0; i < problems.size(); ++i) {
      const Problem& p = problems[i];
      ++cases_run;
      const double err = RelError(ToHost(outs[i], static_cast<size_t>(p.m * p.n), p.out), p.want);
      if (!(err <= Tolerance(p.out))) {
        std::printf("  FAIL captured %s: relative error %.3g\n", p.name().c_str(), err);
        ++tgtest::Failures();
      }
    }
  }
  // The same calls outside a capture now decide and tune, and still agree.
  for (const Problem& p : problems) Expect("gemm(after capture)", p, [&](void* o) { RunGemm(*gemm, stream, p, o); });
  TG_CUDA_CHECK(cudaStreamDestroy(stream));
}

// A norm linked through two GEMVs (GemvNorm): an o-like adding GEMV feeds it, and a qkv-like
// storing GEMV and a gate/up-like SiLU-of-halves GEMV are scaled by it, against the adding GEMV,
// the norm kernel (add_rms_norm.cu) and the plain GEMV. The residual is the same bits; the
// scaled input is h ⊙ weight rounded (checked on the host); the parts sum to Σ h² per row; the
// products are within the output type's tolerance (only where x is rounded differs). One and
// two x tiles, n not a multiple of 16 (a partial last CTA of parts), k with partial steps.
TG_TEST(gemv_linked_norm_equals_norm_kernel_then_gemv) {
  const ElemType f32 = ElemType::kF32;
  const float eps = 1e-5f;
  struct Shape { int64_t hidden, k_in, n_out; };
  const Shape shapes[] = {{64, 40, 48}, {520, 264, 136}, {1000, 72, 1000}, {4096, 4096, 1024}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      const Weight w_in = MakeWeight(s.hidden, s.k_in, t), w_out = MakeWeight(2 * s.n_out, s.hidden, t);
      const std::vector<float> weight = RandomFloats(static_cast<size_t>(s.hidden), 0.5f, 1.5f);
      const DeviceBuffer d_weight = ToDevice(weight);
      const int64_t parts = (s.hidden + 15) / 16;
      for (int64_t m : {1, 3, 8, 9, 16}) {
        const std::string name = std::string(Name(t)) + " m " + std::to_string(m) + " hidden " +
                                 std::to_string(s.hidden) + " k " + std::to_string(s.k_in);
        auto fail = [&](const char* what) {
          std::printf("  FAIL gemv(linked norm) %s: %s\n", name.c_str(), what);
          ++tgtest::Failures();
        };
        const size_t rows = static_cast<size_t>(m * s.hidden), es = ElemSize(t);
        const DeviceBuffer x = ToDevice(Round(RandomFloats(static_cast<size_t>(m * s.k_in)), t).bits);
        const std::vector<float> residual = RandomFloats(rows, -3.0f, 3.0f);
        // Linked: the adding GEMV feeds the norm.
        DeviceBuffer linked_residual = ToDevice(residual), scaled = Poisoned(rows * es),
                     sum_squares = Poisoned(static_cast<size_t>(m * parts) * 4);
        const GemvNorm feed{sum_squares.as<float>(), d_weight.as<float>(), scaled.get(), 0.0f};
        LaunchGemv(nullptr, x.get(), w_in.dev.get(), linked_residual.get(), m, s.hidden, s.k_in, t, f32,
                   GemvInput::kPlain, GemvOutput::kAddTo, {}, &feed);
        // Apart: the adding GEMV, then the norm kernel.
        DeviceBuffer residual_apart = ToDevice(residual), normed = Poisoned(rows * es);
        LaunchGemv(nullptr, x.get(), w_in.dev.get(), residual_apart.get(), m, s.hidden, s.k_in, t, f32,
                   GemvInput::kPlain, GemvOutput::kAddTo);
        LaunchAddRmsNorm(nullptr, t, residual_apart.as<float>(), nullptr, d_weight.as<float>(), nullptr, m, s.hidden,
                         eps, false, normed.get());
        ++cases_run;
        const std::vector<float> h = ToHost(residual_apart, rows, f32);
        if (ToHost(linked_residual, rows, f32) != h) fail("the residual differs from the adding GEMV's");
        std::vector<float> h_times_weight(rows);
        for (size_t i = 0; i < rows; ++i) h_times_weight[i] = h[i] * weight[i % static_cast<size_t>(s.hidden)];
        if (ToHost(scaled, rows, t) != Round(h_times_weight, t).values) fail("scaled is not h * weight rounded");
        const std::vector<float> got_parts = ToHost(sum_squares, static_cast<size_t>(m * parts), f32);
        for (int64_t r = 0; r < m; ++r) {
          double want = 0.0, got = 0.0;
          for (int64_t c = 0; c < s.hidden; ++c) want += static_cast<double>(h[r * s.hidden + c]) * h[r * s.hidden + c];
          for (int64_t p = 0; p < parts; ++p) got += got_parts[r * parts + p];
          if (!(std::fabs(got - want) <= 1e-5 * want)) fail("the parts do not sum to the row's sum of squares");
        }
        // The scaled GEMVs against the plain ones on the norm kernel's output.
        const GemvNorm scale{sum_squares.as<float>(), nullptr, nullptr, eps};
        for (GemvOutput output : {GemvOutput::kStore, GemvOutput::kSiluOfHalves}) {
          const bool halves = output == GemvOutput::kSiluOfHalves;
          const int64_t n = halves ? s.n_out : 2 * s.n_out;
          const size_t count = static_cast<size_t>(m * n);
          DeviceBuffer want = Poisoned(count * es), got = Poisoned(count * es);
          LaunchGemv(nullptr, normed.get(), w_out.dev.get(), want.get(), m, n, s.hidden, t, t, GemvInput::kPlain,
                     output);
          LaunchGemv(nullptr, scaled.get(), w_out.dev.get(), got.get(), m, n, s.hidden, t, t, GemvInput::kPlain,
                     output, {}, &scale);
          ++cases_run;
          const double err = RelError(ToHost(got, count, t), ToHost(want, count, t));
          const std::string path = halves ? "gemv(norm-scaled silu of halves)" : "gemv(norm-scaled store)";
          if (!(err <= Tolerance(t))) {
            std::printf("  FAIL %s %s: relative error %.3g against the norm kernel then the GEMV\n", path.c_str(),
                        name.c_str(), err);
            ++tgtest::Failures();
          }
          auto& worst_case = worst[path + " " + Name(t)];
          if (!(err <= worst_case.first)) worst_case = {err, Tolerance(t)};
        }
      }
    }
  }
  DeviceBuffer buf(4096);
  const char* b = buf.as<char>();
  float* f = buf.as<float>();
  const ElemType bf = ElemType::kBF16;
  const GemvNorm feed{f, f, buf.get(), 0.0f}, scale{f, nullptr, nullptr, 1e-5f};
  const GemvInput plain = GemvInput::kPlain, silu = GemvInput::kSiluOfGateUp;
  CHECK(GemvSupports(b, b, 4, 64, 64, bf, f32, plain, GemvOutput::kAddTo, {}, &feed));
  CHECK(!GemvSupports(b, b, 4, 64, 64, bf, f32, plain, GemvOutput::kAddTo, {}, &scale));  // feeding needs every pointer
  CHECK(!GemvSupports(b, b, 4, 64, 64, bf, f32, silu, GemvOutput::kAddTo, {}, &feed));   // plain input only
  CHECK(GemvSupports(b, b, 4, 64, 64, bf, bf, plain, GemvOutput::kStore, {}, &scale));
  CHECK(!GemvSupports(b, b, 4, 64, 64, bf, f32, plain, GemvOutput::kStore, {}, &scale));  // scales a store in `in`
  CHECK(GemvSupports(b, b, 4, 64, 64, bf, bf, plain, GemvOutput::kSiluOfHalves, {}, &scale));
  CHECK_THROWS_WITH(LaunchGemv(nullptr, b, b, buf.get(), 4, 64, 64, bf, f32, plain, GemvOutput::kStore, {}, &scale),
                    "GEMV kernel cannot");

  // Gemm links a norm only where it settled on the GEMV kernel; TakesGemv decides an undecided
  // shape (once: the answer does not change), as the model asks before it links a step's norms.
  auto forced = MakeGemm("1"), off = MakeGemm("0"), automatic = MakeGemm(nullptr);
  DeviceBuffer big(1 << 20);
  const char* g = big.as<char>();
  float* residual = big.as<float>() + (1 << 17);
  CHECK(forced->TakesGemv(nullptr, g, g, residual, 1, 64, 64, bf, f32, true));
  CHECK(!off->TakesGemv(nullptr, g, g, residual, 1, 64, 64, bf, f32, true));
  CHECK(!forced->TakesGemv(nullptr, g, g, residual, 17, 64, 64, bf, f32, true));  // past the GEMV's rows
  const bool decided = automatic->TakesGemv(nullptr, g, g, big.get(), 2, 256, 512, bf, bf, false);
  for (int i = 0; i < 3; ++i) CHECK(automatic->TakesGemv(nullptr, g, g, big.get(), 2, 256, 512, bf, bf, false) == decided);
  CHECK_THROWS_WITH(off->RunAddTo(nullptr, b, b, f, 1, 64, 64, bf, &feed), "needs the GEMV kernel");
  CHECK_THROWS_WITH(off->Run(nullptr, b, b, buf.get(), 1, 64, 64, bf, bf, &scale), "needs the GEMV kernel");
  TG_CUDA_CHECK(cudaDeviceSynchronize());
}

// RunAddTo and RunSiluDownAddTo captured (global mode: no allocation, so no timing scratch) on
// undecided shapes, GEMV ones and cuBLASLt ones: one replay adds each product once; the same
// calls after the capture decide and tune (on a scratch) and add it exactly once more.
TG_TEST(gemm_adds_inside_graph_capture) {
  auto gemm = MakeGemm(nullptr);
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const ElemType t = ElemType::kBF16, f32 = ElemType::kF32;
  const Weight w = MakeWeight(200, 264, t);
  struct Case {
    int64_t m;
    bool silu;
    std::vector<float> residual, product;
    DeviceBuffer d_x, d_act, d_residual;
  };
  // m ≤ 16 and > 16 (GEMV and cuBLASLt), plain and SiLU input.
  const std::pair<int64_t, bool> shapes[] = {{3, false}, {24, false}, {5, true}, {40, true}};
  std::vector<Case> cases;
  for (const auto& [m, silu] : shapes) {
    Case c{m, silu, RandomFloats(static_cast<size_t>(m * w.n)), std::vector<float>(static_cast<size_t>(m * w.n)), {},
           Poisoned(static_cast<size_t>(m * w.k) * ElemSize(t)), {}};
    const Rounded x = Round(RandomFloats(static_cast<size_t>(m * (silu ? 2 : 1) * w.k)), t);
    const Rounded product_in = silu ? SiluMulOnHost(x, m, w.k, t) : x;
    cpu::Matmul(CpuPool(), product_in.values.data(), w.host.values.data(), nullptr, m, w.n, w.k, c.product.data());
    c.d_x = ToDevice(x.bits);
    c.d_residual = ToDevice(c.residual);
    cases.push_back(std::move(c));
  }
  auto add = [&](Case& c) {
    float* residual = c.d_residual.as<float>();
    if (c.silu) {
      gemm->RunSiluDownAddTo(stream, c.d_x.get(), c.d_act.get(), w.dev.get(), residual, c.m, w.n, w.k, t);
    } else {
      gemm->RunAddTo(stream, c.d_x.get(), w.dev.get(), residual, c.m, w.n, w.k, t);
    }
  };
  // The residual after `times` adds, against the CPU.
  auto check = [&](const Case& c, int times, const char* when) {
    ++cases_run;
    std::vector<float> want(c.residual);
    for (size_t i = 0; i < want.size(); ++i) want[i] += static_cast<float>(times) * c.product[i];
    const double err = RelError(ToHost(c.d_residual, want.size(), f32), want);
    if (!(err <= Tolerance(f32))) {
      std::printf("  FAIL %s m %lld%s: relative error %.3g after %d adds\n", when, static_cast<long long>(c.m),
                  c.silu ? " (silu input)" : "", err, times);
      ++tgtest::Failures();
    }
  };

  if (CaptureAndReplayOnce(stream, [&] { for (Case& c : cases) add(c); })) {
    for (const Case& c : cases) check(c, 1, "captured add");
    for (Case& c : cases) add(c);
    for (const Case& c : cases) check(c, 2, "add after capture");
  }
  TG_CUDA_CHECK(cudaStreamDestroy(stream));
}

namespace {

// Fills `bytes` of device memory with random bf16 bits in (-0.1, 0.1), by copying one random block.
void FillRandom(void* dst, size_t bytes) {
  static const DeviceBuffer block = ToDevice(Round(RandomFloats(1 << 21, -0.1f, 0.1f), ElemType::kBF16).bits);
  for (size_t at = 0; at < bytes; at += block.bytes()) {
    TG_CUDA_CHECK(cudaMemcpy(static_cast<char*>(dst) + at, block.get(), std::min(block.bytes(), bytes - at),
                             cudaMemcpyDeviceToDevice));
  }
}

// Perf mode: Llama-3-8B's decode GEMMs, bf16, GEMV kernel vs cuBLASLt.
void Perf() {
  const ElemType t = ElemType::kBF16;
  cudaDeviceProp prop{};
  TG_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  std::printf("perf on %s (%d SMs, L2 %zu MB), bf16, Llama-3-8B shapes, per call inside a CUDA graph of 20;\n"
              "GB/s = weight bytes / time. 'gemv' lines repeat one W (L2-resident when it fits), 'gemv-cold'\n"
              "lines rotate over copies of W totalling >= 3x the L2.\n",
              prop.name, prop.multiProcessorCount, l2 >> 20);
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  auto lt = MakeGemm("0");
  auto automatic = MakeGemm(nullptr);
  struct Shape { const char* name; int64_t n, k, per_step; ElemType out; bool adds = false; };
  // GEMV_PERF_TP=N: one rank's slices at tensor parallelism N (column-parallel n / N, row-parallel k / N).
  const char* tp_env = std::getenv("GEMV_PERF_TP");
  const int64_t tp = tp_env ? std::max(1, std::atoi(tp_env)) : 1;
  if (tp > 1) std::printf("shapes of one rank at tensor parallelism %lld\n", static_cast<long long>(tp));
  const Shape shapes[] = {{"qkv", 6144 / tp, 4096, 32, t},     {"o", 4096, 4096 / tp, 32, t, true},
                          {"gate_up", 28672 / tp, 4096, 32, t}, {"down", 4096, 14336 / tp, 32, t, true},
                          {"lm_head", 128256 / tp, 4096, 1, ElemType::kF32}};
  const int64_t ms[] = {1, 2, 4, 8, 12, 16};
  std::map<int64_t, double> step_gemv, step_lt, step_auto;  // cold µs per decode step's GEMMs
  constexpr int kReps = 20;
  for (const Shape& s : shapes) {
    const size_t w_bytes = static_cast<size_t>(s.n * s.k) * 2;
    const size_t copies = std::min<size_t>(16, std::max<size_t>(1, (3 * l2 + w_bytes - 1) / w_bytes));
    std::vector<DeviceBuffer> ws;
    for (size_t c = 0; c < copies; ++c) {
      ws.emplace_back(w_bytes);
      FillRandom(ws.back().get(), w_bytes);
    }
    for (int64_t m : ms) {
      const DeviceBuffer x = ToDevice(Round(RandomFloats(static_cast<size_t>(m * s.k)), t).bits);
      DeviceBuffer out(static_cast<size_t>(m * s.n) * ElemSize(s.out));
      auto gemv = [&](size_t c) { LaunchGemv(stream, x.get(), ws[c].get(), out.get(), m, s.n, s.k, t, s.out); };
      auto cublas = [&](size_t c) { lt->Run(stream, x.get(), ws[c].get(), out.get(), m, s.n, s.k, t, s.out); };
      cublas(0);  // tunes cuBLASLt's bucket outside the capture
      TG_CUDA_CHECK(cudaStreamSynchronize(stream));
      const double hot_gemv = GraphUs(stream, kReps, [&](int) { gemv(0); });
      const double hot_lt = GraphUs(stream, kReps, [&](int) { cublas(0); });
      const double cold_gemv = GraphUs(stream, kReps, [&](int i) { gemv(static_cast<size_t>(i) % copies); });
      const double cold_lt = GraphUs(stream, kReps, [&](int i) { cublas(static_cast<size_t>(i) % copies); });
      const bool picks_gemv = automatic->Prepare(stream, m, s.n, s.k, t, s.out, ws[0].get());
      auto gbs = [&](double us) { return static_cast<double>(w_bytes) / us / 1e3; };
      const std::string shape = "m=" + std::to_string(m) + " " + std::to_string(s.n) + "x" + std::to_string(s.k);
      std::printf("RESULT gemv %s: gemv %.2f us (%.0f GB/s), cublaslt %.2f us (%.0f GB/s)\n", shape.c_str(), hot_gemv,
                  gbs(hot_gemv), hot_lt, gbs(hot_lt));
      std::printf("RESULT gemv-cold %s: gemv %.2f us (%.0f GB/s), cublaslt %.2f us (%.0f GB/s), %zu copies of W\n",
                  shape.c_str(), cold_gemv, gbs(cold_gemv), cold_lt, gbs(cold_lt), copies);
      std::printf("RESULT gemv-auto %s (%s): Prepare picks %s\n", shape.c_str(), s.name,
                  picks_gemv ? "gemv" : "cublaslt");
      // o and down as a linked bf16 decode step runs them: adding into the f32 residual and
      // feeding the next norm (GemvNorm), against the plain store above.
      if (s.adds) {
        const int64_t parts = (s.n + 15) / 16;
        DeviceBuffer residual = ToDevice(RandomFloats(static_cast<size_t>(m * s.n)));
        DeviceBuffer weight = ToDevice(RandomFloats(static_cast<size_t>(s.n), 0.5f, 1.5f));
        DeviceBuffer scaled(static_cast<size_t>(m * s.n) * 2), sums(static_cast<size_t>(m * parts) * 4);
        GemvNorm norm;
        norm.sum_squares = sums.as<float>();
        norm.weight = weight.as<float>();
        norm.scaled = scaled.get();
        const double cold_norm = GraphUs(stream, kReps, [&](int i) {
          LaunchGemv(stream, x.get(), ws[static_cast<size_t>(i) % copies].get(), residual.get(), m, s.n, s.k, t,
                     ElemType::kF32, GemvInput::kPlain, GemvOutput::kAddTo, {}, &norm);
        });
        std::printf("RESULT gemv-feeding-norm-cold %s (%s): %.2f us (%.0f GB/s), plain store %.2f us\n", shape.c_str(),
                    s.name, cold_norm, gbs(cold_norm), cold_gemv);
      }
      step_gemv[m] += s.per_step * cold_gemv;
      step_lt[m] += s.per_step * cold_lt;
      step_auto[m] += s.per_step * (picks_gemv ? cold_gemv : cold_lt);
    }
  }
  for (int64_t m : ms) {
    std::printf("RESULT gemv-step m=%lld (32 layers + lm_head, cold): gemv %.3f ms, cublaslt %.3f ms, auto %.3f ms\n",
                static_cast<long long>(m), step_gemv[m] / 1e3, step_lt[m] / 1e3, step_auto[m] / 1e3);
  }
  TG_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, [] { Perf(); return 0; }, [](int) {
    std::printf("worst relative error per path over %d comparisons:\n", cases_run);
    for (auto& [key, w] : worst) std::printf("  %-36s %.3g (tolerance %.3g)\n", key.c_str(), w.first, w.second);
  });
}
