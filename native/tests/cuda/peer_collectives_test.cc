// The peer collectives (backend/cuda/peer/peer_collectives.h) on every visible GPU of
// one process: each GPU plays one rank, and the ranks' regions are plain allocations
// reached through peer access (the engine maps them from other processes with CUDA IPC,
// which a single process cannot open; the kernels see the same pointers either way).
// Also the GEMV that sums the ranks' products itself (gemv.h's GemvExchange).
// Needs 2+ GPUs with peer access; says it skipped otherwise. `--perf` times the
// all-reduce per message size.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/peer/peer_collectives.h"
#include "cuda_test_util.h"

using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

// 512 rows of an 8,192-wide model in bf16, as the communicator's rows group stages.
constexpr size_t kStaging = size_t{8} << 20;

// One rank per GPU, all driven from this thread.
struct Group {
  int world = 0;
  std::vector<PeerBuffers> buffers;
  std::vector<cudaStream_t> streams;
  std::vector<PeerGroup> views;

  // low_latency: whether small calls take the low-latency protocol (PeerGroup).
  explicit Group(int n, bool low_latency = true) : world(n) {
    for (int r = 0; r < n; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      for (int p = 0; p < n; ++p) {
        if (p == r) continue;
        const cudaError_t e = cudaDeviceEnablePeerAccess(p, 0);
        if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
        else TG_CUDA_CHECK(e);
      }
      buffers.emplace_back(kStaging);
      cudaStream_t s = nullptr;
      TG_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      streams.push_back(s);
    }
    for (int r = 0; r < n; ++r) {
      PeerGroup g = buffers[static_cast<size_t>(r)].Group(r, n);
      for (int p = 0; p < n; ++p) g.regions[p] = buffers[static_cast<size_t>(p)].region.as<char>();
      g.low_latency = low_latency;
      views.push_back(g);
    }
  }
  ~Group() {
    for (int r = 0; r < world; ++r) {
      cudaSetDevice(r);
      cudaStreamDestroy(streams[static_cast<size_t>(r)]);
    }
  }
  void Sync() {
    for (int r = 0; r < world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      TG_CUDA_CHECK(cudaStreamSynchronize(streams[static_cast<size_t>(r)]));
    }
  }
};

int PeerGpus() {
  const int n = std::min(tg::CudaDeviceCount(), kPeerMaxRanks);
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      int can = 0;
      if (a != b && (cudaDeviceCanAccessPeer(&can, a, b) != cudaSuccess || !can)) return 0;
    }
  }
  return n;
}

// Host bits of `values` in `t` (f32 as its own bits).
std::vector<uint8_t> Encode(const std::vector<float>& values, ElemType t) {
  std::vector<uint8_t> bytes(values.size() * ElemSize(t));
  if (t == ElemType::kF32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
  } else {
    const Rounded r = Round(values, t);
    std::memcpy(bytes.data(), r.bits.data(), bytes.size());
  }
  return bytes;
}

std::vector<float> Decode(const std::vector<uint8_t>& bytes, ElemType t) {
  const size_t n = bytes.size() / ElemSize(t);
  std::vector<float> v(n);
  if (t == ElemType::kF32) {
    std::memcpy(v.data(), bytes.data(), bytes.size());
    return v;
  }
  std::vector<uint16_t> bits(n);
  std::memcpy(bits.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < n; ++i) v[i] = t == ElemType::kBF16 ? tg::Bf16ToF32(bits[i]) : tg::F16ToF32(bits[i]);
  return v;
}

std::vector<uint8_t> Download(const DeviceBuffer& b, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  TG_CUDA_CHECK(cudaMemcpy(out.data(), b.get(), bytes, cudaMemcpyDeviceToHost));
  return out;
}

// What every rank must hold after the all-reduce: the inputs summed in rank order in
// f32, then rounded to `t`, exactly as the kernel does it.
std::vector<uint8_t> RankOrderSum(const std::vector<std::vector<float>>& inputs, ElemType t) {
  std::vector<float> sum(inputs[0].size(), 0.0f);
  for (const auto& in : inputs) {
    const std::vector<float> seen = Decode(Encode(in, t), t);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += seen[i];
  }
  return Encode(sum, t);
}

int g_world = 0;
int cases_run = 0;

// Runs one all-reduce of `count` elements on every rank and checks every rank's bits.
void CheckAllReduce(Group& group, size_t count, ElemType t) {
  std::vector<std::vector<float>> inputs;
  std::vector<DeviceBuffer> data;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    inputs.push_back(RandomFloats(count));
    const std::vector<uint8_t> bytes = Encode(inputs.back(), t);
    data.push_back(ToDevice(bytes.data(), bytes.size()));
  }
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data[static_cast<size_t>(r)].get(), count, t,
                           group.streams[static_cast<size_t>(r)]);
  }
  group.Sync();
  const std::vector<uint8_t> want = RankOrderSum(inputs, t);
  ++cases_run;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    if (Download(data[static_cast<size_t>(r)], want.size()) != want) {
      std::printf("  all-reduce %s count %zu: rank %d differs from the rank-order sum\n", Name(t), count, r);
      ++tgtest::Failures();
    }
  }
}

}  // namespace

TG_TEST(peer_all_reduce_equals_the_rank_order_sum_on_every_rank) {
  // Odd vector counts, one vector, a decode step's 8 KB, more vectors than threads, the
  // low-latency protocol's limit and one vector past it, the staging limit; each size twice
  // in a row so both staging buffers (and both mailbox slots) are used. Small sizes take the
  // low-latency protocol unless it is off.
  for (bool low_latency : {true, false}) {
    Group group(g_world, low_latency);
    for (ElemType t : {ElemType::kBF16, ElemType::kF16, ElemType::kF32}) {
      const size_t per_vec = 16 / ElemSize(t);
      const size_t ll_limit = kPeerLlPayloadBytes / 16;
      for (size_t vecs : {size_t{1}, size_t{3}, size_t{47}, size_t{49}, size_t{512}, ll_limit, ll_limit + 1,
                          size_t{24577}, size_t{131072}, kStaging / 16}) {
        CheckAllReduce(group, vecs * per_vec, t);
        CheckAllReduce(group, vecs * per_vec, t);
      }
    }
  }
}

TG_TEST(peer_all_gather_concatenates_in_rank_order) {
  Group group(g_world);
  for (size_t count : {size_t{4}, size_t{64128}, size_t{8 * 64128}, kStaging / 4}) {
    std::vector<uint8_t> want;
    std::vector<DeviceBuffer> in, out;
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      const std::vector<uint8_t> bytes = Encode(RandomFloats(count), ElemType::kF32);
      want.insert(want.end(), bytes.begin(), bytes.end());
      in.push_back(ToDevice(bytes.data(), bytes.size()));
      out.push_back(Poisoned(bytes.size() * group.world));
    }
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      LaunchPeerAllGather(group.views[static_cast<size_t>(r)], in[static_cast<size_t>(r)].get(), count,
                          ElemType::kF32, out[static_cast<size_t>(r)].get(), group.streams[static_cast<size_t>(r)]);
    }
    group.Sync();
    ++cases_run;
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      if (Download(out[static_cast<size_t>(r)], want.size()) != want) {
        std::printf("  all-gather count %zu: rank %d differs\n", count, r);
        ++tgtest::Failures();
      }
    }
  }
}

namespace {

// The call count's wrap: the calls of a test that starts here cross it.
constexpr uint32_t kNearWrap = 0xFFFFFFF0u;

// As if `calls` calls had been made on every rank of `group`.
void SetCallCount(Group& group, uint32_t calls) {
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    group.buffers[static_cast<size_t>(r)].SetCallCount(calls);
  }
}

// Per rank, one CUDA graph of `calls` calls of `enqueue(rank, i, stream)`, instantiated.
template <typename Fn>
std::vector<cudaGraphExec_t> CaptureEachRank(Group& group, int calls, Fn enqueue) {
  std::vector<cudaGraphExec_t> execs;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    cudaStream_t s = group.streams[static_cast<size_t>(r)];
    cudaGraph_t graph = nullptr;
    TG_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < calls; ++i) enqueue(r, i, s);
    TG_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    TG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    TG_CUDA_CHECK(cudaGraphDestroy(graph));
    execs.push_back(exec);
  }
  return execs;
}

// Many calls queued back to back with no host wait, from call count `start_count` on: a
// rank that ran ahead into a staging buffer or mailbox its peers still read would corrupt
// the sums. Repeated all-reduces of the same data multiply it by the world size each
// time, exactly (powers of two in f32).
void CheckBackToBack(bool low_latency, uint32_t start_count) {
  Group group(g_world, low_latency);
  SetCallCount(group, start_count);
  // One decode row of an 8B model in f32 (low-latency), and a message past the low-latency
  // limit (staged), called alternately: the two protocols share the barrier counters.
  const size_t counts[2] = {4096, kPeerLlPayloadBytes / 4 * 3};
  std::vector<float> start[2] = {RandomFloats(counts[0]), RandomFloats(counts[1])};
  std::vector<DeviceBuffer> data[2];
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    for (int m = 0; m < 2; ++m) data[m].push_back(ToDevice(start[m]));
  }
  auto enqueue = [&](int r, int call, cudaStream_t s) {
    const int m = call % 2;
    LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data[m][static_cast<size_t>(r)].get(), counts[m],
                           ElemType::kF32, s);
  };
  const int eager_calls = 10, graph_calls = 4, replays = 3;
  for (int i = 0; i < eager_calls; ++i) {
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      enqueue(r, i, group.streams[static_cast<size_t>(r)]);
    }
  }
  // The same calls captured in a graph per rank and replayed: the barrier counters live in
  // device memory, so every replay is a new call.
  std::vector<cudaGraphExec_t> execs = CaptureEachRank(group, graph_calls, enqueue);
  for (int k = 0; k < replays; ++k) {
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      TG_CUDA_CHECK(cudaGraphLaunch(execs[static_cast<size_t>(r)], group.streams[static_cast<size_t>(r)]));
    }
  }
  group.Sync();
  // Each message is called in half of the calls (all counts even).
  const int calls = (eager_calls + graph_calls * replays) / 2;
  float factor = 1.0f;
  for (int i = 0; i < calls; ++i) factor *= static_cast<float>(group.world);
  for (int m = 0; m < 2; ++m) {
    std::vector<float> want(counts[m]);
    for (size_t i = 0; i < counts[m]; ++i) want[i] = start[m][i] * factor;
    ++cases_run;
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      if (Download(data[m][static_cast<size_t>(r)], counts[m] * 4) != Encode(want, ElemType::kF32)) {
        std::printf("  %s protocol on, from call count %u: after %d calls of %zu floats rank %d is not the start "
                    "times world^calls\n",
                    low_latency ? "low-latency" : "staged", start_count, calls, counts[m], r);
        ++tgtest::Failures();
      }
    }
  }
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    TG_CUDA_CHECK(cudaGraphExecDestroy(execs[static_cast<size_t>(r)]));
  }
}

}  // namespace

// Many calls queued back to back with no host wait, by each protocol, from a fresh group
// and across the call count's wrap.
TG_TEST(peer_all_reduce_back_to_back_calls_and_graph_replays_stay_exact) {
  for (bool low_latency : {true, false}) {
    CheckBackToBack(low_latency, 0);
    CheckBackToBack(low_latency, kNearWrap);
  }
}

// The fused all-reduce + residual add + RMSNorm (LaunchPeerAllReduceAddRmsNorm) on its own
// group, in a queue of calls with no host wait whose row counts change from call to call
// (so its CTAs' barrier counters advance unevenly), with plain all-reduces on the other
// group in between: every rank's residual must be exactly the f32 residual plus the
// rank-order sum (rounded to the type, as the all-reduce leaves it), every rank's output the
// same bits, and the output the CPU's RMSNorm of that residual within the type's rounding.
namespace {

// two_shot: calls past the low-latency protocol take the two-shot one, even on two GPUs.
// ctas: the fused calls' CTA count (PeerGroup::ctas).
void CheckFusedQueue(bool low_latency, bool two_shot, uint32_t start_count, int ctas = kPeerCtas) {
  Group group(g_world, low_latency), rows_group(g_world, low_latency);
  for (PeerGroup& view : rows_group.views) {
    view.two_shot_min_world = two_shot ? 2 : kPeerMaxRanks + 1;
    view.ctas = ctas;
  }
  SetCallCount(group, start_count);
  SetCallCount(rows_group, start_count);
  // Row counts in and past the low-latency protocol's limit (32 rows of 4,096), mixed; rows of
  // 1,027 and 1 vectors, which no group size divides; up to the whole staging buffer.
  struct Call { int64_t rows, hidden; };
  const Call calls[] = {{1, 4096}, {16, 4096}, {1, 4096}, {49, 4096}, {3, 8}, {1, 8192}, {32, 4096}, {33, 4096},
                        {100, 5120}, {2, 16384}, {48, 64}, {7, 8216}, {120, 8192}, {256, 8192}, {1, 4096},
                        {512, 8192}, {301, 8192}};
  for (ElemType t : {ElemType::kBF16, ElemType::kF16}) {
    struct Pending {
      Call call;
      std::vector<float> residual, weight;
      std::vector<std::vector<float>> deltas;
      std::vector<DeviceBuffer> d_residual, d_out;
    };
    std::vector<Pending> pending;
    std::vector<DeviceBuffer> keep;  // the deltas and weights, alive until the queue is done
    for (const Call& c : calls) {
      Pending p{c, RandomFloats(static_cast<size_t>(c.rows * c.hidden), -2.0f, 2.0f),
                RandomFloats(static_cast<size_t>(c.hidden), 0.5f, 1.5f), {}, {}, {}};
      for (int r = 0; r < group.world; ++r) {
        TG_CUDA_CHECK(cudaSetDevice(r));
        p.deltas.push_back(RandomFloats(static_cast<size_t>(c.rows * c.hidden)));
        const std::vector<uint8_t> bytes = Encode(p.deltas.back(), t);
        keep.push_back(ToDevice(bytes.data(), bytes.size()));
        const void* delta = keep.back().get();
        keep.push_back(ToDevice(p.weight));
        const float* weight = keep.back().as<float>();
        p.d_residual.push_back(ToDevice(p.residual));
        p.d_out.push_back(Poisoned(static_cast<size_t>(c.rows * c.hidden) * ElemSize(t)));
        LaunchPeerAllReduceAddRmsNorm(rows_group.views[static_cast<size_t>(r)], delta, p.d_residual.back().as<float>(),
                                      weight, c.rows, c.hidden, 1e-5f, t, p.d_out.back().get(),
                                      group.streams[static_cast<size_t>(r)]);
        // A plain all-reduce on the other group, queued between the fused calls.
        keep.push_back(ToDevice(RandomFloats(1024)));
        LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], keep.back().get(), 1024, ElemType::kF32,
                               group.streams[static_cast<size_t>(r)]);
      }
      pending.push_back(std::move(p));
    }
    group.Sync();
    for (Pending& p : pending) {
      const int64_t rows = p.call.rows, hidden = p.call.hidden;
      const std::vector<float> reduced = Decode(RankOrderSum(p.deltas, t), t);
      std::vector<float> residual(p.residual);
      for (size_t i = 0; i < residual.size(); ++i) residual[i] += reduced[i];
      std::vector<float> want(residual.size());
      tg::cpu::RmsNorm(residual.data(), p.weight.data(), rows, hidden, 1e-5, want.data());
      const std::string what = std::string(low_latency ? "low-latency, " : "") + (two_shot ? "two-shot " : "staged ") +
                               std::to_string(ctas) + " CTAs, from call count " +
                               std::to_string(start_count) + ", " + Name(t) + " rows " +
                               std::to_string(rows) + " hidden " + std::to_string(hidden);
      ++cases_run;
      std::vector<uint8_t> rank0_out;
      for (int r = 0; r < group.world; ++r) {
        TG_CUDA_CHECK(cudaSetDevice(r));
        const size_t i = static_cast<size_t>(r);
        if (Download(p.d_residual[i], residual.size() * 4) != Encode(residual, ElemType::kF32)) {
          std::printf("  fused all-reduce + norm %s: rank %d's residual is not residual + the rank-order sum\n",
                      what.c_str(), r);
          ++tgtest::Failures();
        }
        const std::vector<uint8_t> out = Download(p.d_out[i], want.size() * ElemSize(t));
        if (r == 0) rank0_out = out;
        if (out != rank0_out) {
          std::printf("  fused all-reduce + norm %s: rank %d's output differs from rank 0's\n", what.c_str(), r);
          ++tgtest::Failures();
        }
        const double err = RelError(Decode(out, t), want);
        if (!(err <= Tolerance(t))) {
          std::printf("  fused all-reduce + norm %s: rank %d relative error %.3g\n", what.c_str(), r, err);
          ++tgtest::Failures();
        }
      }
    }
  }
}

}  // namespace

TG_TEST(peer_all_reduce_add_rms_norm_equals_the_two_calls_on_every_rank) {
  for (bool low_latency : {true, false}) {
    for (bool two_shot : {false, true}) {
      CheckFusedQueue(low_latency, two_shot, 0);
      CheckFusedQueue(low_latency, two_shot, kNearWrap);
    }
  }
  // More CTAs than the default, and fewer than some calls' rows: each CTA takes rows in turn.
  for (bool two_shot : {false, true}) CheckFusedQueue(true, two_shot, kNearWrap, 132);
  CheckFusedQueue(true, true, 0, 7);
  Group rows_group(g_world), group(g_world);
  const PeerGroup& g = rows_group.views[0];
  TG_CUDA_CHECK(cudaSetDevice(0));
  DeviceBuffer d(1 << 20);
  float* f = d.as<float>();
  CHECK(PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kBF16, f, f, f, f));
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kF32, f, f, f, f));   // bf16/fp16 only
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4100, ElemType::kBF16, f, f, f, f));  // not whole vectors
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 16392, ElemType::kBF16, f, f, f, f)); // wider than the register path
  CHECK(!PeerAllReduceAddRmsNormFits(g, kStaging / 8192 + 1, 4096, ElemType::kBF16, f, f, f, f)); // past the staging
  PeerGroup no_ctas = g, too_many_ctas = g;
  no_ctas.ctas = 0;
  too_many_ctas.ctas = kPeerMaxCtas + 1;
  CHECK(!PeerAllReduceAddRmsNormFits(no_ctas, 1, 4096, ElemType::kBF16, f, f, f, f));
  CHECK(!PeerAllReduceAddRmsNormFits(too_many_ctas, 1, 4096, ElemType::kBF16, f, f, f, f));
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kBF16, f, f + 1, f, f)); // residual misaligned
  CHECK_THROWS_WITH(LaunchPeerAllReduceAddRmsNorm(g, f, f, f, 1, 4100, 1e-5f, ElemType::kBF16, f, group.streams[0]),
                    "RMSNorm cannot take");
}

namespace {

// The GEMV's exchange between ranks (gemv.h's GemvExchange): each rank's buffers, and every
// rank's view of them.
struct ExchangeGroup {
  static constexpr int kMaxCtas = 2048;
  std::vector<GemvExchangeBuffers> buffers;
  std::vector<GemvExchange> views;
  explicit ExchangeGroup(int world) {
    for (int r = 0; r < world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      buffers.emplace_back(world, kMaxCtas);
    }
    for (int r = 0; r < world; ++r) {
      GemvExchange e = buffers[static_cast<size_t>(r)].View(r);
      for (int p = 0; p < world; ++p) e.mailboxes[p] = buffers[static_cast<size_t>(p)].mailboxes.as<char>();
      views.push_back(e);
    }
  }
  // As if `calls` exchanges had been made by every CTA (for the count's wrap).
  void SetCallCount(uint32_t calls) {
    const std::vector<uint32_t> count(kMaxCtas, calls);
    for (size_t r = 0; r < buffers.size(); ++r) {
      TG_CUDA_CHECK(cudaSetDevice(static_cast<int>(r)));
      const DeviceBuffer& counters = buffers[r].counters;
      TG_CUDA_CHECK(cudaMemcpy(counters.get(), count.data(), counters.bytes(), cudaMemcpyHostToDevice));
    }
  }
};

// One row-parallel product through the exchanging GEMV on every rank: each rank holds a slice
// of k, and every rank's residual must end as residual + the rank-order f32 sum of the slices'
// products, bit for bit (each product as the GEMV stores it in f32), on every rank alike; when
// feeding a norm, its h ⊙ weight and parts as on one GPU.
void CheckExchange(Group& group, ExchangeGroup& exchange, int64_t m, int64_t n, int64_t k_slice, bool feed) {
  const ElemType t = ElemType::kBF16, f32 = ElemType::kF32;
  const int world = group.world;
  const std::vector<float> residual = RandomFloats(static_cast<size_t>(m * n), -2.0f, 2.0f);
  const std::vector<float> weight = RandomFloats(static_cast<size_t>(n), 0.5f, 1.5f);
  const int64_t parts = (n + 15) / 16;
  std::vector<DeviceBuffer> x, w, res, products, d_weight, scaled, sums;
  for (int r = 0; r < world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    x.push_back(ToDevice(Round(RandomFloats(static_cast<size_t>(m * k_slice)), t).bits));
    w.push_back(ToDevice(Round(RandomFloats(static_cast<size_t>(n * k_slice), -0.1f, 0.1f), t).bits));
    res.push_back(ToDevice(residual));
    products.push_back(Poisoned(residual.size() * 4));
    d_weight.push_back(ToDevice(weight));
    scaled.push_back(Poisoned(residual.size() * 2));
    sums.push_back(Poisoned(static_cast<size_t>(m * parts) * 4));
    const size_t i = static_cast<size_t>(r);
    LaunchGemv(group.streams[i], x[i].get(), w[i].get(), products[i].get(), m, n, k_slice, t, f32);
  }
  for (int r = 0; r < world; ++r) {  // every rank's kernel is in flight before any finishes
    TG_CUDA_CHECK(cudaSetDevice(r));
    const size_t i = static_cast<size_t>(r);
    GemvNorm norm;
    norm.exchange = exchange.views[i];
    if (feed) {
      norm.sum_squares = sums[i].as<float>();
      norm.weight = d_weight[i].as<float>();
      norm.scaled = scaled[i].get();
    }
    LaunchGemv(group.streams[i], x[i].get(), w[i].get(), res[i].get(), m, n, k_slice, t, f32, GemvInput::kPlain,
               GemvOutput::kAddTo, {}, &norm);
  }
  group.Sync();
  std::vector<float> want(residual);
  std::vector<std::vector<float>> rank_products;
  for (int r = 0; r < world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    rank_products.push_back(Decode(Download(products[static_cast<size_t>(r)], residual.size() * 4), f32));
  }
  for (size_t e = 0; e < want.size(); ++e) {
    float sum = rank_products[0][e];
    for (int r = 1; r < world; ++r) sum += rank_products[static_cast<size_t>(r)][e];
    want[e] = residual[e] + sum;
  }
  std::vector<float> h_times_weight(want.size());
  for (size_t e = 0; e < want.size(); ++e) h_times_weight[e] = want[e] * weight[e % static_cast<size_t>(n)];
  const std::vector<float> want_scaled = Round(h_times_weight, t).values;
  ++cases_run;
  const std::string name = "m " + std::to_string(m) + " n " + std::to_string(n) + " k " +
                           std::to_string(k_slice) + " per rank" + (feed ? ", feeding" : "");
  for (int r = 0; r < world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    const size_t i = static_cast<size_t>(r);
    if (Decode(Download(res[i], want.size() * 4), f32) != want) {
      std::printf("  FAIL gemv exchange %s: rank %d's residual is not residual + the rank-order sum\n", name.c_str(), r);
      ++tgtest::Failures();
    }
    if (!feed) continue;
    if (Decode(Download(scaled[i], want.size() * 2), t) != want_scaled) {
      std::printf("  FAIL gemv exchange %s: rank %d's h * weight differs\n", name.c_str(), r);
      ++tgtest::Failures();
    }
    const std::vector<float> got = Decode(Download(sums[i], static_cast<size_t>(m * parts) * 4), f32);
    for (int64_t row = 0; row < m; ++row) {
      double total = 0.0, expect = 0.0;
      for (int64_t p = 0; p < parts; ++p) total += got[static_cast<size_t>(row * parts + p)];
      for (int64_t c = 0; c < n; ++c) expect += static_cast<double>(want[row * n + c]) * want[row * n + c];
      if (!(std::fabs(total - expect) <= 1e-5 * expect)) {
        std::printf("  FAIL gemv exchange %s: rank %d's parts of row %lld do not sum to its h^2\n", name.c_str(), r,
                    static_cast<long long>(row));
        ++tgtest::Failures();
      }
    }
  }
}

}  // namespace

// The adding GEMV summing the ranks' products itself (GemvExchange), with and without feeding
// a norm: one and two x tiles, a partial last tile of n, back-to-back calls of changing shapes
// (both mailbox parities; a CTA's count advances only in the CTAs a call has), tiles in two and
// in five rounds of CTAs, and the count's wrap.
TG_TEST(peer_gemv_exchange_sums_the_ranks_products_on_every_rank) {
  Group group(g_world);
  for (uint32_t start : {0u, 0xFFFFFFFBu}) {
    ExchangeGroup exchange(g_world);
    exchange.SetCallCount(start);
    for (int round = 0; round < 2; ++round) {
      CheckExchange(group, exchange, 1, 4096, 2048, true);
      CheckExchange(group, exchange, 5, 1000, 264, false);
      CheckExchange(group, exchange, 16, 4096, 7168, true);
      CheckExchange(group, exchange, 9, 64, 40, true);
      // The 70B's o and down at TP 4: 512 tiles, more than the CTAs resident at once, so each
      // CTA takes two in turn.
      CheckExchange(group, exchange, 1, 8192, 2048, true);
      CheckExchange(group, exchange, 16, 8192, 7168, true);
      // Over 1,100 tiles at k 1,024 (8 warps, two CTAs an SM): five rounds, so a CTA computes and
      // sends four tiles, adds their sums, then takes its fifth; the last tile half full.
      CheckExchange(group, exchange, 3, 16 * 1100, 1024, true);
      CheckExchange(group, exchange, 16, 16 * 1100 + 8, 1024, false);
    }
  }
  // What GemvSupports refuses: more CTAs than the mailboxes hold, a missing peer region.
  ExchangeGroup exchange(g_world);
  TG_CUDA_CHECK(cudaSetDevice(0));
  DeviceBuffer buf(1 << 16);
  const char* b = buf.as<char>();
  GemvNorm norm;
  norm.exchange = exchange.views[0];
  const ElemType bf = ElemType::kBF16, f32 = ElemType::kF32;
  CHECK(GemvSupports(b, b, 1, 4096, 64, bf, f32, GemvInput::kPlain, GemvOutput::kAddTo, {}, &norm));
  CHECK(GemvSupports(b, b, 16, 16 * ExchangeGroup::kMaxCtas, 64, bf, f32, GemvInput::kPlain, GemvOutput::kAddTo, {},
                     &norm));
  CHECK(!GemvSupports(b, b, 1, 16 * (ExchangeGroup::kMaxCtas + 1), 64, bf, f32, GemvInput::kPlain,
                      GemvOutput::kAddTo, {}, &norm));
  norm.exchange.mailboxes[1] = nullptr;
  CHECK(!GemvSupports(b, b, 1, 4096, 64, bf, f32, GemvInput::kPlain, GemvOutput::kAddTo, {}, &norm));
}

TG_TEST(peer_collectives_refuse_what_they_cannot_move) {
  Group group(g_world);
  const PeerGroup& g = group.views[0];
  TG_CUDA_CHECK(cudaSetDevice(0));
  DeviceBuffer d(64);
  const char* p = d.as<char>();
  CHECK(PeerCollectiveFits(g, 8, ElemType::kBF16, p, p));
  CHECK(!PeerCollectiveFits(g, 7, ElemType::kBF16, p, p));  // not whole 16-byte vectors
  CHECK(!PeerCollectiveFits(g, kStaging / 4 + 4, ElemType::kF32, p, p));
  CHECK_THROWS_WITH(LaunchPeerAllReduceSum(g, d.get(), 7, ElemType::kBF16, group.streams[0]), "16-byte");
}

namespace {

// Microseconds per call of `enqueue(rank, call, stream)` on every rank, kCalls of them captured
// into one CUDA graph per rank, as the decode graphs hold them: the time is the kernels' own
// (barrier, link trips, launch gaps), not the host's launches. Device 0's view.
template <typename Fn>
double GraphUsPerCall(Group& group, Fn enqueue) {
  constexpr int kCalls = 100;
  std::vector<cudaGraphExec_t> execs =
      CaptureEachRank(group, kCalls, [&](int r, int call, cudaStream_t s) { enqueue(r, call, s); });
  auto replay = [&] {
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      TG_CUDA_CHECK(cudaGraphLaunch(execs[static_cast<size_t>(r)], group.streams[static_cast<size_t>(r)]));
    }
  };
  replay();  // warm-up
  group.Sync();
  TG_CUDA_CHECK(cudaSetDevice(0));
  cudaEvent_t a, b;
  TG_CUDA_CHECK(cudaEventCreate(&a));
  TG_CUDA_CHECK(cudaEventCreate(&b));
  TG_CUDA_CHECK(cudaEventRecord(a, group.streams[0]));
  replay();
  TG_CUDA_CHECK(cudaSetDevice(0));
  TG_CUDA_CHECK(cudaEventRecord(b, group.streams[0]));
  group.Sync();
  float ms = 0;
  TG_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    TG_CUDA_CHECK(cudaGraphExecDestroy(execs[static_cast<size_t>(r)]));
  }
  return ms * 1000.0 / kCalls;
}

// One fused all-reduce + RMSNorm of `rows` bf16 rows of `hidden` on every rank of `group`.
double FusedUsPerCall(Group& group, int64_t rows, int64_t hidden) {
  const int64_t n = rows * hidden;
  std::vector<DeviceBuffer> delta, residual, weight, out;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    delta.push_back(ToDevice(Round(RandomFloats(static_cast<size_t>(n)), ElemType::kBF16).bits));
    residual.push_back(ToDevice(RandomFloats(static_cast<size_t>(n))));
    weight.push_back(ToDevice(RandomFloats(static_cast<size_t>(hidden), 0.5f, 1.5f)));
    out.push_back(DeviceBuffer(static_cast<size_t>(n) * 2));
  }
  return GraphUsPerCall(group, [&](int r, int, cudaStream_t s) {
    const size_t i = static_cast<size_t>(r);
    LaunchPeerAllReduceAddRmsNorm(group.views[i], delta[i].get(), residual[i].as<float>(), weight[i].as<float>(),
                                  rows, hidden, 1e-5f, ElemType::kBF16, out[i].get(), s);
  });
}

// One adding GEMV feeding a norm, m rows of x against an [n, k_slice] bf16 slice on every rank,
// exchanging its products with the other ranks (GemvExchange) or, as the baseline, each rank
// alone. The calls cycle through copies of W that add up to 256 MB, twice the L2 of any card
// here, so that every call reads its weights from HBM as a decode step does.
double ExchangeGemvUsPerCall(Group& group, ExchangeGroup& exchange, int64_t m, int64_t n, int64_t k_slice,
                             bool exchanging) {
  const ElemType t = ElemType::kBF16, f32 = ElemType::kF32;
  const int64_t w_bytes = n * k_slice * 2, copies = std::max<int64_t>(1, ((int64_t{256} << 20) + w_bytes - 1) / w_bytes);
  const int64_t parts = (n + 15) / 16;
  std::vector<DeviceBuffer> x, w, res, weight, scaled, sums;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    x.push_back(ToDevice(Round(RandomFloats(static_cast<size_t>(m * k_slice)), t).bits));
    w.push_back(DeviceBuffer(static_cast<size_t>(w_bytes * copies)));
    TG_CUDA_CHECK(cudaMemset(w.back().get(), 0, w.back().bytes()));
    res.push_back(ToDevice(RandomFloats(static_cast<size_t>(m * n))));
    weight.push_back(ToDevice(RandomFloats(static_cast<size_t>(n), 0.5f, 1.5f)));
    scaled.push_back(DeviceBuffer(static_cast<size_t>(m * n) * 2));
    sums.push_back(DeviceBuffer(static_cast<size_t>(m * parts) * 4));
  }
  return GraphUsPerCall(group, [&](int r, int call, cudaStream_t s) {
    const size_t i = static_cast<size_t>(r);
    GemvNorm norm;
    if (exchanging) norm.exchange = exchange.views[i];
    norm.sum_squares = sums[i].as<float>();
    norm.weight = weight[i].as<float>();
    norm.scaled = scaled[i].get();
    LaunchGemv(s, x[i].get(), w[i].as<char>() + (call % copies) * w_bytes, res[i].get(), m, n, k_slice, t, f32,
               GemvInput::kPlain, GemvOutput::kAddTo, {}, &norm);
  });
}

// The all-reduce per message size, by both protocols where the low-latency one takes it, and
// the fused all-reduce + RMSNorm per decode batch, by each protocol; bf16.
int Perf() {
  std::printf("peer collectives, %d GPUs, bf16, 100 calls per CUDA graph per rank:\n", g_world);
  for (bool low_latency : {true, false}) {
    Group group(g_world, low_latency);
    const char* protocol = low_latency ? "low-latency where it fits" : "staged";
    for (size_t bytes : {size_t{8} << 10, size_t{64} << 10, size_t{256} << 10, size_t{512} << 10, size_t{2} << 20}) {
      const size_t count = bytes / 2;
      std::vector<DeviceBuffer> data;
      for (int r = 0; r < group.world; ++r) {
        TG_CUDA_CHECK(cudaSetDevice(r));
        data.push_back(ToDevice(RandomFloats(count)));
      }
      const double us = GraphUsPerCall(group, [&](int r, int, cudaStream_t s) {
        LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data[static_cast<size_t>(r)].get(), count,
                               ElemType::kBF16, s);
      });
      std::printf("RESULT peer all-reduce %zu KB x %d GPUs (%s): %.2f us per call inside a graph\n", bytes >> 10,
                  group.world, protocol, us);
    }
  }
  // The fused all-reduce + RMSNorm at decode batches of a 4,096- and an 8,192-wide model, by
  // each protocol: low-latency where it fits (staged or two-shot past it), staged, two-shot.
  for (PeerProtocol protocol : {PeerProtocol::kLowLatency, PeerProtocol::kStaged, PeerProtocol::kTwoShot}) {
    Group rows_group(g_world, protocol == PeerProtocol::kLowLatency);
    for (PeerGroup& view : rows_group.views) {
      view.two_shot_min_world = protocol == PeerProtocol::kTwoShot ? 2 : protocol == PeerProtocol::kStaged
                                                                          ? kPeerMaxRanks + 1
                                                                          : 3;
    }
    const char* name = protocol == PeerProtocol::kLowLatency ? "low-latency where it fits"
                       : protocol == PeerProtocol::kStaged   ? "staged"
                                                             : "two-shot";
    for (int64_t hidden : {4096, 8192}) {
      for (int64_t rows : {1, 16, 32, 64, 128, 256, 512}) {
        std::printf("RESULT peer all-reduce + RMSNorm %lld rows of %lld x %d GPUs (%s): %.2f us per call inside a "
                    "graph\n",
                    static_cast<long long>(rows), static_cast<long long>(hidden), rows_group.world, name,
                    FusedUsPerCall(rows_group, rows, hidden));
      }
    }
  }
  // The exchanging o and down GEMVs at the 8B's TP 2 slices and the 70B's TP 4 slices (hidden n,
  // k per rank), against the same GEMV with no exchange: the difference is what the ranks' trade costs.
  {
    Group group(g_world);
    ExchangeGroup exchange(g_world);
    struct Slice {
      const char* name;
      int64_t n, k;
    };
    for (const Slice& slice : {Slice{"8B o at TP 2", 4096, 2048}, Slice{"8B down at TP 2", 4096, 7168},
                               Slice{"70B o at TP 4", 8192, 2048}, Slice{"70B down at TP 4", 8192, 7168}}) {
      for (int64_t m : {1, 16}) {
        for (bool exchanging : {false, true}) {
          std::printf("RESULT gemv feeding a norm, %s (n %lld, k %lld), m %lld x %d GPUs (%s): %.2f us per call "
                      "inside a graph\n",
                      slice.name, static_cast<long long>(slice.n), static_cast<long long>(slice.k),
                      static_cast<long long>(m), group.world, exchanging ? "exchanging" : "alone",
                      ExchangeGemvUsPerCall(group, exchange, m, slice.n, slice.k, exchanging));
        }
      }
    }
  }
  // The two-shot call past the graph buckets' rows, by the group's CTA count (PeerGroup::ctas).
  for (int ctas : {48, 96, 132, 192}) {
    Group rows_group(g_world);
    for (PeerGroup& view : rows_group.views) {
      view.two_shot_min_world = 2;
      view.ctas = ctas;
    }
    for (int64_t rows : {64, 128, 256, 384, 512}) {
      std::printf("RESULT peer all-reduce + RMSNorm %lld rows of 8192 x %d GPUs (two-shot, %d CTAs): %.2f us per "
                  "call inside a graph\n",
                  static_cast<long long>(rows), rows_group.world, ctas, FusedUsPerCall(rows_group, rows, 8192));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  g_world = PeerGpus();
  if (g_world < 2) {
    std::printf("skipped: peer collectives need 2+ GPUs with peer access; %d visible\n0 passed, 0 failed\n",
                tg::CudaDeviceCount());
    return 0;
  }
  return KernelTestMain(argc, argv, Perf, [](int) { std::printf("%d peer collective cases on %d GPUs\n", cases_run, g_world); });
}
