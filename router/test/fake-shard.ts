// A fake shard for router tests: a real grpc-js server on a Unix socket that
// keeps batches between steps like the real one, generates deterministic tokens
// (next = (last + 1) % vocab), stops on max_new_tokens and EOS, checks the
// router's KV block assignments, and records every RPC it receives. Also the
// pieces the scheduler tests share: a word-per-token decoder, request builders
// and a backend connected to fake shards.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import {
  FinishReason,
  TextGenerationServiceService,
  type CachedBatch,
  type Generation,
  type Request,
  type TextGenerationServiceServer,
} from "../../proto/gen/generate.js";
import { connectBackend, type BackendOptions, type ConnectedBackend } from "../infer/backend.js";
import type { InferEvent, TokenDecoder, ValidParameters, ValidRequest } from "../infer/types.js";

export interface FakeShardOptions {
  vocab: number;
  blockSize: number;
  /** KV blocks, reserved block 0 included; Warmup answers numBlocks × blockSize. */
  numBlocks: number;
  supportChunking: boolean;
  /** Warmup's answer when the router sets no limit. */
  maxInputTokens: number;
  maxTotalTokens: number;
  /** Delay of every Prefill and Decode. */
  stepDelayMs: number;
  /** Return a message to make this RPC fail with INTERNAL. */
  fail: (rpc: string, request: unknown) => string | undefined;
}

export interface RecordedCall {
  rpc: string;
  request: any;
}

interface FakeRequest {
  request: Request;
  /** Prompt tokens computed so far. */
  computed: number;
  generated: number[];
  finished: boolean;
}

interface FakeBatch {
  id: number;
  requests: FakeRequest[];
}

export class FakeShard {
  readonly calls: RecordedCall[] = [];
  readonly options: FakeShardOptions;
  private readonly batches = new Map<number, FakeBatch>();
  private server: Server | null = null;
  urls: string[] = [];

  constructor(
    readonly socket: string,
    readonly rank: number,
    options: Partial<FakeShardOptions>,
  ) {
    this.options = {
      vocab: 512,
      blockSize: 16,
      numBlocks: 64,
      supportChunking: false,
      maxInputTokens: 255,
      maxTotalTokens: 512,
      stepDelayMs: 0,
      fail: () => undefined,
      ...options,
    };
  }

  callsOf(rpc: string): any[] {
    return this.calls.filter((c) => c.rpc === rpc).map((c) => c.request);
  }

  /** Batches the shard still holds (the router must clear or filter finished ones). */
  get cachedBatchIds(): number[] {
    return [...this.batches.keys()];
  }

  async listen(): Promise<void> {
    const server = new Server();
    server.addService(TextGenerationServiceService, this.service());
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${this.socket}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
  }

  close(): void {
    this.server?.forceShutdown();
  }

  private service(): TextGenerationServiceServer {
    const o = this.options;
    return {
      info: this.handler("info", async () => ({
        requiresPadding: false, dtype: "float32", deviceType: "cpu", speculate: 0,
        supportChunking: o.supportChunking, usePrefixCaching: false, attentionImpl: "fake",
        blockSize: o.blockSize, rank: this.rank, worldSize: this.urls.length,
      })),
      health: this.handler("health", async () => ({})),
      serviceDiscovery: this.handler("serviceDiscovery", async () => ({ urls: this.urls })),
      clearCache: this.handler("clearCache", async (req) => {
        if (req.id === undefined) this.batches.clear();
        else this.batches.delete(req.id);
        return {};
      }),
      filterBatch: this.handler("filterBatch", async (req) => {
        const batch = this.pop(req.batchId);
        const keep = new Set(req.requestIds);
        batch.requests = batch.requests.filter((r) => keep.has(r.request.id));
        this.batches.set(batch.id, batch);
        return { batch: this.cached(batch) };
      }),
      warmup: this.handler("warmup", async (req) => ({
        maxSupportedTotalTokens: o.numBlocks * o.blockSize,
        maxInputTokens: req.maxInputTokens ?? o.maxInputTokens,
        maxTotalTokens: req.maxTotalTokens ?? o.maxTotalTokens,
      })),
      prefill: this.handler("prefill", async (req) => {
        await sleep(o.stepDelayMs);
        const fresh = (req.batch?.requests ?? []).map((request) => this.admit(request));
        let batch: FakeBatch;
        if (req.cachedBatch) {
          batch = this.pop(req.cachedBatch.id);
          batch.requests.push(...fresh);
        } else {
          batch = { id: req.batch!.id, requests: fresh };
        }
        return this.step(batch, new Set(fresh));
      }),
      decode: this.handler("decode", async (req) => {
        await sleep(o.stepDelayMs);
        const popped = req.batches.map((b) => this.pop(b.id));
        const batch = popped[0]!;
        for (const other of popped.slice(1)) batch.requests.push(...other.requests);
        return this.step(batch, new Set());
      }),
    };
  }

  private handler<Req, Res>(rpc: string, body: (req: Req) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      this.calls.push({ rpc, request: call.request });
      const failure = this.options.fail(rpc, call.request);
      if (failure !== undefined) {
        callback({ code: status.INTERNAL, details: failure });
        return;
      }
      body(call.request).then(
        (res) => callback(null, res),
        (err: Error) => callback({ code: status.INTERNAL, details: err.message }),
      );
    };
  }

  private pop(id: number): FakeBatch {
    const batch = this.batches.get(id);
    if (!batch) throw new Error(`Batch ID ${id} not found in cache.`);
    this.batches.delete(id);
    return batch;
  }

  /** Checks a new request's blocks: enough of them, and none held by a request still cached. */
  private admit(request: Request): FakeRequest {
    const o = this.options;
    const needed = request.inputIds.length + request.stoppingParameters!.maxNewTokens - 1;
    if (request.blocks.length * o.blockSize < needed) {
      throw new Error(`request ${request.id} has ${request.blocks.length} blocks for ${needed} tokens`);
    }
    const held = new Map<number, number>();
    for (const batch of this.batches.values()) {
      for (const r of batch.requests) for (const b of r.request.blocks) held.set(b, r.request.id);
    }
    for (const b of request.blocks) {
      if (b === 0 && request.id !== Number.MAX_SAFE_INTEGER) throw new Error(`request ${request.id} got reserved block 0`);
      if (held.has(b)) throw new Error(`block ${b} of request ${request.id} is held by request ${held.get(b)}`);
    }
    return { request, computed: 0, generated: [], finished: false };
  }

  private step(batch: FakeBatch, fresh: Set<FakeRequest>) {
    const o = this.options;
    const generations: Generation[] = [];
    for (const r of batch.requests) {
      if (r.finished) continue;
      const input = r.request.inputIds;
      if (r.computed < input.length) {
        const chunk = fresh.has(r) && r.request.chunkLen !== undefined ? r.request.chunkLen : input.length - r.computed;
        r.computed = Math.min(input.length, r.computed + chunk);
        if (r.computed < input.length) continue;
      }
      const last = r.generated.at(-1) ?? input.at(-1) ?? 0;
      const token = (last + 1) % o.vocab;
      r.generated.push(token);
      const stopping = r.request.stoppingParameters!;
      let reason: FinishReason | undefined;
      if (r.generated.length >= stopping.maxNewTokens) reason = FinishReason.FINISH_REASON_LENGTH;
      else if (!stopping.ignoreEosToken && stopping.eosTokenIds.includes(token)) reason = FinishReason.FINISH_REASON_EOS_TOKEN;
      r.finished = reason !== undefined;
      const topN = r.request.topNTokens;
      generations.push({
        requestId: r.request.id,
        prefillTokens:
          r.generated.length === 1 && r.request.prefillLogprobs
            ? { ids: input, logprobs: input.map((_, i) => (i === 0 ? NaN : -1)), texts: [], isSpecial: [] }
            : undefined,
        tokens: { ids: [token], logprobs: [-0.25], texts: [], isSpecial: [] },
        topTokens: topN > 0 ? [this.topTokens(token, topN)] : [],
        generatedText:
          reason === undefined
            ? undefined
            : {
                text: "",
                generatedTokens: r.generated.length,
                finishReason: reason,
                seed: r.request.parameters!.doSample ? r.request.parameters!.seed : undefined,
              },
      });
    }
    const live = batch.requests.some((r) => !r.finished);
    if (live) this.batches.set(batch.id, batch);
    return { generations, batch: live ? this.cached(batch) : undefined, forwardNs: 1, decodeNs: 1, totalNs: 2 };
  }

  /** The sampled token first, then the next ids, each less likely. */
  private topTokens(token: number, n: number) {
    return {
      ids: Array.from({ length: n }, (_, i) => (token + i) % this.options.vocab),
      logprobs: Array.from({ length: n }, (_, i) => -0.25 - i),
      texts: [],
      isSpecial: [],
    };
  }

  private cached(batch: FakeBatch): CachedBatch {
    const o = this.options;
    return {
      id: batch.id,
      requestIds: batch.requests.map((r) => r.request.id),
      size: batch.requests.length,
      maxTokens: batch.requests.reduce((sum, r) => sum + r.request.blocks.length * o.blockSize, 0),
      currentTokens: batch.requests.reduce(
        (sum, r) => sum + (r.finished ? 0 : r.computed < r.request.inputIds.length ? r.request.inputIds.length - r.computed : 1),
        0,
      ),
    };
  }
}

/** Starts `count` fake shards on sockets in a fresh temporary folder (short paths: sun_path is ~107 bytes). */
export async function startFakeShards(
  count: number,
  options: Partial<FakeShardOptions> = {},
): Promise<{ shards: FakeShard[]; masterSocket: string; close: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "tg-fake-"));
  const shards = Array.from({ length: count }, (_, rank) => new FakeShard(join(dir, `s-${rank}`), rank, options));
  const urls = shards.map((s) => `unix://${s.socket}`);
  for (const shard of shards) {
    shard.urls = urls;
    await shard.listen();
  }
  return {
    shards,
    masterSocket: shards[0]!.socket,
    close: () => {
      for (const shard of shards) shard.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const SPECIAL = ["<unk>", "<s>", "</s>"];

/** Ids 0-2 are special; every other id n decodes to " w<n>". */
export const wordDecoder: TokenDecoder = {
  decode: (ids, skip) =>
    ids
      .filter((id) => !(skip && id < SPECIAL.length))
      .map((id) => (id < SPECIAL.length ? SPECIAL[id] : ` w${id}`))
      .join(""),
  isSpecial: (id) => id < SPECIAL.length,
};

export function validRequest(inputIds: number[], parameters: Partial<ValidParameters> = {}): ValidRequest {
  return {
    inputIds,
    inputText: "",
    parameters: {
      temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 42,
      repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, watermark: false, maxNewTokens: 5, stop: [], ignoreEos: false,
      topNTokens: 0, decoderInputDetails: false,
      ...parameters,
    },
  };
}

export async function collect(events: AsyncIterable<InferEvent>): Promise<InferEvent[]> {
  const all: InferEvent[] = [];
  for await (const event of events) all.push(event);
  return all;
}

export function lastEvent(events: InferEvent[]): InferEvent {
  return events[events.length - 1]!;
}

export interface TestBackend extends ConnectedBackend {
  shards: FakeShard[];
  close: () => Promise<void>;
}

export async function startBackend(
  shardOptions: Partial<FakeShardOptions> = {},
  backendOptions: Partial<BackendOptions> = {},
  shardCount = 1,
): Promise<TestBackend> {
  const fake = await startFakeShards(shardCount, shardOptions);
  try {
    const connected = await connectBackend({
      masterSocket: fake.masterSocket,
      tokenizer: wordDecoder,
      eosTokenIds: [2],
      maxBatchPrefillTokens: 256,
      waitingServedRatio: 1.2,
      maxWaitingTokens: 20,
      logger: pino({ level: "silent" }),
      ...backendOptions,
    });
    return {
      ...connected,
      shards: fake.shards,
      close: async () => {
        await connected.backend.close();
        fake.close();
      },
    };
  } catch (error) {
    fake.close();
    throw error;
  }
}
