// The tensor-core prefill attention (prefill_attention.h) against the CPU backend's
// attention, in the style of cuda_ops_test.cc: fresh random inputs per case, outputs
// poisoned (NaN) before each run, relative L2 error with the same tolerances. Shapes
// cover one long sequence, many sequences of odd lengths, chunks after cached
// prefixes, block sizes 1 to 256, sliding windows, GQA 1/4/8, head dims 64 and 128,
// both tile sizes, the Hopper (wgmma) kernel where it runs beside the mma.sync one, bf16
// and fp16, shuffled block tables, and NaN in every cache slot past a sequence's keys; rows of sequences left
// out of the batch must stay untouched, and the mixed step the model runs (long
// sequences here, the rest through LaunchPagedAttention into the same output) must
// match as a whole. With --perf: the Llama-3-8B head shape against the old kernel.
// Without a CUDA device it says it skipped and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/prefill_attention.h"
#include "core/dtype.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg;
using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

int cases_run = 0;
double worst_ratio = 0.0;  // worst error / tolerance

void Expect(const std::string& what, double err, double tol) {
  ++cases_run;
  const bool ok = err <= tol;
  std::printf("  %s %s: relative error %.3g (tolerance %.3g)\n", ok ? "pass" : "FAIL", what.c_str(), err, tol);
  if (!ok) ++tgtest::Failures();
  worst_ratio = std::max(worst_ratio, std::isnan(err) ? 1e30 : err / tol);
}

const ElemType kTypes[] = {ElemType::kBF16, ElemType::kF16};



// A HostPrefillBatch packed into one int32 buffer and copied once, as the model packs its step.
struct DevicePrefill {
  DeviceBuffer words;
  PrefillBatch view;
};
DevicePrefill UploadPrefill(const HostPrefillBatch& host) {
  std::vector<int32_t> words;
  auto add = [&](const std::vector<int32_t>& v) {
    size_t at = words.size();
    words.insert(words.end(), v.begin(), v.end());
    while (words.size() % 4) words.push_back(0);
    return at;
  };
  const size_t o_rs = add(host.seq_row_start), o_rn = add(host.seq_rows), o_sp = add(host.seq_position),
               o_bs = add(host.seq_block_start), o_bt = add(host.block_tables), o_it = add(host.items);
  DevicePrefill d;
  d.words = ToDevice(words);
  const int32_t* base = d.words.as<int32_t>();
  d.view.seq_row_start = base + o_rs;
  d.view.seq_rows = base + o_rn;
  d.view.seq_position = base + o_sp;
  d.view.seq_block_start = base + o_bs;
  d.view.block_tables = base + o_bt;
  d.view.items = base + o_it;
  d.view.num_items = host.num_items();
  d.view.tile_rows = host.tile_rows;
  return d;
}

// The old kernel's batch for the sequences `which` selects (rows of the others skipped).
struct DevicePaged {
  DeviceBuffer row_start, rows, position, block_start, tables, items;
  AttentionBatch view;
};
DevicePaged UploadPaged(const std::vector<TestSeq>& seqs, const std::vector<bool>& which, int64_t block_size,
                        int64_t group) {
  HostAttentionBatch host;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (which[i]) {
      host.Add(seqs[i].position, seqs[i].rows, seqs[i].blocks.data(), block_size, group);
    } else {
      host.rows += seqs[i].rows;  // the other kernel's rows
    }
  }
  DevicePaged d;
  d.row_start = ToDevice(host.seq_row_start);
  d.rows = ToDevice(host.seq_rows);
  d.position = ToDevice(host.seq_position);
  d.block_start = ToDevice(host.seq_block_start);
  d.tables = ToDevice(host.block_tables);
  d.items = ToDevice(host.items);
  d.view = {d.row_start.as<int32_t>(), d.rows.as<int32_t>(),        d.position.as<int32_t>(),
            d.block_start.as<int32_t>(), d.tables.as<int32_t>(), d.items.as<int32_t>(), host.num_items()};
  return d;
}

// The CPU backend's attention for every row of every sequence: [rows, q_heads, d].
std::vector<float> Reference(const std::vector<TestSeq>& seqs, int64_t total_rows, const HostCache& hc,
                             int64_t q_heads, int64_t window, float scale, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v) {
  const int64_t d = hc.head_dim, group = q_heads / hc.kv_heads;
  std::vector<float> want(total_rows * q_heads * d);
  std::vector<std::pair<int, int64_t>> row_of(total_rows);  // (sequence, index in it)
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int64_t i = 0; i < seqs[s].rows; ++i) row_of[seqs[s].row_start + i] = {static_cast<int>(s), i};
  }
  CpuPool().ParallelFor(total_rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t row = begin; row < end; ++row) {
      const TestSeq& s = seqs[row_of[row].first];
      const int64_t pos = s.position + row_of[row].second;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      const int64_t count = pos + 1 - first;
      scores.resize(count);
      for (int64_t h = 0; h < q_heads; ++h) {
        const int64_t kvh = h / group;
        auto at = [&](int64_t j) {
          const int64_t p = first + j;
          return hc.Index(s.blocks[p / hc.block_size], kvh, p % hc.block_size, 0);
        };
        cpu::AttendOneHead(
            q.data() + (row * q_heads + h) * d, d, count, scale, [&](int64_t j) { return k.data() + at(j); },
            [&](int64_t j) { return v.data() + at(j); }, scores.data(), want.data() + (row * q_heads + h) * d);
      }
    }
  });
  return want;
}

struct Case {
  std::string name;
  int64_t q_heads, kv_heads, head_dim, block_size, window;
  std::vector<std::pair<int64_t, int64_t>> seqs;  // (cached positions, new rows)
  int64_t min_rows = 1;  // sequences with fewer rows go to LaunchPagedAttention
};

std::string Describe(const Case& cs, ElemType t, int tile_rows) {
  std::string s = std::string("prefill_attention ") + Name(t) + " " + cs.name + ": heads " +
                  std::to_string(cs.q_heads) + "/" + std::to_string(cs.kv_heads) + " d " +
                  std::to_string(cs.head_dim) + " bs " + std::to_string(cs.block_size) + " window " +
                  std::to_string(cs.window) + " tile " + std::to_string(tile_rows);
  int shown = 0;
  for (auto& [p, n] : cs.seqs) {
    if (++shown > 6) {
      s += " ...";
      break;
    }
    s += " (" + std::to_string(p) + "+" + std::to_string(n) + ")";
  }
  return s;
}

// Each tile size on the mma.sync kernel, and the large one on the Hopper kernel where it
// takes this block size.
std::vector<std::pair<int, PrefillKernel>> KernelsToTest(int64_t head_dim, int64_t block_size) {
  std::vector<std::pair<int, PrefillKernel>> runs = {{kPrefillTileRowsSmall, PrefillKernel::kMmaSync},
                                                     {kPrefillTileRowsLarge, PrefillKernel::kMmaSync}};
  if (PrefillUsesWgmma(head_dim, block_size, kPrefillTileRowsLarge)) {
    runs.push_back({kPrefillTileRowsLarge, PrefillKernel::kBest});
  }
  return runs;
}

// K/V slots no sequence covers (past each one's last key in its last block, and the unused
// block 0) hold NaN: a kernel that lets a masked key's V into its sum (0 · NaN) fails.
void PoisonUnusedSlots(const std::vector<TestSeq>& seqs, const HostCache& hc, ElemType t, std::vector<uint16_t>* bits) {
  std::vector<bool> used(hc.num_blocks * hc.block_size, false);
  for (const TestSeq& s : seqs) {
    for (int64_t p = 0; p < s.position + s.rows; ++p) {
      used[s.blocks[p / hc.block_size] * hc.block_size + p % hc.block_size] = true;
    }
  }
  const uint16_t nan = t == ElemType::kBF16 ? 0x7FC0 : 0x7E00;
  for (int64_t b = 0; b < hc.num_blocks; ++b) {
    for (int64_t slot = 0; slot < hc.block_size; ++slot) {
      if (used[b * hc.block_size + slot]) continue;
      for (int64_t h = 0; h < hc.kv_heads; ++h) {
        std::fill_n(bits->begin() + hc.Index(b, h, slot, 0), hc.head_dim, nan);
      }
    }
  }
}

void RunCase(const Case& cs) {
  const int64_t d = cs.head_dim, group = cs.q_heads / cs.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (ElemType t : kTypes) {
    int64_t num_blocks = 0, rows = 0;
    const auto seqs = MakeSeqs(cs.seqs, cs.block_size, &num_blocks, &rows);
    const HostCache hc{num_blocks, cs.kv_heads, cs.block_size, d};
    Rounded k = Round(RandomFloats(hc.size()), t), v = Round(RandomFloats(hc.size()), t);
    PoisonUnusedSlots(seqs, hc, t, &k.bits);
    PoisonUnusedSlots(seqs, hc, t, &v.bits);
    // Scores of O(1) spread so the softmax is neither flat nor one-hot.
    const Rounded q = Round(RandomFloats(rows * cs.q_heads * d, -2.0f, 2.0f), t);
    const auto want = Reference(seqs, rows, hc, cs.q_heads, cs.window, scale, q.values, k.values, v.values);
    auto d_k = ToDevice(k.bits), d_v = ToDevice(v.bits), d_q = ToDevice(q.bits);
    const KvLayer cache{d_k.get(), d_v.get(), cs.block_size, num_blocks};
    const size_t row_elems = static_cast<size_t>(cs.q_heads * d);

    std::vector<bool> prefill(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) prefill[i] = seqs[i].rows >= cs.min_rows;
    for (auto [tile_rows, kernel] : KernelsToTest(d, cs.block_size)) {
      HostPrefillBatch host(tile_rows);
      for (size_t i = 0; i < seqs.size(); ++i) {
        if (!prefill[i]) continue;
        host.Add(seqs[i].row_start, seqs[i].position, seqs[i].rows, seqs[i].blocks.data(), cs.block_size);
      }
      const DevicePrefill batch = UploadPrefill(host);
      auto d_out = Poisoned(rows * row_elems * 2);
      LaunchPrefillAttention(nullptr, t, d_q.get(), cache, batch.view, cs.q_heads, cs.kv_heads, d, cs.window, scale,
                             d_out.get(), kernel);
      const auto got = ToHost(d_out, rows * row_elems, t);
      // The batch's rows against the reference; every other row must still hold the poison.
      std::vector<float> got_rows, want_rows;
      bool untouched = true;
      for (size_t i = 0; i < seqs.size(); ++i) {
        const size_t begin = seqs[i].row_start * row_elems, end = begin + seqs[i].rows * row_elems;
        if (prefill[i]) {
          got_rows.insert(got_rows.end(), got.begin() + begin, got.begin() + end);
          want_rows.insert(want_rows.end(), want.begin() + begin, want.begin() + end);
        } else {
          for (size_t e = begin; e < end; ++e) untouched = untouched && std::isnan(got[e]);
        }
      }
      const std::string what =
          Describe(cs, t, tile_rows) + (PrefillUsesWgmma(d, cs.block_size, tile_rows, kernel) ? " wgmma" : "");
      Expect(what, RelError(got_rows, want_rows), Tolerance(t));
      if (!untouched) {
        std::printf("  FAIL %s: wrote rows outside its sequences\n", what.c_str());
        ++tgtest::Failures();
      }
      // The whole step as the model runs it: the remaining sequences through the old kernel.
      if (std::find(prefill.begin(), prefill.end(), false) != prefill.end()) {
        std::vector<bool> rest(prefill.size());
        for (size_t i = 0; i < rest.size(); ++i) rest[i] = !prefill[i];
        const DevicePaged paged = UploadPaged(seqs, rest, cs.block_size, group);
        LaunchPagedAttention(nullptr, t, d_q.get(), cache, paged.view, cs.q_heads, cs.kv_heads, d, cs.window, scale, 1,
                             nullptr, d_out.get());
        Expect(what + " + paged rest", RelError(ToHost(d_out, rows * row_elems, t), want), Tolerance(t));
      }
    }
  }
}

// Sequences of random shape: `n` of them, rows in [1, max_rows], cached prefix in [0, max_pos].
std::vector<std::pair<int64_t, int64_t>> RandomShape(int n, int max_pos, int max_rows) {
  std::vector<std::pair<int64_t, int64_t>> s;
  for (int i = 0; i < n; ++i) s.push_back({RandomInt(0, 1) ? RandomInt(0, max_pos) : 0, RandomInt(1, max_rows)});
  return s;
}

}  // namespace

TG_TEST(prefill_attention_single_sequence) {
  RunCase({"one long", 8, 8, 128, 16, 0, {{0, 1000}}});
  RunCase({"one long d64", 8, 1, 64, 16, 0, {{0, 777}}});
  RunCase({"one exact tile", 4, 4, 128, 16, 0, {{0, 128}}});
  RunCase({"one row", 8, 2, 128, 16, 0, {{0, 1}}});
}

TG_TEST(prefill_attention_odd_lengths) {
  RunCase({"odd lengths", 32, 8, 128, 16, 0,
           {{0, RandomInt(1, 300)}, {0, 1}, {0, 17}, {0, 129}, {0, 64}, {0, 65}, {0, 127}, {0, 128}, {0, 63}}});
  RunCase({"odd lengths d64", 8, 2, 64, 16, 0, {{0, 255}, {0, 2}, {0, 191}, {0, 300}, {0, 33}}});
}

TG_TEST(prefill_attention_after_cached_prefix) {
  RunCase({"chunks", 32, 4, 128, 16, 0, {{37, 200}, {500, 63}, {16, 16}, {5, 1}, {1, 300}, {64, 64}}});
  RunCase({"chunks d64", 8, 2, 64, 16, 0, {{100, 33}, {1, 128}, {63, 70}, {129, 129}}});
  RunCase({"long prefix", 16, 2, 128, 16, 0, {{1500, 90}, {2049, 7}}});
}

TG_TEST(prefill_attention_block_sizes) {
  RunCase({"block 7", 16, 2, 64, 7, 0, {{0, 150}, {70, 77}, {13, 5}}});
  RunCase({"block 1", 8, 8, 128, 1, 0, {{3, 40}, {0, 70}}});
  RunCase({"block 256", 4, 1, 128, 256, 0, {{300, 100}, {0, 260}}});
  RunCase({"block 32", 32, 4, 64, 32, 0, {{31, 97}, {32, 64}, {95, 1}}});
  RunCase({"block 8", 8, 2, 128, 8, 0, {{50, 200}, {0, 129}, {7, 1}}});  // the Hopper kernel's smallest boxes
}

TG_TEST(prefill_attention_sliding_window) {
  RunCase({"window < tile", 8, 8, 128, 16, 24, {{0, 300}, {90, 40}, {40, 10}}});
  RunCase({"window 100", 8, 4, 64, 16, 100, {{0, 300}, {250, 90}, {3, 2}}});
  RunCase({"window = tile", 8, 2, 128, 32, 64, {{0, 200}, {130, 70}}});
  RunCase({"window 1", 4, 4, 64, 16, 1, {{0, 70}, {20, 9}}});
  RunCase({"window far back", 8, 8, 64, 16, 50, {{1000, 70}, {333, 140}}});
  RunCase({"window > context", 8, 1, 128, 16, 5000, {{10, 150}}});
  RunCase({"window far back d128", 8, 2, 128, 16, 50, {{1000, 70}, {333, 140}}});
}

TG_TEST(prefill_attention_random_shapes) {
  for (int i = 0; i < 6; ++i) {
    const int64_t d = RandomInt(0, 1) ? 128 : 64;
    const int64_t kv = RandomInt(1, 4), group = std::vector<int64_t>{1, 4, 8}[RandomInt(0, 2)];
    const int64_t bs = std::vector<int64_t>{5, 8, 16, 32, 64}[RandomInt(0, 4)];
    const int64_t window = RandomInt(0, 2) == 0 ? RandomInt(1, 200) : 0;
    RunCase({"random " + std::to_string(i), kv * group, kv, d, bs, window, RandomShape(RandomInt(1, 7), 400, 300)});
  }
}

TG_TEST(prefill_attention_mixed_step) {
  // As the model splits a step: long sequences here, decode rows and short chunks on the paged
  // kernel. The split point is 32 rows here (not kPrefillMinRows, a speed choice) so that the
  // small shapes exercise both kernels in one output.
  RunCase({"mixed step", 32, 8, 128, 16, 0, {{0, 100}, {50, 1}, {200, 31}, {7, 40}, {300, 1}, {0, 32}}, 32});
  RunCase({"mixed step window", 8, 2, 64, 16, 48, {{10, 1}, {0, 90}, {60, 3}, {33, 200}}, 32});
}

TG_TEST(prefill_batch_orders_items_longest_first) {
  HostPrefillBatch host(64);
  const std::vector<int32_t> blocks(64, 1);
  host.Add(0, 0, 100, blocks.data(), 16);     // items end at keys 100, 64
  host.Add(100, 500, 65, blocks.data(), 16);  // 565, 564
  host.Add(165, 0, 20, blocks.data(), 16);    // 20
  const std::vector<int32_t> want = {1, 64, 1, 0, 0, 64, 0, 0, 2, 0};
  CHECK(host.items == want);
  CHECK(host.num_items() == 5);
  CHECK(host.rows == 185);
  CHECK(host.seq_row_start == (std::vector<int32_t>{0, 100, 165}));
  CHECK(host.seq_block_start == (std::vector<int32_t>{0, 7, 43}));
  CHECK(PrefillAttentionSupports(128) && PrefillAttentionSupports(64) && !PrefillAttentionSupports(80));
}

namespace {

// Llama-3-8B's attention (32 query heads, 8 KV heads, d 128, blocks of 16, bf16): one
// sequence of n new tokens after `position` cached ones, both kernels on the same inputs.
void PerfOne(int64_t position, int64_t n, int sms) {
  const ElemType t = ElemType::kBF16;
  const int64_t qh = 32, kvh = 8, d = 128, bs = 16;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  int64_t num_blocks = 0, rows = 0;
  const auto seqs = MakeSeqs({{position, n}}, bs, &num_blocks, &rows);
  const int64_t cache_elems = num_blocks * kvh * bs * d;
  auto d_k = ToDevice(Round(RandomFloats(cache_elems), t).bits);
  auto d_v = ToDevice(Round(RandomFloats(cache_elems), t).bits);
  auto d_q = ToDevice(Round(RandomFloats(rows * qh * d, -2.0f, 2.0f), t).bits);
  const KvLayer cache{d_k.get(), d_v.get(), bs, num_blocks};
  DeviceBuffer d_new(rows * qh * d * 2), d_old(rows * qh * d * 2);

  const DevicePaged paged = UploadPaged(seqs, {true}, bs, qh / kvh);
  const int splits = AttentionSplits(paged.view.num_items, kvh, position + n, sms);
  DeviceBuffer ws(std::max<size_t>(AttentionWorkspaceBytes(paged.view.num_items, kvh, d, splits), 4));
  const double old_ms = TimeMs(10, [&] {
    LaunchPagedAttention(nullptr, t, d_q.get(), cache, paged.view, qh, kvh, d, 0, scale, splits, ws.as<float>(),
                         d_old.get());
  });
  // Causal FLOPs: QKᵀ and P·V, 2 · d each per visible (query head, key) pair.
  const double pairs = static_cast<double>(n) * position + n * (n + 1) / 2.0;
  const double flops = 4.0 * qh * d * pairs;
  const int chosen = PrefillTileRows(n, qh, d, bs, sms);
  double chosen_ms = 0.0;
  for (auto [tile_rows, kernel] : KernelsToTest(d, bs)) {
    HostPrefillBatch host(tile_rows);
    host.Add(0, position, n, seqs[0].blocks.data(), bs);
    const DevicePrefill batch = UploadPrefill(host);
    const double ms = TimeMs(10, [&] {
      LaunchPrefillAttention(nullptr, t, d_q.get(), cache, batch.view, qh, kvh, d, 0, scale, d_new.get(), kernel);
    });
    const bool wgmma = PrefillUsesWgmma(d, bs, tile_rows, kernel);
    const double diff = RelError(ToHost(d_new, rows * qh * d, t), ToHost(d_old, rows * qh * d, t));
    std::printf("  prefill attention %lld+%lld tokens, tile %d%s: %.4f ms, %.1f TFLOP/s, relative difference to the "
                "old kernel %.3g\n",
                static_cast<long long>(position), static_cast<long long>(n), tile_rows, wgmma ? " wgmma" : " mma.sync",
                ms, flops / ms / 1e9, diff);
    if (diff > Tolerance(t)) {
      std::printf("  FAIL: the kernels disagree\n");
      ++tgtest::Failures();
    }
    if (tile_rows == chosen && wgmma == PrefillUsesWgmma(d, bs, tile_rows)) chosen_ms = ms;
  }
  if (position == 0) {
    std::printf("RESULT prefill attention %lld tokens: %.4f ms, %.1f TFLOP/s (causal FLOPs = 4 * q_heads * d * "
                "n*(n+1)/2), old kernel %.4f ms\n",
                static_cast<long long>(n), chosen_ms, flops / chosen_ms / 1e9, old_ms);
  } else {
    std::printf("RESULT prefill attention chunk %lld after %lld cached: %.4f ms, %.1f TFLOP/s, old kernel %.4f ms "
                "(%d splits)\n",
                static_cast<long long>(n), static_cast<long long>(position), chosen_ms, flops / chosen_ms / 1e9,
                old_ms, splits);
  }
}

int Perf() {
  int sms = 0;
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  std::printf("perf, bf16, Llama-3-8B attention (32/8 heads, d 128, block 16), median of 10 runs, %d SMs:\n", sms);
  for (int64_t n : {1024, 4096, 8192}) PerfOne(0, n, sms);
  // Short chunks after a long prefix: where PrefillMinRows should sit.
  for (int64_t n : {16, 32, 64, 128, 512}) PerfOne(4096, n, sms);
  return tgtest::Failures() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, Perf, [](int) {
    std::printf("%d comparisons, worst error %.3g of its tolerance\n", cases_run, worst_ratio);
  });
}
