// The replay's cost file from a GPU run's step profile (costs-from-profile.ts).
import t from "tap";
import { decodeFromProfile, decodeTable } from "../costs-from-profile.js";
import { decodeMs, parseStepCosts } from "../step-costs.js";

// Lines as the shards print them (the launcher's log wraps each in JSON; device-run.sh unwraps).
const window = (rank: number, kind: string, busy: number, idle = 0.01) =>
  `text-gen step profile rank ${rank} (${kind}, 10 steps): 0.000 ms per step between the first and last op\n` +
  `text-gen step profile rank ${rank}   whole step: GPU busy ${busy} ms, GPU idle before it ${idle} ms; host in the step 20.0 ms, 10.0 of them waiting for the GPU\n`;

const profile = [
  window(0, "decode graph, bucket 1", 11.2),
  window(1, "decode graph, bucket 1", 11.4),
  window(0, "decode graph, bucket 1", 63.0, 236.4),  // a window across a pause: the median drops it
  window(0, "decode graph, bucket 8", 12.5),
  window(0, "decode graph, bucket 32", 14.0),
  window(1, "decode graph, bucket 32", 16.0),
  window(0, "eager decode", 42.0, 3.0),
  window(1, "eager decode", 44.0, 3.0),
  window(0, "with prefill", 400.0, 100.0),  // not a decode step: left out
  `{"level":30,"msg":"text-gen gemm qkv m 1: GEMV 13.4 us, cuBLASLt 11.8 us"}\n`,
].join("");

t.test("each bucket takes its windows' median busy time and the rows it pads", async (t) => {
  const d = decodeFromProfile(profile);
  t.same([...d.buckets.entries()], [[1, 11.4], [8, 12.5], [32, 15]]);
  t.equal(d.eagerMs, 46, "eager steps: busy + idle, their median");
  const table = decodeTable(d);
  t.same(table, [[1, 11.4], [2, 12.5], [8, 12.5], [9, 15], [32, 15], [33, 46], [64, 46]]);
  const costs = parseStepCosts({ prefill_ms_per_token: 0.075, decode_ms: table });
  t.equal(decodeMs(costs, 5), 12.5, "5 rows run bucket 8's graph");
  t.equal(decodeMs(costs, 20), 15);
  t.equal(decodeMs(costs, 300), 46, "past the table: flat");
});

t.test("a profile without decode windows is refused", async (t) => {
  t.throws(() => decodeTable(decodeFromProfile(window(0, "with prefill", 400))), /no decode step profile lines/);
});
