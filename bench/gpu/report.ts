// Collects one GPU run (bench/gpu/run.sh): our scenario result files and the HF
// baseline, into bench/results/<date>-<card>-<shape>.json and .md with every
// figure and the side-by-side ratios.
//
//   node --import tsx bench/gpu/report.ts --run-dir DIR --card NAME --shape S --num-shard N --device D --out-prefix PATH
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import type { ResultFile } from "../report.js";

interface HfScenario {
  batch: number;
  input: number;
  output: number;
  ttft_ms: number;
  tpot_ms: number;
  e2e_ms: number;
  output_tokens_per_s: number;
  total_tokens_per_s: number;
}

interface HfFile {
  skipped?: string;
  transformers?: string;
  torch?: string;
  device?: string;
  dtype?: string;
  attn?: string;
  scenarios?: Record<string, HfScenario>;
}

/** Published anchors for batch-1 decode of an 8B bf16 model (shared/reference/perf-anchors.md §1c, §2c). */
const BATCH1_ANCHORS: Record<string, { floorMs: number; note: string }> = {
  H100: { floorMs: 4.48, note: "HBM floor 4.48 ms (3.35 TB/s); vLLM V1 7.07 ms; SGLang ≈6.3 ms" },
  H200: { floorMs: 3.13, note: "HBM floor 3.13 ms (4.8 TB/s)" },
};

const f = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(d));

function scenarioOrder(name: string): number {
  const order = ["batch1", "c16", "c64", "c256", "b64-static", "sharegpt"];
  const i = order.indexOf(name);
  return i < 0 ? 100 : i;
}

export function buildReport(runDir: string, meta: Record<string, string>) {
  const ours = readdirSync(runDir)
    .filter((n) => n.startsWith("ours-") && n.endsWith(".json"))
    .map((n) => ({ name: n.slice(5, -5), result: JSON.parse(readFileSync(join(runDir, n), "utf8")) as ResultFile }))
    .sort((a, b) => scenarioOrder(a.name) - scenarioOrder(b.name));
  const hfPath = join(runDir, "hf.json");
  const hf: HfFile = existsSync(hfPath) ? (JSON.parse(readFileSync(hfPath, "utf8")) as HfFile) : { skipped: "no hf.json" };

  const comparisons: { what: string; ours: number; hf: number; ratio: number; meaning: string }[] = [];
  const b1 = ours.find((o) => o.name === "batch1")?.result.summary;
  const hb1 = hf.scenarios?.batch1;
  if (b1 && hb1) {
    comparisons.push({ what: "batch 1: TPOT ms", ours: b1.tpotMs.p50, hf: hb1.tpot_ms, ratio: hb1.tpot_ms / b1.tpotMs.p50, meaning: "HF / ours (>1: ours faster)" });
    comparisons.push({ what: "batch 1: TTFT ms", ours: b1.ttftMs.p50, hf: hb1.ttft_ms, ratio: hb1.ttft_ms / b1.ttftMs.p50, meaning: "HF / ours" });
    comparisons.push({ what: "batch 1: output tok/s", ours: b1.outputTokensPerS, hf: hb1.output_tokens_per_s, ratio: b1.outputTokensPerS / hb1.output_tokens_per_s, meaning: "ours / HF" });
  }
  for (const [name, h] of Object.entries(hf.scenarios ?? {})) {
    if (!name.startsWith("static")) continue;
    const mine = ours.find((o) => o.name === `b${h.batch}-static`)?.result.summary;
    if (!mine) continue;
    comparisons.push({ what: `${h.batch} at once, ${h.input}/${h.output}: output tok/s`, ours: mine.outputTokensPerS, hf: h.output_tokens_per_s, ratio: mine.outputTokensPerS / h.output_tokens_per_s, meaning: "ours / HF" });
    comparisons.push({ what: `${h.batch} at once, ${h.input}/${h.output}: E2E ms (mean)`, ours: mine.e2eMs.mean, hf: h.e2e_ms, ratio: h.e2e_ms / mine.e2eMs.mean, meaning: "HF / ours" });
  }

  const md: string[] = [
    `# GPU benchmark: ${meta.card}, ${meta.shape}, ${meta.numShard} shard(s)`,
    "",
    `Date ${new Date().toISOString()}; device ${meta.device}; random-weight checkpoint of the ${meta.shape} shape (tools/random-model.ts), ${meta.dtype};`,
    `greedy, exact output lengths (ignore_eos_token). Command: \`bench/gpu/run.sh --shape ${meta.shape} --num-shard ${meta.numShard} --device ${meta.device}` +
      ` --max-batch-prefill-tokens ${meta.maxBatchPrefillTokens}` +
      (meta.maxBatchSize ? ` --max-batch-size ${meta.maxBatchSize}` : "") + "`.",
    "",
    "## text-gen (TGI API, /generate_stream, text-gen-bench)",
    "",
    "| scenario | workload | load | req/s | out tok/s | total tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | E2E p50 ms | failed |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
    ...ours.map(({ name, result: r }) => {
      const s = r.summary;
      return `| ${name} | ${r.config.workloadDescription} | ${r.config.modeDescription}, ${r.config.numPrompts} prompts | ${f(s.requestsPerS, 2)} | ${f(s.outputTokensPerS)} | ${f(s.totalTokensPerS)} | ${f(s.ttftMs.p50)} / ${f(s.ttftMs.p99)} | ${f(s.tpotMs.p50, 2)} / ${f(s.tpotMs.p99, 2)} | ${f(s.itlMs.p50, 2)} / ${f(s.itlMs.p99, 2)} | ${f(s.e2eMs.p50)} | ${s.failed}${s.errors.first[0] ? ` (${s.errors.first[0].slice(0, 80)})` : ""} |`;
    }),
    "",
    "## HF transformers (generate)",
    "",
  ];
  if (hf.scenarios) {
    md.push(
      `transformers ${hf.transformers}, torch ${hf.torch}, ${hf.device}, ${hf.dtype}, attention ${hf.attn}; median of repeats after a warm-up.`,
      "",
      "| scenario | batch | in / out | TTFT ms | TPOT ms | E2E ms | out tok/s |",
      "|---|---|---|---|---|---|---|",
      ...Object.entries(hf.scenarios).map(([n, h]) => `| ${n} | ${h.batch} | ${h.input} / ${h.output} | ${f(h.ttft_ms)} | ${f(h.tpot_ms, 2)} | ${f(h.e2e_ms)} | ${f(h.output_tokens_per_s)} |`),
    );
  } else md.push(`not run: ${hf.skipped}`);
  md.push("", "## Side by side", "");
  if (comparisons.length) {
    md.push("| figure | text-gen | HF | ratio | ratio is |", "|---|---|---|---|---|");
    for (const c of comparisons) md.push(`| ${c.what} | ${f(c.ours, 2)} | ${f(c.hf, 2)} | ${f(c.ratio, 2)}× | ${c.meaning} |`);
  } else md.push("no pair of comparable scenarios");
  const anchor = Object.entries(BATCH1_ANCHORS).find(([k]) => meta.card!.includes(k));
  if (anchor && b1 && meta.shape === "llama3-8b") {
    md.push("", `Batch-1 TPOT ${f(b1.tpotMs.p50, 2)} ms against the published anchors for ${anchor[0]}: ${anchor[1].note} → ${f((anchor[1].floorMs / b1.tpotMs.p50) * 100, 0)}% of the bandwidth floor.`);
  }
  md.push("", "Figures: see bench/README.md. Raw result files: the JSON beside this file.");
  const json = { tool: "bench/gpu/report.ts", date: new Date().toISOString(), meta, ours: Object.fromEntries(ours.map((o) => [o.name, o.result])), hf, comparisons };
  return { md: `${md.join("\n")}\n`, json };
}

if (process.argv[1]?.endsWith("report.ts") || process.argv[1]?.endsWith("report.js")) {
  const { values: v } = parseArgs({
    options: {
      "run-dir": { type: "string" }, card: { type: "string" }, shape: { type: "string" }, "num-shard": { type: "string" },
      device: { type: "string" }, "out-prefix": { type: "string" }, "model-dir": { type: "string" },
      "max-batch-prefill-tokens": { type: "string" }, "max-batch-size": { type: "string" },
    },
  });
  if (!v["run-dir"] || !v["out-prefix"]) {
    process.stderr.write("usage: report.ts --run-dir DIR --out-prefix PATH [--card C --shape S --num-shard N --device D]\n");
    process.exit(2);
  }
  const configPath = v["model-dir"] ? join(v["model-dir"], "config.json") : undefined;
  const dtype = configPath && existsSync(configPath) ? String((JSON.parse(readFileSync(configPath, "utf8")) as { torch_dtype?: string }).torch_dtype) : "dtype unknown";
  const meta = {
    card: v.card ?? "unknown", shape: v.shape ?? "unknown", numShard: v["num-shard"] ?? "1", device: v.device ?? "cuda", dtype,
    maxBatchPrefillTokens: v["max-batch-prefill-tokens"] ?? "8192", maxBatchSize: v["max-batch-size"] ?? "",
  };
  const { md, json } = buildReport(v["run-dir"], meta);
  mkdirSync(dirname(v["out-prefix"]), { recursive: true });
  writeFileSync(`${v["out-prefix"]}.md`, md);
  writeFileSync(`${v["out-prefix"]}.json`, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(md);
  process.stderr.write(`wrote ${v["out-prefix"]}.md and .json\n`);
}
