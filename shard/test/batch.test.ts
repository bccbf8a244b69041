// Batch state, step planning and generation, through ShardService over a fake engine.
import t from "tap";
import { FinishReason } from "../../proto/gen/generate.js";
import { requestFromProto, type ShardRequest } from "../batch-state.js";
import { scheduleNextStep } from "../step-planner.js";
import { DECODE_WARMUP_EAGER_ROWS, decodeWarmupBlocksNeeded, decodeWarmupSizes } from "../warmup.js";
import { defaultNextToken, FakeEngine } from "./fake-engine.js";
import { batch, newService, request, warmService } from "./helpers.js";

/** The tokens the fake engine produces for a greedy request of id `id` and prompt length `n`. */
function expectedTokens(id: number, n: number, count: number): number[] {
  const out: number[] = [];
  let last = 100 + n - 1;
  for (let i = 0; i < count; i++) {
    last = defaultNextToken(id, n + i, last);
    out.push(last);
  }
  return out;
}

t.test("prefill then decode to LENGTH", async (t) => {
  const { service, engine } = await warmService();
  const pre = await service.prefill({ batch: batch(7, [request(1, 5, { maxNewTokens: 3 }), request(2, 3, { maxNewTokens: 2 })]) });
  t.same(
    pre.generations.map((g) => [g.requestId, g.tokens?.ids, g.tokens?.logprobs, g.generatedText]),
    [
      [1, expectedTokens(1, 5, 1), [-0.25], undefined],
      [2, expectedTokens(2, 3, 1), [-0.25], undefined],
    ],
  );
  t.same(pre.batch, { id: 7, requestIds: [1, 2], size: 2, maxTokens: 2 * 4 + 2 * 4, currentTokens: 2 });
  const first = engine.steps[0]!;
  t.same(
    first.map((s) => [s.id, s.position, Array.from(s.tokens), s.sample, s.init?.prefix.length]),
    [
      [1, 0, [100, 101, 102, 103, 104], true, 0],
      [2, 0, [100, 101, 102], true, 0],
    ],
  );

  const d1 = await service.decode({ batches: [pre.batch!] });
  t.same(d1.generations.map((g) => g.requestId), [1, 2]);
  t.same(d1.generations[1]!.generatedText, { text: "", generatedTokens: 2, finishReason: FinishReason.FINISH_REASON_LENGTH });
  t.same(d1.batch?.requestIds, [1]);
  t.same(engine.released, [2]);
  t.equal(engine.steps[1]![0]!.init, undefined, "sampler state is created once");
  t.same(Array.from(engine.steps[1]![0]!.tokens), expectedTokens(1, 5, 1), "decode feeds the last token");

  const d2 = await service.decode({ batches: [d1.batch!] });
  t.same(d2.generations[0]!.tokens?.ids, [expectedTokens(1, 5, 3)[2]]);
  t.same(d2.generations[0]!.generatedText?.finishReason, FinishReason.FINISH_REASON_LENGTH);
  t.equal(d2.generations[0]!.generatedText?.seed, undefined, "greedy: no seed");
  t.equal(d2.batch, undefined, "no batch once every request finished");
  t.same(engine.released, [2, 1]);
  await t.rejects(service.decode({ batches: [d1.batch!] }), { message: "Batch ID 7 not found in cache." });
});

t.test("EOS stopping, ignore_eos, LENGTH before EOS, seed when sampling", async (t) => {
  const engine = new FakeEngine(4, () => 2);
  const { service } = await warmService(engine);
  const res = await service.prefill({
    batch: batch(1, [
      request(1, 3, { eos: [2], maxNewTokens: 4 }),
      request(2, 3, { eos: [2], ignoreEos: true, maxNewTokens: 2 }),
      request(3, 3, { eos: [2], maxNewTokens: 1 }),
      request(4, 3, { eos: [2], doSample: true, seed: 42 }),
    ]),
  });
  const texts = res.generations.map((g) => g.generatedText);
  t.same(texts[0], { text: "", generatedTokens: 1, finishReason: FinishReason.FINISH_REASON_EOS_TOKEN });
  t.equal(texts[1], undefined, "ignore_eos keeps going");
  t.same(texts[2]?.finishReason, FinishReason.FINISH_REASON_LENGTH, "LENGTH is checked first");
  t.same(texts[3], { text: "", generatedTokens: 1, finishReason: FinishReason.FINISH_REASON_EOS_TOKEN, seed: 42 });
  t.same(res.batch?.requestIds, [2]);
  const d = await service.decode({ batches: [res.batch!] });
  t.same(d.generations[0]!.generatedText?.finishReason, FinishReason.FINISH_REASON_LENGTH);
});

t.test("chunked prefill merged into a decoding batch", async (t) => {
  const { service, engine } = await warmService(new FakeEngine(), 6);
  const a = await service.prefill({ batch: batch(1, [request(1, 3, { maxNewTokens: 10 })]) });
  const b = await service.prefill({
    batch: batch(2, [request(2, 12, { chunkLen: 4, prefillLogprobs: true, topN: 2 })]),
    cachedBatch: a.batch!,
  });
  t.same(b.generations.map((g) => g.requestId), [1], "a request still being chunked yields nothing");
  t.same(b.batch, { id: 1, requestIds: [1, 2], size: 2, maxTokens: 4 * 4 + 5 * 4, currentTokens: 1 + 5 });
  t.equal(typeof b.concatNs, "number");

  const c = await service.decode({ batches: [b.batch!] });
  t.same(c.batch?.currentTokens, 1 + 3, "budget 6 − 1 covers the 3 prompt tokens left");
  const d = await service.decode({ batches: [c.batch!] });
  t.same(d.batch?.currentTokens, 2, "both decode");

  const plans = engine.steps.slice(1).map((step) => step.map((s) => [s.id, s.position, s.tokens.length, s.sample]));
  t.same(plans, [
    [
      [1, 3, 1, true],
      [2, 0, 4, false],
    ],
    [
      [1, 4, 1, true],
      [2, 4, 5, false],
    ],
    [
      [1, 5, 1, true],
      [2, 9, 3, true],
    ],
  ]);
  const g2 = d.generations.find((g) => g.requestId === 2)!;
  t.same(g2.tokens?.ids, expectedTokens(2, 12, 1));
  t.same(g2.topTokens, [{ ids: [g2.tokens!.ids[0]!, g2.tokens!.ids[0]! + 1], logprobs: [-0.25, -1.25], texts: [], isSpecial: [] }]);
  t.same(g2.prefillTokens?.ids, Array.from({ length: 12 }, (_, i) => 100 + i));
  const lps = g2.prefillTokens!.logprobs;
  const nanAt = lps.flatMap((v, i) => (Number.isNaN(v) ? [i] : []));
  t.same(nanAt, [0, 4, 9], "first token and each chunk's first token are unknown");
  t.ok(Math.abs(lps[5]! - -0.05) < 1e-6);
  t.equal(engine.steps[1]![1]!.promptLogprobs, true);
});

t.test("prefix cache hit: computation starts at cache_len, prefix goes to the sampler", async (t) => {
  const { service, engine } = await warmService();
  const res = await service.prefill({ batch: batch(1, [request(1, 9, { cacheLen: 8, prefillLogprobs: true })]) });
  const s = engine.steps[0]![0]!;
  t.equal(s.position, 8);
  t.same(Array.from(s.tokens), [108]);
  t.same(Array.from(s.init!.prefix), [100, 101, 102, 103, 104, 105, 106, 107]);
  t.ok(res.generations[0]!.prefillTokens!.logprobs.every((v) => Number.isNaN(v)), "cached tokens have no logprob");
  // A whole prompt found in the cache still computes its last token.
  await service.prefill({ batch: batch(2, [request(2, 8, { cacheLen: 8 })]) });
  t.equal(engine.steps[1]![0]!.position, 7);
});

t.test("watermark: the request's flag with the shard's gamma and delta reach the engine", async (t) => {
  const engine = new FakeEngine();
  const service = newService(engine, { watermark: { gamma: 0.25, delta: 6 } });
  await service.warmup({ maxPrefillTokens: 64, maxBatchTotalTokens: 999 * 4 });
  const marked = request(1, 3);
  marked.parameters!.watermark = true;
  await service.prefill({ batch: batch(1, [marked, request(2, 3)]) });
  const inits = engine.steps.at(-1)!.map((s) => s.init!.params);
  t.match(inits[0], { watermark: true, watermarkGamma: 0.25, watermarkDelta: 6 });
  t.match(inits[1], { watermark: false });
  const plain = await warmService();
  const m2 = request(1, 3);
  m2.parameters!.watermark = true;
  await plain.service.prefill({ batch: batch(1, [m2]) });
  t.match(plain.engine.steps.at(-1)![0]!.init!.params, { watermark: true, watermarkGamma: 0.5, watermarkDelta: 2 }, "TGI's defaults");
});

t.test("decode merges several batches into the first id; filter and clear release", async (t) => {
  const { service, engine } = await warmService();
  const a = await service.prefill({ batch: batch(1, [request(1, 2), request(2, 2)]) });
  const b = await service.prefill({ batch: batch(2, [request(3, 2), request(4, 2)]) });
  const d = await service.decode({ batches: [b.batch!, a.batch!] });
  t.same(d.batch?.id, 2);
  t.same(d.batch?.requestIds, [3, 4, 1, 2]);
  await t.rejects(service.decode({ batches: [a.batch!] }), { message: "Batch ID 1 not found in cache." });

  const f = await service.filterBatch({ batchId: 2, requestIds: [4, 1] });
  t.same(f.batch?.requestIds, [4, 1], "the batch's order is kept");
  t.same(engine.released.sort(), [2, 3]);
  await t.rejects(service.filterBatch({ batchId: 2, requestIds: [9] }), { message: "request 9 is not in batch 2" });

  const e = await service.prefill({ batch: batch(3, [request(5, 2)]) });
  await service.clearCache({ id: 2 });
  t.same(engine.released.sort(), [1, 2, 3, 4]);
  await service.clearCache({ id: 2 });
  await service.clearCache({});
  t.same(engine.released.sort(), [1, 2, 3, 4, 5]);
  await t.rejects(service.decode({ batches: [e.batch!] }), { message: "Batch ID 3 not found in cache." });
  t.equal(engine.kvLength.size, 0, "no engine state left");
});

t.test("bad requests are refused before anything changes", async (t) => {
  const { service, engine } = await warmService();
  const a = await service.prefill({ batch: batch(1, [request(1, 2)]) });
  const cases: Array<[Promise<unknown>, RegExp]> = [
    [service.prefill({ batch: batch(2, [request(1, 2)]) }), /request id 1 is already in cached batch 1/],
    [service.prefill({ batch: batch(2, [request(3, 2), request(3, 2)]) }), /appears twice/],
    [service.prefill({ batch: batch(1, [request(4, 2)]) }), /Batch ID 1 is already in cache/],
    [service.prefill({ batch: batch(2, [request(5, 9, { blocks: [3] })]) }), /9 prompt tokens but only 1 KV blocks of 4 tokens/],
    [service.prefill({ batch: batch(2, [request(6, 2, { blocks: [5000] })]) }), /KV block 5000, but the cache has 1000 blocks/],
    [service.prefill({ batch: batch(2, [request(7, 0)]) }), /no input_ids/],
    [service.prefill({ batch: batch(2, [{ ...request(9, 2), inputIds: [5, 512] }]) }), /token id 512, but the model's vocabulary has 512 ids/],
    [service.prefill({ batch: batch(2, [request(10, 2, { blocks: [2 ** 31 + 1] })]) }), /KV block 2147483649, but the cache/],
    [service.prefill({ batch: batch(2, [request(8, 2)]), cachedBatch: { ...a.batch!, id: 99 } }), /Batch ID 99 not found/],
    [service.prefill({}), /no batch/],
    [service.decode({ batches: [] }), /at least one batch/],
    [service.decode({ batches: [a.batch!, a.batch!] }), /listed twice/],
  ];
  for (const [promise, message] of cases) {
    await t.rejects(promise, { message, kind: "invalid_argument" });
  }
  const d = await service.decode({ batches: [a.batch!] });
  t.same(d.batch?.requestIds, [1], "the cached batch survived");
  t.equal(engine.steps.length, 2);
});

t.test("a request that outgrows its blocks, and an engine failure, drop the batch", async (t) => {
  const { service, engine } = await warmService();
  const a = await service.prefill({ batch: batch(1, [request(1, 4, { blocks: [1], maxNewTokens: 5 })]) });
  await t.rejects(service.decode({ batches: [a.batch!] }), { message: /needs KV for 5 tokens but has 1 blocks/ });
  t.same(engine.released, [1]);

  const b = await service.prefill({ batch: batch(2, [request(2, 3)]) });
  engine.failNextStep = "device on fire";
  await t.rejects(service.decode({ batches: [b.batch!] }), {
    message: "engine step failed: device on fire",
    kind: "internal",
  });
  t.same(engine.released, [1, 2]);
  await t.rejects(service.decode({ batches: [b.batch!] }), { message: /not found in cache/ });
});

t.test("prefill before warmup is refused", async (t) => {
  const service = newService(new FakeEngine());
  await t.rejects(service.prefill({ batch: batch(1, [request(1, 2)]) }), {
    message: /call Warmup first/,
    kind: "failed_precondition",
  });
});

t.test("warmup: KV sizing, warm-up batch on borrowed blocks, limits", async (t) => {
  const engine = new FakeEngine();
  const service = newService(engine, { kvCacheBytes: 50 * 1024 });
  const warm = batch(0, [request(1, 10, { blocks: [], ignoreEos: true, topN: 20, prefillLogprobs: true }), request(2, 6, { blocks: [] })]);
  const fromMemory = await service.warmup({ batch: warm, maxPrefillTokens: 16 });
  t.same(fromMemory, { maxSupportedTotalTokens: 49 * 4, maxInputTokens: 127, maxTotalTokens: 128 });
  t.equal(engine.numBlocks, 50);
  t.same(
    engine.steps.map((step) => step.map((s) => [s.id, Array.from(s.blocks)])),
    [
      [
        [1, [1, 2, 3]],
        [2, [4, 5]],
      ],
      [
        [1, [1, 2, 3]],
        [2, [4, 5]],
      ],
    ],
    "a prefill and a decode on blocks from 1 up",
  );
  t.equal(engine.kvLength.size, 0, "warm-up state released");

  const given = await service.warmup({ maxPrefillTokens: 16, maxBatchTotalTokens: 30, maxInputTokens: 10, maxTotalTokens: 20 });
  t.equal(engine.numBlocks, Math.ceil(30 / 4) + 1);
  t.same(given, { maxSupportedTotalTokens: 8 * 4, maxInputTokens: 10, maxTotalTokens: 20 });

  await t.rejects(service.warmup({ batch: batch(0, [request(1, 200, { blocks: [] })]), maxPrefillTokens: 200, maxBatchTotalTokens: 40 }), {
    message: /Not enough KV cache to warm up with 200 prefill tokens/,
    kind: "resource_exhausted",
  });
});

t.test("warmup runs a prefill and two decodes at every size the engine names, then eager sizes, on the warm-up cache", async (t) => {
  const engine = new FakeEngine(16);
  engine.warmupBatchSizes = [4, 1, 2];
  const service = newService(engine);
  const warm = batch(0, [request(1, 10, { blocks: [], ignoreEos: true }), request(2, 6, { blocks: [] })]);
  await service.warmup({ batch: warm, maxPrefillTokens: 16, maxBatchTotalTokens: 40 * 16 });
  const sizes = engine.steps.map((step) => step.length);
  const shapes = engine.steps.map((step) => step.map((s) => (s.init ? "p" : "d")).join(""));
  // The router's warm-up batch (a prefill, a decode), then each size: prefill, eager decode, captured decode.
  t.same(sizes.slice(0, 2), [2, 2]);
  const eager = [32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 480, 512].filter((n) => n <= 40);
  t.same(sizes.slice(2), [1, 2, 4, ...eager].flatMap((n) => [n, n, n]), "ascending buckets, then 32-row eager sizes that fit");
  t.same(shapes.slice(2, 5), ["p", "d", "d"]);
  for (const step of engine.steps.slice(2)) {
    for (const s of step) t.ok(s.blocks.length === 1 && s.blocks[0]! >= 1 && s.blocks[0]! < engine.numBlocks, "one block from 1 up");
    t.equal(new Set(step.map((s) => s.blocks[0])).size, step.length, "no two sequences share a block");
  }
  t.equal(engine.kvLength.size, 0, "every warm-up sequence released");
  // Nothing changed for serving: a request runs as on a service without graphs.
  const out = await service.prefill({ batch: batch(7, [request(7, 3, { maxNewTokens: 2, blocks: [5, 6] })]) });
  t.equal(out.generations.length, 1);
});

t.test("on a GPU sized from memory the warm-up cache holds every decode size, however small the prefill", async (t) => {
  const engine = new FakeEngine(16);
  engine.warmupBatchSizes = [1, 2, 256];
  const cpuInfo = engine.info.bind(engine);
  engine.info = () => ({ ...cpuInfo(), device: "cuda" });
  const allocations: number[] = [];
  const allocate = engine.allocateKvCache.bind(engine);
  engine.allocateKvCache = (n) => {
    allocations.push(n);
    allocate(n);
  };
  engine.memoryInfo = () => ({ freeBytes: 4 * 2 ** 30, totalBytes: 8 * 2 ** 30 });
  const service = newService(engine, { cudaMemoryFraction: 0.9 });
  await service.warmup({ batch: batch(0, [request(1, 16, { blocks: [] })]), maxPrefillTokens: 16 });
  t.equal(allocations[0], 512 + 1, "512 one-block sequences and block 0, not the prefill's 3 blocks");
  t.equal(Math.max(...engine.steps.map((step) => step.length)), 512, "the largest eager size ran");
  t.ok(allocations[1]! > 512, "then the cache sized from memory");
  t.equal(decodeWarmupBlocksNeeded([], 16), 0, "none from the engine: nothing beyond the prefill's");
  t.equal(decodeWarmupBlocksNeeded([1, 8], 2), 512 * 2 + 1);
});

t.test("decodeWarmupSizes: the engine's sizes ascending, then 32-row eager sizes, all that fit the cache", async (t) => {
  t.same(decodeWarmupSizes([], 1000, 16), [], "none from the engine (the CPU): no decode warm-up");
  const full = decodeWarmupSizes([8, 1, 256, 160], 10_000, 16);
  t.same(full.slice(0, 4), [1, 8, 160, 256]);
  t.same(full.slice(4), [288, 320, 352, 384, 416, 448, 480, 512]);
  t.equal(full[full.length - 1], DECODE_WARMUP_EAGER_ROWS);
  t.same(decodeWarmupSizes([1, 2, 300], 10_000, 16), [1, 2, 300, 320, 352, 384, 416, 448, 480, 512], "eager sizes from past the largest bucket");
  t.same(decodeWarmupSizes([1, 2, 4, 8], 5, 16), [1, 2, 4], "block 0 reserved: 4 sequences fit 5 blocks");
  t.same(decodeWarmupSizes([1, 2, 4], 9, 2), [1, 2, 4], "two blocks each with blocks of 2 tokens");
  t.same(decodeWarmupSizes([1, 2, 4], 8, 2), [1, 2]);
});

t.test("scheduleNextStep hands the budget out from the end of the batch", async (t) => {
  const limits = { blockSize: 4, numBlocks: 100 };
  const mk = (id: number, n: number, computed: number): ShardRequest => {
    const r = requestFromProto(request(id, n, { blocks: Array(10).fill(1) }), limits);
    r.computed = computed;
    if (computed === n) r.generated.push(5);
    return r;
  };
  const reqs = [mk(1, 20, 2), mk(2, 4, 4), mk(3, 10, 0), mk(4, 30, 1)];
  scheduleNextStep(reqs, 20);
  // budget 20 − 3 = 17: request 4 takes 17, request 3 gets the minimum 1, request 1 too.
  t.same(
    reqs.map((r) => r.nextTokens),
    [1, 1, 1, 17],
  );
  scheduleNextStep(reqs, 40);
  t.same(
    reqs.map((r) => r.nextTokens),
    [1, 1, 8, 29],
  );
  t.throws(() => requestFromProto(request(1, 3, { blocks: [] }), limits), { message: /only 0 KV blocks/, kind: "invalid_argument" });
});

t.test("an empty prefill does not reach the engine", async (t) => {
  const { service, engine } = await warmService();
  const res = await service.prefill({ batch: batch(1, []) });
  t.same(res.generations, []);
  t.equal(res.batch, undefined);
  t.equal(engine.steps.length, 0);
});

t.test("with several ranks a failed engine step is unrecoverable; with one it is not", async (t) => {
  for (const worldSize of [1, 2]) {
    const engine = new FakeEngine();
    const fatal: Error[] = [];
    const service = newService(engine, { worldSize, onUnrecoverable: (e) => fatal.push(e) });
    await service.warmup({ maxPrefillTokens: 64, maxBatchTotalTokens: 999 * 4 });
    engine.failNextStep = "collective timed out";
    await t.rejects(service.prefill({ batch: batch(1, [request(1, 3)]) }), { message: /collective timed out/ });
    t.equal(fatal.length, worldSize > 1 ? 1 : 0, `world size ${worldSize}`);
  }
});
