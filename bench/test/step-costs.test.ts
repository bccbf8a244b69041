// The step-time model the replay's fake shard answers by (step-costs.ts).
import t from "tap";
import { decodeMs, parseStepCosts, stepMs } from "../step-costs.js";

const costs = parseStepCosts({
  source: "test",
  prefill_ms_per_token: 0.05,
  prefill_min_ms: 10,
  decode_ms: [[1, 10], [8, 10], [9, 20], [16, 20], [32, 30]],
});

t.test("decode steps take the table's time, interpolated between its points and extended past them", async (t) => {
  t.equal(decodeMs(costs, 1), 10);
  t.equal(decodeMs(costs, 8), 10, "a bucket's points give its rows one time (CUDA graphs pad)");
  t.equal(decodeMs(costs, 12), 20);
  t.equal(decodeMs(costs, 24), 25, "halfway between 16 and 32 rows");
  t.equal(decodeMs(costs, 48), 40, "past the table, along its last two points");
  t.equal(decodeMs(parseStepCosts({ prefill_ms_per_token: 0, decode_ms: [[4, 7]] }), 100), 7, "one point: flat");
});

t.test("a step with prompt tokens costs its forward tokens at the prefill rate", async (t) => {
  t.equal(stepMs(costs, { rows: 4, tokens: 1000 }), 50);
  t.equal(stepMs(costs, { rows: 2, tokens: 100 }), 10, "never below prefill_min_ms");
  t.equal(stepMs(costs, { rows: 9, tokens: 9 }), 20, "one token a row is a decode step");
  t.equal(stepMs(costs, { rows: 3, tokens: 300 }), 15, "a chunked prompt's next chunk in a Decode is a prefill");
});

t.test("bad cost files are refused with what is wrong", async (t) => {
  t.throws(() => parseStepCosts(null), /JSON object/);
  t.throws(() => parseStepCosts({ prefill_ms_per_token: 0.1, decode_ms: [] }), /non-empty/);
  t.throws(() => parseStepCosts({ prefill_ms_per_token: 0.1, decode_ms: [[1]] }), /decode_ms\[0\] must be \[rows, ms\]/);
  t.throws(() => parseStepCosts({ prefill_ms_per_token: 0.1, decode_ms: [[4, 1], [2, 1]] }), /must increase/);
  t.throws(() => parseStepCosts({ prefill_ms_per_token: -1, decode_ms: [[1, 1]] }), /prefill_ms_per_token/);
  t.throws(() => parseStepCosts({ decode_ms: [[1, 1]] }), /prefill_ms_per_token/);
});
