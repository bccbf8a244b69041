// Request lengths: fixed, uniform ranges, or a ShareGPT-like synthetic mix.
//
// ShareGPT-like: vLLM's ShareGPT benchmark (the dataset filtered to prompts of
// 4..1024 tokens) averages ≈202 prompt and ≈179 output tokens with a long tail.
// We draw each side from a lognormal clipped to [4, 1024] whose location is
// solved so that the *clipped* mean is exactly the target, and sample it by
// stratified quantiles (one draw per 1/N slice, shuffled) so that even 500
// prompts land within a token or two of the target means.
import { forkRng, normalQuantile, shuffle, uniformInt, type Rng } from "./random.js";

export type LengthSpec = { kind: "fixed"; n: number } | { kind: "uniform"; lo: number; hi: number } | { kind: "lognormal"; mean: number; sigma: number; lo: number; hi: number };

export interface Workload {
  input: LengthSpec;
  output: LengthSpec;
}

export const SHAREGPT_LIKE: Workload = {
  input: { kind: "lognormal", mean: 202, sigma: 1.0, lo: 4, hi: 1024 },
  output: { kind: "lognormal", mean: 179, sigma: 0.8, lo: 4, hi: 1024 },
};

/** "128" → fixed; "100:300" → uniform on [100, 300]. */
export function parseLengthSpec(text: string, what: string): LengthSpec {
  const fixed = /^\d+$/.exec(text);
  if (fixed) {
    const n = Number(text);
    if (n < 1) throw new Error(`${what} must be at least 1, got ${text}`);
    return { kind: "fixed", n };
  }
  const range = /^(\d+):(\d+)$/.exec(text);
  if (range) {
    const lo = Number(range[1]);
    const hi = Number(range[2]);
    if (lo < 1 || hi < lo) throw new Error(`${what} range must be 1 <= lo <= hi, got ${text}`);
    return { kind: "uniform", lo, hi };
  }
  throw new Error(`${what} must be a number (128) or a range (100:300), got "${text}"`);
}

export function describeLength(spec: LengthSpec): string {
  switch (spec.kind) {
    case "fixed": return String(spec.n);
    case "uniform": return `uniform ${spec.lo}..${spec.hi}`;
    case "lognormal": return `lognormal mean ${spec.mean} σ ${spec.sigma} clipped ${spec.lo}..${spec.hi}`;
  }
}

const clip = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));
const QUADRATURE = 4000;

/** Mean of round(clip(exp(mu + sigma·Z))) by midpoint quadrature over quantiles. */
function clippedMean(mu: number, sigma: number, lo: number, hi: number): number {
  let sum = 0;
  for (let i = 0; i < QUADRATURE; i++) sum += clip(Math.exp(mu + sigma * normalQuantile((i + 0.5) / QUADRATURE)), lo, hi);
  return sum / QUADRATURE;
}

/** The lognormal location whose clipped mean is `mean` (the clipped mean grows with mu: bisect). */
export function solveLocation(mean: number, sigma: number, lo: number, hi: number): number {
  if (!(mean > lo && mean < hi)) throw new Error(`mean ${mean} must lie strictly inside ${lo}..${hi}`);
  let a = Math.log(lo) - 5 * sigma;
  let b = Math.log(hi) + 5 * sigma;
  for (let i = 0; i < 60; i++) {
    const m = (a + b) / 2;
    if (clippedMean(m, sigma, lo, hi) < mean) a = m;
    else b = m;
  }
  return (a + b) / 2;
}

function sampleSide(spec: LengthSpec, count: number, rng: Rng): number[] {
  switch (spec.kind) {
    case "fixed":
      return new Array<number>(count).fill(spec.n);
    case "uniform":
      return Array.from({ length: count }, () => uniformInt(rng, spec.lo, spec.hi));
    case "lognormal": {
      const mu = solveLocation(spec.mean, spec.sigma, spec.lo, spec.hi);
      const slots = shuffle(rng, Array.from({ length: count }, (_, i) => i));
      return slots.map((slot) => {
        const p = (slot + rng()) / count;
        return Math.round(clip(Math.exp(mu + spec.sigma * normalQuantile(p)), spec.lo, spec.hi));
      });
    }
  }
}

export interface RequestShape {
  input: number;
  output: number;
}

/** `count` (input, output) pairs; the two sides are drawn from independent seeded streams. */
export function sampleLengths(workload: Workload, count: number, seed: number): RequestShape[] {
  const inputs = sampleSide(workload.input, count, forkRng(seed, "input-lengths"));
  const outputs = sampleSide(workload.output, count, forkRng(seed, "output-lengths"));
  return inputs.map((input, i) => ({ input, output: outputs[i]! }));
}
