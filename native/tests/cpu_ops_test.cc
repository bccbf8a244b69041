// The CPU backend's kernels against naive double-precision loops, and the
// properties the engine relies on: batch-invariant matmul rows, complete
// thread-pool coverage, RoPE frequencies of each scaling, KV slot layout.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cpu/thread_pool.h"
#include "kv/kv_cache.h"
#include "test_util.h"

using namespace tg;

static std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

TG_TEST(thread_pool_covers_every_index_once) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 100, 1001}) {
    std::vector<int> hits(static_cast<size_t>(n), 0);
    pool.ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
    });
    CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
}

TG_TEST(matmul_matches_naive_with_bias) {
  ThreadPool pool(2);
  const int64_t m = 5, n = 37, k = 83;  // odd sizes: every tail path
  auto x = Random(m * k, 1), w = Random(n * k, 2), bias = Random(n, 3);
  std::vector<float> out(m * n);
  cpu::Matmul(pool, x.data(), w.data(), bias.data(), m, n, k, out.data());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = bias[j];
      for (int64_t p = 0; p < k; ++p) s += static_cast<double>(x[i * k + p]) * w[j * k + p];
      CHECK_NEAR(out[i * n + j], s, 1e-4);
    }
  }
}

TG_TEST(matmul_rows_do_not_depend_on_the_batch) {
  ThreadPool pool(2);
  const int64_t m = 9, n = 130, k = 67;
  auto x = Random(m * k, 4), w = Random(n * k, 5);
  std::vector<float> all(m * n), one(n);
  cpu::Matmul(pool, x.data(), w.data(), nullptr, m, n, k, all.data());
  for (int64_t i = 0; i < m; ++i) {
    cpu::Matmul(pool, x.data() + i * k, w.data(), nullptr, 1, n, k, one.data());
    CHECK(std::equal(one.begin(), one.end(), all.begin() + i * n));  // bit-identical
  }
}

TG_TEST(rmsnorm_and_silu) {
  std::vector<float> x = {1, -2, 3, -4}, w = {1, 2, 1, 0.5f}, out(4);
  cpu::RmsNorm(x.data(), w.data(), 1, 4, 0.0, out.data());
  double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0);
  CHECK_NEAR(out[1], -2 * 2 / rms, 1e-6);
  CHECK_NEAR(out[3], -4 * 0.5 / rms, 1e-6);
  std::vector<float> g = {0, 2}, u = {3, 1}, s(2);
  cpu::SiluMul(g.data(), u.data(), 2, s.data());
  CHECK_NEAR(s[0], 0, 1e-7);
  CHECK_NEAR(s[1], 2 / (1 + std::exp(-2.0)), 1e-6);
}

TG_TEST(rope_rotates_first_half_against_second) {
  std::vector<float> inv = {1.0f, 0.5f};
  std::vector<float> x = {1, 2, 3, 4};  // one head of 4: pairs (1, 3) and (2, 4)
  cpu::ApplyRope(x.data(), 1, 4, 2, inv.data());
  CHECK_NEAR(x[0], 1 * std::cos(2.0) - 3 * std::sin(2.0), 1e-6);
  CHECK_NEAR(x[2], 3 * std::cos(2.0) + 1 * std::sin(2.0), 1e-6);
  CHECK_NEAR(x[1], 2 * std::cos(1.0) - 4 * std::sin(1.0), 1e-6);
  CHECK_NEAR(x[3], 4 * std::cos(1.0) + 2 * std::sin(1.0), 1e-6);
}

TG_TEST(rope_frequencies_of_each_scaling) {
  RopeConfig rope;
  rope.theta = 10000;
  auto plain = cpu::RopeInvFreq(rope, 8, 512, 10);
  CHECK_NEAR(plain[0], 1.0, 1e-7);
  CHECK_NEAR(plain[1], std::pow(10000.0, -0.25), 1e-7);
  rope.scaling = RopeScaling::kLinear;
  rope.factor = 4;
  CHECK_NEAR(cpu::RopeInvFreq(rope, 8, 512, 10)[1], plain[1] / 4, 1e-7);
  // Dynamic NTK: unchanged up to max positions, a larger base past them.
  rope.scaling = RopeScaling::kDynamic;
  rope.factor = 2;
  CHECK_NEAR(cpu::RopeInvFreq(rope, 8, 512, 512)[1], plain[1], 1e-7);
  double base = 10000 * std::pow(2.0 * 1024 / 512 - 1, 8.0 / 6.0);
  CHECK_NEAR(cpu::RopeInvFreq(rope, 8, 512, 1024)[1], std::pow(base, -0.25), 1e-7);
  // llama3: high frequencies kept, low ones divided by factor, the band between smoothed.
  rope = RopeConfig();
  rope.theta = 500000;
  rope.scaling = RopeScaling::kLlama3;
  rope.factor = 8;
  rope.low_freq_factor = 1;
  rope.high_freq_factor = 4;
  rope.original_max_position_embeddings = 8192;
  auto base3 = cpu::RopeInvFreq(RopeConfig{500000}, 128, 8192, 1);
  auto l3 = cpu::RopeInvFreq(rope, 128, 8192, 1);
  CHECK_NEAR(l3[0], base3[0], 1e-9);                    // wavelength 2π < 2048
  CHECK_NEAR(l3[63], base3[63] / 8, 1e-12);              // wavelength > 8192
  int medium = 0;
  for (size_t i = 0; i < l3.size(); ++i) {
    double wavelen = 2 * M_PI / base3[i];
    if (wavelen >= 2048 && wavelen <= 8192) {
      ++medium;
      double smooth = (8192 / wavelen - 1) / 3;
      CHECK_NEAR(l3[i], (1 - smooth) * base3[i] / 8 + smooth * base3[i], 1e-9);
    }
  }
  CHECK(medium > 0);
}

TG_TEST(kv_cache_slots_are_disjoint) {
  KvCache cache(3, 4, 2, 2, 8);
  CHECK(cache.token_stride() == 16);
  CHECK(KvCache::BytesPerBlock(4, 2, 2, 8) == 2 * 2 * 4 * 16 * 4);
  std::vector<const float*> seen;
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t l = 0; l < 2; ++l)
      for (bool v : {false, true})
        for (int64_t s = 0; s < 4; ++s) seen.push_back(cache.Slot(b, l, v, s));
  std::sort(seen.begin(), seen.end());
  for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] - seen[i - 1] == 16);
  CHECK_THROWS_WITH(KvCache(0, 4, 2, 2, 8), "at least 1 block");
}

TG_TEST_MAIN()
