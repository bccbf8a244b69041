// Output of a run: the result file (config, host, command, summary) and the
// tables printed on stdout, including `compare` of two result files.
import { readFileSync } from "node:fs";
import os from "node:os";
import type { Distribution, Summary } from "./metrics.js";

export interface HostInfo {
  hostname: string;
  platform: string;
  cpu: string;
  cpus: number;
  memoryGiB: number;
  node: string;
  /** Accelerator, as given with --card (the tool does not probe GPUs). */
  card?: string;
  notes?: string;
}

export interface ResultFile {
  tool: "text-gen-bench";
  format: 1;
  label: string;
  date: string;
  command: string;
  host: HostInfo;
  config: Record<string, unknown>;
  summary: Summary;
  /** Per-request figures (ms), with --save-requests. */
  requests?: { input: number; output: number; ttft: number | null; e2e: number; error?: string }[];
}

export function hostInfo(card?: string, notes?: string): HostInfo {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model ?? "unknown",
    cpus: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    ...(card ? { card } : {}),
    ...(notes ? { notes } : {}),
  };
}

const f = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "-");
const pad = (s: string, n: number) => s.padStart(n);

function distRow(name: string, d: Distribution): string {
  return `${name.padEnd(14)}${[d.mean, d.p50, d.p90, d.p99].map((x) => pad(f(x, 2), 11)).join("")}`;
}

export function summaryTable(title: string, s: Summary): string {
  const lines = [
    title,
    `${"requests".padEnd(14)}${s.completed} ok, ${s.failed} failed in ${f(s.durationS, 2)} s  →  ${f(s.requestsPerS, 2)} req/s  (peak ${s.peakConcurrency} in flight)`,
    `${"tokens".padEnd(14)}${s.inputTokens} in, ${s.outputTokens} out`,
    `${"tokens/s".padEnd(14)}${f(s.inputTokensPerS)} in, ${f(s.outputTokensPerS)} out, ${f(s.totalTokensPerS)} total`,
    `${"(ms)".padEnd(14)}${["mean", "p50", "p90", "p99"].map((h) => pad(h, 11)).join("")}`,
    distRow("TTFT", s.ttftMs),
    distRow("TPOT", s.tpotMs),
    distRow("ITL", s.itlMs),
    distRow("E2E latency", s.e2eMs),
  ];
  if (s.errors.count > 0) lines.push(`errors        ${s.errors.count}; first: ${s.errors.first.map((e) => JSON.stringify(e)).join("; ")}`);
  return lines.join("\n");
}

/** Rows of compare: [label, value getter, higher is better]. */
const COMPARED: [string, (s: Summary) => number, boolean][] = [
  ["requests/s", (s) => s.requestsPerS, true],
  ["output tok/s", (s) => s.outputTokensPerS, true],
  ["total tok/s", (s) => s.totalTokensPerS, true],
  ["TTFT mean ms", (s) => s.ttftMs.mean, false],
  ["TTFT p50 ms", (s) => s.ttftMs.p50, false],
  ["TTFT p99 ms", (s) => s.ttftMs.p99, false],
  ["TPOT mean ms", (s) => s.tpotMs.mean, false],
  ["TPOT p50 ms", (s) => s.tpotMs.p50, false],
  ["TPOT p99 ms", (s) => s.tpotMs.p99, false],
  ["ITL p50 ms", (s) => s.itlMs.p50, false],
  ["ITL p99 ms", (s) => s.itlMs.p99, false],
  ["E2E mean ms", (s) => s.e2eMs.mean, false],
  ["E2E p99 ms", (s) => s.e2eMs.p99, false],
  ["failed", (s) => s.failed, false],
];

export function readResult(file: string): ResultFile {
  const v = JSON.parse(readFileSync(file, "utf8")) as ResultFile;
  if (v.tool !== "text-gen-bench" || !v.summary) throw new Error(`${file} is not a text-gen-bench result file`);
  return v;
}

/** Side by side, with B/A; "better" says which side wins each row. */
export function compareTable(a: ResultFile, b: ResultFile, nameA: string, nameB: string): string {
  const w = Math.max(12, nameA.length, nameB.length) + 2;
  const lines = [`${"".padEnd(16)}${pad(nameA, w)}${pad(nameB, w)}${pad("B/A", 9)}  better`];
  for (const [label, get, higher] of COMPARED) {
    const x = get(a.summary);
    const y = get(b.summary);
    const ratio = x !== 0 && Number.isFinite(x) && Number.isFinite(y) ? y / x : NaN;
    const better = !Number.isFinite(ratio) || Math.abs(ratio - 1) < 0.005 ? "=" : (ratio > 1) === higher ? "B" : "A";
    lines.push(`${label.padEnd(16)}${pad(f(x, 2), w)}${pad(f(y, 2), w)}${pad(f(ratio, 3), 9)}  ${better}`);
  }
  const ca = a.config;
  const cb = b.config;
  for (const key of ["api", "workload", "mode", "numPrompts", "seed"]) {
    if (JSON.stringify(ca[key]) !== JSON.stringify(cb[key])) {
      lines.push(`note: ${key} differs: ${JSON.stringify(ca[key])} vs ${JSON.stringify(cb[key])}`);
    }
  }
  return lines.join("\n");
}
