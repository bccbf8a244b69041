// Router overhead: the real router (child process) against the bench fake shard
// (child process, delay 0: every step answers at once), driven by the load
// generator at fixed concurrency over SSE and WebSocket. Measures streamed
// tokens/s, the concurrency sustained without errors, and the router's CPU time
// per streamed token (utime + stime from /proc/<pid>/stat over the run). The
// shard's and the client's CPU are recorded too, since all three share the machine.
//
//   npm run bench -- router-overhead [--transports sse,ws] [--concurrency 64,256,1024]
//     [--input-len 16] [--output-len 256] [--streams-per-slot 2] [--entry dist|source]
//     [--router-main PATH (a patched router copy's main.ts)] [--profile]
//     [--out-prefix PATH] [--append]
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { ApiFlavour } from "./flavours.js";
import { hostInfo } from "./report.js";
import { processCpu, ROOT, startRouterWithFakeShard, STORIES, type RouterUnderTest } from "./router-process.js";
import { prepare, runBenchmark, type RunConfig } from "./runner.js";

export interface OverheadRow {
  transport: "sse" | "ws";
  concurrency: number;
  requests: number;
  failed: number;
  firstError?: string;
  streamedTokens: number;
  wallS: number;
  tokensPerS: number;
  routerCpuS: number;
  routerCpuUsPerToken: number;
  /** The part of routerCpuUsPerToken spent in the kernel (socket writes and reads). */
  routerSysUsPerToken: number;
  /** Router CPU seconds per wall second (1.0 = one core busy). */
  routerCoreLoad: number;
  shardCpuUsPerToken: number;
  clientCpuUsPerToken: number;
  tpotP50Ms: number;
  itlP99Ms: number;
  ttftP50Ms: number;
  peakConcurrency: number;
}

function list(text: string): number[] {
  return text.split(",").map((x) => {
    const n = Number(x);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`not a positive integer: "${x}"`);
    return n;
  });
}

/** Streamed tokens per concurrency level at most (beyond one request per slot). */
const TOKENS_PER_LEVEL = 600_000;

type BaseConfig = Omit<RunConfig, "api" | "mode" | "numPrompts" | "url" | "workload"> & { workload: { input: { kind: "fixed"; n: number }; output: { kind: "fixed"; n: number } } };

async function measure(router: RouterUnderTest, transport: "sse" | "ws", c: number, base: BaseConfig, perSlot: number): Promise<OverheadRow> {
  const api: ApiFlavour = transport === "ws" ? "ws" : "tgi";
  // Every stream slot runs perSlot requests back to back, within a budget of streamed tokens per level.
  const numPrompts = Math.max(c, Math.min(c * perSlot, Math.floor(TOKENS_PER_LEVEL / base.workload.output.n)));
  const config: RunConfig = { ...base, url: router.url, api, mode: { kind: "concurrency", n: c }, numPrompts, wsConnections: transport === "ws" ? Math.max(1, Math.min(8, c / 64)) : 1 };
  const prepared = await prepare(config);
  // Warm up the router's JIT and the connections with a short run of the same shape.
  await runBenchmark({ ...config, numPrompts: Math.min(c, 64), warmup: 0, progress: false }, prepared.slice(0, Math.min(c, 64)));
  const cpu = (pid: number | undefined) => (pid ? processCpu(pid) : { user: NaN, system: NaN });
  const router0 = cpu(router.pid);
  const shard0 = cpu(router.shardPid);
  const client0 = process.cpuUsage();
  const { summary: s } = await runBenchmark({ ...config, warmup: 0 }, prepared);
  const router1 = cpu(router.pid);
  const shard1 = cpu(router.shardPid);
  const routerSysS = router1.system - router0.system;
  const routerCpuS = router1.user - router0.user + routerSysS;
  const shardCpuS = shard1.user - shard0.user + shard1.system - shard0.system;
  const client = process.cpuUsage(client0);
  const tokens = s.outputTokens;
  const perToken = (sec: number) => (tokens ? (sec * 1e6) / tokens : NaN);
  return {
    transport,
    concurrency: c,
    requests: s.requests,
    failed: s.failed,
    ...(s.errors.first[0] ? { firstError: s.errors.first[0] } : {}),
    streamedTokens: tokens,
    wallS: s.durationS,
    tokensPerS: s.outputTokensPerS,
    routerCpuS,
    routerCpuUsPerToken: perToken(routerCpuS),
    routerSysUsPerToken: perToken(routerSysS),
    routerCoreLoad: routerCpuS / s.durationS,
    shardCpuUsPerToken: perToken(shardCpuS),
    clientCpuUsPerToken: perToken((client.user + client.system) / 1e6),
    tpotP50Ms: s.tpotMs.p50,
    itlP99Ms: s.itlMs.p99,
    ttftP50Ms: s.ttftMs.p50,
    peakConcurrency: s.peakConcurrency,
  };
}

async function wsAvailable(url: string): Promise<boolean> {
  const { WsPool } = await import("./ws-client.js");
  try {
    (await WsPool.open(url, "/v1/ws", 1)).close();
    return true;
  } catch {
    return false;
  }
}

export function overheadTable(rows: OverheadRow[]): string {
  const head = ["transport", "streams", "tokens/s", "router µs/tok", "of which kernel", "router cores", "shard µs/tok", "client µs/tok", "TPOT p50 ms", "ITL p99 ms", "failed"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const r of rows) {
    lines.push(`| ${[r.transport, r.concurrency, Math.round(r.tokensPerS), r.routerCpuUsPerToken.toFixed(2), r.routerSysUsPerToken.toFixed(2), r.routerCoreLoad.toFixed(2), r.shardCpuUsPerToken.toFixed(2), r.clientCpuUsPerToken.toFixed(2), r.tpotP50Ms.toFixed(2), r.itlP99Ms.toFixed(2), r.failed].join(" | ")} |`);
  }
  return lines.join("\n");
}

export async function main(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      transports: { type: "string", default: "sse,ws" },
      concurrency: { type: "string", default: "64,256,1024" },
      "input-len": { type: "string", default: "16" },
      "output-len": { type: "string", default: "256" },
      "streams-per-slot": { type: "string", default: "2" },
      entry: { type: "string" },
      "router-main": { type: "string" },
      profile: { type: "boolean", default: false },
      notes: { type: "string" },
      "out-prefix": { type: "string" },
      append: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help) {
    process.stdout.write("usage: text-gen-bench router-overhead [--transports sse,ws] [--concurrency 64,256,1024] [--input-len 16] [--output-len 256]\n  [--streams-per-slot 2] [--entry dist|source] [--router-main PATH] [--profile] [--notes TEXT] [--out-prefix PATH] [--append]\n");
    return;
  }
  const transports = v.transports!.split(",") as ("sse" | "ws")[];
  const levels = list(v.concurrency!);
  const profileDir = join(ROOT, "bench", "results", "profiles");
  if (v.profile) mkdirSync(profileDir, { recursive: true });
  const router = await startRouterWithFakeShard({
    fakeShard: "child",
    fake: { delayMs: 0 },
    entry: v.entry as "dist" | "source" | undefined,
    customMain: v["router-main"],
    nodeFlags: v.profile ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
    routerArgs: ["--max-batch-prefill-tokens", "16384"],
  });
  const rows: OverheadRow[] = [];
  const skipped: string[] = [];
  try {
    const base = {
      tokenizer: STORIES,
      workloadName: "fixed",
      workload: { input: { kind: "fixed" as const, n: Number(v["input-len"]) }, output: { kind: "fixed" as const, n: Number(v["output-len"]) } },
      seed: 1,
      sampling: { model: "fake", ignoreEos: true },
      warmup: 0,
      wsConnections: 1,
      progress: process.stderr.isTTY === true,
    };
    for (const transport of transports) {
      if (transport === "ws" && !(await wsAvailable(router.url))) {
        skipped.push("ws: the router under test has no /v1/ws (rebuild dist after router/ws lands, or --entry source)");
        continue;
      }
      for (const c of levels) {
        process.stderr.write(`${transport} × ${c} streams ...\n`);
        const row = await measure(router, transport, c, base, Number(v["streams-per-slot"]));
        rows.push(row);
        process.stderr.write(`  ${Math.round(row.tokensPerS)} tok/s, router ${row.routerCpuUsPerToken.toFixed(2)} µs/token (${row.routerCoreLoad.toFixed(2)} cores), ${row.failed} failed\n`);
      }
    }
  } finally {
    await router.stop();
  }
  const date = new Date().toISOString();
  const run = {
    date,
    command: ["text-gen-bench", "router-overhead", ...argv].join(" "),
    host: hostInfo(undefined, v.notes),
    loadAverage: os.loadavg(),
    router: { entry: router.entry, ...(v["router-main"] ? { main: v["router-main"] } : {}), fakeShard: "child process, delay 0 ms, one fixed token per request per step" },
    config: { inputLen: Number(v["input-len"]), outputLen: Number(v["output-len"]), streamsPerSlot: Number(v["streams-per-slot"]), tokensPerLevel: TOKENS_PER_LEVEL, levels, transports },
    rows,
    skipped,
    ...(v.profile ? { profiles: existsSync(profileDir) ? readdirSync(profileDir) : [] } : {}),
  };
  process.stdout.write(`${overheadTable(rows)}\n${skipped.map((s) => `skipped ${s}`).join("\n")}\n`);
  const prefix = v["out-prefix"] ?? join(ROOT, "bench", "results", `${date.slice(0, 10)}-router-overhead-cpu`);
  const file = `${prefix}.json`;
  // --append adds this run to the file's runs (e.g. the compiled router, then the sources with /v1/ws).
  const previous = v.append && existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as { runs: unknown[] }).runs : [];
  writeFileSync(file, `${JSON.stringify({ tool: "text-gen-bench router-overhead", runs: [...previous, run] }, null, 2)}\n`);
  process.stderr.write(`wrote ${file}\n`);
}
