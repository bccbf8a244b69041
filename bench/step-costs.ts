// A model of a GPU's step times, for replaying the scheduler without the GPU
// (replay.ts): the fake shard answers each step after the time this model gives it.
// A prefill step (any step with prompt tokens) costs its forward tokens at a rate; a
// decode step costs what the table gives for its rows, interpolated linearly between
// measured points and extended along the last two beyond them.
//
// File format (JSON):
//   { "source": "where the figures come from",
//     "prefill_ms_per_token": 0.063, "prefill_min_ms": 12,
//     "decode_ms": [[1, 12.05], [16, 13.8], [256, 33.5], [450, 47.4]] }
import { readFileSync } from "node:fs";

export interface StepCosts {
  source: string;
  prefillMsPerToken: number;
  prefillMinMs: number;
  /** [rows, ms] by increasing rows. */
  decodeMs: [number, number][];
}

export interface ModelledStep {
  rows: number;
  /** Tokens through the forward: prompt chunks plus one per decoding request. */
  tokens: number;
}

/** Whether a step carries prompt tokens (new requests, or a chunked prompt's next chunk): a prefill's cost. */
export function carriesPrompt(step: ModelledStep): boolean {
  return step.tokens > step.rows;
}

function nonNegative(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new Error(`${what} must be a non-negative number, got ${JSON.stringify(v)}`);
  return v;
}

export function parseStepCosts(json: unknown): StepCosts {
  const o = json as Record<string, unknown>;
  if (typeof o !== "object" || o === null) throw new Error("step costs: expected a JSON object");
  const table = o.decode_ms;
  if (!Array.isArray(table) || table.length === 0) throw new Error("step costs: decode_ms must be a non-empty list of [rows, ms]");
  const decodeMs = table.map((p, i): [number, number] => {
    if (!Array.isArray(p) || p.length !== 2) throw new Error(`step costs: decode_ms[${i}] must be [rows, ms]`);
    return [nonNegative(p[0], `decode_ms[${i}] rows`), nonNegative(p[1], `decode_ms[${i}] ms`)];
  });
  for (let i = 1; i < decodeMs.length; i++) {
    if (decodeMs[i]![0] <= decodeMs[i - 1]![0]) throw new Error("step costs: decode_ms rows must increase");
  }
  return {
    source: typeof o.source === "string" ? o.source : "",
    prefillMsPerToken: nonNegative(o.prefill_ms_per_token, "prefill_ms_per_token"),
    prefillMinMs: nonNegative(o.prefill_min_ms ?? 0, "prefill_min_ms"),
    decodeMs,
  };
}

export function readStepCosts(path: string): StepCosts {
  return parseStepCosts(JSON.parse(readFileSync(path, "utf8")));
}

/** Milliseconds of a decode step over `rows` rows. */
export function decodeMs(costs: StepCosts, rows: number): number {
  const t = costs.decodeMs;
  if (t.length === 1) return t[0]![1];
  let i = t.findIndex(([r]) => r >= rows);
  if (i === 0) return t[0]![1];
  if (i < 0) i = t.length - 1;  // past the table: along its last two points
  const [r0, m0] = t[i - 1]!;
  const [r1, m1] = t[i]!;
  return Math.max(0, m0 + ((m1 - m0) * (rows - r0)) / (r1 - r0));
}

/** Milliseconds of one step. */
export function stepMs(costs: StepCosts, step: ModelledStep): number {
  if (carriesPrompt(step)) return Math.max(costs.prefillMinMs, step.tokens * costs.prefillMsPerToken);
  return decodeMs(costs, step.rows);
}
