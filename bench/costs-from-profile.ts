// A replay cost file (step-costs.ts) from a GPU run's step profile: the decode table out of
// the shards' "text-gen step profile" lines (TEXT_GEN_STEP_PROFILE=N with
// TEXT_GEN_STEP_PROFILE_OPS=0, so that no event sits between ops), as device-run.sh's tp70b
// keeps them in tp70b-*-profile.txt, or straight from the launcher's log.
//
//   npm run bench -- costs --profile FILE --prefill-ms-per-token X [--prefill-min-ms 12]
//     [--source TEXT] [--out FILE]
//
// Each graph bucket takes the median over every window (N steps) of every rank of its GPU
// busy time a step, and covers every row count it pads; eager decode steps (past the largest
// bucket) take the median of busy + idle (no graph runs ahead of them), flat to twice the
// largest bucket. Medians, because a window that spans a pause between load phases or a
// graph capture reads far off. The prefill rate does not come from the profile (its windows
// mix small and full prefills): take the router's prefill forward seconds over the prompt
// tokens of the run (cuda-notes session 15).
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

export interface ProfileDecode {
  /** Graph bucket → median GPU busy ms a step. */
  buckets: Map<number, number>;
  /** Median busy + idle ms of an eager decode step, if any were profiled. */
  eagerMs?: number;
}

const WINDOW = /text-gen step profile (rank \d+) \(([^,)]+(?:, bucket \d+)?), (\d+) steps\)/;
const WHOLE = /text-gen step profile (rank \d+)\s+whole step: GPU busy ([\d.]+) ms, GPU idle before it ([\d.]+) ms/;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function decodeFromProfile(text: string): ProfileDecode {
  const open = new Map<string, string>();  // rank → kind of its window being reported
  const graph = new Map<number, number[]>();
  const eager: number[] = [];
  for (const line of text.split("\n")) {
    const w = WINDOW.exec(line);
    if (w) {
      open.set(w[1]!, w[2]!);
      continue;
    }
    const whole = WHOLE.exec(line);
    if (!whole) continue;
    const kind = open.get(whole[1]!);
    open.delete(whole[1]!);
    const busy = Number(whole[2]), idle = Number(whole[3]);
    const bucket = kind && /^decode graph, bucket (\d+)$/.exec(kind);
    if (bucket) {
      const b = Number(bucket[1]);
      if (!graph.has(b)) graph.set(b, []);
      graph.get(b)!.push(busy);
    } else if (kind === "eager decode") {
      eager.push(busy + idle);
    }
  }
  const buckets = new Map([...graph.entries()].sort(([a], [b]) => a - b).map(([b, xs]) => [b, median(xs)] as [number, number]));
  return eager.length ? { buckets, eagerMs: median(eager) } : { buckets };
}

/** The decode_ms table: each bucket's time from the row after the bucket below it to its own. */
export function decodeTable(d: ProfileDecode): [number, number][] {
  const round = (ms: number) => Math.round(ms * 100) / 100;
  const table: [number, number][] = [];
  let below = 0;
  for (const [b, ms] of d.buckets) {
    if (below + 1 < b) table.push([below + 1, round(ms)]);
    table.push([b, round(ms)]);
    below = b;
  }
  if (d.eagerMs !== undefined) table.push([below + 1, round(d.eagerMs)], [2 * Math.max(below, 1), round(d.eagerMs)]);
  if (table.length === 0) throw new Error("no decode step profile lines (TEXT_GEN_STEP_PROFILE=N with TEXT_GEN_STEP_PROFILE_OPS=0) in the input");
  return table;
}

export async function main(argv: string[]): Promise<void> {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      profile: { type: "string" },
      "prefill-ms-per-token": { type: "string" },
      "prefill-min-ms": { type: "string", default: "12" },
      source: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (v.help || !v.profile || v["prefill-ms-per-token"] === undefined) {
    process.stdout.write("usage: text-gen-bench costs --profile FILE --prefill-ms-per-token X [--prefill-min-ms 12] [--source TEXT] [--out FILE]\n");
    if (!v.help) process.exitCode = 2;
    return;
  }
  const rate = Number(v["prefill-ms-per-token"]), min = Number(v["prefill-min-ms"]);
  if (!(rate > 0) || !(min >= 0)) throw new Error("--prefill-ms-per-token must be positive and --prefill-min-ms non-negative");
  const table = decodeTable(decodeFromProfile(readFileSync(v.profile, "utf8")));
  const rows = table.map((p) => JSON.stringify(p));
  const lines = [];
  for (let i = 0; i < rows.length; i += 6) lines.push(`    ${rows.slice(i, i + 6).join(", ")}`);
  const json =
    `{\n  "source": ${JSON.stringify(v.source ?? `step profile ${v.profile}`)},\n  "prefill_ms_per_token": ${rate},\n` +
    `  "prefill_min_ms": ${min},\n  "decode_ms": [\n${lines.join(",\n")}\n  ]\n}\n`;
  if (v.out) writeFileSync(v.out, json);
  else process.stdout.write(json);
}
