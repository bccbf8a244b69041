// The shard's lookahead (shard/service.ts): a decoding batch's next step runs before the
// router asks for it, and every RPC sees exactly what it would have seen without it.
import t from "tap";
import { FinishReason, type CachedBatch, type Generation } from "../../proto/gen/generate.js";
import type { ShardService } from "../service.js";
import { FakeEngine } from "./fake-engine.js";
import { batch, newService, request } from "./helpers.js";

async function service(lookahead: boolean) {
  const engine = new FakeEngine();
  const s = newService(engine, { lookahead });
  await s.warmup({ maxPrefillTokens: 64, maxBatchTotalTokens: 999 * 4 });
  return { service: s, engine };
}

/** Generations as comparable rows: request, token ids, finish reason. */
function rows(generations: Generation[]) {
  return generations.map((g) => [g.requestId, g.tokens?.ids, g.generatedText?.finishReason ?? null]);
}

/**
 * The router's side of a run: a prefill, decodes, a filter (request 2 stopped by the
 * router), a new request merged in through Prefill with the cached batch, decodes to the end.
 */
async function script(s: ShardService) {
  const out: unknown[] = [];
  const pre = await s.prefill({ batch: batch(1, [request(1, 5, { maxNewTokens: 6 }), request(2, 3, { maxNewTokens: 9 }), request(3, 4, { maxNewTokens: 3 })]) });
  out.push(rows(pre.generations));
  let cached: CachedBatch | undefined = pre.batch;
  for (let i = 0; i < 2; i++) {
    const d = await s.decode({ batches: [cached!] });
    out.push(rows(d.generations));
    cached = d.batch;
  }
  const filtered = await s.filterBatch({ batchId: cached!.id, requestIds: cached!.requestIds.filter((id) => id !== 2) });
  out.push(filtered.batch?.requestIds);
  const merged = await s.prefill({ batch: batch(2, [request(4, 6, { maxNewTokens: 4 })]), cachedBatch: filtered.batch! });
  out.push(rows(merged.generations));
  cached = merged.batch;
  while (cached) {
    const d = await s.decode({ batches: [cached] });
    out.push(rows(d.generations));
    cached = d.batch;
  }
  return out;
}

t.test("the same generations with and without lookahead, and nothing left behind", async (t) => {
  const plain = await service(false);
  const ahead = await service(true);
  const want = await script(plain.service);
  const got = await script(ahead.service);
  t.same(got, want);
  t.equal(ahead.engine.kvLength.size, 0, "every sequence released");
  t.equal(new Set(ahead.engine.released).size, ahead.engine.released.length, "none released twice");
  t.ok(ahead.engine.steps.length > plain.engine.steps.length, "request 2's look-ahead token was computed, then dropped");
});

t.test("the next step runs before Decode asks for it", async (t) => {
  const { service: s, engine } = await service(true);
  const pre = await s.prefill({ batch: batch(1, [request(1, 5, { maxNewTokens: 4 })]) });
  await s.health();  // queued behind the look-ahead step
  t.equal(engine.steps.length, 2, "prefill, then the look-ahead decode");
  const d = await s.decode({ batches: [pre.batch!] });
  t.equal(d.generations.length, 1);
  t.ok(d.forwardNs > 0, "the look-ahead's forward time is reported");
  t.equal(engine.steps.length, 2, "Decode took the look-ahead step instead of computing one");
  await s.health();
  t.equal(engine.steps.length, 3, "and queued the next");
});

t.test("no lookahead while a request still prefills in chunks", async (t) => {
  const engine = new FakeEngine();
  const s = newService(engine, { lookahead: true });
  await s.warmup({ maxPrefillTokens: 8, maxBatchTotalTokens: 999 * 4 });
  const pre = await s.prefill({ batch: batch(1, [request(1, 20, { maxNewTokens: 2, chunkLen: 8 })]) });
  await s.health();
  t.same(pre.generations, [], "the first chunk samples nothing");
  t.equal(engine.steps.length, 1, "the prompt's next chunk waits for the router");
});

t.test("a look-ahead step that fails fails the next Decode, with everything released", async (t) => {
  const { service: s, engine } = await service(true);
  const pre = await s.prefill({ batch: batch(1, [request(1, 5, { maxNewTokens: 4 }), request(2, 5, { maxNewTokens: 4 })]) });
  engine.failNextStep = "device lost";
  await s.health();
  await t.rejects(s.decode({ batches: [pre.batch!] }), { message: "engine step failed: device lost" });
  t.equal(engine.kvLength.size, 0);
  t.equal(new Set(engine.released).size, engine.released.length, "none released twice");
  await t.rejects(s.decode({ batches: [pre.batch!] }), { message: "Batch ID 1 not found in cache." });
  const again = await s.prefill({ batch: batch(3, [request(5, 3, { maxNewTokens: 1 })]) });
  t.equal(again.generations[0]?.generatedText?.finishReason, FinishReason.FINISH_REASON_LENGTH, "the shard keeps serving");
});

t.test("ClearCache drops the look-ahead step with its batch", async (t) => {
  const { service: s, engine } = await service(true);
  const pre = await s.prefill({ batch: batch(1, [request(1, 5, { maxNewTokens: 4 })]) });
  await s.clearCache({ id: 1 });
  t.equal(engine.kvLength.size, 0);
  await t.rejects(s.decode({ batches: [pre.batch!] }), { message: "Batch ID 1 not found in cache." });
  // A new batch may reuse the id: it must not see the old look-ahead.
  const fresh = await s.prefill({ batch: batch(1, [request(2, 3, { maxNewTokens: 3 })]) });
  const d = await s.decode({ batches: [fresh.batch!] });
  t.same(d.generations.map((g) => g.requestId), [2]);
});
