// Warm-up arithmetic: how many KV blocks to allocate, which blocks the warm-up
// batch borrows (the router sends it without any), and the limits the shard
// reports back.
import type { Request, WarmupRequest, WarmupResponse } from "../proto/gen/generate.js";
import { badRequest, ShardError } from "./errors.js";

/** Keeps the block table of a request and the allocator's arrays reasonable. */
export const MAX_KV_BLOCKS = 1_000_000;
/** KV memory when neither max_batch_total_tokens nor --kv-cache-bytes says otherwise. */
export const DEFAULT_KV_CACHE_BYTES = 1024 ** 3;

export interface KvSizing {
  blockSize: number;
  kvBytesPerBlock: number;
  /** Memory budget for the KV cache, used when the router gives no max_batch_total_tokens. */
  kvCacheBytes: number;
}

/** Blocks to allocate, block 0 (reserved for health checks) included. */
export function kvBlockCount(maxBatchTotalTokens: number | undefined, s: KvSizing): number {
  if (maxBatchTotalTokens !== undefined) {
    const blocks = Math.ceil(maxBatchTotalTokens / s.blockSize) + 1;
    if (blocks > MAX_KV_BLOCKS) {
      throw badRequest(
        `max_batch_total_tokens ${maxBatchTotalTokens} needs ${blocks} KV blocks of ${s.blockSize} tokens; the limit is ${MAX_KV_BLOCKS}`,
      );
    }
    return Math.max(blocks, 2);
  }
  const blocks = Math.min(Math.floor(s.kvCacheBytes / s.kvBytesPerBlock), MAX_KV_BLOCKS);
  if (blocks < 2) {
    throw new ShardError(
      "resource_exhausted",
      `a KV cache of ${s.kvCacheBytes} bytes holds fewer than 2 blocks of ${s.kvBytesPerBlock} bytes; raise --kv-cache-bytes`,
    );
  }
  return blocks;
}

/**
 * Gives each warm-up request consecutive blocks from 1 up, enough for its prompt
 * and one decode step, unless the router assigned some itself.
 */
export function assignWarmupBlocks(requests: readonly Request[], numBlocks: number, blockSize: number): Request[] {
  let next = 1;
  const assigned = requests.map((r) => {
    if (r.blocks.length > 0) return r;
    const count = Math.ceil((r.inputIds.length + 1) / blockSize);
    const blocks = Array.from({ length: count }, (_, i) => next + i);
    next += count;
    return { ...r, blocks, slots: [] };
  });
  if (next > numBlocks) {
    const tokens = requests.reduce((sum, r) => sum + r.inputIds.length, 0);
    throw new ShardError(
      "resource_exhausted",
      `Not enough KV cache to warm up with ${tokens} prefill tokens: they need ${next - 1} blocks of ${blockSize} tokens ` +
        `and the cache has ${numBlocks - 1}. Lower --max-batch-prefill-tokens or give the KV cache more memory.`,
    );
  }
  return assigned;
}

export function warmupLimits(req: WarmupRequest, numBlocks: number, blockSize: number, maxPositionEmbeddings: number): WarmupResponse {
  const capacity = (numBlocks - 1) * blockSize;
  let maxTotalTokens = req.maxTotalTokens ?? Math.min(capacity, maxPositionEmbeddings);
  if (req.maxTotalTokens === undefined && req.maxInputTokens !== undefined) {
    maxTotalTokens = Math.max(maxTotalTokens, req.maxInputTokens + 1);
  }
  return {
    maxSupportedTotalTokens: capacity,
    maxInputTokens: req.maxInputTokens ?? maxTotalTokens - 1,
    maxTotalTokens,
  };
}
