// The engine's forward pass against a plain, unpaged reference written here in
// TypeScript (float64, the Hugging Face formulas), on small random models of
// every supported shape: GQA, q/k/v biases and tied embeddings (qwen2), sliding
// window (mistral), and each RoPE scaling. Compared through prompt logprobs,
// also with scattered KV blocks, chunked prefill, and two tensor-parallel ranks.
import t, { type Test } from "tap";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { writeRandomModel, type RandomModelSpec } from "../../tools/random-model.js";
import { loadNative, type EngineOptions, type ModelConfig, type RopeConfig, type StepSequence } from "../index.js";

const addonPath = resolve(import.meta.dirname, "../build/Release/text_gen_engine.node");
const native = loadNative();

// ---- reading the random model ----

function readTensors(dir: string): Map<string, Float32Array> {
  const buf = readFileSync(join(dir, "model.safetensors"));
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const base = 8 + headerLen;
  const out = new Map<string, Float32Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [b, e] = info.data_offsets;
    const bytes = buf.subarray(base + b, base + e);
    out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return out;
}

function configOf(dir: string, rope?: Partial<RopeConfig>): ModelConfig {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, any>;
  const heads = c.num_attention_heads as number;
  const scaling = c.rope_scaling as Record<string, number | string> | null;
  return {
    architecture: c.model_type,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: heads,
    numKvHeads: c.num_key_value_heads,
    headDim: c.head_dim ?? c.hidden_size / heads,
    vocabSize: c.vocab_size,
    maxPositionEmbeddings: c.max_position_embeddings,
    rmsNormEps: c.rms_norm_eps,
    rope: {
      theta: c.rope_theta,
      scaling: scaling ? (scaling.rope_type as RopeConfig["scaling"]) : "none",
      factor: (scaling?.factor as number) ?? 1,
      lowFreqFactor: (scaling?.low_freq_factor as number) ?? 1,
      highFreqFactor: (scaling?.high_freq_factor as number) ?? 4,
      originalMaxPositionEmbeddings: (scaling?.original_max_position_embeddings as number) ?? c.max_position_embeddings,
      ...rope,
    },
    tieWordEmbeddings: c.tie_word_embeddings,
    attentionBias: c.model_type === "qwen2",
    slidingWindow: c.model_type === "mistral" ? (c.sliding_window ?? 0) : 0,
  };
}

// ---- the reference forward pass ----

function invFreq(c: ModelConfig, seqLen: number): number[] {
  const d = c.headDim;
  const r = c.rope;
  let base = r.theta;
  if (r.scaling === "dynamic" && seqLen > c.maxPositionEmbeddings) {
    base *= ((r.factor * seqLen) / c.maxPositionEmbeddings - (r.factor - 1)) ** (d / (d - 2));
  }
  return Array.from({ length: d / 2 }, (_, i) => {
    const f = 1 / base ** ((2 * i) / d);
    if (r.scaling === "linear") return f / r.factor;
    if (r.scaling !== "llama3") return f;
    const wavelen = (2 * Math.PI) / f;
    const lowWavelen = r.originalMaxPositionEmbeddings / r.lowFreqFactor;
    const highWavelen = r.originalMaxPositionEmbeddings / r.highFreqFactor;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / r.factor;
    const smooth = (r.originalMaxPositionEmbeddings / wavelen - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
    return ((1 - smooth) * f) / r.factor + smooth * f;
  });
}

function linear(x: number[], w: Float32Array, rows: number, bias?: Float32Array): number[] {
  const k = x.length;
  return Array.from({ length: rows }, (_, r) => {
    let s = bias ? bias[r]! : 0;
    for (let i = 0; i < k; i++) s += x[i]! * w[r * k + i]!;
    return s;
  });
}

function rmsNorm(x: number[], w: Float32Array, eps: number): number[] {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  return x.map((v, i) => (v / Math.sqrt(ms + eps)) * w[i]!);
}

function rope(x: number[], heads: number, d: number, pos: number, freqs: number[]): number[] {
  const out = x.slice();
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < d / 2; i++) {
      const a = x[h * d + i]!, b = x[h * d + i + d / 2]!;
      const c = Math.cos(pos * freqs[i]!), s = Math.sin(pos * freqs[i]!);
      out[h * d + i] = a * c - b * s;
      out[h * d + i + d / 2] = b * c + a * s;
    }
  }
  return out;
}

/** log_softmax(logits of row i - 1)[tokens[i]] for every i (NaN at 0). */
function referencePromptLogprobs(w: Map<string, Float32Array>, c: ModelConfig, tokens: number[]): number[] {
  const H = c.hiddenSize, d = c.headDim, nh = c.numHeads, nkv = c.numKvHeads;
  const get = (name: string) => w.get(name)!;
  const freqs = invFreq(c, tokens.length);
  let xs = tokens.map((tok) => Array.from(get("model.embed_tokens.weight").subarray(tok * H, (tok + 1) * H)));
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const bias = (n: string) => (c.attentionBias ? get(p + n) : undefined);
    const hs = xs.map((x) => rmsNorm(x, get(p + "input_layernorm.weight"), c.rmsNormEps));
    const qs = hs.map((h, pos) => rope(linear(h, get(p + "self_attn.q_proj.weight"), nh * d, bias("self_attn.q_proj.bias")), nh, d, pos, freqs));
    const ks = hs.map((h, pos) => rope(linear(h, get(p + "self_attn.k_proj.weight"), nkv * d, bias("self_attn.k_proj.bias")), nkv, d, pos, freqs));
    const vs = hs.map((h) => linear(h, get(p + "self_attn.v_proj.weight"), nkv * d, bias("self_attn.v_proj.bias")));
    xs = xs.map((x, pos) => {
      const attn: number[] = [];
      for (let h = 0; h < nh; h++) {
        const kvh = Math.floor(h / (nh / nkv));
        const first = c.slidingWindow > 0 ? Math.max(0, pos - c.slidingWindow + 1) : 0;
        const scores: number[] = [];
        for (let j = first; j <= pos; j++) {
          let s = 0;
          for (let i = 0; i < d; i++) s += qs[pos]![h * d + i]! * ks[j]![kvh * d + i]!;
          scores.push(s / Math.sqrt(d));
        }
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let i = 0; i < d; i++) attn.push(e.reduce((a, p, jj) => a + (p / z) * vs[first + jj]![kvh * d + i]!, 0));
      }
      const o = linear(attn, get(p + "self_attn.o_proj.weight"), H);
      return x.map((v, i) => v + o[i]!);
    });
    xs = xs.map((x) => {
      const h = rmsNorm(x, get(p + "post_attention_layernorm.weight"), c.rmsNormEps);
      const g = linear(h, get(p + "mlp.gate_proj.weight"), c.intermediateSize);
      const u = linear(h, get(p + "mlp.up_proj.weight"), c.intermediateSize);
      const a = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const down = linear(a, get(p + "mlp.down_proj.weight"), H);
      return x.map((v, i) => v + down[i]!);
    });
  }
  const head = w.get("lm_head.weight") ?? get("model.embed_tokens.weight");
  return tokens.map((tok, i) => {
    if (i === 0) return NaN;
    const logits = linear(rmsNorm(xs[i - 1]!, get("model.norm.weight"), c.rmsNormEps), head, c.vocabSize);
    const m = Math.max(...logits);
    const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
    return logits[tok]! - lse;
  });
}

// ---- driving the engine ----

const greedy = { temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 0, repetitionPenalty: 1, frequencyPenalty: 0 };

function promptSteps(tokens: number[], blocks: number[], chunk: number): StepSequence[] {
  const steps: StepSequence[] = [];
  for (let pos = 0; pos < tokens.length; pos += chunk) {
    steps.push({
      id: 7,
      tokens: Int32Array.from(tokens.slice(pos, pos + chunk)),
      position: pos,
      blocks: Int32Array.from(blocks),
      sample: pos + chunk >= tokens.length,
      topN: 0,
      promptLogprobs: true,
      ...(pos === 0 ? { init: { params: greedy, prefix: new Int32Array(0) } } : {}),
    });
  }
  return steps;
}

async function enginePromptLogprobs(opts: EngineOptions, tokens: number[], blocks: number[], chunk: number): Promise<number[]> {
  const engine = await native.loadEngine(opts);
  try {
    engine.allocateKvCache(32);
    const out: number[] = [];
    for (const step of promptSteps(tokens, blocks, chunk)) out.push(...(await engine.step([step]))[0]!.promptLogprobs!);
    return out;
  } finally {
    engine.close();
  }
}

function closeTo(t: Test, actual: number[], expected: number[], tol: number, what: string): void {
  t.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 1; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  t.ok(Number.isNaN(actual[0]) && worst < tol, `${what}: max difference ${worst.toExponential(2)} < ${tol}`);
}

const prompt = [1, 17, 300, 42, 42, 7, 99, 210, 5, 18, 400, 3, 77, 256, 128, 64, 9, 11, 500, 2, 33, 44];
// Scattered, out-of-order blocks of 4 tokens: exercises the block table.
const scattered = [9, 3, 17, 1, 30, 22];
const std = 0.25;  // large enough that attention is far from uniform, so RoPE matters

interface Case {
  name: string;
  spec: RandomModelSpec;
  rope?: Partial<RopeConfig>;
  /** Chunk sizes to compare (dynamic NTK rotates by the length so far, so only whole prefills compare). */
  chunks: number[];
}

const cases: Case[] = [
  { name: "llama, GQA", spec: { kind: "llama", heads: 4, kvHeads: 2, std }, chunks: [100, 5] },
  { name: "llama3 rope", spec: { kind: "llama3", heads: 4, kvHeads: 1, std }, rope: { originalMaxPositionEmbeddings: 32 }, chunks: [100, 3] },
  { name: "linear rope", spec: { kind: "llama", heads: 4, kvHeads: 4, std }, rope: { scaling: "linear", factor: 4 }, chunks: [100, 7] },
  { name: "dynamic rope past max positions", spec: { kind: "llama", heads: 4, kvHeads: 2, std, maxPositionEmbeddings: 8 }, rope: { scaling: "dynamic", factor: 2 }, chunks: [100] },
  { name: "mistral, sliding window", spec: { kind: "mistral", heads: 4, kvHeads: 2, std, slidingWindow: 5 }, chunks: [100, 4, 1] },
  { name: "qwen2, biases, tied embeddings", spec: { kind: "qwen2", heads: 4, kvHeads: 1, std }, chunks: [100, 6] },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const dir = t.testdir({});
    writeRandomModel(dir, { layers: 2, hidden: 64, intermediate: 96, ...c.spec });
    const config = configOf(dir, c.rope);
    const expected = referencePromptLogprobs(readTensors(dir), config, prompt);
    const opts: EngineOptions = { modelDir: dir, config, dtype: "float32", device: "cpu", rank: 0, worldSize: 1, blockSize: 4, threads: 2 };
    for (const chunk of c.chunks) {
      closeTo(t, await enginePromptLogprobs(opts, prompt, scattered, chunk), expected, 2e-4, `chunks of ${chunk}`);
    }
  });
}

// ---- two tensor-parallel ranks ----

const rankScript = `
import { createRequire } from "node:module";
const [addon, optionsJson, stepsJson] = process.argv.slice(1);
const native = createRequire(import.meta.url)(addon);
const engine = await native.loadEngine(JSON.parse(optionsJson));
engine.allocateKvCache(32);
const out = [];
for (const s of JSON.parse(stepsJson)) {
  const step = { ...s, tokens: Int32Array.from(s.tokens), blocks: Int32Array.from(s.blocks),
    ...(s.init ? { init: { params: s.init.params, prefix: new Int32Array(0) } } : {}) };
  const [o] = await engine.step([step]);
  out.push(...Array.from(o.promptLogprobs, (x) => (Number.isNaN(x) ? null : x)));
}
engine.close();
console.log(JSON.stringify(out));
`;

function runRank(opts: EngineOptions, steps: StepSequence[]): Promise<number[]> {
  const stepsJson = JSON.stringify(steps.map((s) => ({ ...s, tokens: Array.from(s.tokens), blocks: Array.from(s.blocks) })));
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", rankScript, addonPath, JSON.stringify(opts), stepsJson]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`rank ${opts.rank} exited ${code}: ${stderr}`));
      resolvePromise((JSON.parse(stdout.trim()) as (number | null)[]).map((x) => x ?? NaN));
    });
  });
}

t.test("two ranks: replicated KV head, biases, padded vocabulary", async (t) => {
  const dir = t.testdir({});
  // 509 = 2 * 255 - 1: rank 1's vocab slice ends in one padding row.
  writeRandomModel(dir, { kind: "qwen2", layers: 2, hidden: 64, intermediate: 96, heads: 4, kvHeads: 1, vocab: 509, std });
  const config = configOf(dir);
  const expected = referencePromptLogprobs(readTensors(dir), config, prompt);
  const commName = `/tg-ref-${process.pid}-${Date.now()}`;
  const steps = promptSteps(prompt, scattered, 5);
  const ranks = await Promise.all(
    [0, 1].map((rank) =>
      runRank({ modelDir: dir, config, dtype: "float32", device: "cpu", rank, worldSize: 2, commName, commTimeoutMs: 60_000, blockSize: 4, threads: 1 }, steps),
    ),
  );
  closeTo(t, ranks[0]!, expected, 2e-4, "rank 0");
  t.same(ranks[1], ranks[0], "both ranks report the same logprobs");
});

t.test("a shard count that does not divide the heads is refused", async (t) => {
  const dir = t.testdir({});
  writeRandomModel(dir, { kind: "llama", layers: 1, hidden: 48, heads: 3, kvHeads: 3 });
  await t.rejects(
    native.loadEngine({ modelDir: dir, config: configOf(dir), dtype: "float32", device: "cpu", rank: 0, worldSize: 2, commName: "/tg-unused", blockSize: 4 }),
    /cannot split the model over 2 shards: num_attention_heads 3/,
  );
});
