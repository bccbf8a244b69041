// The peer collectives (backend/cuda/peer/peer_collectives.h) on every visible GPU of
// one process: each GPU plays one rank, and the ranks' regions are plain allocations
// reached through peer access (the engine maps them from other processes with CUDA IPC,
// which a single process cannot open; the kernels see the same pointers either way).
// Needs 2+ GPUs with peer access; says it skipped otherwise. `--perf` times the
// all-reduce per message size.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/peer/peer_collectives.h"
#include "cuda_test_util.h"

using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

constexpr size_t kStaging = size_t{4} << 20;

// One rank per GPU, all driven from this thread.
struct Group {
  int world = 0;
  std::vector<PeerBuffers> buffers;
  std::vector<cudaStream_t> streams;
  std::vector<PeerGroup> views;

  explicit Group(int n) : world(n) {
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
  Group group(g_world);
  // Odd vector counts, one vector, a decode step's 8 KB, more vectors than threads, the limit;
  // each size twice in a row so both staging buffers are used.
  for (ElemType t : {ElemType::kBF16, ElemType::kF16, ElemType::kF32}) {
    const size_t per_vec = 16 / ElemSize(t);
    for (size_t vecs : {size_t{1}, size_t{3}, size_t{47}, size_t{49}, size_t{512}, size_t{24577}, size_t{131072},
                        kStaging / 16}) {
      CheckAllReduce(group, vecs * per_vec, t);
      CheckAllReduce(group, vecs * per_vec, t);
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

// Many calls queued back to back with no host wait: a rank that ran ahead into a staging
// buffer its peers still read would corrupt the sums. Repeated all-reduces of the same
// data multiply it by the world size each time, exactly (powers of two in f32).
TG_TEST(peer_all_reduce_back_to_back_calls_and_graph_replays_stay_exact) {
  Group group(g_world);
  const size_t count = 4096;  // one decode row of an 8B model, in f32
  const std::vector<float> start = RandomFloats(count);
  std::vector<DeviceBuffer> data;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    data.push_back(ToDevice(start));
  }
  const int eager_calls = 10, graph_calls = 4, replays = 3;
  for (int i = 0; i < eager_calls; ++i) {
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data[static_cast<size_t>(r)].get(), count,
                             ElemType::kF32, group.streams[static_cast<size_t>(r)]);
    }
  }
  // The same call captured in a graph per rank and replayed: the barrier counters live in
  // device memory, so every replay is a new call.
  std::vector<cudaGraphExec_t> execs;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    cudaStream_t s = group.streams[static_cast<size_t>(r)];
    cudaGraph_t graph = nullptr;
    TG_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < graph_calls; ++i) {
      LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data[static_cast<size_t>(r)].get(), count,
                             ElemType::kF32, s);
    }
    TG_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    TG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    TG_CUDA_CHECK(cudaGraphDestroy(graph));
    execs.push_back(exec);
  }
  for (int k = 0; k < replays; ++k) {
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      TG_CUDA_CHECK(cudaGraphLaunch(execs[static_cast<size_t>(r)], group.streams[static_cast<size_t>(r)]));
    }
  }
  group.Sync();
  const int calls = eager_calls + graph_calls * replays;
  float factor = 1.0f;
  for (int i = 0; i < calls; ++i) factor *= static_cast<float>(group.world);
  std::vector<float> want(count);
  for (size_t i = 0; i < count; ++i) want[i] = start[i] * factor;
  ++cases_run;
  for (int r = 0; r < group.world; ++r) {
    TG_CUDA_CHECK(cudaSetDevice(r));
    if (Download(data[static_cast<size_t>(r)], count * 4) != Encode(want, ElemType::kF32)) {
      std::printf("  after %d calls rank %d is not the start times world^calls\n", calls, r);
      ++tgtest::Failures();
    }
    TG_CUDA_CHECK(cudaGraphExecDestroy(execs[static_cast<size_t>(r)]));
  }
}

// The fused all-reduce + residual add + RMSNorm (LaunchPeerAllReduceAddRmsNorm) on its own
// group, in a queue of calls with no host wait whose row counts change from call to call
// (so its CTAs' barrier counters advance unevenly), with plain all-reduces on the other
// group in between: every rank's residual must be exactly the f32 residual plus the
// rank-order sum (rounded to the type, as the all-reduce leaves it), every rank's output the
// same bits, and the output the CPU's RMSNorm of that residual within the type's rounding.
TG_TEST(peer_all_reduce_add_rms_norm_equals_the_two_calls_on_every_rank) {
  Group group(g_world), rows_group(g_world);
  struct Call { int64_t rows, hidden; };
  const Call calls[] = {{1, 4096}, {16, 4096}, {1, 4096}, {49, 4096}, {3, 8}, {1, 8192},
                        {100, 5120}, {2, 16384}, {48, 64}, {1, 4096}};
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
      const std::string what = std::string(Name(t)) + " rows " + std::to_string(rows) + " hidden " +
                               std::to_string(hidden);
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
  const PeerGroup& g = rows_group.views[0];
  TG_CUDA_CHECK(cudaSetDevice(0));
  DeviceBuffer d(1 << 20);
  float* f = d.as<float>();
  CHECK(PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kBF16, f, f, f, f));
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kF32, f, f, f, f));   // bf16/fp16 only
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4100, ElemType::kBF16, f, f, f, f));  // not whole vectors
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 16392, ElemType::kBF16, f, f, f, f)); // wider than the register path
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1024, 4096, ElemType::kBF16, f, f, f, f)); // past the staging buffer
  CHECK(!PeerAllReduceAddRmsNormFits(g, 1, 4096, ElemType::kBF16, f, f + 1, f, f)); // residual misaligned
  CHECK_THROWS_WITH(LaunchPeerAllReduceAddRmsNorm(g, f, f, f, 1, 4100, 1e-5f, ElemType::kBF16, f, group.streams[0]),
                    "RMSNorm cannot take");
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

// Each rank's calls are captured in one CUDA graph, as the decode graphs hold them, so the
// time is the kernels' own (barrier, link round trips, launch gaps), not the host's launches.
int Perf() {
  Group group(g_world);
  constexpr int kCalls = 100;
  std::printf("peer all-reduce, %d GPUs, bf16, %d calls per CUDA graph per rank (device 0's view):\n", group.world,
              kCalls);
  for (size_t bytes : {size_t{8} << 10, size_t{64} << 10, size_t{512} << 10, size_t{2} << 20}) {
    const size_t count = bytes / 2;
    std::vector<DeviceBuffer> data;
    std::vector<cudaGraphExec_t> execs;
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      data.push_back(ToDevice(RandomFloats(count)));
      cudaStream_t s = group.streams[static_cast<size_t>(r)];
      cudaGraph_t graph = nullptr;
      TG_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < kCalls; ++i) {
        LaunchPeerAllReduceSum(group.views[static_cast<size_t>(r)], data.back().get(), count, ElemType::kBF16, s);
      }
      TG_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
      cudaGraphExec_t exec = nullptr;
      TG_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      TG_CUDA_CHECK(cudaGraphDestroy(graph));
      execs.push_back(exec);
    }
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
    std::printf("RESULT peer all-reduce %zu KB x %d GPUs: %.2f us per call inside a graph\n", bytes >> 10, group.world,
                ms * 1000.0f / kCalls);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    for (int r = 0; r < group.world; ++r) {
      TG_CUDA_CHECK(cudaSetDevice(r));
      TG_CUDA_CHECK(cudaGraphExecDestroy(execs[static_cast<size_t>(r)]));
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
