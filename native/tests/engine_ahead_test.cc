// Tests of Engine::Step's decode steps run ahead, which only the CUDA runner does: the
// real Engine over fake device runners (fake_device_runner.h), so that CI, without a GPU,
// checks the bookkeeping. Each scenario runs on two engines, one asked to run ahead and
// one not, whose results must be the same; the steps each fake device was asked for
// show which results came from a step run ahead.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <set>
#include <vector>

#include "engine/engine.h"
#include "fake_device_runner.h"
#include "test_util.h"

using tg::SamplingParams;
using tg::StepInput;
using tg::StepResult;
using tgtest::FakeDeviceRunner;

namespace {

constexpr int64_t kVocab = 256;
constexpr int64_t kBlockSize = 4;
constexpr int64_t kNumBlocks = 64;
constexpr int64_t kBlocksPerRequest = 8;       // 32 positions, more than any scenario uses
constexpr int32_t kSpareBlock = kNumBlocks - 1;  // no request's own

tg::EngineOptions Options() {
  tg::EngineOptions o;
  o.config.architecture = "llama";
  o.config.hidden_size = 8;
  o.config.intermediate_size = 16;
  o.config.num_layers = 1;
  o.config.num_heads = 2;
  o.config.num_kv_heads = 1;
  o.config.head_dim = 4;
  o.config.vocab_size = kVocab;
  o.device = "cuda";  // what the fake stands in for; a runner given to Engine is not made from it
  o.block_size = kBlockSize;
  return o;
}

// An engine over its own fake device, whose counts the test reads.
struct FakeEngine {
  FakeEngine() : device(new FakeDeviceRunner(kVocab)), engine(Options(), std::unique_ptr<tg::ModelRunner>(device)) {
    engine.AllocateKvCache(kNumBlocks);
  }
  FakeDeviceRunner* device;  // owned by engine
  tg::Engine engine;
};

bool SameResult(const StepResult& a, const StepResult& b) {
  return a.id == b.id && a.sampled == b.sampled && a.token == b.token && a.logprob == b.logprob &&
         a.top_ids == b.top_ids && a.top_logprobs == b.top_logprobs && a.has_prompt_logprobs == b.has_prompt_logprobs;
}

// The same scenario on two engines: one asks for decode steps run ahead, the reference doesn't.
class AheadAndReference {
 public:
  // The results, after checking that both engines returned them.
  std::vector<StepResult> Step(const std::vector<StepInput>& inputs) {
    const std::vector<StepResult> got = ahead_.engine.Step(inputs, true);
    const std::vector<StepResult> want = reference_.engine.Step(inputs, false);
    CHECK(got.size() == want.size());
    for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
      if (SameResult(got[i], want[i])) continue;
      std::printf("  sequence %lld at position %lld: token %d run ahead, %d without\n",
                  static_cast<long long>(inputs[i].id), static_cast<long long>(inputs[i].position), got[i].token,
                  want[i].token);
      ++tgtest::Failures();
    }
    // At most the step run ahead is left queued: a step nobody asked for was waited for.
    CHECK(ahead_.device->busy_slots() <= 1);
    CHECK(reference_.device->counts().ahead_steps == 0);
    return want;
  }
  // The next step fails on both devices (a row without a finite logit).
  void FailNextFinish() {
    ahead_.device->FailNextFinish();
    reference_.device->FailNextFinish();
  }
  void ExpectFailure(const std::vector<StepInput>& inputs, const char* why) {
    CHECK_THROWS_WITH(ahead_.engine.Step(inputs, true), why);
    CHECK_THROWS_WITH(reference_.engine.Step(inputs, false), why);
  }
  void Release(const std::vector<int64_t>& ids) {
    ahead_.engine.Release(ids);
    reference_.engine.Release(ids);
  }
  void AllocateKvCache() {
    ahead_.engine.AllocateKvCache(kNumBlocks);
    reference_.engine.AllocateKvCache(kNumBlocks);
  }
  // The steps the ahead engine's device was asked for.
  const FakeDeviceRunner::Counts& counts() const { return ahead_.device->counts(); }
  int busy_slots() const { return ahead_.device->busy_slots(); }

 private:
  FakeEngine ahead_, reference_;
};

// Seeded sampling: the fake's draw depends on the seed and the draw's counter, which
// must be the one the reference engine uses.
SamplingParams Seeded(uint64_t seed) {
  SamplingParams p;
  p.do_sample = true;
  p.seed = seed;
  return p;
}

// One sequence as a scheduler drives it: its next input (the prompt, then the token it
// sampled last), where that goes, and its KV blocks.
struct Request {
  Request(int64_t id_, std::vector<int32_t> prompt, SamplingParams params_ = {})
      : id(id_), next(std::move(prompt)), params(params_) {
    for (int64_t b = 0; b < kBlocksPerRequest; ++b) {
      blocks.push_back(static_cast<int32_t>(1 + (id - 1) * kBlocksPerRequest + b));
    }
  }
  StepInput Input() const {
    StepInput in;
    in.id = id;
    in.tokens = next;
    in.position = position;
    in.blocks = blocks;
    in.sample = sample;
    in.top_n = sample ? top_n : 0;
    if (!started) in.init = tg::StepInit{params, {}};
    return in;
  }
  // Feeds back the sampled token; after a prefill chunk that samples nothing, the test
  // sets the next chunk.
  void Advance(const StepResult& r) {
    position += static_cast<int64_t>(next.size());
    next = r.sampled ? std::vector<int32_t>{r.token} : std::vector<int32_t>{};
    started = true;
  }

  int64_t id;
  std::vector<int32_t> next;
  int64_t position = 0;
  std::vector<int32_t> blocks;
  SamplingParams params;
  int32_t top_n = 0;
  bool sample = true;  // false for a prefill chunk before the prompt's last
  bool started = false;
};

// One step of `batch` on both engines; each request is then fed the token it sampled.
std::vector<StepResult> StepBatch(AheadAndReference& engines, const std::vector<Request*>& batch) {
  std::vector<StepInput> inputs;
  for (const Request* r : batch) inputs.push_back(r->Input());
  std::vector<StepResult> results = engines.Step(inputs);
  for (size_t i = 0; i < batch.size() && i < results.size(); ++i) batch[i]->Advance(results[i]);
  return results;
}

void StepBatchTimes(AheadAndReference& engines, const std::vector<Request*>& batch, int times) {
  for (int i = 0; i < times; ++i) StepBatch(engines, batch);
}

}  // namespace

TG_TEST(BatchOfOneDecodesFromTheStepInFlight) {
  for (const SamplingParams& params : {SamplingParams{}, Seeded(1234)}) {
    AheadAndReference engines;
    Request a(1, {5, 9, 2}, params);
    StepBatch(engines, {&a});  // the prefill, with the first decode queued behind it
    std::set<int32_t> tokens;
    for (int i = 0; i < 20; ++i) tokens.insert(StepBatch(engines, {&a})[0].token);
    CHECK(engines.counts().steps == 1);  // every decode came from the step in flight
    CHECK(engines.counts().ahead_steps == 21);
    CHECK(tokens.size() > 5);  // the fake's tokens vary, so a wrong one shows
  }
}

TG_TEST(StoppedSequenceLeavesTheOthersRunningAhead) {
  AheadAndReference engines;
  Request a(1, {3, 1, 4}), b(2, {1, 5}), c(3, {9, 2, 6, 5}, Seeded(7));
  StepBatch(engines, {&a, &b, &c});
  StepBatchTimes(engines, {&a, &b, &c}, 4);
  // b stops: its row of the step in flight is dropped, and a and c are fed from rows 0 and 2.
  engines.Release({2});
  StepBatchTimes(engines, {&a, &c}, 4);
  StepBatchTimes(engines, {&c, &a}, 4);  // in another order, fed from rows 1 and 0
  CHECK(engines.counts().steps == 1);
  CHECK(engines.counts().ahead_steps == 13);
}

TG_TEST(PausedSequenceTakesItsResultLater) {
  AheadAndReference engines;
  Request a(1, {2, 2, 8}, Seeded(8)), b(2, {7, 1});
  StepBatch(engines, {&a, &b});
  StepBatchTimes(engines, {&a, &b}, 3);
  StepBatchTimes(engines, {&b}, 2);  // a sits out: its result run ahead comes back and waits
  // Back together: a's waiting result and b's in flight are taken, the next step is
  // computed (no device step holds both their tokens) and the rest are run ahead.
  StepBatch(engines, {&a, &b});
  StepBatchTimes(engines, {&a, &b}, 5);
  CHECK(engines.counts().steps == 2);
}

TG_TEST(TwoBatchesDecodedInTurn) {
  // Each step leaves the other batch's results run ahead waiting; none may go stale.
  AheadAndReference engines;
  Request a(1, {1, 1, 2}), b(2, {3, 5}, Seeded(3)), c(3, {8, 13});
  StepBatch(engines, {&a, &b, &c});
  StepBatchTimes(engines, {&a, &b, &c}, 2);
  for (int i = 0; i < 6; ++i) {
    StepBatch(engines, {&a, &c});
    StepBatch(engines, {&b});
  }
  StepBatchTimes(engines, {&a, &b, &c}, 3);
}

TG_TEST(JoiningSequenceThenSteadyStateAgain) {
  // c's prompt comes in a step of its own, in the step of a and b's next decode (the
  // shard's Prefill over a cached batch), or chunked over that step and the next.
  enum class Join { kAlone, kWithTheBatch, kInTwoChunks };
  for (Join join : {Join::kAlone, Join::kWithTheBatch, Join::kInTwoChunks}) {
    AheadAndReference engines;
    Request a(1, {4, 6}), b(2, {3, 3, 3}), c(3, {8, 1, 9}, Seeded(5));
    StepBatch(engines, {&a, &b});
    StepBatchTimes(engines, {&a, &b}, 3);
    if (join == Join::kAlone) {
      StepBatch(engines, {&c});
    } else if (join == Join::kWithTheBatch) {
      StepBatch(engines, {&a, &b, &c});
    } else {
      c.next = {8, 1};
      c.sample = false;
      StepBatch(engines, {&a, &b, &c});
      c.next = {9};
      c.sample = true;
      StepBatch(engines, {&a, &b, &c});
    }
    StepBatchTimes(engines, {&a, &b, &c}, 2);
    const int64_t steps = engines.counts().steps;
    StepBatchTimes(engines, {&a, &b, &c}, 6);
    CHECK(engines.counts().steps == steps);  // all from steps run ahead again
  }
}

TG_TEST(RewrittenTokenTopNOrBlocksTakeNoStaleResult) {
  AheadAndReference engines;
  Request a(1, {7, 7, 1});
  StepBatch(engines, {&a});
  StepBatchTimes(engines, {&a}, 3);
  // Each change below makes the step in flight one that nobody asks for: it is waited
  // for and dropped, the step is computed anew, and the next one runs ahead again.
  auto expect_computed_then_ahead = [&](const char* what) {
    const int failures = tgtest::Failures();
    const FakeDeviceRunner::Counts before = engines.counts();
    StepBatch(engines, {&a});
    CHECK(engines.counts().steps == before.steps + 1);
    CHECK(engines.busy_slots() == 1);
    StepBatchTimes(engines, {&a}, 2);
    CHECK(engines.counts().steps == before.steps + 1);
    if (tgtest::Failures() != failures) std::printf("  (after %s)\n", what);
  };
  a.next[0] = static_cast<int32_t>((a.next[0] + 1) % kVocab);  // fed another token than the one sampled
  expect_computed_then_ahead("another token");
  a.top_n = 3;
  expect_computed_then_ahead("another top-n");
  CHECK(StepBatch(engines, {&a})[0].top_ids.size() == 3);
  a.blocks[static_cast<size_t>(a.position / kBlockSize)] = kSpareBlock;  // the scheduler moved its last block
  expect_computed_then_ahead("another block");
}

TG_TEST(PenalizedSequenceNeverRunsAhead) {
  SamplingParams repetition, frequency, presence;
  repetition.repetition_penalty = 1.3f;
  frequency.frequency_penalty = 0.5f;
  presence.presence_penalty = 0.5f;
  for (const SamplingParams& penalized : {repetition, frequency, presence}) {
    AheadAndReference engines;
    Request p(1, {4, 4, 2}, penalized), g(2, {8, 3});
    StepBatch(engines, {&p});
    StepBatchTimes(engines, {&p}, 4);
    StepBatchTimes(engines, {&p, &g}, 4);  // g's prefill then decodes, in p's batch
    CHECK(engines.counts().ahead_steps == 0);
    engines.Release({1});
    StepBatchTimes(engines, {&g}, 4);  // without p, g runs ahead
    CHECK(engines.counts().ahead_steps == 4);
  }
}

TG_TEST(HostSampledSequenceStopsTheRunAhead) {
  SamplingParams watermarked;
  watermarked.watermark = true;
  AheadAndReference engines;
  Request g(1, {3, 9}), w(2, {5, 1, 1}, watermarked), many(3, {2, 4});
  many.top_n = FakeDeviceRunner::kMaxDeviceTopN + 1;
  StepBatch(engines, {&g});
  StepBatchTimes(engines, {&g}, 2);
  const int64_t ahead_steps = engines.counts().ahead_steps;
  StepBatchTimes(engines, {&g, &w, &many}, 5);  // their rows come back as logits for the host sampler
  CHECK(engines.counts().ahead_steps == ahead_steps);
  engines.Release({2, 3});
  StepBatchTimes(engines, {&g}, 4);
  CHECK(engines.counts().ahead_steps == ahead_steps + 4);
}

TG_TEST(RejectedStepLeavesTheStepInFlight) {
  AheadAndReference engines;
  Request a(1, {8, 8, 2});
  StepBatch(engines, {&a});
  StepBatchTimes(engines, {&a}, 2);
  StepInput bad = a.Input();
  bad.tokens[0] = static_cast<int32_t>(kVocab);
  engines.ExpectFailure({bad}, "outside the vocabulary");
  StepBatchTimes(engines, {&a}, 3);
  CHECK(engines.counts().steps == 1);
}

TG_TEST(FailedStepTriedAgainTakesNoStaleResult) {
  // The step that fails when it is waited for is the prefill, which queued the first
  // decode behind it, or a decode run ahead, which had queued its successor.
  for (int decodes_before : {0, 3}) {
    AheadAndReference engines;
    Request a(1, {9, 4, 4}), b(2, {2, 6});
    if (decodes_before > 0) StepBatchTimes(engines, {&a, &b}, 1 + decodes_before);
    engines.FailNextFinish();
    engines.ExpectFailure({a.Input(), b.Input()}, "no finite logit");
    CHECK(engines.busy_slots() <= 1);
    StepBatch(engines, {&a, &b});  // the caller tries the same step again
    StepBatchTimes(engines, {&a, &b}, 4);
  }
}

TG_TEST(BlocksEndingAtTheNextTokenStopTheRunAhead) {
  AheadAndReference engines;
  Request a(1, {2, 7, 1});
  const std::vector<int32_t> own = a.blocks;
  bool fed_ahead = false;  // whether the step before started this one ahead
  for (int i = 0; i < 16; ++i) {
    const int64_t end = a.position + static_cast<int64_t>(a.next.size());
    a.blocks.assign(own.begin(), own.begin() + (end + kBlockSize - 1) / kBlockSize);  // just enough for this step
    const FakeDeviceRunner::Counts before = engines.counts();
    StepBatch(engines, {&a});
    CHECK((engines.counts().steps == before.steps) == fed_ahead);
    // The next token needs a block the step doesn't have exactly when this one fills its last.
    fed_ahead = end % kBlockSize != 0;
    CHECK((engines.counts().ahead_steps == before.ahead_steps + 1) == fed_ahead);
  }
}

TG_TEST(RecreatedSequenceDoesNotTakeTheOldRow) {
  // The old sequence's row is either still in flight when it is released, or came back
  // while it sat out a step.
  for (bool sat_out : {false, true}) {
    AheadAndReference engines;
    Request a(1, {5, 5, 5}), b(2, {6, 6});
    StepBatch(engines, {&a, &b});
    StepBatchTimes(engines, {&a, &b}, 2);
    if (sat_out) StepBatch(engines, {&b});
    engines.Release({1});
    // A new sequence under the same id, with another prompt and params, that reaches the
    // old row's position with its token and blocks: only the sequence differs.
    Request again(1, std::vector<int32_t>(static_cast<size_t>(a.position), 3), Seeded(99));
    StepBatch(engines, {&again, &b});
    again.next = a.next;
    StepBatch(engines, {&again, &b});
    StepBatchTimes(engines, {&again, &b}, 3);
  }
}

TG_TEST(ReleaseWithAStepInFlightThenReallocate) {
  AheadAndReference engines;
  Request a(1, {1, 2, 3}), b(2, {4, 5});
  StepBatch(engines, {&a, &b});
  StepBatchTimes(engines, {&a, &b}, 3);
  CHECK(engines.busy_slots() == 1);
  engines.Release({1});
  engines.AllocateKvCache();  // the fake throws if a step is still in flight
  CHECK(engines.busy_slots() == 0);
  // b's KV went with the cache on both engines: its result run ahead must not come back.
  StepBatchTimes(engines, {&b}, 4);
  engines.Release({2});
  Request c(3, {6, 6, 1});
  const int64_t steps = engines.counts().steps;
  StepBatch(engines, {&c});
  StepBatchTimes(engines, {&c}, 5);
  CHECK(engines.counts().steps == steps + 1);
}

TG_TEST_MAIN()
