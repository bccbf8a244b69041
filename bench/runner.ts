// Runs one benchmark: builds the prompts (before the clock starts), sends them
// all at once, at Poisson arrivals, or from a fixed number of workers, and
// collects one record per request.
import { setTimeout as sleep } from "node:timers/promises";
import { path, requestBody, type ApiFlavour, type SamplingOptions } from "./flavours.js";
import { describeLength, sampleLengths, type RequestShape, type Workload } from "./lengths.js";
import { summarize, type Summary } from "./metrics.js";
import { Progress } from "./progress.js";
import { PromptBuilder, type Prompt } from "./prompts.js";
import { exponential, forkRng } from "./random.js";
import { RecordBuilder, type RequestRecord } from "./record.js";
import { httpTarget, streamRequest } from "./sse-client.js";
import { WsPool } from "./ws-client.js";

export type LoadMode = { kind: "all-at-once" } | { kind: "poisson"; rate: number } | { kind: "concurrency"; n: number };

export interface RunConfig {
  url: string;
  api: ApiFlavour;
  /** Model directory whose tokenizer.json sizes the prompts. */
  tokenizer: string;
  workloadName: string;
  workload: Workload;
  numPrompts: number;
  seed: number;
  mode: LoadMode;
  /** Cap on requests in flight in the all-at-once and Poisson modes. */
  maxConcurrency?: number;
  sampling: SamplingOptions;
  /** Unrecorded requests sent one by one first. */
  warmup: number;
  wsConnections: number;
  apiKey?: string;
  progress: boolean;
}

export interface PreparedRequest extends RequestShape {
  prompt: Prompt;
}

export interface RunResult {
  records: RequestRecord[];
  summary: Summary;
  prepared: PreparedRequest[];
}

export function describeMode(mode: LoadMode, cap?: number): string {
  const capped = cap ? `, at most ${cap} in flight` : "";
  switch (mode.kind) {
    case "all-at-once": return `all at once (QPS = inf)${capped}`;
    case "poisson": return `Poisson arrivals at ${mode.rate} req/s${capped}`;
    case "concurrency": return `fixed concurrency ${mode.n}`;
  }
}

export function describeWorkload(w: Workload): string {
  return `input ${describeLength(w.input)}, output ${describeLength(w.output)}`;
}

export async function prepare(config: RunConfig): Promise<PreparedRequest[]> {
  const builder = await PromptBuilder.load(config.tokenizer);
  const shapes = sampleLengths(config.workload, config.numPrompts, config.seed);
  const rng = forkRng(config.seed, "prompts");
  const prepared: PreparedRequest[] = [];
  for (const shape of shapes) prepared.push({ ...shape, prompt: await builder.build(shape.input, rng) });
  return prepared;
}

type Sender = (req: PreparedRequest, index: number, onToken?: () => void) => Promise<RequestRecord>;

async function makeSender(config: RunConfig): Promise<{ send: Sender; close: () => void }> {
  const headers: Record<string, string> = config.apiKey ? { authorization: `Bearer ${config.apiKey}` } : {};
  if (config.api === "ws") {
    const pool = await WsPool.open(config.url, path("ws"), config.wsConnections, headers);
    return {
      send: (req, index, onToken) => {
        const rec = new RecordBuilder(index, req.input, req.output, performance.now());
        return pool.stream(requestBody("ws", req.prompt.text, req.output, config.sampling), rec, onToken);
      },
      close: () => pool.close(),
    };
  }
  const target = httpTarget(config.url, config.apiKey);
  return {
    send: (req, index, onToken) => {
      const body = requestBody(config.api, req.prompt.text, req.output, config.sampling);
      const rec = new RecordBuilder(index, req.input, req.output, performance.now());
      return streamRequest(target, config.api, path(config.api), body, rec, onToken);
    },
    close: () => target.agent.destroy(),
  };
}

/** Limits requests in flight (a counting semaphore). */
class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async enter(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

export async function runBenchmark(config: RunConfig, prepared?: PreparedRequest[]): Promise<RunResult> {
  const requests = prepared ?? (await prepare(config));
  const { send, close } = await makeSender(config);
  try {
    for (let i = 0; i < config.warmup; i++) {
      const r = await send(requests[i % requests.length]!, -1);
      if (r.error !== undefined) throw new Error(`warm-up request failed: ${r.error}`);
    }
    const progress = config.progress ? new Progress(requests.length, config.api) : undefined;
    const records: RequestRecord[] = new Array(requests.length);
    const one = async (i: number) => {
      const r = await send(requests[i]!, i, progress && (() => progress.token()));
      records[i] = r;
      progress?.finished(r.error === undefined);
    };
    const mode = config.mode;
    if (mode.kind === "concurrency") {
      let next = 0;
      const worker = async () => {
        while (next < requests.length) await one(next++);
      };
      await Promise.all(Array.from({ length: Math.min(mode.n, requests.length) }, worker));
    } else {
      const gate = new Gate(config.maxConcurrency ?? Infinity);
      const arrivals = forkRng(config.seed, "arrivals");
      const started = performance.now();
      let due = 0;
      const running: Promise<void>[] = [];
      for (let i = 0; i < requests.length; i++) {
        if (mode.kind === "poisson") {
          if (i > 0) due += exponential(arrivals, 1000 / mode.rate);
          const wait = started + due - performance.now();
          if (wait > 0) await sleep(wait);
        }
        await gate.enter();
        running.push(one(i).finally(() => gate.leave()));
      }
      await Promise.all(running);
    }
    progress?.stop();
    return { records, summary: summarize(records), prepared: requests };
  } finally {
    close();
  }
}
