// Writes a loadable Hugging Face-format model folder with seeded random weights, for tests
// (tiny Llama / Llama 3 / Mistral / Qwen2 shapes) and GPU benchmarks (the "llama3-8b" preset).
// Tensors are generated and written chunk by chunk, so an 8B model never sits in memory.
// Each value depends only on (seed, tensor name, element index), so the same spec written as
// one file or as N shards, by one thread or many, holds the same bytes.
//
// Big models are written by worker threads, each filling and writing disjoint byte ranges.
//
// CLI: node --import tsx tools/random-model.ts --kind llama3 --out DIR [--preset llama3-8b]
//        [--hidden N] [--intermediate N] [--layers N] [--heads N] [--kv-heads N] [--head-dim N]
//        [--vocab N] [--dtype F32|BF16|F16] [--shards N] [--seed N] [--sliding-window N] [--threads N]
import { closeSync, copyFileSync, existsSync, ftruncateSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

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

// ---- the weight values ----
//
// Element i of a tensor takes 16 bits of a counter-based hash of (tensor keys, i / 2) and
// looks them up in a table of 65536 values: the quantiles of the uniform distribution
// (center ± amp), already encoded in the file's dtype. So a value costs half a hash and a
// table load, no float conversion, and any range of any tensor can be computed on its own:
// the bytes do not depend on how the work is split (threads, jobs, shard files).

/** Table elements and tensor data are little-endian bits of the file's dtype. */
type Bits = Uint16Array | Uint32Array;

/** The 65536 values an init draws from, as dtype bits. */
function valueTable(init: TensorPlan["init"], s: ResolvedSpec): Bits {
  // Uniform on [-a, a] has std a / sqrt(3).
  const amp = init === "norm" ? 0.05 : s.std * Math.sqrt(3);
  const center = init === "norm" ? 1 : 0;
  const value = (k: number) => center + amp * ((2 * k + 1) / 65536 - 1);
  if (s.dtype === "F32") return new Uint32Array(Float32Array.from({ length: 65536 }, (_, k) => value(k)).buffer);
  const conv = s.dtype === "BF16" ? toBf16Bits : toF16Bits;
  return Uint16Array.from({ length: 65536 }, (_, k) => conv(value(k)));
}

/** The two 32-bit keys of a tensor's hash: the second keeps tensors from being shifted copies of each other. */
function tensorKeys(seed: number, name: string): [number, number] {
  const k1 = tensorSeed(seed, name);
  return [k1 | 0, Math.imul(k1 ^ (k1 >>> 15), 0x2c1b3c6d) ^ 0x297a2d39];
}

/**
 * Fills `out` with elements [start, start + out.length) of the tensor keyed (k1, k2); start is even.
 * Self-contained (no closures, no imports): its source also runs in the eval'd writer workers.
 */
function fillRandom(out: Bits, table: Bits, k1: number, k2: number, start: number): void {
  const n = out.length;
  let p = start / 2;
  for (let j = 0; j < n; j += 2, p++) {
    // A Weyl step through murmur3's finalizer, the second key, then lowbias32's finalizer.
    let x = (Math.imul(p, 0x9e3779b9) + k1) | 0;
    x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
    x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
    x ^= (x >>> 16) ^ k2;
    x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
    x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
    x ^= x >>> 16;
    out[j] = table[x & 0xffff]!;
    if (j + 1 < n) out[j + 1] = table[x >>> 16]!;
  }
}

/** Writes all of `data` at `position` of fd (positional: writers of disjoint ranges share a file). */
function writeAt(fd: number, data: Uint8Array, position: number): void {
  for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off, position + off);
}

/**
 * Elements per job: one fill and one write of 1 MB (bf16). Small enough that the buffer is
 * still in cache when the kernel copies it (8 MB jobs cost 5x the system time here).
 */
const JOB_ELEMENTS = 1 << 19;

/** A run of one tensor's elements and where its bytes go. */
interface Job {
  file: number;
  /** Byte offset in the file. */
  position: number;
  k1: number;
  k2: number;
  /** 0: matrix/bias values, 1: norm values. */
  table: 0 | 1;
  start: number;
  count: number;
}

/** One safetensors file to write: its path, header bytes and tensors. */
interface FilePlan {
  path: string;
  header: Buffer;
  tensors: TensorPlan[];
  /** Bytes of tensor data (the file is header.length + dataBytes long). */
  dataBytes: number;
}

function numel(t: TensorPlan): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

function planFile(path: string, tensors: TensorPlan[], s: ResolvedSpec): FilePlan {
  const bytes = DTYPE_BYTES[s.dtype];
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of tensors) {
    const size = numel(t) * bytes;
    header[t.name] = { dtype: s.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // keep the data 8-byte aligned, as HF writers do
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return { path, header: Buffer.concat([prefix, Buffer.from(json, "utf8")]), tensors, dataBytes: offset };
}

/** Writes each file's header, sizes it, and returns the jobs that fill in its tensors. */
function startFiles(files: FilePlan[], s: ResolvedSpec): Job[] {
  const bytes = DTYPE_BYTES[s.dtype];
  const jobs: Job[] = [];
  files.forEach((f, file) => {
    const fd = openSync(f.path, "w");
    try {
      writeAt(fd, f.header, 0);
      ftruncateSync(fd, f.header.length + f.dataBytes);
    } finally {
      closeSync(fd);
    }
    let position = f.header.length;
    for (const t of f.tensors) {
      const count = numel(t);
      if (count >= 2 ** 32) throw new Error(`${t.name}: ${count} elements is past the generator's 2^32 per tensor`);
      const [k1, k2] = tensorKeys(s.seed, t.name);
      for (let start = 0; start < count; start += JOB_ELEMENTS) {
        const n = Math.min(JOB_ELEMENTS, count - start);
        jobs.push({ file, position: position + start * bytes, k1, k2, table: t.init === "norm" ? 1 : 0, start, count: n });
      }
      position += count * bytes;
    }
  });
  return jobs;
}

/** What a writer needs: the jobs, a counter handing them out, the files, the value tables. */
interface JobQueue {
  jobs: Job[];
  /** An Int32 counter: the next job to take (shared between threads). */
  counter: ArrayBuffer | SharedArrayBuffer;
  paths: string[];
  bytes: number;
  jobElements: number;
  tables: Bits[];
}

/**
 * Takes jobs off the queue until none are left, filling and writing each one.
 * Self-contained like fillRandom: it is also the body of the writer workers.
 */
function drainJobs(q: JobQueue): void {
  const next = new Int32Array(q.counter);
  const buf = new ArrayBuffer(q.jobElements * q.bytes);
  const fds: number[] = [];
  try {
    for (const p of q.paths) fds.push(openSync(p, "r+"));
    for (let i; (i = Atomics.add(next, 0, 1)) < q.jobs.length; ) {
      const j = q.jobs[i]!;
      const out = q.bytes === 4 ? new Uint32Array(buf, 0, j.count) : new Uint16Array(buf, 0, j.count);
      fillRandom(out, q.tables[j.table]!, j.k1, j.k2, j.start);
      writeAt(fds[j.file]!, new Uint8Array(buf, 0, out.byteLength), j.position);
    }
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

function jobQueue(files: FilePlan[], jobs: Job[], s: ResolvedSpec, counter: ArrayBuffer | SharedArrayBuffer): JobQueue {
  return {
    jobs, counter, paths: files.map((f) => f.path), bytes: DTYPE_BYTES[s.dtype], jobElements: JOB_ELEMENTS,
    tables: [valueTable("matrix", s), valueTable("norm", s)],
  };
}

/** A writer thread (eval'd, so plain JS: the functions' compiled source and the fs names they use). */
const WORKER_SOURCE = `
const { openSync, closeSync, writeSync } = require("node:fs");
${fillRandom.toString()}
${writeAt.toString()}
${drainJobs.toString()}
drainJobs(require("node:worker_threads").workerData);
`;

/** Runs the jobs on `threads` worker threads, each pulling the next job as it finishes one. */
async function runJobsInWorkers(queue: JobQueue, threads: number): Promise<void> {
  const workers = Array.from({ length: Math.min(threads, queue.jobs.length) }, () => new Worker(WORKER_SOURCE, { eval: true, workerData: queue }));
  const exits = workers.map((w) => new Promise<void>((resolvePromise, reject) => {
    w.once("error", reject);
    w.once("exit", (code) => (code === 0 ? resolvePromise() : reject(new Error(`writer thread exited with code ${code}`))));
  }));
  try {
    await Promise.all(exits);
  } catch (e) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw e;
  }
}

/** Splits tensors into `n` contiguous groups of roughly equal byte size. */
function splitIntoFiles(tensors: TensorPlan[], n: number, bytes: number): TensorPlan[][] {
  const sizes = tensors.map((t) => numel(t) * bytes);
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

export interface WrittenModel {
  dir: string;
  files: string[];
  config: Record<string, unknown>;
  tensorNames: string[];
}

/** Writes config, tokenizer and index files; returns the safetensors files still to write. */
function prepareModel(dir: string, s: ResolvedSpec): { model: WrittenModel; files: FilePlan[] } {
  mkdirSync(dir, { recursive: true });
  const config = modelConfig(s);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  writeFileSync(join(dir, "generation_config.json"),
    JSON.stringify({ bos_token_id: 1, eos_token_id: config.eos_token_id }, null, 2) + "\n");
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(TOKENIZER_DIR, f), join(dir, f));

  const tensors = planTensors(s);
  const model: WrittenModel = { dir, files: [], config, tensorNames: tensors.map((t) => t.name) };
  if (s.shards === 1) {
    model.files.push("model.safetensors");
    return { model, files: [planFile(join(dir, "model.safetensors"), tensors, s)] };
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const weightMap: Record<string, string> = {};
  const files = splitIntoFiles(tensors, s.shards, DTYPE_BYTES[s.dtype]).map((group, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(s.shards)}.safetensors`;
    for (const t of group) weightMap[t.name] = file;
    model.files.push(file);
    return planFile(join(dir, file), group, s);
  });
  const totalSize = files.reduce((a, f) => a + f.dataBytes, 0);
  writeFileSync(join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + "\n");
  return { model, files };
}

/** Writes the model on this thread (tests' small models). */
export function writeRandomModel(dir: string, spec: RandomModelSpec): WrittenModel {
  const s = resolveSpec(spec);
  const { model, files } = prepareModel(dir, s);
  drainJobs(jobQueue(files, startFiles(files, s), s, new ArrayBuffer(4)));
  return model;
}

/** Writes the model on `threads` worker threads: the same bytes as writeRandomModel, for big models. */
export async function writeRandomModelParallel(dir: string, spec: RandomModelSpec, threads = availableParallelism()): Promise<WrittenModel> {
  const s = resolveSpec(spec);
  const { model, files } = prepareModel(dir, s);
  const jobs = startFiles(files, s);
  if (threads <= 1) drainJobs(jobQueue(files, jobs, s, new ArrayBuffer(4)));
  else await runJobsInWorkers(jobQueue(files, jobs, s, new SharedArrayBuffer(4)), threads);
  return model;
}

const CLI_NUMBERS: Record<string, keyof RandomModelSpec> = {
  "--hidden": "hidden", "--intermediate": "intermediate", "--layers": "layers", "--heads": "heads",
  "--kv-heads": "kvHeads", "--head-dim": "headDim", "--vocab": "vocab", "--shards": "shards",
  "--seed": "seed", "--max-position-embeddings": "maxPositionEmbeddings", "--sliding-window": "slidingWindow",
  "--std": "std",
};

/** The CLI's flags (also how goldens record the checkpoint they were made from). */
export function parseRandomModelArgs(argv: string[]): { out: string; spec: RandomModelSpec; threads: number } {
  let out: string | undefined;
  let threads = availableParallelism();
  let spec: Partial<RandomModelSpec> = {};
  const overrides: Partial<Record<keyof RandomModelSpec, unknown>> = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = argv[i + 1];
    if (flag === "--help" || flag === "-h") {
      console.log(`usage: random-model --out DIR [--preset ${Object.keys(PRESETS).join("|")}] [--kind llama|llama3|mistral|qwen2]\n` +
        `  [--dtype F32|BF16|F16] ${Object.keys(CLI_NUMBERS).map((f) => `[${f} N]`).join(" ")}\n` +
        `  [--threads N (writer threads, default one per core; the bytes do not depend on it)]`);
      process.exit(0);
    }
    if (value === undefined) throw new Error(`${flag} needs a value`);
    i++;
    if (flag === "--out") out = value;
    else if (flag === "--threads") {
      threads = Number(value);
      if (!Number.isInteger(threads) || threads < 1) throw new Error(`--threads needs a positive integer, got "${value}"`);
    } else if (flag === "--preset") {
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
  return { out, spec: merged, threads };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const { out, spec, threads } = parseRandomModelArgs(process.argv.slice(2));
    const started = Date.now();
    const m = await writeRandomModelParallel(out, spec, threads);
    console.log(`wrote ${m.tensorNames.length} tensors in ${m.files.length} file(s) to ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s (${threads} threads)`);
  } catch (e) {
    console.error(`random-model: ${(e as Error).message}`);
    process.exit(1);
  }
}
