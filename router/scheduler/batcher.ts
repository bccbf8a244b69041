// TGI's batching loop (backends/v3/src/backend.rs, batching_task): one loop,
// one shard step at a time. Prefill a batch from the queue, then Decode it step
// by step, topping it up with new requests between steps as budgets allow;
// after every step route each Generation to its request, drop finished and
// cancelled requests from the shard's batch and free their KV blocks at once.
//
// With chunked prefill (InfoResponse.support_chunking) TGI ignores
// waiting_served_ratio and max_waiting_tokens: new requests are merged into the
// running batch's next forward (Prefill with cached_batch) whenever the prefill
// budget left by the running batch's own work (`current_tokens`) allows, so the
// running batch is never paused for them and there is nothing to ratio. We do the
// same, but keep honouring max_batch_size, which TGI drops in that mode.
import type { Logger } from "pino";
import type { CachedBatch, Generation } from "../../proto/gen/generate.js";
import type { ShardedClient } from "../client/sharded-client.js";
import type { BlockAllocator } from "./block-allocator.js";
import type { Entry } from "./entry.js";
import type { NextBatch, Queue } from "./queue.js";

export interface BatcherOptions {
  /** Tokens computed by one forward at most (prompt tokens + one per decoding request). */
  maxBatchPrefillTokens: number;
  /** KV tokens all running requests may hold together. */
  maxBatchTotalTokens: number;
  /** Requests per batch at most; undefined: unbounded. */
  maxBatchSize?: number;
  /** Without chunking: pause the running batch for a prefill only if ratio × its size requests wait. */
  waitingServedRatio: number;
  /** Without chunking: after this many decode steps any waiting request may interrupt. */
  maxWaitingTokens: number;
  supportChunking: boolean;
  logger: Logger;
  /** Told of every failed step (the backend then runs a real health check). */
  onStepFailure?: (error: Error) => void;
  /** Metrics (router/metrics/ implements it). */
  observer?: BatchObserver;
}

export type StepMethod = "prefill" | "decode";
/** Why a new batch joined a running one (TGI's tgi_batch_concat reasons). */
export type ConcatReason = "backpressure" | "wait_exceeded" | "chunking";

/** One successful step: the whole call with routing and filtering, and the shard's own timings. */
export interface StepTimings {
  totalSeconds: number;
  filterSeconds: number;
  forwardNs: number;
  decodeNs: number;
  concatNs?: number;
}

/** What the batcher reports as it works. */
export interface BatchObserver {
  /** A batch was taken from the queue; `concat`: it joins a running batch, and why. */
  batchFormed(size: number, concat: ConcatReason | null): void;
  stepStarted(method: StepMethod): void;
  /** null: the step failed. */
  stepEnded(method: StepMethod, timings: StepTimings | null): void;
  /** The batch the shards hold after a step (0, 0 when none). */
  runningBatch(size: number, maxTokens: number): void;
}

/** A batch the shard holds between steps, with the requests still in it. */
interface RunningBatch {
  cached: CachedBatch;
  entries: Map<number, Entry>;
}

export class Batcher {
  private readonly inFlight = new Set<Entry>();
  private wake: (() => void) | null = null;
  private notified = false;
  private stopped = false;
  private stepChain: Promise<unknown> = Promise.resolve();
  private readonly loop: Promise<void>;

  constructor(
    private readonly client: ShardedClient,
    private readonly queue: Queue,
    private readonly allocator: BlockAllocator,
    private readonly options: BatcherOptions,
  ) {
    this.loop = this.run();
  }

  /** Requests in a batch on the shards. */
  get running(): number {
    return this.inFlight.size;
  }

  /** New requests are waiting. */
  notify(): void {
    this.notified = true;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Runs `call` between two steps, never during one (health checks use it). */
  exclusive<T>(call: () => Promise<T>): Promise<T> {
    const result = this.stepChain.then(call);
    this.stepChain = result.catch(() => undefined);
    return result;
  }

  /** Ends the loop after the current step; requests still running fail with `reason`. */
  async stop(reason: Error): Promise<void> {
    this.stopped = true;
    this.notify();
    await this.loop;
    this.failInFlight(reason);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      await this.waitForWork();
      try {
        await this.drainQueue();
      } catch (error) {
        // drainQueue handles shard errors itself; reaching here is a bug, but the loop must live on
        // and no request may be left waiting for a batch that no longer exists.
        this.options.logger.error({ err: error }, "batching loop error");
        await this.exclusive(() => this.client.clearCache()).catch(() => undefined);
        this.failInFlight(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  private waitForWork(): Promise<void> {
    if (this.notified || this.stopped) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.wake = resolve));
  }

  private async drainQueue(): Promise<void> {
    const o = this.options;
    let next: NextBatch | null;
    const first = () => this.queue.nextBatch(undefined, o.maxBatchSize, o.maxBatchPrefillTokens, o.maxBatchTotalTokens);
    while (!this.stopped && (next = first())) {
      o.observer?.batchFormed(next.entries.length, null);
      let running = await this.prefill(next, undefined);
      let waitingTokens = 1;
      while (running && !this.stopped) {
        let batches = [running];
        const added = this.topUp(running.cached, waitingTokens);
        if (added) {
          const reason = o.supportChunking ? "chunking" : waitingTokens >= o.maxWaitingTokens ? "wait_exceeded" : "backpressure";
          o.observer?.batchFormed(added.entries.length, reason);
          if (o.supportChunking) {
            // The shard merges the new requests into the running batch and advances both in one forward.
            running = await this.prefill(added, running);
            if (!running) break;
            batches = [running];
          } else {
            // The running batch waits one step while the new one prefills; Decode then merges them.
            const prefilled = await this.prefill(added, undefined);
            if (prefilled) batches.push(prefilled);
          }
          waitingTokens = 1;
        }
        running = await this.decode(batches);
        waitingTokens += 1;
      }
      o.observer?.runningBatch(0, 0);
    }
  }

  /** New requests that may join the running batch now; `waitingTokens`: decode steps since the last prefill. */
  private topUp(cached: CachedBatch, waitingTokens: number): NextBatch | null {
    const o = this.options;
    const tokenBudget = Math.max(0, o.maxBatchTotalTokens - cached.maxTokens);
    const maxSize = o.maxBatchSize === undefined ? undefined : Math.max(0, o.maxBatchSize - cached.size);
    if (o.supportChunking) {
      const prefillBudget = Math.max(0, o.maxBatchPrefillTokens - cached.currentTokens);
      return this.queue.nextBatch(undefined, maxSize, prefillBudget, tokenBudget);
    }
    const minSize = waitingTokens >= o.maxWaitingTokens ? undefined : Math.floor(cached.size * o.waitingServedRatio);
    return this.queue.nextBatch(minSize, maxSize, o.maxBatchPrefillTokens, tokenBudget);
  }

  private async prefill(next: NextBatch, into: RunningBatch | undefined): Promise<RunningBatch | null> {
    // Joining requests go into the running batch's map (the shard merges the batches the same way).
    const entries = into ? into.entries : new Map<number, Entry>();
    const now = performance.now();
    for (const entry of next.entries) {
      entries.set(entry.id, entry);
      this.inFlight.add(entry);
      entry.sink.batched(now);
    }
    const batchIds = into ? [into.cached.id, next.batch.id] : [next.batch.id];
    const observed = this.observeStep("prefill");
    try {
      const request = { batch: next.batch, cachedBatch: into?.cached };
      const response = await this.exclusive(() => this.client.prefill(request));
      const rpcEnd = performance.now();
      const running = await this.afterStep(entries, response.generations, response.batch);
      observed.ended(response, rpcEnd, running);
      return running;
    } catch (error) {
      observed.failed();
      await this.failBatch(entries, batchIds, error);
      return null;
    }
  }

  private async decode(batches: RunningBatch[]): Promise<RunningBatch | null> {
    // Decode merges the batches on the shard: merge their maps into the first (almost always the only one).
    const entries = (batches[0] as RunningBatch).entries;
    for (let i = 1; i < batches.length; i++) for (const [id, entry] of (batches[i] as RunningBatch).entries) entries.set(id, entry);
    const observed = this.observeStep("decode");
    try {
      const response = await this.exclusive(() => this.client.decode({ batches: batches.map((b) => b.cached) }));
      const rpcEnd = performance.now();
      const running = await this.afterStep(entries, response.generations, response.batch);
      observed.ended(response, rpcEnd, running);
      return running;
    } catch (error) {
      observed.failed();
      await this.failBatch(entries, batches.map((b) => b.cached.id), error);
      return null;
    }
  }

  /** Reports one step to the observer: started now, then ended or failed. */
  private observeStep(method: StepMethod) {
    const observer = this.options.observer;
    const start = performance.now();
    observer?.stepStarted(method);
    return {
      ended(
        r: { forwardNs: number; decodeNs: number; concatNs?: number },
        rpcEnd: number,
        running: RunningBatch | null,
      ): void {
        if (!observer) return;
        const now = performance.now();
        observer.stepEnded(method, {
          totalSeconds: (now - start) / 1000,
          filterSeconds: (now - rpcEnd) / 1000,
          forwardNs: r.forwardNs,
          decodeNs: r.decodeNs,
          concatNs: r.concatNs,
        });
        observer.runningBatch(running?.cached.size ?? 0, running?.cached.maxTokens ?? 0);
      },
      failed: () => observer?.stepEnded(method, null),
    };
  }

  /** Routes results, releases finished and cancelled requests, and filters them out of the shard's batch. */
  private async afterStep(
    entries: Map<number, Entry>,
    generations: Generation[],
    cached: CachedBatch | undefined,
  ): Promise<RunningBatch | null> {
    for (const generation of generations) {
      const entry = entries.get(generation.requestId);
      if (entry && !entry.sink.gone && entry.sink.deliver(generation)) this.release(entry, entries);
    }
    // Deleting the entry being visited is safe while iterating a Map.
    for (const entry of entries.values()) if (entry.sink.gone) this.release(entry, entries);

    // Every request left must still be in the shard's batch. Counted without a Set: this runs every step.
    const kept = cached?.requestIds ?? [];
    let present = 0;
    for (const id of kept) if (entries.has(id)) present++;
    if (present < entries.size) {
      const keptIds = new Set(kept);
      for (const entry of entries.values()) {
        if (!keptIds.has(entry.id)) {
          entry.sink.fail(new Error("Server error: the shard dropped the request before it finished"));
          this.release(entry, entries);
        }
      }
    }
    if (!cached) return null;
    if (entries.size === 0) {
      await this.exclusive(() => this.client.clearCache(cached.id));
      return null;
    }
    if (entries.size === cached.requestIds.length) return { cached, entries };
    const filtered = await this.exclusive(() => this.client.filterBatch(cached.id, [...entries.keys()]));
    if (!filtered) throw new Error(`FilterBatch of batch ${cached.id} returned no batch`);
    return { cached: filtered, entries };
  }

  /** TGI: clear the failed batches on the shards and fail every request in them. */
  private async failBatch(entries: Map<number, Entry>, batchIds: number[], error: unknown): Promise<void> {
    const err = error instanceof Error ? error : new Error(String(error));
    this.options.logger.error({ err, batchIds, requests: entries.size }, "batch failed");
    this.options.onStepFailure?.(err);
    for (const id of batchIds) {
      await this.exclusive(() => this.client.clearCache(id)).catch(() => undefined);
    }
    for (const entry of [...entries.values()]) {
      entry.sink.fail(err);
      this.release(entry, entries);
    }
  }

  private failInFlight(reason: Error): void {
    for (const entry of [...this.inFlight]) {
      entry.sink.fail(reason);
      this.release(entry);
    }
  }

  private release(entry: Entry, from?: Map<number, Entry>): void {
    if (entry.allocation) this.allocator.free(entry.allocation);
    entry.allocation = null;
    from?.delete(entry.id);
    this.inFlight.delete(entry);
  }
}
