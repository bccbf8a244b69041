// The scheduling core behind the HTTP front: connect to the shards, warm them
// up, derive the limits, and serve requests through the queue and the batcher.
import type { Logger } from "pino";
import { GREEDY_PARAMETERS } from "../../proto/defaults.js";
import type { InfoResponse, PrefillRequest } from "../../proto/gen/generate.js";
import { ShardedClient } from "../client/sharded-client.js";
import { SimpleBlockAllocator, type BlockAllocator } from "../scheduler/block-allocator.js";
import { Batcher, type BatchObserver } from "../scheduler/batcher.js";
import type { ShardRequest } from "../scheduler/entry.js";
import { Queue } from "../scheduler/queue.js";
import { SingleTokenMemo } from "./detokenizer.js";
import type { EventChannel } from "./event-channel.js";
import { RequestStream } from "./request-stream.js";
import { InferError, type InferBackend, type InferEvent, type TokenDecoder, type ValidRequest } from "./types.js";
import { deriveLimits, warmupRequest, type Limits } from "./warmup.js";

export { ShardedClient } from "../client/sharded-client.js";
export { ShardClient, ShardError } from "../client/shard-client.js";
export { LimitError, type Limits } from "./warmup.js";

export interface BackendOptions {
  /** Rank 0's Unix socket path (or `unix://` URL); the other shards are found through it. */
  masterSocket: string;
  /** Decodes generated ids; also picks the warm-up token (the first non-special id). */
  tokenizer: TokenDecoder;
  /** Ids that end generation (config.json and generation_config.json), sent with every request. */
  eosTokenIds: number[];
  /** Tokens one forward may compute (TGI default 4096). */
  maxBatchPrefillTokens: number;
  /** KV tokens for all running requests; a paged shard's Warmup answer overrides it (TGI). */
  maxBatchTotalTokens?: number;
  /** Unset: the shards choose at Warmup. Set: the shards must agree or start-up fails. */
  maxInputTokens?: number;
  maxTotalTokens?: number;
  /** Without chunked prefill: interrupt decoding for a prefill only if ratio × running requests wait (TGI 1.2). */
  waitingServedRatio: number;
  /** Without chunked prefill: after this many decode steps, any waiting request may interrupt (TGI 20). */
  maxWaitingTokens: number;
  /** Requests per batch at most; unset: no limit. */
  maxBatchSize?: number;
  logger: Logger;
  /** Batch metrics (router/metrics/). */
  observer?: BatchObserver;
}

export interface ConnectedBackend {
  backend: ShardedBackend;
  limits: Limits;
  shardInfo: InfoResponse;
}

/** Connects, ClearCache, Info, Warmup, derives the limits (TGI's messages on conflicts) and starts the batcher. */
export async function connectBackend(options: BackendOptions): Promise<ConnectedBackend> {
  const { logger } = options;
  const client = await ShardedClient.connect(options.masterSocket);
  try {
    await client.clearCache();
    const shardInfo = await client.info();
    const warmupToken = firstRegularToken(options.tokenizer);
    logger.info(
      { maxBatchPrefillTokens: options.maxBatchPrefillTokens, shards: client.worldSize },
      "warming up the shards",
    );
    const warmup = await client.warmup(warmupRequest(options, warmupToken));
    // The warm-up batch has id 0, as will the first real batch: make sure no shard still holds it.
    await client.clearCache();
    const limits = deriveLimits(options, shardInfo, warmup);
    if (warmup.maxSupportedTotalTokens !== undefined) {
      if (options.maxBatchTotalTokens !== undefined && options.maxBatchTotalTokens !== limits.maxBatchTotalTokens) {
        logger.warn("`--max-batch-total-tokens` is deprecated for paged shards: the KV capacity comes from Warmup");
      }
      logger.info({ maxBatchTotalTokens: limits.maxBatchTotalTokens }, "Inferred max batch total tokens");
    }
    if (shardInfo.supportChunking) {
      logger.info("chunked prefill on: waiting_served_ratio and max_waiting_tokens are not used");
    }
    const numBlocks = Math.floor(limits.maxBatchTotalTokens / limits.blockSize);
    const allocator = new SimpleBlockAllocator(numBlocks, limits.blockSize);
    const backend = new ShardedBackend(client, shardInfo, limits, allocator, options, warmupToken);
    return { backend, limits, shardInfo };
  } catch (error) {
    client.close();
    throw error;
  }
}

export class ShardedBackend implements InferBackend {
  private readonly queue: Queue;
  private readonly batcher: Batcher;
  /** Shared by every request: single-token texts are decoded once. */
  private readonly decoder: SingleTokenMemo;
  /** False after a failed step: the next health() runs a real one-token prefill (TGI). */
  private generationHealthy = true;
  private closed = false;

  constructor(
    private readonly client: ShardedClient,
    info: InfoResponse,
    limits: Limits,
    private readonly allocator: BlockAllocator,
    private readonly options: BackendOptions,
    private readonly healthToken: number,
  ) {
    this.decoder = new SingleTokenMemo(options.tokenizer);
    this.queue = new Queue({ allocator, supportChunking: info.supportChunking, speculate: info.speculate });
    this.batcher = new Batcher(client, this.queue, allocator, {
      maxBatchPrefillTokens: limits.maxBatchPrefillTokens,
      maxBatchTotalTokens: limits.maxBatchTotalTokens,
      maxBatchSize: options.maxBatchSize,
      waitingServedRatio: options.waitingServedRatio,
      maxWaitingTokens: options.maxWaitingTokens,
      supportChunking: info.supportChunking,
      logger: options.logger,
      onStepFailure: () => (this.generationHealthy = false),
      observer: options.observer,
    });
  }

  generate(request: ValidRequest, signal: AbortSignal): EventChannel<InferEvent> {
    const onAbort = () => stream.cancel();
    const stream = new RequestStream(request, this.decoder, performance.now(), (cancelled) => {
      signal.removeEventListener("abort", onAbort);
      if (cancelled) this.queue.dropGone();
    });
    if (this.closed) {
      stream.fail(new InferError("generation", "Request failed during generation: the server is shutting down"));
    } else if (signal.aborted) {
      stream.cancel();
    } else {
      signal.addEventListener("abort", onAbort, { once: true });
      this.queue.push(toShardRequest(request, this.options.eosTokenIds), stream);
      this.batcher.notify();
    }
    return stream.events;
  }

  async health(): Promise<boolean> {
    try {
      if (this.generationHealthy) {
        await this.client.health();
      } else {
        await this.batcher.exclusive(() => this.healthPrefill());
        this.generationHealthy = true;
      }
      return true;
    } catch {
      return false;
    }
  }

  stats(): { queued: number; running: number; freeBlocks: number; totalBlocks: number } {
    return {
      queued: this.queue.length,
      running: this.batcher.running,
      freeBlocks: this.allocator.freeBlocks,
      totalBlocks: this.allocator.totalBlocks,
    };
  }

  /** Stops the batcher after its current step, fails what is left, closes the shard connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const reason = new Error("the server is shutting down");
    await this.batcher.stop(reason);
    this.queue.failAll(reason);
    this.client.close();
  }

  /** TGI's real health check: one token from one prompt token in the reserved block 0. */
  private async healthPrefill(): Promise<void> {
    const id = Number.MAX_SAFE_INTEGER;
    const request: PrefillRequest = {
      batch: {
        id,
        size: 1,
        maxTokens: 2,
        maxBlocks: 1,
        requests: [
          {
            id,
            inputIds: [this.healthToken],
            truncate: 1,
            parameters: { ...GREEDY_PARAMETERS },
            stoppingParameters: { maxNewTokens: 1, stopSequences: [], ignoreEosToken: false, eosTokenIds: [] },
            prefillLogprobs: false,
            topNTokens: 0,
            blocks: [0],
            slots: [0],
            cacheLen: 0,
          },
        ],
      },
    };
    try {
      await this.client.prefill(request);
    } finally {
      await this.client.clearCache(id).catch(() => undefined);
    }
  }
}

function toShardRequest(request: ValidRequest, eosTokenIds: number[]): ShardRequest {
  const p = request.parameters;
  return {
    inputIds: request.inputIds,
    parameters: {
      temperature: p.temperature,
      topK: p.topK,
      topP: p.topP,
      typicalP: p.typicalP,
      doSample: p.doSample,
      seed: p.seed,
      repetitionPenalty: p.repetitionPenalty,
      watermark: p.watermark,
      frequencyPenalty: p.frequencyPenalty,
      presencePenalty: p.presencePenalty,
      grammar: "",
      grammarType: 0,
    },
    stoppingParameters: {
      maxNewTokens: p.maxNewTokens,
      stopSequences: p.stop,
      ignoreEosToken: p.ignoreEos,
      eosTokenIds,
    },
    prefillLogprobs: p.decoderInputDetails,
    topNTokens: p.topNTokens,
  };
}

function firstRegularToken(tokenizer: TokenDecoder): number {
  for (let id = 0; id < 1_000_000; id++) if (!tokenizer.isSpecial(id)) return id;
  throw new Error("the tokenizer has no regular token to warm up with");
}
