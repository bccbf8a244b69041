// The FIFO of waiting requests and TGI's Queue::next_batch: take requests from
// the front while the prefill budget, the token budget and the KV blocks allow.
import type { Batch, Request } from "../../proto/gen/generate.js";
import { blocksFor, type BlockAllocator } from "./block-allocator.js";
import { tokensNeeded, type Entry, type EntrySink, type ShardRequest } from "./entry.js";

export interface QueueOptions {
  allocator: BlockAllocator;
  /** The shard honours Request.chunk_len: a prompt larger than the budget left is split. */
  supportChunking: boolean;
  /** Speculative tokens per request per step (InfoResponse.speculate). */
  speculate: number;
}

/** A batch ready for Prefill, with its entries (blocks already allocated). */
export interface NextBatch {
  entries: Entry[];
  batch: Batch;
}

export class Queue {
  private readonly waiting: Entry[] = [];
  private nextRequestId = 0;
  private nextBatchId = 0;

  constructor(private readonly options: QueueOptions) {}

  get length(): number {
    return this.waiting.length;
  }

  push(request: ShardRequest, sink: EntrySink): Entry {
    const entry: Entry = { id: this.nextRequestId++, request, sink, allocation: null };
    this.waiting.push(entry);
    return entry;
  }

  /** Drops entries whose client went away; returns how many. */
  dropGone(): number {
    const before = this.waiting.length;
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if ((this.waiting[i] as Entry).sink.gone) this.waiting.splice(i, 1);
    }
    return before - this.waiting.length;
  }

  /** Fails and removes every waiting entry (shutdown). */
  failAll(reason: Error): void {
    for (const entry of this.waiting.splice(0)) entry.sink.fail(reason);
  }

  /**
   * TGI's next_batch. Budgets are in tokens; `minSize`/`maxSize` bound the
   * number of requests (undefined: no bound). Returns null when nothing fits or
   * fewer than `minSize` requests would. The prefill budget is rounded up to
   * whole blocks, as TGI does. Entries put back keep their place and hold no blocks.
   */
  nextBatch(
    minSize: number | undefined,
    maxSize: number | undefined,
    prefillBudget: number,
    tokenBudget: number,
  ): NextBatch | null {
    if (prefillBudget <= 0 || tokenBudget <= 0 || maxSize === 0) return null;
    this.dropGone();
    if (this.waiting.length === 0) return null;
    if (minSize !== undefined && this.waiting.length < minSize) return null;

    const { allocator, supportChunking, speculate } = this.options;
    const blockSize = allocator.blockSize;
    const budget = blocksFor(prefillBudget, blockSize) * blockSize;
    const taken: { entry: Entry; chunkLen: number | undefined }[] = [];
    let prefillTokens = 0;
    let batchTokens = 0;

    while (this.waiting.length > 0) {
      const entry = this.waiting[0] as Entry;
      const needed = tokensNeeded(entry.request, speculate);
      if (needed > allocator.totalBlocks * blockSize) {
        // It would wait forever at the front and block everyone behind it.
        this.waiting.shift();
        entry.sink.fail(
          new Error(`Request needs ${needed} KV cache tokens but the cache holds ${allocator.totalBlocks * blockSize}`),
        );
        continue;
      }
      const prefixIds = entry.request.prefillLogprobs ? undefined : entry.request.inputIds;
      const allocation = allocator.allocate(needed, prefixIds);
      if (!allocation) break;
      const allocatedTokens = allocation.blocks.length * blockSize;
      if (batchTokens + allocatedTokens > tokenBudget) {
        allocator.free(allocation);
        break;
      }
      const inputLength = entry.request.inputIds.length;
      // A full prefix hit still computes the last prompt token, to sample from it.
      const prefixLen = Math.min(allocation.prefixLen, inputLength - 1);
      const postfixLen = inputLength - prefixLen;
      let chunkLen: number | undefined;
      if (prefillTokens + postfixLen > budget) {
        const room = budget - prefillTokens;
        if (!supportChunking || room <= 0) {
          allocator.free(allocation);
          break;
        }
        chunkLen = room;
      }
      this.waiting.shift();
      entry.allocation = allocation;
      taken.push({ entry, chunkLen });
      prefillTokens += chunkLen ?? postfixLen;
      batchTokens += allocatedTokens;
      if (chunkLen !== undefined || (maxSize !== undefined && taken.length >= maxSize)) break;
    }

    if (taken.length === 0) return null;
    if (minSize !== undefined && taken.length < minSize) {
      for (let i = taken.length - 1; i >= 0; i--) {
        const { entry } = taken[i] as (typeof taken)[number];
        allocator.free(entry.allocation!);
        entry.allocation = null;
        this.waiting.unshift(entry);
      }
      return null;
    }

    const requests = taken.map(({ entry, chunkLen }) => toProtoRequest(entry, chunkLen));
    const batch: Batch = {
      id: this.nextBatchId++,
      requests,
      size: requests.length,
      maxTokens: batchTokens,
      maxBlocks: Math.max(...requests.map((r) => r.blocks.length)),
    };
    return { entries: taken.map((t) => t.entry), batch };
  }
}

function toProtoRequest(entry: Entry, chunkLen: number | undefined): Request {
  const { request, allocation } = entry;
  return {
    id: entry.id,
    inputIds: request.inputIds,
    truncate: request.inputIds.length,
    parameters: request.parameters,
    stoppingParameters: request.stoppingParameters,
    prefillLogprobs: request.prefillLogprobs,
    topNTokens: request.topNTokens,
    blocks: [...allocation!.blocks],
    // Empty: the shard derives each position's slot from `blocks`.
    slots: [],
    cacheLen: Math.min(allocation!.prefixLen, request.inputIds.length - 1),
    chunkLen,
  };
}
