// The shard's eight RPCs over the engine, independent of gRPC (grpc-server.ts
// adapts them). Everything that touches batch state or the engine runs through
// one SerialQueue, so steps never overlap and a filter never lands mid-step.
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
import { BatchCache, requestFromProto, toCachedBatch, type ShardRequest, type WatermarkSettings } from "./batch-state.js";
import { asShardError, badRequest, ShardError } from "./errors.js";
import { applyStep, type StepResult } from "./generation.js";
import { SerialQueue } from "./serial-queue.js";
import { planStep, scheduleNextStep } from "./step-planner.js";
import { assignWarmupBlocks, cudaKvBlockCount, kvBlockCount, warmupBlocksNeeded, warmupLimits } from "./warmup.js";

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
}

type StepResponse = PrefillResponse & DecodeResponse;

export class ShardService {
  private readonly cache = new BatchCache();
  private readonly queue = new SerialQueue();
  private readonly blockSize: number;
  /** KV blocks allocated (0 until Warmup). */
  private numBlocks = 0;
  private maxPrefillTokens = Number.POSITIVE_INFINITY;

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
    return this.queue.run(() => this.release(this.cache.clear(req.id)));
  }

  filterBatch(req: FilterBatchRequest): Promise<FilterBatchResponse> {
    return this.queue.run(() => {
      const { kept, dropped } = this.cache.filter(req.batchId, req.requestIds);
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
      const merged = [...this.cache.popMerged([cachedId]), ...fresh];
      return this.step(cachedId, merged, start, process.hrtime.bigint() - concatStart);
    });
  }

  decode(req: DecodeRequest): Promise<DecodeResponse> {
    return this.queue.run(() => {
      const start = process.hrtime.bigint();
      const ids = req.batches.map((b: CachedBatch) => b.id);
      if (ids.length === 0) throw badRequest("Decode needs at least one batch");
      const merged = this.cache.popMerged(ids);
      const concatNs = ids.length > 1 ? process.hrtime.bigint() - start : undefined;
      return this.step(ids[0]!, merged, start, concatNs);
    });
  }

  /** Drops every cached batch and the engine state behind it (shutdown). */
  close(): Promise<void> {
    return this.queue.run(() => this.release(this.cache.clear()));
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

  /** Runs one engine step over `requests` and caches what keeps running under `batchId`. */
  private async step(batchId: number, requests: ShardRequest[], start: bigint, concatNs?: bigint): Promise<StepResponse> {
    if (requests.length === 0) return { generations: [], forwardNs: 0, decodeNs: 0, totalNs: Number(process.hrtime.bigint() - start) };
    const forwardStart = process.hrtime.bigint();
    const result = await this.compute(requests);
    const forwardNs = process.hrtime.bigint() - forwardStart;
    const decodeStart = process.hrtime.bigint();
    this.release(result.finished);
    scheduleNextStep(result.running, this.maxPrefillTokens);
    if (result.running.length > 0) this.cache.put(batchId, result.running);
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
        outputs = await this.opts.engine.step(sequences);
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
    this.release(this.cache.clear());
    const info = this.opts.engine.info();
    const requests = req.batch?.requests ?? [];
    // On a GPU with no max_batch_total_tokens the cache is sized from what the warm-up
    // leaves free (TGI's way): warm up over a cache just big enough, then measure.
    const measure = info.device === "cuda" && req.maxBatchTotalTokens === undefined;
    let numBlocks = measure
      ? warmupBlocksNeeded(requests, this.blockSize)
      : kvBlockCount(req.maxBatchTotalTokens, {
          blockSize: this.blockSize,
          kvBytesPerBlock: info.kvBytesPerBlock,
          kvCacheBytes: this.opts.kvCacheBytes,
        });
    this.allocate(numBlocks);
    this.maxPrefillTokens = req.maxPrefillTokens > 0 ? req.maxPrefillTokens : Number.POSITIVE_INFINITY;
    const warmupRequests = assignWarmupBlocks(requests, numBlocks, this.blockSize);
    let running = this.newRequests(warmupRequests);
    // A prefill step, then a decode step for whatever is still running.
    for (let i = 0; i < 2 && running.length > 0; i++) {
      const result = await this.compute(running);
      this.release(result.finished);
      scheduleNextStep(result.running, this.maxPrefillTokens);
      running = result.running;
    }
    this.release(running);
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
