import t from "tap";
import type { InfoResponse, WarmupResponse } from "../../proto/gen/generate.js";
import { deriveLimits, warmupRequest } from "../infer/warmup.js";
import { startBackend } from "./fake-shard.js";

const info = (supportChunking: boolean): InfoResponse => ({
  requiresPadding: false, dtype: "float32", deviceType: "cpu", speculate: 0, supportChunking,
  usePrefixCaching: false, attentionImpl: "fake", blockSize: 16, rank: 0, worldSize: 1,
});

t.test("the warmup batch fills max_batch_prefill_tokens with max_input_tokens-long prompts", async (t) => {
  const request = warmupRequest({ maxBatchPrefillTokens: 256, maxInputTokens: 100, maxTotalTokens: 200 }, 3);
  const reqs = request.batch!.requests;
  t.same(reqs.map((r) => r.inputIds.length), [100, 100, 56]);
  t.same(reqs.map((r) => r.truncate), [100, 100, 56]);
  t.same(reqs.map((r) => r.stoppingParameters!.maxNewTokens), [100, 100, 144]);
  t.ok(reqs.every((r) => r.inputIds.every((id) => id === 3)));
  t.ok(reqs.every((r) => r.stoppingParameters!.ignoreEosToken && r.prefillLogprobs && r.topNTokens > 0));
  t.match(reqs[0]!.parameters, { temperature: 0.9, topK: 10, topP: 0.9, typicalP: 0.9, repetitionPenalty: 1.2, frequencyPenalty: 0.1 });
  t.same(reqs[0]!.blocks, [], "the shard assigns warmup blocks");
  t.match(request, { maxPrefillTokens: 256, maxInputTokens: 100, maxTotalTokens: 200 });
  const bounded = warmupRequest({ maxBatchPrefillTokens: 256, maxInputTokens: 10, maxBatchSize: 4 }, 3);
  t.equal(bounded.batch!.requests.length, 4, "max_batch_size caps the number of requests");
  const unknown = warmupRequest({ maxBatchPrefillTokens: 64 }, 3);
  t.same(unknown.batch!.requests.map((r) => [r.inputIds.length, r.stoppingParameters!.maxNewTokens]), [[64, 1]]);
});

t.test("limits come from Warmup, TGI's checks and messages", async (t) => {
  const warmup = (cap: number | undefined, maxInput = 255, maxTotal = 512): WarmupResponse => ({
    maxSupportedTotalTokens: cap, maxInputTokens: maxInput, maxTotalTokens: maxTotal,
  });
  t.same(deriveLimits({ maxBatchPrefillTokens: 256 }, info(false), warmup(1024)), {
    maxInputTokens: 255, maxTotalTokens: 512, maxBatchTotalTokens: 1024, maxBatchPrefillTokens: 256, blockSize: 16,
  });
  t.equal(deriveLimits({ maxBatchPrefillTokens: 256, maxBatchTotalTokens: 9999 }, info(false), warmup(1024)).maxBatchTotalTokens, 1024, "the shard's capacity wins");
  t.equal(deriveLimits({ maxBatchPrefillTokens: 256 }, info(false), warmup(undefined)).maxBatchTotalTokens, 16000, "no capacity: max(16000, ...)");
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 256 }, info(false), warmup(500)), { message: "Not enough memory to handle `max_total_tokens=512`" });
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 256 }, info(false), warmup(1024, 512, 512)), { message: "`max_input_tokens` must be < `max_total_tokens`" });
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 100 }, info(false), warmup(1024)), {
    message: "`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: 100 and 255",
  });
  t.equal(deriveLimits({ maxBatchPrefillTokens: 100 }, info(true), warmup(1024)).maxBatchPrefillTokens, 100, "chunking lifts that rule");
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 2048 }, info(false), warmup(1024)), {
    message: "`max_batch_prefill_tokens` must be <= `max_batch_total_tokens`. Given: 2048 and 1024",
  });
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 256, maxBatchTotalTokens: 400 }, info(false), warmup(undefined)), {
    message: "`max_total_tokens` must be <= `max_batch_total_tokens`. Given: 512 and 400",
  });
  t.throws(() => deriveLimits({ maxBatchPrefillTokens: 256, maxInputTokens: 100 }, info(false), warmup(1024)), /max_input_tokens=255 but --max-input-tokens is 100/);
});

t.test("connectBackend warms the shards up and reports the limits", async (t) => {
  const b = await startBackend({ numBlocks: 32 }, { maxBatchPrefillTokens: 128, maxInputTokens: 64, maxTotalTokens: 200 });
  t.teardown(b.close);
  t.same(b.limits, { maxInputTokens: 64, maxTotalTokens: 200, maxBatchTotalTokens: 512, maxBatchPrefillTokens: 128, blockSize: 16 });
  t.equal(b.shardInfo.blockSize, 16);
  t.same(b.backend.stats(), { queued: 0, running: 0, freeBlocks: 31, totalBlocks: 31 });
  const shard = b.shards[0]!;
  t.same(shard.calls.slice(0, 4).map((c) => c.rpc), ["serviceDiscovery", "clearCache", "info", "warmup"]);
  const warmup = shard.callsOf("warmup")[0];
  t.same(warmup.batch.requests.map((r: any) => r.inputIds.length), [64, 64]);
  t.equal(warmup.batch.requests[0].inputIds[0], 3, "the first non-special id");
});

t.test("connectBackend fails with TGI's message when the KV cache is too small", async (t) => {
  await t.rejects(startBackend({ numBlocks: 8 }, { maxBatchPrefillTokens: 64, maxTotalTokens: 200, maxInputTokens: 64 }), {
    message: "Not enough memory to handle `max_total_tokens=200`",
  });
});
