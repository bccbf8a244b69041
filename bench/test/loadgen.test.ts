// Checks the load generator against a server whose timing is known: the real
// router (child process) in front of the bench fake shard, whose every step takes
// exactly D ms (fixed-period pacing) and which traces when it emitted each token.
// Figures are compared on medians, with 5% tolerance, against (a) what D implies
// and (b) the shard's own trace of the same requests. Prints measured vs implied.
// TTFT also holds the router's own path in and out (HTTP, tokenizing, the
// response's way back), a few ms on a loaded 2-core machine: the TTFT checks use
// a longer step so that this path stays inside the tolerance.
//
// Rates and differences of times (TPOT, throughput) against the shard's trace
// always hold to 5%. Checks that also include the router's own latency or need
// it to keep pace — TTFT against the trace (the response's way back through the
// router), everything against D alone — hold to 5% with BENCH_STRICT_TIMING=1
// (run it on a quiet machine) and to 25% otherwise, as a machine loaded by other
// work adds milliseconds there; every check prints the measured error.
import t, { type Test } from "tap";
import type { BenchFakeShard } from "../fake-shard.js";
import type { RequestShape, Workload } from "../lengths.js";
import { distribution } from "../metrics.js";
import { startRouterWithFakeShard, STORIES, type RouterUnderTest } from "../router-process.js";
import { runBenchmark, type LoadMode, type RunResult } from "../runner.js";

const D = 20;
/** Step time for the TTFT checks. */
const D_TTFT = 80;
const TOLERANCE = 0.05;
const STRICT = process.env.BENCH_STRICT_TIMING === "1";
/** Tolerance of the checks that include the router's latency (see the header). */
const D_TOLERANCE = STRICT ? TOLERANCE : 0.25;

const fixed = (input: number, output: number): Workload => ({ input: { kind: "fixed", n: input }, output: { kind: "fixed", n: output } });

function run(router: RouterUnderTest, workload: Workload, numPrompts: number, mode: LoadMode): Promise<RunResult> {
  return runBenchmark({
    url: router.url, api: "tgi", tokenizer: STORIES, workloadName: "fixed", workload, numPrompts, seed: 7, mode,
    sampling: { model: "fake", ignoreEos: true }, warmup: 1, wsConnections: 1, progress: false,
  });
}

const median = (xs: number[]) => distribution(xs).p50;

/** Per request: the shard's TTFT (its first answer − client send) and TPOT, matched by prompt ids. */
function shardView(shard: BenchFakeShard, result: RunResult): { ttft: number[]; tpot: number[] } {
  const byKey = new Map<string, number[]>();
  for (const trace of shard.requests.values()) byKey.set(trace.key, trace.tokenTimes);
  const ttft: number[] = [];
  const tpot: number[] = [];
  result.records.forEach((r, i) => {
    const times = byKey.get(result.prepared[i]!.prompt.ids.join(","));
    if (!times) throw new Error(`request ${i} never reached the shard`);
    ttft.push(times[0]! - r.sent);
    if (times.length > 1) tpot.push((times.at(-1)! - times[0]!) / (times.length - 1));
  });
  return { ttft, tpot };
}

function within(t: Test, what: string, measured: number, implied: number, tolerance = TOLERANCE): void {
  const error = (measured - implied) / implied;
  t.comment(`${what}: measured ${measured.toFixed(2)}, implied ${implied.toFixed(2)} (${(error * 100).toFixed(1)}%)`);
  t.ok(Math.abs(error) <= tolerance, `${what} within ${tolerance * 100}% (${(error * 100).toFixed(1)}%)`);
}

t.test("against the router and a fake shard with a fixed step time", async (t) => {
  const router = await startRouterWithFakeShard({ fake: { delayMs: D, fixedPeriod: true, trace: true } });
  t.teardown(() => router.stop());
  const shard = router.shard!;
  t.comment(`router ${router.entry} at ${router.url}, pid ${router.pid}; checks against D to ${D_TOLERANCE * 100}%`);

  await t.test("one request at a time: TTFT ≈ D, TPOT = D", async (t) => {
    const D = D_TTFT;
    shard.options.delayMs = D;
    const result = await run(router, fixed(64, 16), 6, { kind: "concurrency", n: 1 });
    const s = result.summary;
    t.equal(s.failed, 0, "no errors");
    t.equal(s.outputTokens, 6 * 16, "exactly the asked output lengths (ignore_eos_token)");
    const view = shardView(shard, result);
    within(t, "TPOT p50 vs D", s.tpotMs.p50, D, D_TOLERANCE);
    within(t, "TPOT p50 vs shard trace", s.tpotMs.p50, median(view.tpot));
    within(t, "TTFT p50 vs shard trace", s.ttftMs.p50, median(view.ttft), D_TOLERANCE);
    within(t, "TTFT p50 vs D", s.ttftMs.p50, D, D_TOLERANCE);
    t.comment(`TTFT p50 ${s.ttftMs.p50.toFixed(2)} ms = D + ${(s.ttftMs.p50 - D).toFixed(2)} ms of router and client path`);
    t.ok(s.ttftMs.min >= D, "no TTFT below D");
    within(t, "ITL p50 vs D", s.itlMs.p50, D, D_TOLERANCE);
  });

  await t.test("fixed concurrency 16: throughput ≈ 16/D tokens per ms", async (t) => {
    shard.options.delayMs = D;
    const tokensBefore = shard.tokens;
    const O = 64;
    const c = 16;
    const result = await run(router, fixed(64, O), 64, { kind: "concurrency", n: c });
    const s = result.summary;
    t.equal(s.failed, 0, "no errors");
    // Each slot idles one step between a request's last token and its successor's prefill.
    const implied = ((c * 1000) / D) * (O / (O + 1));
    within(t, "output tok/s vs c/D·O/(O+1)", s.outputTokensPerS, implied, D_TOLERANCE);
    // The shard also counted the unrecorded warm-up request's O tokens.
    within(t, "output tok/s vs shard's tokens over the same wall time", s.outputTokensPerS, (shard.tokens - tokensBefore - O) / s.durationS);
    within(t, "TPOT p50 vs D", s.tpotMs.p50, D, D_TOLERANCE);
    within(t, "TPOT p50 vs shard trace", s.tpotMs.p50, median(shardView(shard, result).tpot));
  });

  await t.test("all at once: TTFT = D plus queueing, as the shard saw it", async (t) => {
    const D = D_TTFT;
    shard.options.delayMs = D;
    const result = await run(router, fixed(64, 16), 32, { kind: "all-at-once" });
    const s = result.summary;
    t.equal(s.failed, 0, "no errors");
    const view = shardView(shard, result);
    within(t, "TTFT p50 vs shard trace", s.ttftMs.p50, median(view.ttft), D_TOLERANCE);
    within(t, "TTFT mean vs shard trace", s.ttftMs.mean, distribution(view.ttft).mean, D_TOLERANCE);
    t.ok(s.ttftMs.min >= D, `no TTFT below D (min ${s.ttftMs.min.toFixed(2)} ms)`);
    const firstStep = result.records.filter((r) => r.tokenTimes[0]! - r.sent < 1.5 * D).length;
    t.comment(`${firstStep} requests made the first step (TTFT ≈ D), ${result.records.length - firstStep} the second (≈ 2D)`);
    within(t, "TPOT p50 vs D", s.tpotMs.p50, D, D_TOLERANCE);
    t.comment(`TTFT min/p50/max ${s.ttftMs.min.toFixed(1)}/${s.ttftMs.p50.toFixed(1)}/${s.ttftMs.max.toFixed(1)} ms: requests that missed the first step wait for the next`);
  });
});
