// The CUDA backend's kernels against the CPU backend's ops, in the style of
// llama.cpp's test-backend-ops: fresh random inputs for every case, outputs
// poisoned (NaN) before each run, error as ‖gpu − cpu‖ / ‖cpu‖ with a tolerance
// for the element type (the CPU side computes on the same rounded inputs, so
// what remains is output rounding and summation order). Shapes cover odd
// lengths, KV block boundaries, GQA ratios 1, 4 and 8, head dims 8, 64, 128 and
// 256, and mixed prefill/decode batches over cached prefixes.
// Without a CUDA device it says it skipped and exits 0.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/thread_pool.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "core/dtype.h"
#include "../test_util.h"
#include "cuda_test_util.h"

using namespace tg;
using namespace tg::cuda;
using namespace tg::cuda::test;

namespace {

int cases_run = 0;
// Worst error per "op dtype" (the first two words of a case's name), for the summary.
std::map<std::string, std::pair<double, double>> worst;

// One comparison: logs every case, and fails the test when it misses.
void Expect(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double tol) {
  ++cases_run;
  double err = RelError(got, want);
  bool ok = err <= tol;
  std::printf("  %s %s: relative error %.3g (tolerance %.3g)\n", ok ? "pass" : "FAIL", what.c_str(), err, tol);
  if (!ok) ++tgtest::Failures();
  std::string key = what.substr(0, what.find(' ', what.find(' ') + 1));
  auto& w = worst[key];
  if (!(err <= w.first)) w = {err, tol};
}

const ElemType kTypes[] = {ElemType::kBF16, ElemType::kF16};

}  // namespace

TG_TEST(embedding_gathers_rows) {
  for (ElemType t : kTypes) {
    for (int64_t hidden : {8, 64, 333}) {
      const int64_t vocab = 97, rows = RandomInt(1, 40);
      Rounded table = Round(RandomFloats(vocab * hidden), t);
      std::vector<int32_t> tokens(rows);
      for (auto& tok : tokens) tok = RandomInt(0, vocab - 1);
      auto d_table = ToDevice(table.bits), d_tokens = ToDevice(tokens);
      auto d_x = Poisoned(rows * hidden * 4);
      LaunchEmbedding(nullptr, t, d_table.get(), 0, vocab, d_tokens.as<int32_t>(), rows, hidden, d_x.as<float>());
      std::vector<float> want(rows * hidden);
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(table.values.begin() + tokens[r] * hidden, hidden, want.begin() + r * hidden);
      }
      Expect(std::string("embedding ") + Name(t) + " hidden " + std::to_string(hidden),
             ToHost(d_x, rows * hidden, ElemType::kF32), want, 0.0);
    }
  }
}

namespace {

// Rank 1 of 2's half of a vocab-parallel embedding table ([50, 100) of 100 ids), and 33 tokens
// drawn from the whole vocabulary, the first two at either end of the rank's range.
struct EmbeddingSlice {
  static constexpr int64_t kVocab = 100, kBegin = 50, kRows = 50, kTokens = 33;
  int64_t hidden;
  Rounded table;
  std::vector<int32_t> tokens;
  DeviceBuffer d_table, d_tokens;
  EmbeddingSlice(ElemType t, int64_t hidden_size) : hidden(hidden_size), tokens(kTokens) {
    table = Round(RandomFloats(kRows * hidden), t);
    for (auto& tok : tokens) tok = RandomInt(0, kVocab - 1);
    tokens[0] = kBegin - 1;
    tokens[1] = kBegin;
    d_table = ToDevice(table.bits);
    d_tokens = ToDevice(tokens);
  }
  // What the kernel should write for each token: its row of `rows` (the table as values or
  // bits) when the rank holds it, zeros otherwise.
  template <typename V>
  std::vector<V> Gathered(const std::vector<V>& rows) const {
    std::vector<V> want(kTokens * hidden, V{0});
    for (int64_t r = 0; r < kTokens; ++r) {
      if (tokens[r] < kBegin) continue;
      std::copy_n(rows.begin() + (tokens[r] - kBegin) * hidden, hidden, want.begin() + r * hidden);
    }
    return want;
  }
};

}  // namespace

// A rank's slice of a vocab-parallel embedding: rows of other ranks' tokens are zero.
TG_TEST(embedding_slice_zeroes_other_ranks_tokens) {
  for (ElemType t : kTypes) {
    const EmbeddingSlice s(t, 64);
    const int64_t rows = EmbeddingSlice::kTokens;
    auto d_x = Poisoned(rows * s.hidden * 4);
    LaunchEmbedding(nullptr, t, s.d_table.get(), EmbeddingSlice::kBegin, EmbeddingSlice::kRows,
                    s.d_tokens.as<int32_t>(), rows, s.hidden, d_x.as<float>());
    Expect(std::string("embedding slice ") + Name(t), ToHost(d_x, rows * s.hidden, ElemType::kF32),
           s.Gathered(s.table.values), 0.0);
  }
}

// The shard form for the fused all-reduce: this rank's rows in the table's own bits, zeros (of
// the type) for other ranks' tokens, and the residual zeroed.
TG_TEST(embedding_shard_writes_its_rows_and_zeroes_the_residual) {
  for (ElemType t : kTypes) {
    const EmbeddingSlice s(t, 333);
    const int64_t rows = EmbeddingSlice::kTokens, hidden = s.hidden;
    auto d_rows = Poisoned(rows * hidden * 2), d_residual = Poisoned(rows * hidden * 4);
    LaunchEmbeddingShard(nullptr, t, s.d_table.get(), EmbeddingSlice::kBegin, EmbeddingSlice::kRows,
                         s.d_tokens.as<int32_t>(), rows, hidden, d_rows.get(), d_residual.as<float>());
    std::vector<uint16_t> got(rows * hidden);
    TG_CUDA_CHECK(cudaMemcpy(got.data(), d_rows.get(), got.size() * 2, cudaMemcpyDeviceToHost));
    CHECK(got == s.Gathered(s.table.bits));
    const std::vector<float> residual = ToHost(d_residual, rows * hidden, ElemType::kF32);
    CHECK(std::all_of(residual.begin(), residual.end(), [](float v) { return v == 0.0f && !std::signbit(v); }));
  }
}

// [ranks][rows][shard] back to [rows][vocab], the padding past the vocabulary dropped.
TG_TEST(gather_vocab_shards_interleaves_ranks) {
  for (int64_t ranks : {2, 4}) {
    const int64_t vocab = 1001, shard = (vocab + ranks - 1) / ranks, rows = 5;
    std::vector<float> shards = RandomFloats(ranks * rows * shard);
    auto d_shards = ToDevice(shards);
    auto d_out = Poisoned(rows * vocab * 4);
    LaunchGatherVocabShards(nullptr, d_shards.as<float>(), ranks, rows, shard, vocab, d_out.as<float>());
    std::vector<float> want(rows * vocab);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t id = 0; id < vocab; ++id) want[r * vocab + id] = shards[((id / shard) * rows + r) * shard + id % shard];
    }
    Expect("gather vocab shards ranks " + std::to_string(ranks), ToHost(d_out, rows * vocab, ElemType::kF32), want, 0.0);
  }
}

TG_TEST(add_rms_norm_matches_cpu) {
  for (ElemType t : kTypes) {
    for (int64_t hidden : {8, 64, 1000, 1001, 4096, 8192, 40000}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0: no delta, 1: add + write residual, 2: gathered rows, no write
        const int64_t rows = RandomInt(1, 33);
        auto residual = RandomFloats(rows * hidden, -4.0f, 4.0f);
        Rounded delta = Round(RandomFloats(rows * hidden), t);
        auto weight = RandomFloats(hidden, 0.5f, 1.5f);
        std::vector<int32_t> index;
        int64_t out_rows = rows;
        if (mode == 2) {
          out_rows = RandomInt(1, static_cast<int>(rows));
          for (int64_t i = 0; i < out_rows; ++i) index.push_back(RandomInt(0, static_cast<int>(rows) - 1));
        }
        auto d_res = ToDevice(residual), d_delta = ToDevice(delta.bits), d_w = ToDevice(weight);
        auto d_index = ToDevice(index);
        auto d_out = Poisoned(out_rows * hidden * 2);
        LaunchAddRmsNorm(nullptr, t, d_res.as<float>(), mode == 0 ? nullptr : d_delta.get(), d_w.as<float>(),
                         mode == 2 ? d_index.as<int32_t>() : nullptr, out_rows, hidden, 1e-5f, mode != 2, d_out.get());
        std::vector<float> sum = residual;
        if (mode != 0) for (size_t i = 0; i < sum.size(); ++i) sum[i] += delta.values[i];
        std::vector<float> src(out_rows * hidden), want(out_rows * hidden);
        for (int64_t i = 0; i < out_rows; ++i) {
          int64_t r = mode == 2 ? index[i] : i;
          std::copy_n(sum.begin() + r * hidden, hidden, src.begin() + i * hidden);
        }
        cpu::RmsNorm(src.data(), weight.data(), out_rows, hidden, 1e-5, want.data());
        const std::string what = std::string("add_rms_norm ") + Name(t) + " hidden " + std::to_string(hidden) +
                                 " mode " + std::to_string(mode);
        Expect(what, ToHost(d_out, out_rows * hidden, t), want, Tolerance(t));
        Expect(what + " residual", ToHost(d_res, rows * hidden, ElemType::kF32), mode == 2 ? residual : sum, 1e-6);
      }
    }
  }
}

TG_TEST(silu_mul_matches_cpu) {
  for (ElemType t : kTypes) {
    for (int64_t inter : {1, 172, 1000, 14336}) {
      const int64_t rows = RandomInt(1, 9);
      Rounded gu = Round(RandomFloats(rows * 2 * inter, -6.0f, 6.0f), t);
      auto d_gu = ToDevice(gu.bits);
      auto d_out = Poisoned(rows * inter * 2);
      LaunchSiluMul(nullptr, t, d_gu.get(), rows, inter, d_out.get());
      std::vector<float> want(rows * inter);
      for (int64_t r = 0; r < rows; ++r) {
        const float* g = gu.values.data() + r * 2 * inter;
        cpu::SiluMul(g, g + inter, inter, want.data() + r * inter);
      }
      Expect(std::string("silu_mul ") + Name(t) + " inter " + std::to_string(inter), ToHost(d_out, rows * inter, t),
             want, Tolerance(t));
    }
  }
}

TG_TEST(gemm_matches_cpu) {
  ThreadPool pool(2);
  Gemm gemm;
  struct Shape { int64_t m, n, k; };
  const Shape shapes[] = {{1, 64, 64}, {3, 192, 64}, {17, 344, 64}, {5, 64, 172}, {64, 512, 64}, {200, 768, 256},
                          {1, 4096, 4096}, {37, 1000, 520}, {256, 1024, 4096}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      for (ElemType out_type : {t, ElemType::kF32}) {
        Rounded x = Round(RandomFloats(s.m * s.k), t), w = Round(RandomFloats(s.n * s.k, -0.1f, 0.1f), t);
        auto d_x = ToDevice(x.bits), d_w = ToDevice(w.bits);
        auto d_out = Poisoned(s.m * s.n * ElemSize(out_type));
        gemm.Run(nullptr, d_x.get(), d_w.get(), d_out.get(), s.m, s.n, s.k, t, out_type);
        std::vector<float> want(s.m * s.n);
        cpu::Matmul(pool, x.values.data(), w.values.data(), nullptr, s.m, s.n, s.k, want.data());
        Expect(std::string("gemm ") + Name(t) + "->" + Name(out_type) + " " + std::to_string(s.m) + "x" +
                   std::to_string(s.n) + "x" + std::to_string(s.k),
               ToHost(d_out, s.m * s.n, out_type), want, Tolerance(out_type));
      }
    }
  }
}

// Gemm::RunAddTo and RunSiluDownAddTo, f32 residual += the product, on cuBLASLt shapes and GEMV
// ones (m = 4). The first call of each shape tunes cuBLASLt and times the GEMV kernel and the
// fused SiLU against the alternatives, all of which must write a scratch: it must leave the
// residual plus the product exactly once; the second call (decided) must add it once more.
TG_TEST(gemm_adds_into_residual_once_per_call) {
  ThreadPool pool(2);
  Gemm gemm;
  const ElemType f32 = ElemType::kF32;
  struct Shape { int64_t m, n, k; };
  const Shape shapes[] = {{300, 520, 256}, {4, 520, 256}, {4, 1000, 4096}, {37, 344, 520}};
  for (ElemType t : kTypes) {
    for (const Shape& s : shapes) {
      for (bool silu : {false, true}) {
        const Rounded w = Round(RandomFloats(s.n * s.k, -0.1f, 0.1f), t);
        // x is what Gemm reads: the input, or a gate/up projection whose SiLU-mul is the input.
        const Rounded x = silu ? Round(RandomFloats(s.m * 2 * s.k, -6.0f, 6.0f), t) : Round(RandomFloats(s.m * s.k), t);
        const std::vector<float> input = silu ? SiluMulOnHost(x, s.m, s.k, t).values : x.values;
        std::vector<float> product(s.m * s.n);
        cpu::Matmul(pool, input.data(), w.values.data(), nullptr, s.m, s.n, s.k, product.data());
        const std::vector<float> residual = RandomFloats(s.m * s.n);
        auto d_x = ToDevice(x.bits), d_w = ToDevice(w.bits), d_residual = ToDevice(residual);
        auto d_act = Poisoned(s.m * s.k * ElemSize(t));
        for (int call = 1; call <= 2; ++call) {
          if (silu) {
            gemm.RunSiluDownAddTo(nullptr, d_x.get(), d_act.get(), d_w.get(), d_residual.as<float>(), s.m, s.n, s.k,
                                  t);
          } else {
            gemm.RunAddTo(nullptr, d_x.get(), d_w.get(), d_residual.as<float>(), s.m, s.n, s.k, t);
          }
          std::vector<float> want(residual);
          for (size_t i = 0; i < want.size(); ++i) want[i] += static_cast<float>(call) * product[i];
          Expect(std::string(silu ? "gemm_silu_down_add_to " : "gemm_add_to ") + Name(t) + " " +
                     std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) + " call " +
                     std::to_string(call),
                 ToHost(d_residual, s.m * s.n, f32), want, Tolerance(f32));
        }
      }
    }
  }
}

namespace {



// The sequences' attention metadata on the device, built as CudaLlamaModel builds it.
struct DeviceBatch {
  DeviceBuffer row_start, rows, position, block_start, tables, items;
  int64_t total_rows = 0, num_items = 0;
  AttentionBatch view() const {
    return {row_start.as<int32_t>(), rows.as<int32_t>(), position.as<int32_t>(), block_start.as<int32_t>(),
            tables.as<int32_t>(), items.as<int32_t>(), num_items};
  }
};

DeviceBatch UploadBatch(const std::vector<TestSeq>& seqs, int64_t block_size, int64_t group) {
  HostAttentionBatch host;
  for (const TestSeq& s : seqs) host.Add(s.position, s.rows, s.blocks.data(), block_size, group);
  DeviceBatch b;
  b.row_start = ToDevice(host.seq_row_start);
  b.rows = ToDevice(host.seq_rows);
  b.position = ToDevice(host.seq_position);
  b.block_start = ToDevice(host.seq_block_start);
  b.tables = ToDevice(host.block_tables);
  b.items = ToDevice(host.items);
  b.total_rows = host.rows;
  b.num_items = host.num_items();
  return b;
}

}  // namespace

TG_TEST(rope_kv_write_matches_cpu) {
  struct Case { int64_t q_heads, kv_heads, head_dim, block_size; RopeScaling scaling; bool bias; };
  const Case cases[] = {{8, 8, 64, 16, RopeScaling::kNone, false},   {32, 8, 128, 16, RopeScaling::kLlama3, false},
                        {8, 4, 8, 16, RopeScaling::kNone, false},    {14, 2, 64, 16, RopeScaling::kNone, true},
                        {16, 2, 128, 7, RopeScaling::kLinear, false}, {8, 1, 256, 32, RopeScaling::kDynamic, false}};
  // Decode-sized steps (CTAs of 4 heads) and prefill-sized ones (a CTA per row).
  for (bool prefill : {false, true}) {
    for (ElemType t : kTypes) {
      for (const Case& cs : cases) {
        RopeConfig rope;
        rope.theta = cs.scaling == RopeScaling::kLlama3 ? 500000.0 : 10000.0;
        rope.scaling = cs.scaling;
        rope.factor = cs.scaling == RopeScaling::kNone ? 1.0 : 4.0;
        rope.original_max_position_embeddings = 64;
        const int64_t max_pos = 64, d = cs.head_dim, half = d / 2;
        int64_t num_blocks = 0;
        auto seqs = MakeSeqs({{0, prefill ? RandomInt(256, 400) : RandomInt(1, 40)}, {RandomInt(1, 200), 1},
                              {RandomInt(10, 90), RandomInt(2, 30)}},
                             cs.block_size, &num_blocks);
        const int64_t width = (cs.q_heads + 2 * cs.kv_heads) * d;
        std::vector<int32_t> positions, slot_block, slot_offset, freq_index;
        std::vector<float> inv_freq;
        for (size_t s = 0; s < seqs.size(); ++s) {
          auto f = cpu::RopeInvFreq(rope, d, max_pos, seqs[s].position + seqs[s].rows);
          inv_freq.insert(inv_freq.end(), f.begin(), f.end());
          for (int64_t i = 0; i < seqs[s].rows; ++i) {
            int64_t p = seqs[s].position + i;
            positions.push_back(static_cast<int32_t>(p));
            slot_block.push_back(seqs[s].blocks[p / cs.block_size]);
            slot_offset.push_back(static_cast<int32_t>(p % cs.block_size));
            freq_index.push_back(static_cast<int32_t>(s));
          }
        }
        const int64_t rows = static_cast<int64_t>(positions.size());
        Rounded qkv = Round(RandomFloats(rows * width), t);
        auto bias = RandomFloats(width);
        HostCache hc{num_blocks, cs.kv_heads, cs.block_size, d};
        auto d_qkv = ToDevice(qkv.bits), d_bias = ToDevice(bias), d_pos = ToDevice(positions),
             d_freq = ToDevice(inv_freq), d_fi = ToDevice(freq_index), d_sb = ToDevice(slot_block),
             d_so = ToDevice(slot_offset);
        auto d_q = Poisoned(rows * cs.q_heads * d * 2), d_k = Poisoned(hc.size() * 2), d_v = Poisoned(hc.size() * 2);
        LaunchRopeKvWrite(nullptr, t, d_qkv.get(), cs.bias ? d_bias.as<float>() : nullptr, d_pos.as<int32_t>(),
                          d_freq.as<float>(), d_fi.as<int32_t>(), d_sb.as<int32_t>(), d_so.as<int32_t>(), rows,
                          cs.q_heads, cs.kv_heads, d, d_q.get(), KvLayer{d_k.get(), d_v.get(), cs.block_size});
        auto q_got = ToHost(d_q, rows * cs.q_heads * d, t), k_all = ToHost(d_k, hc.size(), t),
             v_all = ToHost(d_v, hc.size(), t);
        std::vector<float> q_want, k_want, v_want, k_got, v_got;
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<float> row(qkv.values.begin() + r * width, qkv.values.begin() + (r + 1) * width);
          if (cs.bias) for (int64_t i = 0; i < width; ++i) row[i] += bias[i];
          const float* f = inv_freq.data() + freq_index[r] * half;
          cpu::ApplyRope(row.data(), cs.q_heads, d, positions[r], f);
          cpu::ApplyRope(row.data() + cs.q_heads * d, cs.kv_heads, d, positions[r], f);
          q_want.insert(q_want.end(), row.begin(), row.begin() + cs.q_heads * d);
          for (int64_t h = 0; h < cs.kv_heads; ++h) {
            for (int64_t i = 0; i < d; ++i) {
              int64_t at = hc.Index(slot_block[r], h, slot_offset[r], i);
              k_want.push_back(row[(cs.q_heads + h) * d + i]);
              v_want.push_back(row[(cs.q_heads + cs.kv_heads + h) * d + i]);
              k_got.push_back(k_all[at]);
              v_got.push_back(v_all[at]);
            }
          }
        }
        const std::string what = std::string("rope_kv_write ") + Name(t) + " heads " + std::to_string(cs.q_heads) +
                                 "/" + std::to_string(cs.kv_heads) + " d " + std::to_string(d) + " scaling " +
                                 std::to_string(static_cast<int>(cs.scaling)) + " rows " + std::to_string(rows);
        Expect(what + " q", q_got, q_want, Tolerance(t));
        Expect(what + " k", k_got, k_want, Tolerance(t));
        Expect(what + " v", v_got, v_want, Tolerance(t));
      }
    }
  }
}

TG_TEST(paged_attention_matches_cpu) {
  struct Case {
    int64_t q_heads, kv_heads, head_dim, block_size, window;
    std::vector<std::pair<int64_t, int64_t>> seqs;  // (cached positions, new rows)
  };
  const std::vector<Case> cases = {
      {8, 8, 64, 16, 0, {{0, 1}, {0, 15}, {0, 16}, {0, 17}}},                       // GQA 1, block boundaries
      {32, 8, 128, 16, 0, {{0, 33}, {100, 1}, {31, 1}, {47, 20}}},                  // GQA 4, mixed batch
      {32, 4, 128, 16, 0, {{513, 1}, {0, 300}, {16, 16}}},                          // GQA 8, long decode
      {8, 4, 8, 16, 0, {{0, 5}, {37, 1}, {12, 9}}},                                 // stories260k's shape
      {16, 2, 64, 7, 0, {{0, 50}, {6, 1}, {70, 13}}},                               // odd block size
      {8, 8, 128, 16, 24, {{0, 70}, {90, 1}, {40, 10}}},                            // sliding window
      {16, 2, 256, 16, 0, {{0, 19}, {64, 1}}},                                      // head dim 256
      {10, 2, 80, 16, 0, {{0, 21}, {40, 1}, {3, 30}}},                              // head dim 80 (generic path)
      {32, 8, 128, 16, 0, {{2047, 1}, {1000, 1}, {1, 1}, {0, 1}, {1500, 3}}},       // decode-heavy
      {24, 8, 128, 16, 0, {{0, 11}, {77, 1}, {20, 6}, {300, 1}}},                   // GQA 3: items straddle rows
      {16, 16, 128, 32, 0, {{100, 1}, {0, 40}, {33, 1}, {500, 2}}},                 // GQA 1, block size 32
      {32, 4, 64, 16, 50, {{0, 31}, {200, 1}, {70, 9}, {1030, 1}}},                 // GQA 8, window, d 64
      {8, 2, 128, 5, 0, {{0, 1}, {2, 1}, {9, 3}, {400, 1}, {250, 31}}},             // block size 5, short seqs
      {16, 4, 64, 16, 0, {{1, 1}, {0, 2}, {15, 1}, {16, 1}, {4000, 1}}},            // d 64, short and long
  };
  for (ElemType t : kTypes) {
    for (const Case& cs : cases) {
      const int64_t d = cs.head_dim, group = cs.q_heads / cs.kv_heads;
      int64_t num_blocks = 0;
      auto seqs = MakeSeqs(cs.seqs, cs.block_size, &num_blocks);
      HostCache hc{num_blocks, cs.kv_heads, cs.block_size, d};
      Rounded k = Round(RandomFloats(hc.size()), t), v = Round(RandomFloats(hc.size()), t);
      const DeviceBatch db = UploadBatch(seqs, cs.block_size, group);
      const int64_t rows = db.total_rows;
      // Scores of O(1) spread so the softmax is neither flat nor one-hot.
      Rounded q = Round(RandomFloats(rows * cs.q_heads * d, -2.0f, 2.0f), t);
      auto d_k = ToDevice(k.bits), d_v = ToDevice(v.bits), d_q = ToDevice(q.bits);
      const AttentionBatch batch = db.view();
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      std::vector<float> want(rows * cs.q_heads * d), scores;
      int64_t row = 0;
      for (const TestSeq& s : seqs) {
        for (int64_t i = 0; i < s.rows; ++i, ++row) {
          const int64_t pos = s.position + i;
          const int64_t first = cs.window > 0 ? std::max<int64_t>(0, pos - cs.window + 1) : 0;
          const int64_t count = pos + 1 - first;
          scores.resize(count);
          for (int64_t h = 0; h < cs.q_heads; ++h) {
            const int64_t kvh = h / group;
            auto at = [&](int64_t j) {
              int64_t p = first + j;
              return hc.Index(s.blocks[p / cs.block_size], kvh, p % cs.block_size, 0);
            };
            cpu::AttendOneHead(
                q.values.data() + (row * cs.q_heads + h) * d, d, count, scale,
                [&](int64_t j) { return k.values.data() + at(j); }, [&](int64_t j) { return v.values.data() + at(j); },
                scores.data(), want.data() + (row * cs.q_heads + h) * d);
          }
        }
      }
      std::string shape;
      for (auto& [p, n] : cs.seqs) shape += " (" + std::to_string(p) + "+" + std::to_string(n) + ")";
      // One pass, split-KV as the model would pick it, uneven forced splits, and many
      // splits of short sequences (most of them empty: they must add nothing).
      const int64_t items_n = db.num_items;
      int64_t max_keys = 0;
      for (auto& [p, n] : cs.seqs) max_keys = std::max(max_keys, p + n);
      // With split-KV, the splits are merged by a second kernel (no counters) and in the
      // attention kernel itself (counters); the counters are used twice in a row and must be
      // zero after each call, as the next one needs them.
      const int64_t counters_n = AttentionCounterCount(items_n, cs.kv_heads);
      DeviceBuffer d_counters(counters_n * sizeof(int32_t));
      TG_CUDA_CHECK(cudaMemset(d_counters.get(), 0, d_counters.bytes()));
      for (int splits : {1, AttentionSplits(items_n, cs.kv_heads, max_keys, 132), 3, 7, 33, 64}) {
        for (int pass = 0; pass < (splits > 1 ? 3 : 1); ++pass) {
          const bool counted = pass > 0;
          AttentionBatch view = batch;
          view.split_counters = counted ? d_counters.as<int32_t>() : nullptr;
          auto d_out = Poisoned(rows * cs.q_heads * d * 2);
          auto d_ws = Poisoned(std::max<size_t>(AttentionWorkspaceBytes(items_n, cs.kv_heads, d, splits), 4));
          LaunchPagedAttention(nullptr, t, d_q.get(), KvLayer{d_k.get(), d_v.get(), cs.block_size}, view, cs.q_heads,
                               cs.kv_heads, d, cs.window, scale, splits, d_ws.as<float>(), d_out.get());
          const std::string name = std::string("paged_attention ") + Name(t) + " heads " +
                                   std::to_string(cs.q_heads) + "/" + std::to_string(cs.kv_heads) + " d " +
                                   std::to_string(d) + " bs " + std::to_string(cs.block_size) + " window " +
                                   std::to_string(cs.window) + " splits " + std::to_string(splits) +
                                   (counted ? " merged in-kernel (call " + std::to_string(pass) + ")" : "") + shape;
          Expect(name, ToHost(d_out, rows * cs.q_heads * d, t), want, Tolerance(t));
          if (counted) {
            std::vector<int32_t> left(static_cast<size_t>(counters_n));
            TG_CUDA_CHECK(cudaMemcpy(left.data(), d_counters.get(), d_counters.bytes(), cudaMemcpyDeviceToHost));
            const int64_t nonzero = std::count_if(left.begin(), left.end(), [](int32_t c) { return c != 0; });
            if (nonzero != 0) std::printf("  FAIL %s: %lld split counters left non-zero\n", name.c_str(), static_cast<long long>(nonzero));
            CHECK(nonzero == 0);
          }
        }
      }
    }
  }
}

namespace {

// Decode attention as a decode graph runs it: one launch per layer (32) captured in one
// graph, each layer's K/V in its own cache so none is read from L2, µs per launch; by split
// count, with the splits merged in the kernel (split counters) and by the merge kernel.
void DecodeAttentionInGraphs() {
  const ElemType t = ElemType::kBF16;
  const int64_t qh = 32, kvh = 8, d = 128, bs = 16, layers = 32;
  cudaStream_t stream = nullptr;
  TG_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int sms = 0;
  TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int64_t seqs : {1, 16}) {
    for (int64_t context : {256, 1024, 4096}) {
      std::vector<std::pair<int64_t, int64_t>> shape(seqs, {context, 1});
      int64_t num_blocks = 0;
      auto batch_seqs = MakeSeqs(shape, bs, &num_blocks);
      const DeviceBatch db = UploadBatch(batch_seqs, bs, qh / kvh);
      const int64_t cache_elems = num_blocks * kvh * bs * d;
      const DeviceBuffer kv_block = ToDevice(Round(RandomFloats(cache_elems), t).bits);
      std::vector<DeviceBuffer> k, v;
      for (int64_t l = 0; l < layers; ++l) {
        k.emplace_back(kv_block.bytes());
        v.emplace_back(kv_block.bytes());
        TG_CUDA_CHECK(cudaMemcpy(k.back().get(), kv_block.get(), kv_block.bytes(), cudaMemcpyDeviceToDevice));
        TG_CUDA_CHECK(cudaMemcpy(v.back().get(), kv_block.get(), kv_block.bytes(), cudaMemcpyDeviceToDevice));
      }
      const auto d_q = ToDevice(Round(RandomFloats(db.total_rows * qh * d), t).bits);
      DeviceBuffer d_out(db.total_rows * qh * d * 2);
      DeviceBuffer counters(AttentionCounterCount(db.num_items, kvh) * sizeof(int32_t));
      TG_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
      const int model_splits = AttentionSplits(db.num_items, kvh, int64_t{1} << 20, sms);  // as graphs pick it
      for (int splits : {1, 2, 4, 8, 16, 33, 64}) {
        if (splits > 1 && splits > 2 * model_splits) continue;
        DeviceBuffer ws(std::max<size_t>(AttentionWorkspaceBytes(db.num_items, kvh, d, splits), 4));
        for (bool in_kernel : {true, false}) {
          if (splits == 1 && !in_kernel) continue;
          AttentionBatch batch = db.view();
          batch.split_counters = in_kernel ? counters.as<int32_t>() : nullptr;
          const double us = GraphUs(stream, static_cast<int>(layers), [&](int l) {
            LaunchPagedAttention(stream, t, d_q.get(), KvLayer{k[l].get(), v[l].get(), bs}, batch, qh, kvh, d, 0,
                                 0.088f, splits, ws.as<float>(), d_out.get());
          });
          const double kv_bytes = 2.0 * 2 * seqs * (context + 1) * kvh * d;
          std::printf("RESULT perf attention-graph seqs %2lld context %4lld splits %2d%s (%s): %6.2f us per layer, "
                      "%5.0f GB/s of KV\n",
                      static_cast<long long>(seqs), static_cast<long long>(context), splits,
                      splits == model_splits ? "*" : " ", splits == 1 ? "no split" : in_kernel ? "merged in kernel"
                                                                                                : "merge kernel",
                      us, kv_bytes / us / 1e3);
        }
      }
    }
  }
  std::printf("(* the split count the decode graphs pick for this batch)\n");
  TG_CUDA_CHECK(cudaStreamDestroy(stream));
}

// Perf mode (like test-backend-ops perf): the Llama-3-8B layer's GEMMs and attention, bf16.
void Perf() {
  const ElemType t = ElemType::kBF16;
  std::printf("perf, bf16, Llama-3-8B shapes (median of 20 runs):\n");
  Gemm gemm;
  struct G { const char* name; int64_t n, k; };
  const G gemms[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336},
                     {"lm_head", 128256, 4096}};
  for (const G& g : gemms) {
    auto d_w = ToDevice(Round(RandomFloats(g.n * g.k, -0.1f, 0.1f), t).bits);
    for (int64_t m : {1, 16, 64, 256, 1024, 4096}) {
      auto d_x = ToDevice(Round(RandomFloats(m * g.k), t).bits);
      const ElemType out_type = std::string(g.name) == "lm_head" ? ElemType::kF32 : t;
      DeviceBuffer d_out(m * g.n * ElemSize(out_type));
      double ms = TimeMs(20, [&] { gemm.Run(nullptr, d_x.get(), d_w.get(), d_out.get(), m, g.n, g.k, t, out_type); });
      const double bytes = 2.0 * (g.n * g.k + m * g.k) + ElemSize(out_type) * m * g.n;
      std::printf("RESULT perf gemm %-8s m %5lld n %6lld k %5lld: %8.4f ms %7.1f TFLOP/s %6.0f GB/s\n", g.name,
                  static_cast<long long>(m), static_cast<long long>(g.n), static_cast<long long>(g.k), ms,
                  2.0 * m * g.n * g.k / ms / 1e9, bytes / ms / 1e6);
    }
  }
  // Attention: 32 query heads, 8 KV heads, d 128, blocks of 16.
  const int64_t qh = 32, kvh = 8, d = 128, bs = 16;
  struct A { const char* name; int64_t seqs, context, rows; };
  const A atts[] = {{"decode", 1, 1024, 1},   {"decode", 16, 1024, 1}, {"decode", 64, 1024, 1},
                    {"decode", 256, 1024, 1}, {"decode", 1, 8192, 1},  {"prefill", 1, 0, 1024},
                    {"prefill", 1, 0, 4096}};
  for (const A& a : atts) {
    std::vector<std::pair<int64_t, int64_t>> shape(a.seqs, {a.context, a.rows});
    int64_t num_blocks = 0;
    auto seqs = MakeSeqs(shape, bs, &num_blocks);
    const int64_t cache_elems = num_blocks * kvh * bs * d;
    Rounded kv = Round(RandomFloats(cache_elems), t);
    auto d_k = ToDevice(kv.bits), d_v = ToDevice(kv.bits);
    const DeviceBatch db = UploadBatch(seqs, bs, qh / kvh);
    const int64_t rows = db.total_rows;
    Rounded q = Round(RandomFloats(rows * qh * d), t);
    auto d_q = ToDevice(q.bits);
    DeviceBuffer d_out(rows * qh * d * 2);
    const int64_t n_items = db.num_items;
    const AttentionBatch batch = db.view();
    int sms = 0;
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const int splits = AttentionSplits(n_items, kvh, a.context + a.rows, sms);
    DeviceBuffer ws(std::max<size_t>(AttentionWorkspaceBytes(n_items, kvh, d, splits), 4));
    double ms = TimeMs(20, [&] {
      LaunchPagedAttention(nullptr, t, d_q.get(), KvLayer{d_k.get(), d_v.get(), bs}, batch, qh, kvh, d, 0,
                           0.088f, splits, ws.as<float>(), d_out.get());
    });
    const int64_t keys = a.context + a.rows;
    const double kv_bytes = 2.0 * 2 * a.seqs * keys * kvh * d;
    const double flops = a.rows == 1 ? 4.0 * a.seqs * keys * qh * d : 2.0 * a.rows * a.rows * qh * d;
    std::printf("RESULT perf attention %-7s seqs %3lld context %5lld rows %5lld splits %2d: %8.4f ms %7.1f TFLOP/s "
                "%6.0f GB/s of KV\n",
                a.name, static_cast<long long>(a.seqs), static_cast<long long>(a.context),
                static_cast<long long>(a.rows), splits, ms, flops / ms / 1e9, kv_bytes / ms / 1e6);
  }
  DecodeAttentionInGraphs();
}

}  // namespace

int main(int argc, char** argv) {
  return KernelTestMain(argc, argv, [] { Perf(); return 0; }, [](int rc) {
    std::printf("worst relative error per op over %d comparisons:\n", cases_run);
    for (auto& [key, w] : worst) std::printf("  %-28s %.3g (tolerance %.3g)\n", key.c_str(), w.first, w.second);
    std::printf("%s\n", rc == 0 ? "all kernel tests passed" : "SOME KERNEL TESTS FAILED");
  });
}
