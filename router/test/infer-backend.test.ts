import t from "tap";
import { InferError, type InferEvent } from "../infer/types.js";
import { collect, lastEvent, startBackend, validRequest } from "./fake-shard.js";

const noSignal = () => new AbortController().signal;

t.test("watermark reaches the shard's NextTokenChooserParameters", async (t) => {
  const b = await startBackend();
  t.teardown(b.close);
  await collect(b.backend.generate(validRequest([1, 10], { maxNewTokens: 1, watermark: true }), noSignal()));
  await collect(b.backend.generate(validRequest([1, 11], { maxNewTokens: 1 }), noSignal()));
  const sent = b.shards[0]!.callsOf("prefill").flatMap((p) => p.batch.requests.map((r: any) => r.parameters.watermark));
  t.same(sent, [true, false]);
});

t.test("one request streams its tokens and ends with the right reason", async (t) => {
  const b = await startBackend();
  t.teardown(b.close);
  const events = await collect(
    b.backend.generate(validRequest([1, 10, 11], { maxNewTokens: 5, topNTokens: 2, decoderInputDetails: true }), noSignal()),
  );
  t.same(events.map((e) => e.type), ["prefill", "token", "token", "token", "token", "end"]);
  const prefill = events[0] as Extract<InferEvent, { type: "prefill" }>;
  t.same(prefill.tokens.map((x) => [x.id, x.text, x.logprob, x.special]), [
    [1, "<s>", null, true],
    [10, " w10", -1, false],
    [11, " w11", -1, false],
  ]);
  const tokens = events.slice(1).map((e) => (e as Extract<InferEvent, { type: "token" }>).token);
  t.same(tokens.map((x) => x.id), [12, 13, 14, 15, 16]);
  t.same(tokens.map((x) => x.text), [" w12", " w13", " w14", " w15", " w16"]);
  t.equal(tokens[0]!.logprob, -0.25);
  const end = lastEvent(events) as Extract<InferEvent, { type: "end" }>;
  t.equal(end.finishReason, "length");
  t.equal(end.generatedText, " w12 w13 w14 w15 w16");
  t.equal(end.generatedTokens, 5);
  t.equal(end.inputLength, 3);
  t.equal(end.seed, null, "greedy: no seed");
  t.same(end.topTokens.map((x) => [x.id, x.logprob]), [[16, -0.25], [17, -1.25]]);
  t.ok(end.timings.queuedAt <= end.timings.batchedAt && end.timings.batchedAt <= end.timings.finishedAt);
  const stats = b.backend.stats();
  t.same(stats, { queued: 0, running: 0, freeBlocks: stats.totalBlocks, totalBlocks: 63 });
  t.same(b.shards[0]!.cachedBatchIds, [], "the shard holds no batch afterwards");
});

t.test("EOS ends a request unless ignored; sampling reports its seed", async (t) => {
  const b = await startBackend({ vocab: 512 }, { eosTokenIds: [20] });
  t.teardown(b.close);
  const eos = lastEvent(await collect(b.backend.generate(validRequest([1, 17], { maxNewTokens: 10, doSample: true }), noSignal())));
  t.match(eos, { type: "end", finishReason: "eos_token", generatedTokens: 3, generatedText: " w18 w19 w20", seed: 42 });
  const ignored = lastEvent(await collect(b.backend.generate(validRequest([1, 17], { maxNewTokens: 6, ignoreEos: true }), noSignal())));
  t.match(ignored, { type: "end", finishReason: "length", generatedTokens: 6 });
});

for (const supportChunking of [false, true]) {
  t.test(`20 concurrent requests all complete (chunking ${supportChunking})`, async (t) => {
    const b = await startBackend(
      { stepDelayMs: 2, supportChunking, numBlocks: 40 },
      { maxBatchPrefillTokens: supportChunking ? 48 : 128, maxInputTokens: 100, maxTotalTokens: 160 },
    );
    t.teardown(b.close);
    const runs = Array.from({ length: 20 }, (_, i) => {
      const input = Array.from({ length: 5 + ((i * 7) % 60) }, (_, k) => 100 + k);
      const maxNewTokens = 3 + (i % 9);
      return collect(b.backend.generate(validRequest(input, { maxNewTokens }), noSignal())).then((events) => ({ input, maxNewTokens, events }));
    });
    for (const { input, maxNewTokens, events } of await Promise.all(runs)) {
      const end = lastEvent(events);
      if (end.type !== "end") {
        t.fail(`request ended with ${JSON.stringify(end)}`);
        continue;
      }
      const expected = Array.from({ length: maxNewTokens }, (_, k) => input.at(-1)! + 1 + k);
      t.equal(end.generatedText, expected.map((id) => ` w${id}`).join(""));
      t.equal(events.length, maxNewTokens);
    }
    const stats = b.backend.stats();
    t.equal(stats.freeBlocks, stats.totalBlocks, "every block is back");
    t.same([stats.queued, stats.running], [0, 0]);
    const shard = b.shards[0]!;
    t.same(shard.cachedBatchIds, []);
    t.ok(shard.callsOf("prefill").length > 1, "requests arrive in several prefills");
    if (supportChunking) {
      t.ok(shard.callsOf("prefill").some((p) => p.cachedBatch), "new requests merge into the running batch");
      t.ok(shard.callsOf("prefill").some((p) => p.batch.requests.some((r: any) => r.chunkLen !== undefined)), "long prompts are chunked");
    } else {
      t.ok(shard.callsOf("decode").some((d) => d.batches.length === 2), "a new batch is merged by Decode");
    }
  });
}

t.test("a stop sequence ends the request, which is filtered out on the shard", async (t) => {
  const b = await startBackend({ stepDelayMs: 1 });
  t.teardown(b.close);
  const [stopped, other] = await Promise.all([
    collect(b.backend.generate(validRequest([1, 10, 11], { maxNewTokens: 20, stop: [" w14"] }), noSignal())),
    collect(b.backend.generate(validRequest([1, 50], { maxNewTokens: 10 }), noSignal())),
  ]);
  t.match(lastEvent(stopped), { type: "end", finishReason: "stop_sequence", generatedText: " w12 w13 w14", generatedTokens: 3 });
  t.match(lastEvent(other), { type: "end", finishReason: "length", generatedTokens: 10 });
  const shard = b.shards[0]!;
  const filters = shard.callsOf("filterBatch");
  t.ok(filters.some((f) => f.requestIds.length === 1 && f.requestIds[0] === 1), "FilterBatch kept only the other request");
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
  t.same(shard.cachedBatchIds, []);
});

t.test("cancelling mid-stream frees the blocks and filters the request out", async (t) => {
  const b = await startBackend({ stepDelayMs: 5 });
  t.teardown(b.close);
  const cancel = new AbortController();
  const other = collect(b.backend.generate(validRequest([1, 300], { maxNewTokens: 30 }), noSignal()));
  const seen: InferEvent[] = [];
  for await (const event of b.backend.generate(validRequest([1, 10], { maxNewTokens: 100 }), cancel.signal)) {
    seen.push(event);
    if (seen.length === 3) cancel.abort();
  }
  t.equal(seen.length, 3, "the iterable ends at the abort");
  await other;
  const shard = b.shards[0]!;
  const filters = shard.callsOf("filterBatch");
  t.ok(filters.some((f) => f.requestIds.length === 1 && f.requestIds[0] === 0), "FilterBatch without the cancelled id");
  const cancelledTokens = shard.callsOf("decode").length;
  t.ok(cancelledTokens < 40, "the cancelled request did not run to its end");
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
  t.same(shard.cachedBatchIds, []);
});

t.test("a consumer that breaks out cancels like an abort; a queued cancel is dropped", async (t) => {
  const b = await startBackend(
    { stepDelayMs: 3, numBlocks: 4 },
    { maxBatchPrefillTokens: 32, maxInputTokens: 10, maxTotalTokens: 60 },
  );
  t.teardown(b.close);
  for await (const _ of b.backend.generate(validRequest([1, 10], { maxNewTokens: 40 }), noSignal())) break;
  // The first request holds all 3 blocks; the second waits in the queue and is cancelled there.
  const first = b.backend.generate(validRequest([1, 10], { maxNewTokens: 40 }), noSignal())[Symbol.asyncIterator]();
  t.match(await first.next(), { done: false, value: { type: "token" } });
  const cancel = new AbortController();
  const queued = collect(b.backend.generate(validRequest([1, 10], { maxNewTokens: 20 }), cancel.signal));
  t.equal(b.backend.stats().queued, 1);
  cancel.abort();
  t.same(await queued, [], "a cancelled request yields no more events");
  t.equal(b.backend.stats().queued, 0, "dropped at once");
  const rest = await collect({ [Symbol.asyncIterator]: () => first });
  t.match(lastEvent(rest), { type: "end", generatedTokens: 40 });
  const prefilled = b.shards[0]!.callsOf("prefill").flatMap((p) => p.batch.requests.map((r: any) => r.id));
  t.notOk(prefilled.includes(2), "the cancelled request never reached the shard");
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
});

t.test("a shard failure fails the whole batch; later requests succeed", async (t) => {
  const b = await startBackend({ stepDelayMs: 2 });
  t.teardown(b.close);
  const shard = b.shards[0]!;
  let decodes = 0;
  shard.options.fail = (rpc) => (rpc === "decode" && ++decodes === 3 ? "CUDA out of memory" : undefined);
  const failed = await Promise.all(
    [0, 1, 2].map((i) => collect(b.backend.generate(validRequest([1, 10 + i], { maxNewTokens: 10 }), noSignal()))),
  );
  for (const events of failed) {
    const last = lastEvent(events);
    t.equal(last.type, "error");
    if (last.type !== "error") continue;
    t.ok(last.error instanceof InferError);
    t.equal(last.error.kind, "generation");
    t.equal(last.error.status, 424);
    t.equal(last.error.message, "Request failed during generation: Server error: CUDA out of memory");
  }
  t.ok(shard.callsOf("clearCache").some((c) => c.id === 0), "the failed batch was cleared");
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
  t.equal(await b.backend.health(), true, "health runs a real prefill after a failure");
  const healthPrefill = shard.callsOf("prefill").at(-1);
  t.same(healthPrefill.batch.requests[0].blocks, [0], "in the reserved block 0");
  const later = lastEvent(await collect(b.backend.generate(validRequest([1, 10], { maxNewTokens: 4 }), noSignal())));
  t.match(later, { type: "end", finishReason: "length", generatedText: " w11 w12 w13 w14" });
  shard.options.fail = (rpc) => (rpc === "health" ? "device lost" : undefined);
  t.equal(await b.backend.health(), false);
});

t.test("two shards: every call reaches both, rank 0 answers, any failure fails", async (t) => {
  const b = await startBackend({ stepDelayMs: 1 }, {}, 2);
  t.teardown(b.close);
  const [r0, r1] = b.shards as [(typeof b.shards)[0], (typeof b.shards)[0]];
  const ok = lastEvent(await collect(b.backend.generate(validRequest([1, 10], { maxNewTokens: 3 }), noSignal())));
  t.match(ok, { type: "end", generatedText: " w11 w12 w13" });
  t.same(r0.callsOf("prefill"), r1.callsOf("prefill"), "the same Prefill on both shards");
  t.equal(r1.callsOf("decode").length, r0.callsOf("decode").length);
  r1.options.fail = (rpc) => (rpc === "prefill" ? "rank 1 broke" : undefined);
  const failed = lastEvent(await collect(b.backend.generate(validRequest([1, 10], { maxNewTokens: 3 }), noSignal())));
  t.match(failed, { type: "error", error: { message: "Request failed during generation: Server error: rank 1 broke" } });
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
});

t.test("without chunking, waiting_served_ratio and max_waiting_tokens decide when a prefill interrupts", async (t) => {
  for (const [ratio, expectWait] of [[1.2, true], [0.1, false]] as const) {
    const b = await startBackend({ stepDelayMs: 4 }, { waitingServedRatio: ratio, maxWaitingTokens: 5 });
    const shard = b.shards[0]!;
    const running = [0, 1, 2, 3].map((i) => b.backend.generate(validRequest([1, 10 * i + 5], { maxNewTokens: 30 }), noSignal())[Symbol.asyncIterator]());
    await running[0]!.next();
    const decodesAtPush = shard.callsOf("decode").length;
    const late = await collect(b.backend.generate(validRequest([1, 200], { maxNewTokens: 3 }), noSignal()));
    t.match(lastEvent(late), { type: "end", generatedTokens: 3 });
    const prefillIndex = shard.calls.findIndex((c) => c.rpc === "prefill" && c.request.batch.requests.some((r: any) => r.id === 4));
    const decodesBefore = shard.calls.slice(0, prefillIndex).filter((c) => c.rpc === "decode").length;
    if (expectWait) t.ok(decodesBefore >= 4, `1 waiting < 1.2 × 4 running: waits for 4 decode steps (${decodesBefore})`);
    else t.ok(decodesBefore <= decodesAtPush + 1, `ratio 0.1: joins at the next step (${decodesBefore}, pushed at ${decodesAtPush})`);
    await Promise.all(running.map((it) => collect({ [Symbol.asyncIterator]: () => it })));
    t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
    await b.close();
  }
});

t.test("close fails running and later requests instead of leaving them hanging", async (t) => {
  const b = await startBackend({ stepDelayMs: 10 });
  t.teardown(b.close);
  const running = b.backend.generate(validRequest([1, 10], { maxNewTokens: 100 }), noSignal())[Symbol.asyncIterator]();
  await running.next();
  await b.backend.close();
  const rest = await collect({ [Symbol.asyncIterator]: () => running });
  t.match(lastEvent(rest), { type: "error", error: { kind: "generation", message: /shutting down/ } });
  const after = await collect(b.backend.generate(validRequest([1, 10]), noSignal()));
  t.match(after, [{ type: "error", error: { message: /shutting down/ } }]);
  t.equal(b.backend.stats().freeBlocks, b.backend.stats().totalBlocks);
});
