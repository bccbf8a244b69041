// The replay (replay.ts): the real router in front of the fake shard, which paces each step
// by the cost model. A small workload whose every step the test can reason about.
import t from "tap";
import { replay } from "../replay.js";
import { parseStepCosts } from "../step-costs.js";

t.test("the router's steps run at the modelled times and every request completes", async (t) => {
  // Prefill steps 40 ms at least, decode steps 8 ms: long enough for timers on a loaded machine.
  const costs = parseStepCosts({ prefill_ms_per_token: 0.01, prefill_min_ms: 40, decode_ms: [[1, 8], [64, 8]] });
  const prompts = 12, input = 24, output = 6;
  const r = await replay({
    costs, workload: { input: { kind: "fixed", n: input }, output: { kind: "fixed", n: output } }, workloadName: "fixed",
    numPrompts: prompts, seed: 3, maxBatchPrefillTokens: 8192, exposeTurnaround: false,
  });
  t.equal(r.requests, prompts);
  t.equal(r.failed, 0);
  const all = Object.values(r.steps);
  const count = all.reduce((n, c) => n + c.steps, 0);
  const prompt = r.steps["with prompt tokens"];
  t.ok(prompt && prompt.steps >= 1, "at least one step carried the prompts");
  // Each request takes its first token from a prompt step and the other five from decode steps.
  t.ok(count >= output, `at least ${output} steps (${count})`);
  t.ok(r.modelledS >= (40 + (output - 1) * 8) / 1000 - 1e-9, `the modelled time holds the prompt step and five decodes (${r.modelledS} s)`);
  // The shard waited for the model: the steps span at least their modelled time.
  t.ok(r.spanS >= r.modelledS * 0.98, `steps span ${r.spanS.toFixed(3)} s, modelled ${r.modelledS.toFixed(3)} s`);
  t.equal(r.modelledRequestsPerS, prompts / r.modelledS);
});
