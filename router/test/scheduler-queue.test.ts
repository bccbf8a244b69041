import t from "tap";
import type { Generation } from "../../proto/gen/generate.js";
import { SimpleBlockAllocator } from "../scheduler/block-allocator.js";
import type { EntrySink, ShardRequest } from "../scheduler/entry.js";
import { Queue } from "../scheduler/queue.js";

class Sink implements EntrySink {
  gone = false;
  failure: Error | null = null;
  batchedAt: number | null = null;
  batched(at: number) {
    this.batchedAt = at;
  }
  deliver(_: Generation) {
    return false;
  }
  fail(error: Error) {
    this.failure = error;
    this.gone = true;
  }
}

function request(inputLength: number, maxNewTokens: number): ShardRequest {
  return {
    inputIds: Array.from({ length: inputLength }, (_, i) => 10 + i),
    parameters: {
      temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 0,
      repetitionPenalty: 1, watermark: false, frequencyPenalty: 0, presencePenalty: 0, grammar: "", grammarType: 0,
    },
    stoppingParameters: { maxNewTokens, stopSequences: [], ignoreEosToken: false, eosTokenIds: [2] },
    prefillLogprobs: false,
    topNTokens: 0,
  };
}

function setup(numBlocks: number, supportChunking = false) {
  const allocator = new SimpleBlockAllocator(numBlocks, 16);
  const queue = new Queue({ allocator, supportChunking, speculate: 0 });
  return { allocator, queue };
}

t.test("takes requests in order while the prefill budget lasts", async (t) => {
  const { allocator, queue } = setup(65);
  for (let i = 0; i < 4; i++) queue.push(request(30, 10), new Sink());
  // budget 70 rounds up to 80: two prompts of 30 fit, a third (90) does not.
  const next = queue.nextBatch(undefined, undefined, 70, 10_000)!;
  t.equal(next.entries.length, 2);
  t.same(next.entries.map((e) => e.id), [0, 1]);
  t.same(next.batch.requests.map((r) => r.id), [0, 1]);
  t.equal(next.batch.size, 2);
  t.equal(next.batch.maxBlocks, 3, "30 + 10 - 1 tokens need 3 blocks");
  t.equal(next.batch.maxTokens, 2 * 3 * 16);
  t.same(next.batch.requests[0]!.blocks, next.entries[0]!.allocation!.blocks);
  t.equal(next.batch.requests[0]!.chunkLen, undefined);
  t.equal(next.batch.requests[0]!.truncate, 30);
  t.equal(queue.length, 2);
  t.equal(allocator.freeBlocks, 64 - 6, "the put-back entry holds no blocks");
  t.equal(next.batch.id, 0);
  t.equal(queue.nextBatch(undefined, undefined, 4096, 10_000)!.batch.id, 1);
});

t.test("token budget and max size bound the batch", async (t) => {
  const { allocator, queue } = setup(65);
  for (let i = 0; i < 5; i++) queue.push(request(10, 7), new Sink()); // 16 tokens = 1 block each
  const byTokens = queue.nextBatch(undefined, undefined, 4096, 48)!;
  t.equal(byTokens.entries.length, 3, "3 blocks of 16 tokens fit a 48-token budget");
  const bySize = queue.nextBatch(undefined, 1, 4096, 10_000)!;
  t.equal(bySize.entries.length, 1);
  t.equal(queue.length, 1);
  t.equal(queue.nextBatch(undefined, 0, 4096, 10_000), null, "max size 0");
  t.equal(queue.nextBatch(undefined, undefined, 0, 10_000), null, "no prefill budget");
  t.equal(queue.nextBatch(undefined, undefined, 4096, 0), null, "no token budget");
  t.equal(allocator.freeBlocks, 64 - 4);
});

t.test("min size: too few requests means no batch and nothing taken", async (t) => {
  const { allocator, queue } = setup(9); // 8 blocks
  for (let i = 0; i < 3; i++) queue.push(request(40, 9), new Sink()); // 48 tokens = 3 blocks
  t.equal(queue.nextBatch(4, undefined, 4096, 10_000), null, "fewer queued than min size");
  t.equal(queue.nextBatch(3, undefined, 4096, 10_000), null, "only two fit in 8 blocks");
  t.equal(queue.length, 3);
  t.equal(allocator.freeBlocks, 8, "blocks of put-back entries are freed");
  const next = queue.nextBatch(2, undefined, 4096, 10_000)!;
  t.same(next.entries.map((e) => e.id), [0, 1]);
});

t.test("entries wait when blocks run out, and get them once freed", async (t) => {
  const { allocator, queue } = setup(5); // 4 blocks
  queue.push(request(40, 9), new Sink()); // 3 blocks
  queue.push(request(20, 5), new Sink()); // 2 blocks
  const first = queue.nextBatch(undefined, undefined, 4096, 10_000)!;
  t.equal(first.entries.length, 1);
  t.equal(queue.nextBatch(undefined, undefined, 4096, 10_000), null, "1 block left, 2 needed");
  t.equal(queue.length, 1);
  allocator.free(first.entries[0]!.allocation!);
  const second = queue.nextBatch(undefined, undefined, 4096, 10_000)!;
  t.equal(second.entries[0]!.id, 1);
});

t.test("a long prompt is split with chunk_len when the shard supports chunking", async (t) => {
  const { queue } = setup(65, true);
  queue.push(request(20, 5), new Sink());
  queue.push(request(100, 5), new Sink());
  queue.push(request(10, 5), new Sink());
  const next = queue.nextBatch(undefined, undefined, 64, 10_000)!;
  t.same(next.entries.map((e) => e.id), [0, 1], "the batch stops after the chunked request");
  t.equal(next.batch.requests[0]!.chunkLen, undefined);
  t.equal(next.batch.requests[1]!.chunkLen, 44, "64 - 20 tokens left for the long prompt");
  t.equal(next.batch.requests[1]!.inputIds.length, 100, "the whole prompt is sent");
  t.equal(next.batch.requests[1]!.blocks.length, 7, "blocks for the whole request");
  t.equal(queue.length, 1);
});

t.test("without chunking a prompt over the budget waits", async (t) => {
  const { queue } = setup(65, false);
  queue.push(request(20, 5), new Sink());
  queue.push(request(100, 5), new Sink());
  const next = queue.nextBatch(undefined, undefined, 64, 10_000)!;
  t.same(next.entries.map((e) => e.id), [0]);
  t.equal(queue.length, 1);
  t.equal(queue.nextBatch(undefined, undefined, 64, 10_000), null);
  t.equal(queue.nextBatch(undefined, undefined, 128, 10_000)!.entries[0]!.id, 1);
});

t.test("drops entries whose client went away, fails those that can never fit", async (t) => {
  const { allocator, queue } = setup(5); // 64 tokens
  const gone = new Sink();
  const huge = new Sink();
  queue.push(request(10, 5), gone);
  queue.push(request(60, 20), huge);
  queue.push(request(10, 5), new Sink());
  gone.gone = true;
  const next = queue.nextBatch(undefined, undefined, 4096, 10_000)!;
  t.same(next.entries.map((e) => e.id), [2]);
  t.match(huge.failure?.message, /needs 79 KV cache tokens but the cache holds 64/);
  t.equal(queue.length, 0);
  t.equal(allocator.freeBlocks, 3);
});
