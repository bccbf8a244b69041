#!/usr/bin/env node
// text-gen-bench: load generator for TGI- and OpenAI-compatible servers.
//   text-gen-bench [run] --url URL --api tgi|openai|chat|ws [workload] [load] [output]
//   text-gen-bench compare A.json B.json
//   text-gen-bench router-overhead [...]   (the real router against a fake shard; see bench/README.md)
//   text-gen-bench fake-shard --uds PATH [...]
//   text-gen-bench replay --costs FILE [...]  (the router's batching against modelled GPU step times)
//   text-gen-bench costs --profile FILE [...]  (a replay cost file from a GPU run's step profile)
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { intFlag } from "./flags.js";
import { FLAVOURS, type ApiFlavour } from "./flavours.js";
import { parseLengthSpec, SHAREGPT_LIKE, type Workload } from "./lengths.js";
import { compareTable, hostInfo, readResult, summaryTable, type ResultFile } from "./report.js";
import { describeMode, describeWorkload, runBenchmark, type LoadMode, type RunConfig } from "./runner.js";

const HELP = `usage: text-gen-bench [run] --url URL [options]
       text-gen-bench compare A.json B.json
       text-gen-bench router-overhead [--help]
       text-gen-bench fake-shard --uds PATH [--help]
       text-gen-bench replay --costs FILE [--help]
       text-gen-bench costs --profile FILE --prefill-ms-per-token X [--help]

target
  --url URL              server base URL (default http://127.0.0.1:3000)
  --api FLAVOUR          tgi (/generate_stream), openai (/v1/completions), chat (/v1/chat/completions), ws (/v1/ws); default tgi
  --model NAME           model name in OpenAI bodies (default: /info's model_id, else "tgi")
  --tokenizer DIR        model dir with tokenizer.json, to build prompts of exact lengths (default: /info's model_id if it is a local dir)
  --api-key KEY          bearer token
  --ws-connections N     sockets for --api ws, requests spread round-robin (default 1)
workload
  --workload KIND        fixed | uniform | sharegpt (ShareGPT-like: ≈202 in / 179 out, long tail); default fixed
  --input-len SPEC       prompt tokens: N or LO:HI (default 128)
  --output-len SPEC      generated tokens: N or LO:HI (default 128)
  --num-prompts N        requests (default 100)
  --seed N               seed of lengths, prompts and arrivals (default 0)
  --no-ignore-eos        let the model stop at EOS (default: exactly the output length, ignore_eos)
  --temperature T        sample at T (default: greedy)
load
  --rate R               Poisson arrivals at R req/s; "inf" sends all at once (default inf)
  --concurrency N        fixed concurrency: N workers, each sends its next request when one ends
  --max-concurrency N    cap on requests in flight with --rate
  --warmup N             unrecorded requests sent first, one at a time (default 1)
output
  --out FILE             result JSON (default bench/results/run-<date>.json; "-" for none)
  --label TEXT           name of this run in compare tables
  --card TEXT            accelerator description recorded in the result (e.g. "1x H100 SXM 80GB")
  --notes TEXT           free text recorded in the result
  --save-requests        keep per-request figures in the result file
  --no-progress          no progress bar even on a terminal
`;

async function infoOf(url: string): Promise<{ model_id?: string } | undefined> {
  try {
    const res = await fetch(new URL("/info", url));
    return res.ok ? ((await res.json()) as { model_id?: string }) : undefined;
  } catch {
    return undefined;
  }
}

export async function runCommand(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      url: { type: "string", default: "http://127.0.0.1:3000" },
      api: { type: "string", default: "tgi" },
      model: { type: "string" },
      tokenizer: { type: "string" },
      "api-key": { type: "string" },
      "ws-connections": { type: "string" },
      workload: { type: "string", default: "fixed" },
      "input-len": { type: "string", default: "128" },
      "output-len": { type: "string", default: "128" },
      "num-prompts": { type: "string" },
      seed: { type: "string" },
      "no-ignore-eos": { type: "boolean", default: false },
      temperature: { type: "string" },
      rate: { type: "string", default: "inf" },
      concurrency: { type: "string" },
      "max-concurrency": { type: "string" },
      warmup: { type: "string" },
      out: { type: "string" },
      label: { type: "string" },
      card: { type: "string" },
      notes: { type: "string" },
      "save-requests": { type: "boolean", default: false },
      "no-progress": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help) return void process.stdout.write(HELP);
  if (!FLAVOURS.includes(v.api as ApiFlavour)) throw new Error(`--api must be one of ${FLAVOURS.join(", ")}, got "${v.api}"`);
  let workload: Workload;
  if (v.workload === "sharegpt") workload = SHAREGPT_LIKE;
  else if (v.workload === "fixed" || v.workload === "uniform") {
    workload = { input: parseLengthSpec(v["input-len"]!, "--input-len"), output: parseLengthSpec(v["output-len"]!, "--output-len") };
  } else throw new Error(`--workload must be fixed, uniform or sharegpt, got "${v.workload}"`);
  let mode: LoadMode;
  if (v.concurrency !== undefined) mode = { kind: "concurrency", n: intFlag(v.concurrency, "concurrency")! };
  else if (v.rate === "inf") mode = { kind: "all-at-once" };
  else {
    const rate = Number(v.rate);
    if (!(rate > 0)) throw new Error(`--rate must be a positive number or "inf", got "${v.rate}"`);
    mode = { kind: "poisson", rate };
  }
  const info = await infoOf(v.url!);
  const tokenizer = v.tokenizer ?? info?.model_id;
  if (!tokenizer || !existsSync(join(tokenizer, "tokenizer.json"))) {
    throw new Error(`give --tokenizer DIR (a folder with the model's tokenizer.json)${tokenizer ? `: ${tokenizer} has none` : ""}`);
  }
  const config: RunConfig = {
    url: v.url!,
    api: v.api as ApiFlavour,
    tokenizer,
    workloadName: v.workload!,
    workload,
    numPrompts: intFlag(v["num-prompts"], "num-prompts", 100)!,
    seed: intFlag(v.seed, "seed", 0)!,
    mode,
    maxConcurrency: intFlag(v["max-concurrency"], "max-concurrency"),
    sampling: {
      model: v.model ?? info?.model_id ?? "tgi",
      ignoreEos: !v["no-ignore-eos"],
      temperature: v.temperature === undefined ? undefined : Number(v.temperature),
    },
    warmup: intFlag(v.warmup, "warmup", 1)!,
    wsConnections: intFlag(v["ws-connections"], "ws-connections", 1)!,
    apiKey: v["api-key"],
    progress: !v["no-progress"],
  };
  const title = `text-gen-bench  ${config.api}  ${config.url}  ${config.workloadName}: ${describeWorkload(workload)}, ${config.numPrompts} prompts, seed ${config.seed}; ${describeMode(mode, config.maxConcurrency)}`;
  const { records, summary } = await runBenchmark(config);
  process.stdout.write(`${summaryTable(title, summary)}\n`);
  const date = new Date().toISOString();
  const { apiKey: _secret, progress: _p, ...recorded } = config;
  const result: ResultFile = {
    tool: "text-gen-bench",
    format: 1,
    label: v.label ?? `${config.api} ${config.workloadName} ${describeMode(mode)}`,
    date,
    command: ["text-gen-bench", ...argv.map((a) => (a === v["api-key"] ? "***" : a))].join(" "),
    host: hostInfo(v.card, v.notes),
    config: { ...recorded, workloadDescription: describeWorkload(workload), modeDescription: describeMode(mode, config.maxConcurrency) },
    summary,
    ...(v["save-requests"]
      ? {
          requests: records.map((r) => ({
            input: r.inputTokens,
            output: r.outputTokens,
            ttft: r.tokenTimes.length ? r.tokenTimes[0]! - r.sent : null,
            e2e: r.done - r.sent,
            ...(r.error !== undefined ? { error: r.error } : {}),
          })),
        }
      : {}),
  };
  const out = v.out ?? join("bench", "results", `run-${date.replace(/[:.]/g, "-")}.json`);
  if (out !== "-") {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`wrote ${out}\n`);
  }
  if (summary.failed > 0 && summary.completed === 0) process.exitCode = 1;
}

function compareCommand(argv: string[]): void {
  if (argv.length !== 2) throw new Error("usage: text-gen-bench compare A.json B.json");
  const [fa, fb] = argv as [string, string];
  const a = readResult(fa);
  const b = readResult(fb);
  process.stdout.write(`A: ${fa} (${a.label}, ${a.date})\nB: ${fb} (${b.label}, ${b.date})\n`);
  process.stdout.write(`${compareTable(a, b, "A", "B")}\n`);
}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === "compare") return compareCommand(rest);
  if (command === "router-overhead") return (await import("./router-overhead.js")).main(rest);
  if (command === "fake-shard") return (await import("./fake-shard.js")).main(rest);
  if (command === "replay") return (await import("./replay.js")).main(rest);
  if (command === "costs") return (await import("./costs-from-profile.js")).main(rest);
  if (command === "run") return runCommand(rest);
  if (command === "--help" || command === "-h") return void process.stdout.write(HELP);
  return runCommand(argv);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    () => process.exit(process.exitCode ?? 0),
    (e: unknown) => {
      process.stderr.write(`text-gen-bench: ${(e as Error).message}\n`);
      process.exit(2);
    },
  );
}
