// Prometheus metrics with TGI's names, labels and buckets (tgi.md §5), one
// prom-client Registry per server so two routers in one process never share
// counters. Counters carry no `_total` suffix, as TGI's exporter writes them.
// The HTTP layer records request metrics through `request*`; the batcher
// reports through the BatchObserver interface it defines; queue size and KV
// blocks are read from the backend when /metrics is scraped.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { BatchObserver, ConcatReason, StepMethod, StepTimings } from "../scheduler/batcher.js";

/** 0.0001 × 1.5^k for k = 1..35: TGI's buckets for every `*_duration`. */
export const DURATION_BUCKETS = Array.from({ length: 35 }, (_, k) => 0.0001 * 1.5 ** (k + 1));

/** n/100 × (1..100): TGI's buckets for token counts bounded by n. */
export const linearBuckets = (n: number): number[] => Array.from({ length: 100 }, (_, k) => (n / 100) * (k + 1));

/** 1..1024: tgi_batch_next_size. */
export const BATCH_SIZE_BUCKETS = Array.from({ length: 1024 }, (_, k) => k + 1);

/** TGI's failure labels. */
export type FailureKind = "validation" | "overloaded" | "generation" | "incomplete" | "dropped" | "template";

export interface SchedulerState {
  queued: number;
  freeBlocks: number;
  totalBlocks: number;
}

/** One finished request's timings, in seconds. */
export interface RequestTimings {
  total: number;
  validation: number;
  queue: number;
  inference: number;
  generatedTokens: number;
}

export class Metrics implements BatchObserver {
  readonly registry = new Registry();
  private readonly count: Counter;
  private readonly success: Counter;
  private readonly failure: Counter<"err">;
  private readonly duration: Histogram;
  private readonly validationDuration: Histogram;
  private readonly queueDuration: Histogram;
  private readonly inferenceDuration: Histogram;
  private readonly timePerToken: Histogram;
  /** Bucketed by the token limits, known once the shards warmed up (setTokenLimits). */
  private inputLength: Histogram | null = null;
  private generatedTokens: Histogram | null = null;
  private maxNewTokens: Histogram | null = null;
  private readonly inferenceCount: Counter<"method">;
  private readonly inferenceSuccess: Counter<"method">;
  private readonly inferenceFailure: Counter<"method">;
  private readonly inferenceSeconds: Histogram<"method">;
  private readonly forward: Histogram<"method">;
  private readonly decode: Histogram<"method">;
  private readonly filter: Histogram<"method">;
  private readonly concatDuration: Histogram<"method">;
  private readonly concat: Counter<"reason">;
  private readonly nextSize: Histogram;
  private readonly currentSize: Gauge;
  private readonly currentMaxTokens: Gauge;

  /** `state` is read at each scrape for tgi_queue_size and the KV block gauges. */
  constructor(state: () => SchedulerState) {
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, buckets: number[], labelNames: L[] = []) =>
      new Histogram<L>({ name, help, buckets, labelNames, registers });
    const seconds = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
      histogram(name, help, DURATION_BUCKETS, labelNames);

    this.count = counter("tgi_request_count", "Total number of requests");
    this.success = counter("tgi_request_success", "Number of successful requests");
    this.failure = counter("tgi_request_failure", "Number of failed requests", ["err"]);
    this.duration = seconds("tgi_request_duration", "Request duration");
    this.validationDuration = seconds("tgi_request_validation_duration", "Request validation duration");
    this.queueDuration = seconds("tgi_request_queue_duration", "Request queue duration");
    this.inferenceDuration = seconds("tgi_request_inference_duration", "Request inference duration");
    this.timePerToken = seconds("tgi_request_mean_time_per_token_duration", "Mean time per token per request");

    this.inferenceCount = counter("tgi_batch_inference_count", "Inference calls per method (prefill or decode)", ["method"]);
    this.inferenceSuccess = counter("tgi_batch_inference_success", "Number of successful inference calls per method", ["method"]);
    this.inferenceFailure = counter("tgi_batch_inference_failure", "Number of failed inference calls per method", ["method"]);
    this.inferenceSeconds = seconds("tgi_batch_inference_duration", "Batch inference duration, filtering included", ["method"]);
    this.forward = seconds("tgi_batch_forward_duration", "Batch forward duration per method", ["method"]);
    this.decode = seconds("tgi_batch_decode_duration", "Batch decode (sampling) duration per method", ["method"]);
    this.filter = seconds("tgi_batch_filter_duration", "Batch filtering duration per method", ["method"]);
    this.concatDuration = seconds("tgi_batch_concat_duration", "Batch concatenation duration", ["method"]);
    this.concat = counter("tgi_batch_concat", "Number of batch concatenations per reason", ["reason"]);
    this.nextSize = histogram("tgi_batch_next_size", "Batch size of new batches", BATCH_SIZE_BUCKETS);
    this.currentSize = new Gauge({ name: "tgi_batch_current_size", help: "Current batch size", registers });
    this.currentMaxTokens = new Gauge({ name: "tgi_batch_current_max_tokens", help: "Maximum tokens of the current batch", registers });

    new Gauge({
      name: "tgi_queue_size",
      help: "Current queue size",
      registers,
      collect() {
        this.set(state().queued);
      },
    });
    new Gauge({
      name: "text_gen_kv_blocks_free",
      help: "KV cache blocks not held by any request",
      registers,
      collect() {
        this.set(state().freeBlocks);
      },
    });
    new Gauge({
      name: "text_gen_kv_blocks_total",
      help: "KV cache blocks in all",
      registers,
      collect() {
        this.set(state().totalBlocks);
      },
    });
  }

  /** Sizes the token-count histograms' buckets as TGI does; call once, after warm-up. */
  setTokenLimits(maxInputTokens: number, maxTotalTokens: number): void {
    if (this.inputLength !== null) throw new Error("token limits are already set");
    const registers = [this.registry];
    const histogram = (name: string, help: string, n: number) => new Histogram({ name, help, buckets: linearBuckets(n), registers });
    this.inputLength = histogram("tgi_request_input_length", "Input token length per request", maxInputTokens);
    this.generatedTokens = histogram("tgi_request_generated_tokens", "Generated tokens per request", maxTotalTokens);
    this.maxNewTokens = histogram("tgi_request_max_new_tokens", "Maximum new tokens per request", maxTotalTokens);
  }

  /** The Prometheus text and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }

  // ---- requests (HTTP layer) ----

  /** A generation was asked for (each best_of branch, each OpenAI prompt). */
  requestStarted(): void {
    this.count.inc();
  }

  /** Validation passed: TGI records the input length and the scheduled max_new_tokens here. */
  requestValidated(inputLength: number, maxNewTokens: number): void {
    this.inputLength?.observe(inputLength);
    this.maxNewTokens?.observe(maxNewTokens);
  }

  requestSucceeded(t: RequestTimings): void {
    this.success.inc();
    this.duration.observe(t.total);
    this.validationDuration.observe(t.validation);
    this.queueDuration.observe(t.queue);
    this.inferenceDuration.observe(t.inference);
    if (t.generatedTokens > 0) this.timePerToken.observe(t.inference / t.generatedTokens);
    this.generatedTokens?.observe(t.generatedTokens);
  }

  requestFailed(kind: FailureKind): void {
    this.failure.inc({ err: kind });
  }

  // ---- batches (BatchObserver, called by the batcher) ----

  batchFormed(size: number, concat: ConcatReason | null): void {
    this.nextSize.observe(size);
    if (concat !== null) this.concat.inc({ reason: concat });
  }

  stepStarted(method: StepMethod): void {
    this.inferenceCount.inc({ method });
  }

  stepEnded(method: StepMethod, t: StepTimings | null): void {
    if (t === null) {
      this.inferenceFailure.inc({ method });
      return;
    }
    this.inferenceSuccess.inc({ method });
    this.inferenceSeconds.observe({ method }, t.totalSeconds);
    this.filter.observe({ method }, t.filterSeconds);
    this.forward.observe({ method }, t.forwardNs / 1e9);
    this.decode.observe({ method }, t.decodeNs / 1e9);
    // TGI labels every concat duration "decode" (a bug kept here for dashboards).
    if (t.concatNs !== undefined) this.concatDuration.observe({ method: "decode" }, t.concatNs / 1e9);
  }

  runningBatch(size: number, maxTokens: number): void {
    this.currentSize.set(size);
    this.currentMaxTokens.set(maxTokens);
  }
}
