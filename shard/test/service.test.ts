// The gRPC service end to end over a real Unix socket, with the fake engine.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import t, { type Test } from "tap";
import { FinishReason, TextGenerationServiceClient } from "../../proto/gen/generate.js";
import { GRPC_OPTIONS, startGrpcServer, stopGrpcServer } from "../grpc-server.js";
import { FakeEngine } from "./fake-engine.js";
import { batch, call, newService, request, silentLogger, tinyConfig } from "./helpers.js";

async function startShard(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), "tgs-"));
  const socket = join(dir, "s-0");
  const engine = new FakeEngine();
  const service = newService(engine, {
    config: { ...tinyConfig, slidingWindow: 64 },
    worldSize: 2,
    urls: [`unix://${join(dir, "s-0")}`, `unix://${join(dir, "s-1")}`],
  });
  const server = await startGrpcServer(service, socket, silentLogger);
  const client = new TextGenerationServiceClient(`unix://${socket}`, grpc.credentials.createInsecure(), GRPC_OPTIONS);
  t.teardown(async () => {
    client.close();
    await stopGrpcServer(server, 1000);
    rmSync(dir, { recursive: true, force: true });
  });
  return { client, engine, dir };
}

t.test("every RPC over the socket", async (t) => {
  const { client, engine, dir } = await startShard(t);
  t.same(await call(client, "info", {}), {
    requiresPadding: false,
    dtype: "float32",
    deviceType: "cpu",
    windowSize: 64,
    speculate: 0,
    supportChunking: true,
    usePrefixCaching: true,
    attentionImpl: "paged",
    blockSize: 4,
    rank: 0,
    worldSize: 2,
  });
  t.same(await call(client, "serviceDiscovery", {}), { urls: [`unix://${dir}/s-0`, `unix://${dir}/s-1`] });
  t.same(await call(client, "health", {}), {});
  await call(client, "clearCache", {});
  t.same(await call(client, "warmup", { maxPrefillTokens: 32, maxBatchTotalTokens: 400, batch: batch(0, [request(9, 20, { blocks: [] })]) }), {
    maxSupportedTotalTokens: 400,
    maxInputTokens: 127,
    maxTotalTokens: 128,
  });

  const pre = await call<any>(client, "prefill", {
    batch: batch(3, [request(1, 6, { maxNewTokens: 2, prefillLogprobs: true }), request(2, 3, { maxNewTokens: 4 })]),
  });
  t.equal(pre.generations.length, 2);
  const prefill = pre.generations[0].prefillTokens.logprobs;
  t.ok(Number.isNaN(prefill[0]), "NaN survives the wire");
  t.ok(Math.abs(prefill[1] - -0.01) < 1e-6);
  t.same(pre.batch, { id: 3, requestIds: [1, 2], size: 2, maxTokens: 16, currentTokens: 2 });
  t.ok(pre.totalNs >= pre.forwardNs);

  const dec = await call<any>(client, "decode", { batches: [pre.batch] });
  t.same(dec.generations[0].generatedText, { text: "", generatedTokens: 2, finishReason: FinishReason.FINISH_REASON_LENGTH });
  t.same(dec.batch.requestIds, [2]);

  const filtered = await call<any>(client, "filterBatch", { batchId: 3, requestIds: [] });
  t.same(filtered.batch, { id: 3, requestIds: [], size: 0, maxTokens: 0, currentTokens: 0 });
  t.equal(engine.kvLength.size, 0);
  await call(client, "clearCache", { id: 3 });
});

t.test("errors become gRPC statuses with TGI's messages", async (t) => {
  const { client, engine } = await startShard(t);
  await t.rejects(call(client, "prefill", { batch: batch(1, [request(1, 3)]) }), {
    code: grpc.status.FAILED_PRECONDITION,
    details: "the KV cache is not allocated yet: call Warmup first",
  });
  await call(client, "warmup", { maxPrefillTokens: 32, maxBatchTotalTokens: 400 });
  await t.rejects(call(client, "decode", { batches: [{ id: 5, requestIds: [], size: 0, maxTokens: 0, currentTokens: 0 }] }), {
    code: grpc.status.INVALID_ARGUMENT,
    details: "Batch ID 5 not found in cache.",
  });
  await t.rejects(call(client, "filterBatch", { batchId: 6, requestIds: [1] }), {
    code: grpc.status.INVALID_ARGUMENT,
    details: "Batch ID 6 not found in cache.",
  });
  engine.failNextStep = "out of memory";
  await t.rejects(call(client, "prefill", { batch: batch(1, [request(1, 3)]) }), {
    code: grpc.status.INTERNAL,
    details: "engine step failed: out of memory",
  });
  const ok = await call<any>(client, "prefill", { batch: batch(1, [request(1, 3)]) });
  t.equal(ok.generations.length, 1, "the shard keeps serving after a failure");
});

t.test("concurrent calls are serialised; messages over 4 MiB are accepted", async (t) => {
  const { client, engine } = await startShard(t);
  await call(client, "warmup", { maxPrefillTokens: 1 << 22, maxBatchTotalTokens: 3_000_000 });
  const calls = [1, 2, 3, 4].map((id) => call<any>(client, "prefill", { batch: batch(id, [request(id, 5)]) }));
  const results = await Promise.all(calls);
  t.same(
    results.map((r) => r.batch.id),
    [1, 2, 3, 4],
  );
  t.same(
    engine.steps.map((s) => s[0]!.id),
    [1, 2, 3, 4],
    "one step at a time, in arrival order",
  );
  const n = 1_500_000;
  const blocks = Array.from({ length: Math.ceil((n + 1) / 4) }, (_, i) => i + 1);
  const big = await call<any>(client, "prefill", { batch: batch(10, [request(10, n, { blocks, maxNewTokens: 1 })]) });
  t.equal(big.generations[0].generatedText.generatedTokens, 1);
});
