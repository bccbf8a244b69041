// Writes a loadable Hugging Face-format model folder with seeded random weights, for tests
// (tiny Llama / Llama 3 / Mistral / Qwen2 shapes) and GPU benchmarks (the "llama3-8b" preset).
// Tensors are generated and written chunk by chunk, so an 8B model never sits in memory.
// Each tensor's values depend only on (seed, tensor name), so the same spec written as one
// file or as N shards holds the same numbers.
//
// CLI: node --import tsx tools/random-model.ts --kind llama3 --out DIR [--preset llama3-8b]
//        [--hidden N] [--intermediate N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N]
//        [--vocab N] [--dtype F32|BF16|F16] [--shards N] [--seed N] [--sliding-window N]
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export type ModelKind = "llama" | "llama3" | "mistral" | "qwen2";
export type WeightDtype = "F32" | "BF16" | "F16";

export interface RandomModelSpec {
  kind: ModelKind;
  hidden?: number;
  intermediate?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  /** Defaults to hidden / heads; written to config.json only when given. */
  headDim?: number;
  /** Defaults to 512 so that stories260k's tokenizer fits. */
  vocab?: number;
  dtype?: WeightDtype;
  /** Number of safetensors files; > 1 also writes model.safetensors.index.json. */
  shards?: number;
  seed?: number;
  maxPositionEmbeddings?: number;
  /** Mistral only: null (no window) or a window size in tokens. */
  slidingWindow?: number | null;
  /** Standard deviation of the matrices (uniform distribution with this std). */
  std?: number;
}

/** The shape of Meta-Llama-3-8B, for benchmarks. */
export const PRESETS: Record<string, RandomModelSpec> = {
  "llama3-8b": {
    kind: "llama3", hidden: 4096, intermediate: 14336, layers: 32, heads: 32, kvHeads: 8,
    vocab: 128256, dtype: "BF16", maxPositionEmbeddings: 131072,
  },
};

interface TensorPlan {
  name: string;
  shape: number[];
  /** "matrix": uniform with std; "norm": 1 ± 0.05; "bias": uniform with std. */
  init: "matrix" | "norm" | "bias";
}

const DTYPE_BYTES: Record<WeightDtype, number> = { F32: 4, BF16: 2, F16: 2 };
/** The repository root, from tools/ (tsx) or dist/tools/ (compiled). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "models", "stories260k")) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
const REPO_ROOT = repoRoot();
const TOKENIZER_DIR = join(REPO_ROOT, "models", "stories260k");

interface ResolvedSpec extends Required<Omit<RandomModelSpec, "headDim" | "slidingWindow">> {
  headDim: number;
  headDimGiven: boolean;
  slidingWindow: number | null;
}

function resolveSpec(spec: RandomModelSpec): ResolvedSpec {
  const hidden = spec.hidden ?? 64;
  const heads = spec.heads ?? 8;
  const defaultMaxPos: Record<ModelKind, number> = { llama: 4096, llama3: 131072, mistral: 32768, qwen2: 32768 };
  const r: ResolvedSpec = {
    kind: spec.kind,
    hidden,
    intermediate: spec.intermediate ?? 172,
    layers: spec.layers ?? 2,
    heads,
    kvHeads: spec.kvHeads ?? heads,
    headDim: spec.headDim ?? hidden / heads,
    headDimGiven: spec.headDim !== undefined,
    vocab: spec.vocab ?? 512,
    dtype: spec.dtype ?? "F32",
    shards: spec.shards ?? 1,
    seed: spec.seed ?? 1,
    maxPositionEmbeddings: spec.maxPositionEmbeddings ?? defaultMaxPos[spec.kind],
    slidingWindow: spec.slidingWindow ?? null,
    std: spec.std ?? 0.02,
  };
  if (!["llama", "llama3", "mistral", "qwen2"].includes(r.kind)) throw new Error(`unknown model kind "${r.kind}"`);
  if (!Number.isInteger(r.headDim) || r.headDim <= 0) throw new Error(`head dim must be a positive integer (hidden ${hidden} / heads ${heads})`);
  if (r.heads % r.kvHeads !== 0) throw new Error(`heads (${r.heads}) must be a multiple of kvHeads (${r.kvHeads})`);
  if (!(r.dtype in DTYPE_BYTES)) throw new Error(`unknown dtype "${r.dtype}" (F32, BF16 or F16)`);
  if (!Number.isInteger(r.shards) || r.shards < 1) throw new Error(`shards must be a positive integer`);
  return r;
}

function tieEmbeddings(s: ResolvedSpec): boolean {
  return s.kind === "qwen2";
}

function planTensors(s: ResolvedSpec): TensorPlan[] {
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  const t: TensorPlan[] = [{ name: "model.embed_tokens.weight", shape: [s.vocab, s.hidden], init: "matrix" }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    t.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden], init: "norm" },
      { name: `${p}.self_attn.q_proj.weight`, shape: [q, s.hidden], init: "matrix" },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, s.hidden], init: "matrix" },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, s.hidden], init: "matrix" },
    );
    if (s.kind === "qwen2") {
      t.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [q], init: "bias" },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], init: "bias" },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], init: "bias" },
      );
    }
    t.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, q], init: "matrix" },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden], init: "norm" },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.intermediate, s.hidden], init: "matrix" },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.intermediate, s.hidden], init: "matrix" },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.intermediate], init: "matrix" },
    );
  }
  t.push({ name: "model.norm.weight", shape: [s.hidden], init: "norm" });
  if (!tieEmbeddings(s)) t.push({ name: "lm_head.weight", shape: [s.vocab, s.hidden], init: "matrix" });
  return t;
}

function modelConfig(s: ResolvedSpec): Record<string, unknown> {
  const torchDtype = { F32: "float32", BF16: "bfloat16", F16: "float16" }[s.dtype];
  const common: Record<string, unknown> = {
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    ...(s.headDimGiven ? { head_dim: s.headDim } : {}),
    vocab_size: s.vocab,
    max_position_embeddings: s.maxPositionEmbeddings,
    rms_norm_eps: s.kind === "qwen2" ? 1e-6 : 1e-5,
    hidden_act: "silu",
    initializer_range: s.std,
    tie_word_embeddings: tieEmbeddings(s),
    bos_token_id: 1,
    eos_token_id: 2,
    use_cache: true,
    torch_dtype: torchDtype,
  };
  switch (s.kind) {
    case "llama":
      return { architectures: ["LlamaForCausalLM"], model_type: "llama", ...common, rope_theta: 10000.0,
        rope_scaling: null, attention_bias: false, mlp_bias: false, pretraining_tp: 1 };
    case "llama3":
      return { architectures: ["LlamaForCausalLM"], model_type: "llama", ...common, eos_token_id: [2, 1],
        rope_theta: 500000.0, attention_bias: false, mlp_bias: false, pretraining_tp: 1,
        rope_scaling: { rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0,
          original_max_position_embeddings: 8192 } };
    case "mistral":
      return { architectures: ["MistralForCausalLM"], model_type: "mistral", ...common, rope_theta: 10000.0,
        sliding_window: s.slidingWindow };
    case "qwen2":
      return { architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", ...common, rope_theta: 1000000.0,
        use_sliding_window: false, sliding_window: s.maxPositionEmbeddings, max_window_layers: s.layers };
  }
}

/** FNV-1a over the name, mixed with the seed: a per-tensor PRNG seed. */
function tensorSeed(seed: number, name: string): number {
  let h = (2166136261 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
  return h || 1;
}

/** mulberry32: uniform in [0, 1) from 32 bits of state; small, fast, good enough for test weights and load shapes. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even. */
export function toBf16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0; // NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 → IEEE half bits, round to nearest even, with subnormals and overflow to inf. */
export function toF16Bits(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // underflows to zero
    mant |= 0x800000;
    const shift = 14 - e; // 13 + (1 - e)
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m; // a carry into the exponent field is the correct result
  }
  const rest = mant & 0x1fff;
  let m = mant >>> 13;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) { m = 0; e++; if (e >= 0x1f) return sign | 0x7c00; }
  }
  return sign | (e << 10) | m;
}

/** bfloat16 bits → the value, for tests and readers. */
export function fromBf16Bits(b: number): number {
  u32[0] = b << 16;
  return f32[0]!;
}

/** IEEE half bits → the value. */
export function fromF16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

const CHUNK_ELEMENTS = 1 << 20;

/** Generates one tensor's values in chunks and writes them to fd in the target dtype. */
function writeTensorData(fd: number, plan: TensorPlan, s: ResolvedSpec): void {
  const count = plan.shape.reduce((a, b) => a * b, 1);
  const next = mulberry32(tensorSeed(s.seed, plan.name));
  // Uniform on [-a, a] has std a / sqrt(3).
  const amp = plan.init === "norm" ? 0.05 : s.std * Math.sqrt(3);
  const center = plan.init === "norm" ? 1 : 0;
  const bytes = DTYPE_BYTES[s.dtype];
  const ab = new ArrayBuffer(Math.min(count, CHUNK_ELEMENTS) * bytes);
  const buf = new Uint8Array(ab);
  const asF32 = new Float32Array(ab, 0, ab.byteLength >>> 2);
  for (let done = 0; done < count; ) {
    const n = Math.min(CHUNK_ELEMENTS, count - done);
    if (s.dtype === "F32") {
      // Float32Array stores little-endian on every platform Node supports here.
      for (let i = 0; i < n; i++) asF32[i] = center + amp * (2 * next() - 1);
    } else {
      const conv = s.dtype === "BF16" ? toBf16Bits : toF16Bits;
      for (let i = 0; i < n; i++) {
        const h = conv(center + amp * (2 * next() - 1));
        buf[2 * i] = h & 0xff;
        buf[2 * i + 1] = h >>> 8;
      }
    }
    writeFully(fd, buf.subarray(0, n * bytes));
    done += n;
  }
}

function writeFully(fd: number, data: Uint8Array): void {
  for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
}

/** Splits tensors into `n` contiguous groups of roughly equal byte size. */
function splitIntoFiles(tensors: TensorPlan[], n: number, bytes: number): TensorPlan[][] {
  const sizes = tensors.map((t) => t.shape.reduce((a, b) => a * b, 1) * bytes);
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: TensorPlan[][] = Array.from({ length: n }, () => []);
  let acc = 0;
  tensors.forEach((t, i) => {
    const g = Math.min(n - 1, Math.floor((acc / total) * n));
    groups[g]!.push(t);
    acc += sizes[i]!;
  });
  if (groups.some((g) => g.length === 0)) throw new Error(`cannot split ${tensors.length} tensors into ${n} non-empty files`);
  return groups;
}

function writeSafetensors(path: string, tensors: TensorPlan[], s: ResolvedSpec): number {
  const bytes = DTYPE_BYTES[s.dtype];
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * bytes;
    header[t.name] = { dtype: s.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned, as HF writers do
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(path, "w");
  try {
    writeFully(fd, prefix);
    writeFully(fd, Buffer.from(json, "utf8"));
    for (const t of tensors) writeTensorData(fd, t, s);
  } finally {
    closeSync(fd);
  }
  return offset;
}

export interface WrittenModel {
  dir: string;
  files: string[];
  config: Record<string, unknown>;
  tensorNames: string[];
}

export function writeRandomModel(dir: string, spec: RandomModelSpec): WrittenModel {
  const s = resolveSpec(spec);
  mkdirSync(dir, { recursive: true });
  const config = modelConfig(s);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeFileSync(join(dir, "generation_config.json"),
    JSON.stringify({ bos_token_id: 1, eos_token_id: config.eos_token_id }, null, 2) + "\n");
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(TOKENIZER_DIR, f), join(dir, f));

  const tensors = planTensors(s);
  const files: string[] = [];
  if (s.shards === 1) {
    writeSafetensors(join(dir, "model.safetensors"), tensors, s);
    files.push("model.safetensors");
  } else {
    const pad = (i: number) => String(i).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    let totalSize = 0;
    splitIntoFiles(tensors, s.shards, DTYPE_BYTES[s.dtype]).forEach((group, i) => {
      const file = `model-${pad(i + 1)}-of-${pad(s.shards)}.safetensors`;
      totalSize += writeSafetensors(join(dir, file), group, s);
      for (const t of group) weightMap[t.name] = file;
      files.push(file);
    });
    writeFileSync(join(dir, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + "\n");
  }
  return { dir, files, config, tensorNames: tensors.map((t) => t.name) };
}

const CLI_NUMBERS: Record<string, keyof RandomModelSpec> = {
  "--hidden": "hidden", "--intermediate": "intermediate", "--layers": "layers", "--heads": "heads",
  "--kv-heads": "kvHeads", "--head-dim": "headDim", "--vocab": "vocab", "--shards": "shards",
  "--seed": "seed", "--max-position-embeddings": "maxPositionEmbeddings", "--sliding-window": "slidingWindow",
  "--std": "std",
};

function parseCli(argv: string[]): { out: string; spec: RandomModelSpec } {
  let out: string | undefined;
  let spec: Partial<RandomModelSpec> = {};
  const overrides: Partial<Record<keyof RandomModelSpec, unknown>> = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    if (flag === "--help" || flag === "-h") {
      console.log(`usage: random-model --out DIR [--preset ${Object.keys(PRESETS).join("|")}] [--kind llama|llama3|mistral|qwen2]\n` +
        `  [--dtype F32|BF16|F16] ${Object.keys(CLI_NUMBERS).map((f) => `[${f} N]`).join(" ")}`);
      process.exit(0);
    }
    if (value === undefined) throw new Error(`${flag} needs a value`);
    i++;
    if (flag === "--out") out = value;
    else if (flag === "--preset") {
      const p = PRESETS[value];
      if (!p) throw new Error(`unknown preset "${value}" (known: ${Object.keys(PRESETS).join(", ")})`);
      spec = { ...p, ...spec };
    } else if (flag === "--kind") overrides.kind = value;
    else if (flag === "--dtype") overrides.dtype = value.toUpperCase();
    else if (flag in CLI_NUMBERS) {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new Error(`${flag} needs a number, got "${value}"`);
      overrides[CLI_NUMBERS[flag]!] = n;
    } else throw new Error(`unknown flag ${flag} (see --help)`);
  }
  if (!out) throw new Error("--out DIR is required");
  const merged = { ...spec, ...overrides } as RandomModelSpec;
  if (!merged.kind) throw new Error("--kind or --preset is required");
  return { out, spec: merged };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { out, spec } = parseCli(process.argv.slice(2));
    const started = Date.now();
    const m = writeRandomModel(out, spec);
    console.log(`wrote ${m.tensorNames.length} tensors in ${m.files.length} file(s) to ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } catch (e) {
    console.error(`random-model: ${(e as Error).message}`);
    process.exit(1);
  }
}
