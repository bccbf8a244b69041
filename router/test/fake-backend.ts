// A deterministic InferBackend for the HTTP tests: token i of a request has id
// 100 + i, text " t{i}" and logprob -0.5 (-i/10 for top tokens); generation runs
// to max_new_tokens ("length") unless `eosAt` says otherwise.
import { performance } from "node:perf_hooks";
import type { InferBackend, InferError, InferEvent, TokenInfo, ValidRequest } from "../infer/types.js";

export interface FakeOptions {
  /** Wait this long before each token event. */
  delayMs?: number;
  /** Fail with this error after `failAfter` tokens. */
  error?: InferError;
  failAfter?: number;
  /** Emit token i as EOS (id 2, "</s>", special) and stop. */
  eosAt?: number;
  /** Stop emitting after this many tokens and wait for the signal (disconnect tests). */
  hangAfter?: number;
  healthy?: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class FakeBackend implements InferBackend {
  readonly requests: ValidRequest[] = [];
  readonly signals: AbortSignal[] = [];
  /** Resolves with the signal's reason once a request was aborted. */
  aborted: Promise<unknown>;
  private resolveAborted!: (reason: unknown) => void;

  constructor(public options: FakeOptions = {}) {
    this.aborted = new Promise((r) => (this.resolveAborted = r));
  }

  health(): Promise<boolean> {
    return Promise.resolve(this.options.healthy ?? true);
  }

  stats() {
    return { queued: 0, running: this.signals.filter((s) => !s.aborted).length, freeBlocks: 90, totalBlocks: 100 };
  }

  async *generate(request: ValidRequest, signal: AbortSignal): AsyncGenerator<InferEvent> {
    this.requests.push(request);
    this.signals.push(signal);
    signal.addEventListener("abort", () => this.resolveAborted(signal.reason), { once: true });
    const o = this.options;
    const queuedAt = performance.now();
    const p = request.parameters;
    if (p.decoderInputDetails) {
      yield {
        type: "prefill",
        tokens: request.inputIds.map((id, i) => ({ id, text: `p${i}`, logprob: i === 0 ? Number.NaN : -1, special: id === 1 })),
      };
    }
    const batchedAt = performance.now();
    const texts: string[] = [];
    for (let i = 0; i < p.maxNewTokens; i++) {
      if (o.delayMs) await sleep(o.delayMs);
      if (signal.aborted) return;
      if (o.error && i === (o.failAfter ?? 0)) {
        yield { type: "error", error: o.error };
        return;
      }
      if (o.hangAfter !== undefined && i === o.hangAfter) {
        await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
        return;
      }
      const eos = o.eosAt === i;
      const token: TokenInfo = eos ? { id: 2, text: "</s>", logprob: -0.25, special: true } : { id: 100 + i, text: ` t${i}`, logprob: -0.5, special: false };
      const topTokens: TokenInfo[] = Array.from({ length: p.topNTokens }, (_, k) => ({ id: 200 + k, text: `k${k}`, logprob: -k / 10, special: false }));
      if (!eos) texts.push(token.text);
      const last = eos || i === p.maxNewTokens - 1;
      if (!last) {
        yield { type: "token", token, topTokens };
        continue;
      }
      yield {
        type: "end",
        token,
        topTokens,
        generatedText: texts.join(""),
        finishReason: eos ? "eos_token" : "length",
        generatedTokens: i + 1,
        seed: p.doSample ? p.seed : null,
        inputLength: request.inputIds.length,
        timings: { queuedAt, batchedAt, finishedAt: performance.now() },
      };
      return;
    }
  }
}

// ---- a router HTTP server around a FakeBackend, on a free local port ----

import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { pino } from "pino";
import type { HttpContext } from "../http/context.js";
import { Permits } from "../http/permits.js";
import { createHttpServer } from "../http/server.js";
import { Metrics } from "../metrics/metrics.js";
import { loadTokenizer } from "../tokenizer/tokenizer.js";
import { Validator, type ValidationLimits } from "../validation/validate.js";

export const STORIES_DIR = new URL("../../models/stories260k/", import.meta.url).pathname;

export interface FakeServer {
  url: string;
  backend: FakeBackend;
  ctx: HttpContext;
  shutdown: AbortController;
  close(): Promise<void>;
}

export async function startFakeServer(
  options: FakeOptions = {},
  overrides: Partial<Omit<HttpContext, "validator">> & { limits?: Partial<ValidationLimits> } = {},
): Promise<FakeServer> {
  const backend = new FakeBackend(options);
  const { tokenizer } = await loadTokenizer(STORIES_DIR);
  const limits: ValidationLimits = { maxBestOf: 2, maxStopSequences: 4, maxTopNTokens: 5, maxInputTokens: 100, maxTotalTokens: 128, ...overrides.limits };
  const shutdown = new AbortController();
  const metrics = new Metrics(() => ctx.backend.stats());
  metrics.setTokenLimits(limits.maxInputTokens, limits.maxTotalTokens);
  const ctx: HttpContext = {
    backend,
    validator: new Validator(limits, tokenizer),
    permits: new Permits(8),
    info: {
      modelId: "stories260k",
      maxConcurrentRequests: 8,
      validationWorkers: 2,
      maxClientBatchSize: 4,
      version: "0.1.0",
      maxBatchTotalTokens: 4096,
      maxBatchPrefillTokens: 512,
      maxWaitingTokens: 20,
      waitingServedRatio: 1.2,
      blockSize: 16,
      modelDtype: "float32",
      modelDeviceType: "cpu",
    },
    computeType: "cpu",
    payloadLimit: 2_000_000,
    keepAliveMs: 15_000,
    logger: pino({ level: "silent" }),
    shutdown: shutdown.signal,
    metrics,
    tokenizer,
    corsAllowOrigin: [],
    ...overrides,
  };
  const server = createHttpServer(ctx);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    backend,
    ctx,
    shutdown,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}
