// A fake shard for benchmarks: a real grpc-js server on a Unix socket with the
// shard's service (proto/generate.proto). Warmup reports a KV capacity; Prefill
// and Decode answer after a fixed delay (or a modelled step time: step-costs.ts)
// with one fixed token per request, honouring max_new_tokens, EOS (unless
// ignore_eos_token) and chunk_len; batches are kept between steps, merged,
// filtered and cleared as the real shard does.
// With delay 0 it costs the router nothing but the gRPC round trip, so the
// router's own cost per token can be measured. It can trace every step and
// request (for checking the load generator against known timings).
//
// CLI: text-gen-bench fake-shard --uds PATH [--delay-ms D] [--fixed-period] [--kv-tokens N] [--token ID] [--no-chunking]
import { parseArgs } from "node:util";
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import {
  FinishReason,
  TextGenerationServiceService,
  type CachedBatch,
  type Generation,
  type Request,
  type TextGenerationServiceServer,
} from "../proto/gen/generate.js";
import type { ModelledStep } from "./step-costs.js";

export interface FakeShardOptions {
  /** Each Prefill and Decode answers this long after it arrived. */
  delayMs: number;
  /**
   * Steps of a running batch answer on a grid delayMs apart, the router's turnaround
   * between them hidden (as a GPU's queue hides it), and a step that arrives late
   * answers at once; a step that starts a batch after an idle spell takes delayMs from
   * its arrival. Makes TPOT exactly delayMs while the router keeps up on average.
   */
  fixedPeriod: boolean;
  /** KV capacity reported by Warmup (tokens). */
  kvTokens: number;
  blockSize: number;
  /** The token every step generates (pick one that is not EOS). */
  token: number;
  supportChunking: boolean;
  /** Warmup's answer when the router sets no limit. */
  maxInputTokens: number;
  maxTotalTokens: number;
  /** Record steps and per-request token times (performance.now()). */
  trace: boolean;
  /**
   * A step's time from what it computes (rows in the batch, tokens through the forward),
   * in place of delayMs: to replay the scheduler against a GPU's measured step costs.
   */
  stepCostMs?: (step: ModelledStep) => number;
}

export const DEFAULT_FAKE_SHARD: FakeShardOptions = {
  delayMs: 0,
  fixedPeriod: false,
  kvTokens: 1 << 20,
  blockSize: 16,
  token: 300,
  supportChunking: true,
  maxInputTokens: 8191,
  maxTotalTokens: 8192,
  trace: false,
};

export interface StepTrace {
  rpc: "prefill" | "decode";
  received: number;
  answered: number;
  /** Tokens generated in this step. */
  tokens: number;
  /** Tokens through the forward: prompt chunks plus one per decoding request. */
  forwardTokens: number;
  requests: number;
}

export interface RequestTrace {
  /** The prompt's ids joined by ",": how a client finds its request. */
  key: string;
  tokenTimes: number[];
}

interface FakeRequest {
  request: Request;
  computed: number;
  generated: number;
  trace?: RequestTrace;
}

export class BenchFakeShard {
  readonly options: FakeShardOptions;
  readonly steps: StepTrace[] = [];
  readonly requests = new Map<number, RequestTrace>();
  /** Tokens generated since start (for throughput checks). */
  tokens = 0;
  private readonly batches = new Map<number, FakeRequest[]>();
  private lastAnswered: number | undefined;
  private server: Server | null = null;

  constructor(
    readonly socket: string,
    options: Partial<FakeShardOptions> = {},
  ) {
    this.options = { ...DEFAULT_FAKE_SHARD, ...options };
  }

  async listen(): Promise<void> {
    const server = new Server({ "grpc.max_receive_message_length": 256 << 20, "grpc.max_send_message_length": 256 << 20 });
    server.addService(TextGenerationServiceService, this.service());
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${this.socket}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
  }

  close(): void {
    this.server?.forceShutdown();
    this.server = null;
  }

  private service(): TextGenerationServiceServer {
    const o = this.options;
    return {
      info: unary(async () => ({
        requiresPadding: false, dtype: "bfloat16", deviceType: "fake", speculate: 0, supportChunking: o.supportChunking,
        usePrefixCaching: false, attentionImpl: "fake", blockSize: o.blockSize, rank: 0, worldSize: 1,
      })),
      health: unary(async () => ({})),
      serviceDiscovery: unary(async () => ({ urls: [`unix://${this.socket}`] })),
      clearCache: unary(async (req) => {
        if (req.id === undefined) this.batches.clear();
        else this.batches.delete(req.id);
        return {};
      }),
      filterBatch: unary(async (req) => {
        const keep = new Set(req.requestIds);
        const batch = this.pop(req.batchId).filter((r) => keep.has(r.request.id));
        this.batches.set(req.batchId, batch);
        return { batch: this.cached(req.batchId, batch) };
      }),
      warmup: unary(async (req) => ({
        maxSupportedTotalTokens: o.kvTokens,
        maxInputTokens: req.maxInputTokens ?? o.maxInputTokens,
        maxTotalTokens: req.maxTotalTokens ?? o.maxTotalTokens,
      })),
      prefill: unary(async (req) => {
        const received = performance.now();
        const fresh = (req.batch?.requests ?? []).map((request) => this.admit(request));
        let id: number;
        let batch: FakeRequest[];
        if (req.cachedBatch) {
          id = req.cachedBatch.id;
          batch = this.pop(id);
          batch.push(...fresh);
        } else {
          id = req.batch!.id;
          batch = fresh;
        }
        const freshSet = new Set(fresh);
        const forward = this.forwardTokens(batch, freshSet);
        await this.wait(received, req.cachedBatch !== undefined || this.batches.size > 0, batch.length, forward);
        return this.step("prefill", id, batch, freshSet, received, forward);
      }),
      decode: unary(async (req) => {
        const received = performance.now();
        const [first, ...others] = req.batches;
        const batch = this.pop(first!.id);
        for (const other of others) batch.push(...this.pop(other.id));
        const forward = this.forwardTokens(batch);
        await this.wait(received, true, batch.length, forward);
        return this.step("decode", first!.id, batch, undefined, received, forward);
      }),
    };
  }

  /** A step's forward tokens where the cost model or the trace wants them (0 otherwise: no work per step). */
  private forwardTokens(batch: FakeRequest[], fresh?: Set<FakeRequest>): number {
    return this.options.stepCostMs || this.options.trace ? forwardTokens(batch, fresh) : 0;
  }

  private admit(request: Request): FakeRequest {
    const r: FakeRequest = { request, computed: request.cacheLen, generated: 0 };
    if (this.options.trace) {
      r.trace = { key: request.inputIds.join(","), tokenTimes: [] };
      this.requests.set(request.id, r.trace);
    }
    return r;
  }

  /**
   * Sleeps until `from + delay` (with fixedPeriod, when this step `continues` a running
   * batch: until one period after the previous step, or not at all when that has passed);
   * the timer is set early and the last stretch polled, as timers fire late.
   */
  private async wait(from: number, continues: boolean, rows: number, tokens: number): Promise<void> {
    const cost = this.options.stepCostMs;
    const delay = cost ? cost({ rows, tokens }) : this.options.delayMs;
    if (delay <= 0) return;
    const last = this.lastAnswered;
    const paced = this.options.fixedPeriod && continues && last !== undefined;
    const deadline = paced ? Math.max(from, last! + delay) : from + delay;
    const early = deadline - performance.now() - 2;
    if (early > 0) await new Promise((r) => setTimeout(r, early));
    while (performance.now() < deadline) await new Promise((r) => setImmediate(r));
    this.lastAnswered = deadline;
  }

  private pop(id: number): FakeRequest[] {
    const batch = this.batches.get(id);
    if (!batch) throw new Error(`Batch ID ${id} not found in cache.`);
    this.batches.delete(id);
    return batch;
  }

  /** `forward`: the step's forward tokens (forwardTokens), counted before it advances the prompts. */
  private step(rpc: StepTrace["rpc"], id: number, batch: FakeRequest[], fresh: Set<FakeRequest> | undefined, received: number, forward: number) {
    const token = this.options.token;
    const generations: Generation[] = [];
    const live: FakeRequest[] = [];
    const answered = performance.now();
    for (const r of batch) {
      const input = r.request.inputIds.length;
      if (r.computed < input) {
        const chunk = fresh?.has(r) && r.request.chunkLen !== undefined ? r.request.chunkLen : input - r.computed;
        r.computed = Math.min(input, r.computed + chunk);
        if (r.computed < input) {
          live.push(r);
          continue;
        }
      }
      r.generated++;
      r.trace?.tokenTimes.push(answered);
      const stopping = r.request.stoppingParameters!;
      let reason: FinishReason | undefined;
      if (r.generated >= stopping.maxNewTokens) reason = FinishReason.FINISH_REASON_LENGTH;
      else if (!stopping.ignoreEosToken && stopping.eosTokenIds.includes(token)) reason = FinishReason.FINISH_REASON_EOS_TOKEN;
      generations.push({
        requestId: r.request.id,
        tokens: { ids: [token], logprobs: [-0.5], texts: [], isSpecial: [] },
        topTokens: [],
        generatedText: reason === undefined ? undefined : { text: "", generatedTokens: r.generated, finishReason: reason },
      });
      if (reason === undefined) live.push(r);
    }
    this.tokens += generations.length;
    if (this.options.trace) this.steps.push({ rpc, received, answered, tokens: generations.length, forwardTokens: forward, requests: batch.length });
    if (live.length) this.batches.set(id, live);
    return { generations, batch: live.length ? this.cached(id, live) : undefined, forwardNs: 0, decodeNs: 0, totalNs: 0 };
  }

  private cached(id: number, batch: FakeRequest[]): CachedBatch {
    let maxTokens = 0;
    let currentTokens = 0;
    for (const r of batch) {
      maxTokens += r.request.blocks.length * this.options.blockSize;
      currentTokens += r.computed < r.request.inputIds.length ? r.request.inputIds.length - r.computed : 1;
    }
    return { id, requestIds: batch.map((r) => r.request.id), size: batch.length, maxTokens, currentTokens };
  }
}

/** Tokens a step over `batch` computes: each prompt's next chunk, one per decoding request. */
function forwardTokens(batch: FakeRequest[], fresh?: Set<FakeRequest>): number {
  let tokens = 0;
  for (const r of batch) {
    const rest = r.request.inputIds.length - r.computed;
    if (rest <= 0) tokens += 1;
    else tokens += fresh?.has(r) && r.request.chunkLen !== undefined ? Math.min(rest, r.request.chunkLen) : rest;
  }
  return tokens;
}

function unary<Req, Res>(body: (req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    body(call.request).then(
      (res) => callback(null, res),
      (err: Error) => callback({ code: status.INTERNAL, details: err.message }),
    );
  };
}

export async function main(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      uds: { type: "string" },
      "delay-ms": { type: "string", default: "0" },
      "kv-tokens": { type: "string" },
      "block-size": { type: "string" },
      token: { type: "string" },
      "no-chunking": { type: "boolean", default: false },
      "fixed-period": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help || !v.uds) {
    process.stdout.write("usage: text-gen-bench fake-shard --uds PATH [--delay-ms D] [--kv-tokens N] [--block-size 16] [--token ID] [--no-chunking] [--fixed-period]\n");
    if (!v.uds && !v.help) process.exitCode = 2;
    return;
  }
  const num = (s: string | undefined, d: number) => (s === undefined ? d : Number(s));
  const shard = new BenchFakeShard(v.uds, {
    delayMs: num(v["delay-ms"], 0),
    kvTokens: num(v["kv-tokens"], DEFAULT_FAKE_SHARD.kvTokens),
    blockSize: num(v["block-size"], DEFAULT_FAKE_SHARD.blockSize),
    token: num(v.token, DEFAULT_FAKE_SHARD.token),
    supportChunking: !v["no-chunking"],
    fixedPeriod: v["fixed-period"],
  });
  await shard.listen();
  process.stdout.write(`${JSON.stringify({ ready: true, rank: 0, socket: v.uds })}\n`);
  const stop = () => {
    shard.close();
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  await new Promise(() => undefined);
}
