// Replays the scheduler against a model of a GPU's step times: the real router (child
// process) in front of the bench fake shard, which answers each step after the time
// step-costs.ts gives it, driven by the real load generator. What the router's batching
// would make of a workload on that GPU, in seconds of this machine's time and none of
// the GPU's: prefill budgets, batch caps and scheduling changes can be tried here first.
//
//   npm run bench -- replay --costs FILE [--workload sharegpt] [--input-len SPEC --output-len SPEC]
//     [--num-prompts 500] [--seed 0] [--max-batch-prefill-tokens 8192] [--max-batch-size N]
//     [--kv-tokens N] [--expose-turnaround] [--out FILE]
//
// By default a step that continues a running batch is paced one modelled step after the
// last (the fake shard's fixed-period mode), as the shard's lookahead keeps the GPU busy
// while the router turns the last step around; --expose-turnaround adds the router's time
// between steps instead, as a shard without lookahead would.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseLengthSpec, SHAREGPT_LIKE, type Workload } from "./lengths.js";
import { startRouterWithFakeShard, STORIES } from "./router-process.js";
import { runBenchmark, type RunConfig } from "./runner.js";
import type { StepTrace } from "./fake-shard.js";
import { intFlag } from "./flags.js";
import { carriesPrompt, readStepCosts, stepMs, type StepCosts } from "./step-costs.js";

export interface ReplayOptions {
  costs: StepCosts;
  workload: Workload;
  workloadName: string;
  numPrompts: number;
  seed: number;
  maxBatchPrefillTokens: number;
  maxBatchSize?: number;
  kvTokens?: number;
  exposeTurnaround: boolean;
}

/** Decode steps by rows: the small batches of a long tail, the CUDA-graph range, and past it. */
const ROW_CLASSES: [string, number][] = [["decode ≤ 40 rows", 40], ["decode 41-256 rows", 256], ["decode > 256 rows", Infinity]];
/** Steps that carry prompt tokens (new requests, or a chunked prompt's next chunk) with the running rows. */
const PROMPT_STEPS = "with prompt tokens";

export interface StepClass {
  steps: number;
  modelledS: number;
}

export interface ReplayResult {
  requests: number;
  failed: number;
  requestsPerS: number;
  makespanS: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  tpotP50Ms: number;
  /** Steps by kind (PROMPT_STEPS or a ROW_CLASSES name) and their modelled time. */
  steps: Record<string, StepClass>;
  /** First step's arrival to last step's answer, and the modelled time of the steps in it. */
  spanS: number;
  modelledS: number;
  /**
   * Requests / modelled seconds: the rate if the GPU never waited for the router. The batching
   * is the same from run to run here, so this figure is too, where the wall-clock ones move
   * with this machine's load by a few percent.
   */
  modelledRequestsPerS: number;
}

export function classify(costs: StepCosts, trace: readonly StepTrace[]): Record<string, StepClass> {
  const out: Record<string, StepClass> = {};
  for (const s of trace) {
    const step = { rows: s.requests, tokens: s.forwardTokens };
    const name = carriesPrompt(step) ? PROMPT_STEPS : ROW_CLASSES.find(([, max]) => s.requests <= max)![0];
    const c = (out[name] ??= { steps: 0, modelledS: 0 });
    c.steps += 1;
    c.modelledS += stepMs(costs, step) / 1000;
  }
  return out;
}

export async function replay(o: ReplayOptions): Promise<ReplayResult> {
  const routerArgs = ["--max-batch-prefill-tokens", String(o.maxBatchPrefillTokens), "--max-input-tokens", "2047", "--max-total-tokens", "4096"];
  if (o.maxBatchSize !== undefined) routerArgs.push("--max-batch-size", String(o.maxBatchSize));
  const router = await startRouterWithFakeShard({
    fake: {
      trace: true,
      fixedPeriod: !o.exposeTurnaround,
      stepCostMs: (step) => stepMs(o.costs, step),
      ...(o.kvTokens !== undefined ? { kvTokens: o.kvTokens } : {}),
    },
    routerArgs,
  });
  try {
    const config: RunConfig = {
      url: router.url, api: "tgi", tokenizer: STORIES, workloadName: o.workloadName, workload: o.workload, numPrompts: o.numPrompts,
      seed: o.seed, mode: { kind: "all-at-once" }, sampling: { model: "replay", ignoreEos: true }, warmup: 0, wsConnections: 1, progress: false,
    };
    const { summary: s } = await runBenchmark(config);
    const trace = router.shard!.steps;
    const steps = classify(o.costs, trace);
    const spanS = trace.length ? (trace.at(-1)!.answered - trace[0]!.received) / 1000 : 0;
    const modelledS = Object.values(steps).reduce((sum, c) => sum + c.modelledS, 0);
    return {
      requests: s.requests, failed: s.failed, requestsPerS: s.requestsPerS, makespanS: s.durationS,
      ttftP50Ms: s.ttftMs.p50, ttftP99Ms: s.ttftMs.p99, tpotP50Ms: s.tpotMs.p50,
      steps, spanS, modelledS, modelledRequestsPerS: modelledS > 0 ? s.requests / modelledS : 0,
    };
  } finally {
    await router.stop();
  }
}

export function replayTable(r: ReplayResult): string {
  const lines = [
    `requests ${r.requests} (${r.failed} failed) in ${r.makespanS.toFixed(2)} s → ${r.requestsPerS.toFixed(2)} req/s; ` +
      `TTFT p50 / p99 ${r.ttftP50Ms.toFixed(0)} / ${r.ttftP99Ms.toFixed(0)} ms; TPOT p50 ${r.tpotP50Ms.toFixed(2)} ms`,
    `steps over ${r.spanS.toFixed(2)} s, ${r.modelledS.toFixed(2)} s of them modelled GPU time (the rest: the router's turnaround left exposed, and idle)`,
    `at the modelled time alone: ${r.modelledRequestsPerS.toFixed(2)} req/s`,
    "",
    "| steps | count | modelled s |",
    "| --- | --- | --- |",
  ];
  for (const name of [PROMPT_STEPS, ...ROW_CLASSES.map(([n]) => n)]) {
    const c = r.steps[name];
    if (c) lines.push(`| ${name} | ${c.steps} | ${c.modelledS.toFixed(2)} |`);
  }
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      costs: { type: "string" },
      workload: { type: "string", default: "sharegpt" },
      "input-len": { type: "string" },
      "output-len": { type: "string" },
      "num-prompts": { type: "string" },
      seed: { type: "string" },
      "max-batch-prefill-tokens": { type: "string" },
      "max-batch-size": { type: "string" },
      "kv-tokens": { type: "string" },
      "expose-turnaround": { type: "boolean", default: false },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help || !v.costs) {
    process.stdout.write(
      "usage: text-gen-bench replay --costs FILE [--workload sharegpt|fixed] [--input-len SPEC --output-len SPEC]\n" +
        "  [--num-prompts 500] [--seed 0] [--max-batch-prefill-tokens 8192] [--max-batch-size N] [--kv-tokens N]\n" +
        "  [--expose-turnaround] [--out FILE]\n  cost files: bench/costs/*.json (format: bench/step-costs.ts)\n",
    );
    if (!v.help) process.exitCode = 2;
    return;
  }
  let workload: Workload;
  if (v.workload === "sharegpt") workload = SHAREGPT_LIKE;
  else if (v.workload === "fixed") workload = { input: parseLengthSpec(v["input-len"] ?? "128", "input-len"), output: parseLengthSpec(v["output-len"] ?? "128", "output-len") };
  else throw new Error(`--workload must be sharegpt or fixed, got "${v.workload}"`);
  const costs = readStepCosts(v.costs);
  const options: ReplayOptions = {
    costs, workload, workloadName: v.workload!, numPrompts: intFlag(v["num-prompts"], "num-prompts", 500, 1)!, seed: Number(v.seed ?? 0),
    maxBatchPrefillTokens: intFlag(v["max-batch-prefill-tokens"], "max-batch-prefill-tokens", 8192, 1)!,
    maxBatchSize: intFlag(v["max-batch-size"], "max-batch-size", undefined, 1), kvTokens: intFlag(v["kv-tokens"], "kv-tokens", undefined, 1),
    exposeTurnaround: v["expose-turnaround"]!,
  };
  process.stdout.write(`replay: ${costs.source || v.costs}; ${options.numPrompts} ${options.workloadName} prompts all at once, seed ${options.seed}, ` +
    `prefill budget ${options.maxBatchPrefillTokens}; router turnaround ${options.exposeTurnaround ? "exposed" : "hidden (lookahead)"}\n`);
  const result = await replay(options);
  process.stdout.write(`${replayTable(result)}\n`);
  if (v.out) writeFileSync(v.out, `${JSON.stringify({ options: { ...options, costs: v.costs }, result }, null, 2)}\n`);
}
