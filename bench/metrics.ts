// From request records to the figures every serving benchmark reports (vLLM's
// bench serve definitions): TTFT = first token − sent; TPOT per request =
// (e2e − TTFT) / (output − 1); ITL = every gap between token events; e2e =
// final event − sent; rates over the run's wall time (first send to last end).
import type { RequestRecord } from "./record.js";

export interface Distribution {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  min: number;
  max: number;
  count: number;
}

export interface Summary {
  requests: number;
  completed: number;
  failed: number;
  durationS: number;
  requestsPerS: number;
  inputTokens: number;
  outputTokens: number;
  inputTokensPerS: number;
  outputTokensPerS: number;
  totalTokensPerS: number;
  /** Milliseconds. */
  ttftMs: Distribution;
  tpotMs: Distribution;
  itlMs: Distribution;
  e2eMs: Distribution;
  /** Most requests in flight at once (as seen by the client). */
  peakConcurrency: number;
  errors: { count: number; first: string[] };
}

/** Linear interpolation between closest ranks (numpy's default), on sorted values. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = (p / 100) * (n - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

export function distribution(values: number[] | Float64Array): Distribution {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return {
    mean: n ? sum / n : NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    min: n ? sorted[0]! : NaN,
    max: n ? sorted[n - 1]! : NaN,
    count: n,
  };
}

export function peakConcurrency(records: RequestRecord[]): number {
  const edges: [number, number][] = [];
  for (const r of records) edges.push([r.sent, 1], [r.done, -1]);
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let peak = 0;
  for (const [, d] of edges) peak = Math.max(peak, (now += d));
  return peak;
}

export function summarize(records: RequestRecord[]): Summary {
  const ok = records.filter((r) => r.error === undefined);
  const bad = records.filter((r) => r.error !== undefined);
  const start = records.reduce((m, r) => Math.min(m, r.sent), Infinity);
  const end = records.reduce((m, r) => Math.max(m, r.done), -Infinity);
  const durationS = records.length ? (end - start) / 1000 : 0;
  const ttft: number[] = [];
  const tpot: number[] = [];
  const e2e: number[] = [];
  let gaps = 0;
  for (const r of ok) gaps += Math.max(0, r.tokenTimes.length - 1);
  const itl = new Float64Array(gaps);
  let g = 0;
  for (const r of ok) {
    const t = r.tokenTimes;
    ttft.push(t[0]! - r.sent);
    e2e.push(r.done - r.sent);
    if (r.outputTokens > 1) tpot.push((r.done - t[0]!) / (r.outputTokens - 1));
    for (let i = 1; i < t.length; i++) itl[g++] = t[i]! - t[i - 1]!;
  }
  const inputTokens = ok.reduce((s, r) => s + r.inputTokens, 0);
  const outputTokens = ok.reduce((s, r) => s + r.outputTokens, 0);
  const rate = (x: number) => (durationS > 0 ? x / durationS : 0);
  const first: string[] = [];
  for (const r of bad) if (first.length < 5 && !first.includes(r.error!)) first.push(r.error!);
  return {
    requests: records.length,
    completed: ok.length,
    failed: bad.length,
    durationS,
    requestsPerS: rate(ok.length),
    inputTokens,
    outputTokens,
    inputTokensPerS: rate(inputTokens),
    outputTokensPerS: rate(outputTokens),
    totalTokensPerS: rate(inputTokens + outputTokens),
    ttftMs: distribution(ttft),
    tpotMs: distribution(tpot),
    itlMs: distribution(itl),
    e2eMs: distribution(e2e),
    peakConcurrency: peakConcurrency(records),
    errors: { count: bad.length, first },
  };
}
