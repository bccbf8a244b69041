// The shard's eight RPCs over the engine, independent of gRPC (grpc-server.ts
// adapts them). Everything that touches batch state or the engine runs through
// one SerialQueue, so steps never overlap and a filter never lands mid-step.
//
// Lookahead (on by default in the shard process): when a step leaves a batch whose
// requests all decode, the shard queues that batch's next step at once, before the
// router asks for it, so the device computes while the router and gRPC turn the last
// step's tokens around (about 1.5 ms per step on the GPU machine: the whole gap between
// the engine's step and the server's time per token at batch 1). The next Decode or
// Prefill that names the batch returns those generations; a FilterBatch drops the
// filtered requests' look-ahead tokens with them. Nothing is recomputed or rolled back:
// a look-ahead step is exactly the step the router would have asked for, and a request
// the router stops meanwhile (stop sequence, cancel) is released with its extra token.
// Each engine step also asks the engine to run ahead (NativeEngine.step's `ahead`): the
// step after it starts on the device before its tokens reach the host, which hides the
// host's own turnaround (~0.3–0.5 ms a step at batch 1 on an H100).
import type { Logger } from "pino";
import type { ModelConfig, NativeEngine, StepOutput } from "../native/engine-types.js";
import type {
  CachedBatch,
  ClearCacheRequest,
  DecodeRequest,
  DecodeResponse,
  FilterBatchRequest,
  FilterBatchResponse,
  InfoResponse,
  PrefillRequest,
  PrefillResponse,
  Request,
  ServiceDiscoveryResponse,
  WarmupRequest,
  WarmupResponse,
} from "../proto/gen/generate.js";
import { BatchCache, isPrefilling, requestFromProto, toCachedBatch, type ShardRequest, type WatermarkSettings } from "./batch-state.js";
import { asShardError, badRequest, ShardError } from "./errors.js";
import { applyStep, type StepResult } from "./generation.js";
import { SerialQueue } from "./serial-queue.js";
import { planStep, scheduleNextStep } from "./step-planner.js";
import {
  assignWarmupBlocks,
  cudaKvBlockCount,
  decodeWarmupBlocksNeeded,
  decodeWarmupRequests,
  decodeWarmupSizes,
  kvBlockCount,
  warmupBlocksNeeded,
  warmupLimits,
} from "./warmup.js";

export interface ShardServiceOptions {
  engine: NativeEngine;
  config: ModelConfig;
  rank: number;
  worldSize: number;
  /** `unix://<path>` of every rank, in rank order. */
  urls: string[];
  /** KV memory budget when Warmup gives no max_batch_total_tokens. */
  kvCacheBytes: number;
  /** On cuda without max_batch_total_tokens: share of the GPU the KV cache sizing may count on (default 1). */
  cudaMemoryFraction?: number;
  /** Gamma and delta of watermarked requests (absent: TGI's defaults). */
  watermark?: WatermarkSettings;
  logger: Logger;
  /**
   * Called after a failed engine step when this shard cannot go on: with several ranks a
   * collective may have been left half done, so every later step would fail too. The shard
   * process exits and the launcher stops the server with a message naming it.
   */
  onUnrecoverable?: (error: Error) => void;
  /** Compute a decoding batch's next step before the router asks for it (see above). */
  lookahead?: boolean;
}

/** A batch's step computed ahead: its result, or the error the next RPC on it reports. */
interface Lookahead {
  /** The batch's requests when the step ran (a failed step has released them). */
  requests: readonly ShardRequest[];
  result?: StepResult;
  error?: unknown;
  forwardNs: number;
}

type StepResponse = PrefillResponse & DecodeResponse;

export class ShardService {
  private readonly cache = new BatchCache();
  private readonly queue = new SerialQueue();
  private readonly blockSize: number;
  /** KV blocks allocated (0 until Warmup). */
  private numBlocks = 0;
  private maxPrefillTokens = Number.POSITIVE_INFINITY;
  /** Steps computed ahead, by batch id. */
  private readonly ahead = new Map<number, Lookahead>();

  constructor(private readonly opts: ShardServiceOptions) {
    this.blockSize = opts.engine.info().blockSize;
  }

  info(): InfoResponse {
    const info = this.opts.engine.info();
    const window = this.opts.config.slidingWindow;
    return {
      requiresPadding: false,
      dtype: info.dtype,
      deviceType: info.device,
      ...(window > 0 ? { windowSize: window } : {}),
      speculate: 0,
      supportChunking: true,
      usePrefixCaching: true,
      attentionImpl: info.attentionImpl || "paged",
      blockSize: info.blockSize,
      rank: this.opts.rank,
      worldSize: this.opts.worldSize,
    };
  }

  serviceDiscovery(): ServiceDiscoveryResponse {
    return { urls: [...this.opts.urls] };
  }

  health(): Promise<void> {
    return this.queue.run(() => {
      this.opts.engine.info();
    });
  }

  clearCache(req: ClearCacheRequest): Promise<void> {
    return this.queue.run(() => {
      if (req.id === undefined) this.ahead.clear();
      else this.ahead.delete(req.id);
      this.release(this.cache.clear(req.id));
    });
  }

  filterBatch(req: FilterBatchRequest): Promise<FilterBatchResponse> {
    return this.queue.run(() => {
      const { kept, dropped } = this.cache.filter(req.batchId, req.requestIds);
      const ahead = this.ahead.get(req.batchId);
      if (ahead?.result) {
        const keep = new Set(req.requestIds);
        ahead.result = {
          generations: ahead.result.generations.filter((g) => keep.has(g.requestId)),
          running: ahead.result.running.filter((r) => keep.has(r.id)),
          finished: ahead.result.finished.filter((r) => keep.has(r.id)),
        };
      }
      if (kept.length === 0) this.ahead.delete(req.batchId);
      this.release(dropped);
      return { batch: toCachedBatch(req.batchId, kept, this.blockSize) };
    });
  }

  warmup(req: WarmupRequest): Promise<WarmupResponse> {
    return this.queue.run(() => this.runWarmup(req));
  }

  prefill(req: PrefillRequest): Promise<PrefillResponse> {
    return this.queue.run(() => {
      const start = process.hrtime.bigint();
      const batch = req.batch;
      if (!batch) throw badRequest("Prefill has no batch");
      const cachedId = req.cachedBatch?.id;
      if (cachedId !== undefined) this.cache.requireAll([cachedId]);
      if (this.cache.has(batch.id) && batch.id !== cachedId) throw badRequest(`Batch ID ${batch.id} is already in cache.`);
      const fresh = this.newRequests(batch.requests);
      if (cachedId === undefined) return this.step(batch.id, fresh, start);
      const concatStart = process.hrtime.bigint();
      const cached = this.takeBatches([cachedId]);
      return this.step(cachedId, [...cached.requests, ...fresh], start, process.hrtime.bigint() - concatStart, cached.ahead);
    });
  }

  decode(req: DecodeRequest): Promise<DecodeResponse> {
    return this.queue.run(() => {
      const start = process.hrtime.bigint();
      const ids = req.batches.map((b: CachedBatch) => b.id);
      if (ids.length === 0) throw badRequest("Decode needs at least one batch");
      const taken = this.takeBatches(ids);
      const concatNs = ids.length > 1 ? process.hrtime.bigint() - start : undefined;
      return this.step(ids[0]!, taken.requests, start, concatNs, taken.ahead);
    });
  }

  /** Drops every cached batch and the engine state behind it (shutdown). */
  close(): Promise<void> {
    return this.queue.run(() => {
      this.ahead.clear();
      this.release(this.cache.clear());
    });
  }

  /**
   * Pops the listed batches (requests in list order) with the steps computed ahead for
   * any of them. A look-ahead that failed fails the RPC here, its batch already dropped
   * (the engine state of its requests was released when the step failed).
   */
  private takeBatches(ids: readonly number[]): { requests: ShardRequest[]; ahead: Lookahead[] } {
    const requests = this.cache.popMerged(ids);
    const ahead: Lookahead[] = [];
    for (const id of ids) {
      const a = this.ahead.get(id);
      if (!a) continue;
      this.ahead.delete(id);
      ahead.push(a);
    }
    const failed = ahead.filter((a) => a.error !== undefined);
    if (failed.length > 0) {
      // As when a step over all of them fails: every request goes, none twice.
      const released = new Set(failed.flatMap((a) => a.requests));
      this.release(requests.filter((r) => !released.has(r)));
      throw failed[0]!.error;
    }
    return { requests, ahead };
  }

  /** Queues the next step of batch `batchId`, to run once the current task ends. */
  private lookAhead(batchId: number): void {
    if (!this.opts.lookahead) return;
    void this.queue.run(async () => {
      // The batch as it is now: an RPC queued before this task may have filtered it.
      const requests = this.cache.get(batchId);
      if (!requests || this.ahead.has(batchId) || requests.some(isPrefilling)) return;
      const start = process.hrtime.bigint();
      const entry: Lookahead = { requests, forwardNs: 0 };
      try {
        entry.result = await this.compute([...requests]);
      } catch (err) {
        entry.error = err;
      }
      entry.forwardNs = Number(process.hrtime.bigint() - start);
      this.ahead.set(batchId, entry);
    });
  }

  private newRequests(requests: readonly Request[]): ShardRequest[] {
    if (this.numBlocks === 0) throw new ShardError("failed_precondition", "the KV cache is not allocated yet: call Warmup first");
    const seen = new Set<number>();
    return requests.map((r) => {
      if (seen.has(r.id)) throw badRequest(`request id ${r.id} appears twice in the batch`);
      seen.add(r.id);
      const holder = this.cache.batchOfRequest(r.id);
      if (holder !== undefined) throw badRequest(`request id ${r.id} is already in cached batch ${holder}`);
      const limits = { blockSize: this.blockSize, numBlocks: this.numBlocks, vocabSize: this.opts.config.vocabSize, watermark: this.opts.watermark };
      return requestFromProto(r, limits);
    });
  }

  /**
   * Runs one engine step over `requests` and caches what keeps running under `batchId`.
   * Requests whose step was computed ahead (`ahead`) take those results; the step runs
   * over the rest only.
   */
  private async step(
    batchId: number,
    requests: ShardRequest[],
    start: bigint,
    concatNs?: bigint,
    ahead: readonly Lookahead[] = [],
  ): Promise<StepResponse> {
    if (requests.length === 0) return { generations: [], forwardNs: 0, decodeNs: 0, totalNs: Number(process.hrtime.bigint() - start) };
    const forwardStart = process.hrtime.bigint();
    let result: StepResult;
    if (ahead.length === 0) {
      result = await this.compute(requests);
    } else {
      const done = new Set(ahead.flatMap((a) => [...a.result!.running, ...a.result!.finished]));
      const rest = requests.filter((r) => !done.has(r));
      result = combine(requests, [...ahead.map((a) => a.result!), ...(rest.length > 0 ? [await this.compute(rest)] : [])]);
    }
    const forwardNs = process.hrtime.bigint() - forwardStart + BigInt(ahead.reduce((sum, a) => sum + a.forwardNs, 0));
    const decodeStart = process.hrtime.bigint();
    this.release(result.finished);
    scheduleNextStep(result.running, this.maxPrefillTokens);
    if (result.running.length > 0) {
      this.cache.put(batchId, result.running);
      this.lookAhead(batchId);
    }
    const response: StepResponse = {
      generations: result.generations,
      forwardNs: Number(forwardNs),
      decodeNs: Number(process.hrtime.bigint() - decodeStart),
      totalNs: Number(process.hrtime.bigint() - start),
    };
    if (result.running.length > 0) response.batch = toCachedBatch(batchId, result.running, this.blockSize);
    if (concatNs !== undefined) response.concatNs = Number(concatNs);
    if (this.opts.logger.isLevelEnabled("debug")) {
      this.opts.logger.debug(
        { batchId, size: requests.length, generations: result.generations.length, forwardMs: Number(forwardNs) / 1e6 },
        "step",
      );
    }
    return response;
  }

  /** One engine step; on any failure the requests are dropped with their engine state. */
  private async compute(requests: ShardRequest[]): Promise<StepResult> {
    try {
      const sequences = planStep(requests, this.blockSize);
      let outputs: StepOutput[];
      try {
        // With lookahead the engine also starts the batch's next decode step on the device
        // (fed there with this step's tokens), so it computes while this step's tokens
        // travel to the router and back.
        outputs = await this.opts.engine.step(sequences, { ahead: this.opts.lookahead === true });
      } finally {
        // The engine created sampler state for every sequence it was given.
        for (const r of requests) r.started = true;
      }
      return applyStep(requests, sequences, outputs);
    } catch (err) {
      this.release(requests);
      const error = asShardError(err, "engine step failed");
      if (this.opts.worldSize > 1) this.opts.onUnrecoverable?.(error);
      throw error;
    }
  }

  private async runWarmup(req: WarmupRequest): Promise<WarmupResponse> {
    this.ahead.clear();
    this.release(this.cache.clear());
    const info = this.opts.engine.info();
    const requests = req.batch?.requests ?? [];
    // On a GPU with no max_batch_total_tokens the cache is sized from what the warm-up
    // leaves free (TGI's way): warm up over a cache just big enough, then measure.
    const measure = info.device === "cuda" && req.maxBatchTotalTokens === undefined;
    let numBlocks = measure
      ? Math.max(warmupBlocksNeeded(requests, this.blockSize), decodeWarmupBlocksNeeded(info.warmupBatchSizes, this.blockSize))
      : kvBlockCount(req.maxBatchTotalTokens, {
          blockSize: this.blockSize,
          kvBytesPerBlock: info.kvBytesPerBlock,
          kvCacheBytes: this.opts.kvCacheBytes,
        });
    this.allocate(numBlocks);
    this.maxPrefillTokens = req.maxPrefillTokens > 0 ? req.maxPrefillTokens : Number.POSITIVE_INFINITY;
    const warmupRequests = assignWarmupBlocks(requests, numBlocks, this.blockSize);
    // A prefill step, then a decode step for whatever is still running.
    await this.runToEnd(this.newRequests(warmupRequests), 2);
    // On this cache, whose size every rank shares (the user's, or the warm-up batch's), so that
    // all ranks run the same steps: their collectives must pair up.
    await this.warmDecodeSteps(info.warmupBatchSizes, numBlocks, requests[0]?.inputIds[0] ?? 0);
    if (measure) {
      const memory = this.opts.engine.memoryInfo();
      numBlocks = cudaKvBlockCount({
        ...memory,
        currentKvBytes: numBlocks * info.kvBytesPerBlock,
        memoryFraction: this.opts.cudaMemoryFraction ?? 1,
        kvBytesPerBlock: info.kvBytesPerBlock,
      });
      this.opts.logger.info({ ...memory, memoryFraction: this.opts.cudaMemoryFraction ?? 1 }, "GPU memory after warm-up");
      this.allocate(numBlocks);
    }
    const limits = warmupLimits(req, numBlocks, this.blockSize, this.opts.config.maxPositionEmbeddings);
    this.opts.logger.info(
      { numBlocks, blockSize: this.blockSize, kvBytes: numBlocks * info.kvBytesPerBlock, ...limits },
      "KV cache allocated",
    );
    return limits;
  }

  /** Steps `running` until every request finished or `maxSteps` ran; releases them all. */
  private async runToEnd(running: ShardRequest[], maxSteps = Number.POSITIVE_INFINITY): Promise<void> {
    for (let i = 0; i < maxSteps && running.length > 0; i++) {
      const result = await this.compute(running);
      this.release(result.finished);
      scheduleNextStep(result.running, this.maxPrefillTokens);
      running = result.running;
    }
    this.release(running);
  }

  /**
   * Runs the batch sizes decodeWarmupSizes gives, so that serving meets no untuned GEMM. Their
   * graphs are captured too, but a cache sized from memory afterwards drops them: serving then
   * captures each again at its second use, which costs milliseconds, not a tuning's stall.
   */
  private async warmDecodeSteps(engineSizes: readonly number[], numBlocks: number, tokenId: number): Promise<void> {
    const sizes = decodeWarmupSizes(engineSizes, numBlocks, this.blockSize);
    if (sizes.length === 0) return;
    const start = process.hrtime.bigint();
    for (const size of sizes) await this.runToEnd(this.newRequests(decodeWarmupRequests(size, this.blockSize, tokenId)));
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    this.opts.logger.info({ sizes, ms: Math.round(ms) }, "decode steps warmed up");
  }

  private allocate(numBlocks: number): void {
    try {
      this.opts.engine.allocateKvCache(numBlocks);
    } catch (err) {
      this.numBlocks = 0;
      throw new ShardError("resource_exhausted", `could not allocate ${numBlocks} KV blocks: ${(err as Error).message}`);
    }
    this.numBlocks = numBlocks;
  }

  private release(requests: readonly ShardRequest[]): void {
    const ids = requests.filter((r) => r.started).map((r) => r.id);
    if (ids.length === 0) return;
    try {
      this.opts.engine.release(ids);
    } catch (err) {
      this.opts.logger.warn({ err, ids }, "engine release failed");
    }
  }
}

/** Several partial step results as one, in the order of `requests` (the batch's order). */
function combine(requests: readonly ShardRequest[], parts: readonly StepResult[]): StepResult {
  if (parts.length === 1) return parts[0]!;
  const order = new Map(requests.map((r, i) => [r.id, i]));
  const byOrder = <T>(items: T[], id: (t: T) => number) => items.sort((a, b) => order.get(id(a))! - order.get(id(b))!);
  return {
    generations: byOrder(parts.flatMap((p) => p.generations), (g) => g.requestId),
    running: byOrder(parts.flatMap((p) => p.running), (r) => r.id),
    finished: byOrder(parts.flatMap((p) => p.finished), (r) => r.id),
  };
}
