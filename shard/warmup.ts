// Warm-up arithmetic: how many KV blocks to allocate, which blocks the warm-up
// batch borrows (the router sends it without any), the decode steps warmed before
// serving, and the limits the shard reports back.
import { GREEDY_PARAMETERS } from "../proto/defaults.js";
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

/** Blocks the warm-up batch borrows (as assignWarmupBlocks gives them), block 0 included. */
export function warmupBlocksNeeded(requests: readonly Request[], blockSize: number): number {
  let blocks = 1;
  for (const r of requests) blocks += r.blocks.length > 0 ? 0 : Math.ceil((r.inputIds.length + 1) / blockSize);
  const assigned = requests.flatMap((r) => r.blocks);
  return Math.max(blocks, assigned.length > 0 ? Math.max(...assigned) + 1 : 0, 2);
}

/**
 * Memory kept back beyond the fraction: what later steps may allocate that the warm-up
 * did not (logits and sampler rows of wide decode batches, cuBLASLt workspaces, the
 * penalty counts), and the driver's own allocations.
 */
export function cudaSafetyMargin(totalBytes: number): number {
  return Math.max(512 * 1024 ** 2, Math.floor(0.03 * totalBytes));
}

export interface DeviceMemorySizing {
  freeBytes: number;
  totalBytes: number;
  /** Bytes of the KV cache allocated during the measurement (freed before the real one). */
  currentKvBytes: number;
  memoryFraction: number;
  kvBytesPerBlock: number;
}

/**
 * KV blocks for a GPU, as TGI sizes its cache: after a warm-up prefill of
 * max_batch_prefill_tokens has grown the activations to their peak, the cache takes
 * what is free, less the share of the card the fraction withholds and a safety margin.
 */
export function cudaKvBlockCount(m: DeviceMemorySizing): number {
  const withheld = (1 - m.memoryFraction) * m.totalBytes;
  const budget = m.freeBytes + m.currentKvBytes - withheld - cudaSafetyMargin(m.totalBytes);
  const blocks = Math.min(Math.floor(budget / m.kvBytesPerBlock), MAX_KV_BLOCKS);
  if (blocks < 2) {
    throw new ShardError(
      "resource_exhausted",
      `after the warm-up ${m.freeBytes} bytes of GPU memory are free of ${m.totalBytes}: not enough for a KV cache of ` +
        `2 blocks of ${m.kvBytesPerBlock} bytes at --cuda-memory-fraction ${m.memoryFraction}; lower --max-batch-prefill-tokens`,
    );
  }
  return blocks;
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

/** Tokens each decode warm-up sequence generates: its prefill's, then two decode steps (the graph's eager first use, then its capture). */
export const DECODE_WARMUP_TOKENS = 3;
/** The decode warm-up's eager steps past the largest graph: 32 rows apart, up to this many. */
export const DECODE_WARMUP_EAGER_ROWS = 512;

/** KV blocks one decode warm-up sequence holds: its prompt token and the tokens it generates. */
function blocksPerWarmupSequence(blockSize: number): number {
  return Math.ceil((1 + DECODE_WARMUP_TOKENS) / blockSize);
}

/**
 * Batch sizes whose steps the warm-up runs before serving, as TGI warms its CUDA graphs: the
 * engine's warmupBatchSizes (on CUDA each graph bucket: its first decode tunes the GEMMs of its row
 * count, its second captures the graph), then eager sizes 32 rows apart past the largest (the
 * engine tunes cuBLASLt per 32 rows there). Otherwise the first steps of a busy server pay for that
 * tuning, each new row count stalling the whole batch. Sizes whose sequences would not fit
 * `numBlocks` (block 0 reserved) are left out; none where the engine names none (the CPU).
 */
export function decodeWarmupSizes(engineSizes: readonly number[], numBlocks: number, blockSize: number): number[] {
  if (engineSizes.length === 0) return [];
  const sizes = [...engineSizes].sort((a, b) => a - b);
  const largest = sizes[sizes.length - 1]!;
  for (let rows = Math.ceil((largest + 1) / 32) * 32; rows <= DECODE_WARMUP_EAGER_ROWS; rows += 32) sizes.push(rows);
  const blocksEach = blocksPerWarmupSequence(blockSize);
  return sizes.filter((size) => size > 0 && size * blocksEach <= numBlocks - 1);
}

/**
 * Blocks the decode warm-up needs for all its sizes, block 0 included (0 on the CPU): the
 * warm-up cache on a GPU is at least this big, so that a small --max-batch-prefill-tokens does not
 * cut the sizes short.
 */
export function decodeWarmupBlocksNeeded(engineSizes: readonly number[], blockSize: number): number {
  const largest = decodeWarmupSizes(engineSizes, Number.POSITIVE_INFINITY, blockSize).at(-1);
  return largest === undefined ? 0 : largest * blocksPerWarmupSequence(blockSize) + 1;
}

/** `size` one-token greedy requests on blocks from 1 up, each generating DECODE_WARMUP_TOKENS tokens. */
export function decodeWarmupRequests(size: number, blockSize: number, tokenId: number): Request[] {
  const blocksEach = blocksPerWarmupSequence(blockSize);
  return Array.from({ length: size }, (_, id) => ({
    id,
    inputIds: [tokenId],
    truncate: 1,
    parameters: { ...GREEDY_PARAMETERS },
    stoppingParameters: { maxNewTokens: DECODE_WARMUP_TOKENS, stopSequences: [], ignoreEosToken: true, eosTokenIds: [] },
    prefillLogprobs: false,
    topNTokens: 0,
    blocks: Array.from({ length: blocksEach }, (_, i) => 1 + id * blocksEach + i),
    slots: [],
    cacheLen: 0,
  }));
}
