import t from "tap";
import { ShardClient, ShardError } from "../client/shard-client.js";
import { ShardedClient } from "../client/sharded-client.js";
import { warmupRequest } from "../infer/warmup.js";
import { startFakeShards } from "./fake-shard.js";

t.test("connects through rank 0's service discovery and fans out", async (t) => {
  const fake = await startFakeShards(3);
  t.teardown(fake.close);
  const client = await ShardedClient.connect(`unix://${fake.masterSocket}`);
  t.teardown(() => client.close());
  t.equal(client.worldSize, 3);
  const info = await client.info();
  t.equal(info.rank, 0, "rank 0 answers");
  t.equal(info.worldSize, 3);
  await client.health();
  await client.clearCache(7);
  for (const shard of fake.shards) {
    t.same(shard.callsOf("health"), [{}]);
    t.same(shard.callsOf("clearCache"), [{ id: 7 }]);
  }
});

t.test("Warmup takes the smallest answer; an unknown capacity counts as smallest", async (t) => {
  const fake = await startFakeShards(2);
  t.teardown(fake.close);
  fake.shards[1]!.options.numBlocks = 10;
  const client = await ShardedClient.connect(fake.masterSocket);
  t.teardown(() => client.close());
  const request = warmupRequest({ maxBatchPrefillTokens: 64 }, 3);
  t.same(await client.warmup(request), { maxSupportedTotalTokens: 160, maxInputTokens: 255, maxTotalTokens: 512 });
});

t.test("any shard's error fails the call with a ShardError carrying its message", async (t) => {
  const fake = await startFakeShards(2);
  t.teardown(fake.close);
  fake.shards[1]!.options.fail = (rpc) => (rpc === "info" ? "rank 1 is unwell" : undefined);
  const client = await ShardedClient.connect(fake.masterSocket);
  t.teardown(() => client.close());
  const error = await client.info().catch((e: unknown) => e);
  t.ok(error instanceof ShardError);
  t.match(error, { rpc: "info", details: "rank 1 is unwell", message: "Server error: rank 1 is unwell", code: 13 });
  t.equal((error as ShardError).socket, fake.shards[1]!.urls[1]);
});

t.test("an unreachable socket is a ShardError too", async (t) => {
  const client = new ShardClient("/nonexistent/tg-socket");
  t.teardown(() => client.close());
  await t.rejects(client.health(), ShardError);
});

t.test("connect names the socket when rank 0 cannot be reached", async (t) => {
  await t.rejects(ShardedClient.connect("/nonexistent/tg-master"), /cannot reach the rank-0 shard at \/nonexistent\/tg-master/);
});
