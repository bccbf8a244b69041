// Checks that writeRandomModel's folders parse: safetensors headers, offsets, dtype sizes, the index.
import tap from "tap";
const t = tap;
import { mkdtempSync, readFileSync, readdirSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { writeRandomModel, writeRandomModelParallel, toBf16Bits, toF16Bits, fromBf16Bits, fromF16Bits, type RandomModelSpec } from "../random-model.js";

interface HeaderEntry { dtype: string; shape: number[]; data_offsets: [number, number] }

function readSafetensors(path: string): { header: Record<string, HeaderEntry>; data: Buffer } {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const json = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  delete json.__metadata__;
  return { header: json, data: buf.subarray(8 + n) };
}

function checkFile(t: Pick<typeof tap, "equal">, path: string, bytesPer: number): Record<string, HeaderEntry> {
  const { header, data } = readSafetensors(path);
  const entries = Object.values(header).sort((a, b) => a.data_offsets[0] - b.data_offsets[0]);
  let expect = 0;
  for (const e of entries) {
    t.equal(e.data_offsets[0], expect, "contiguous offsets");
    t.equal(e.data_offsets[1] - e.data_offsets[0], e.shape.reduce((a, b) => a * b, 1) * bytesPer, "size = numel × dtype size");
    expect = e.data_offsets[1];
  }
  t.equal(data.length, expect, "file ends at the last tensor");
  return header;
}

const tmp = mkdtempSync(join(tmpdir(), "random-model-test-"));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test("bf16 and f16 rounding", async (t) => {
  t.equal(toBf16Bits(1), 0x3f80);
  t.equal(toBf16Bits(fromBf16Bits(0x3f81)), 0x3f81);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
  t.equal(toBf16Bits(1 + 2 ** -8), 0x3f80);
  t.equal(toBf16Bits(1 + 3 * 2 ** -8), 0x3f82, "tie rounds up to even");
  t.equal(toBf16Bits(1 + 2 ** -8 + 2 ** -12), 0x3f81, "above half rounds up");
  t.equal(toF16Bits(1), 0x3c00);
  t.equal(toF16Bits(-2), 0xc000);
  t.equal(toF16Bits(65504), 0x7bff);
  t.equal(toF16Bits(1e6), 0x7c00, "overflow to inf");
  t.equal(toF16Bits(2 ** -24), 0x0001, "smallest subnormal");
  t.equal(toF16Bits(2 ** -26), 0, "underflow");
  t.equal(toF16Bits(1 + 2 ** -11), 0x3c00, "tie to even");
  t.equal(toF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  for (const x of [0.0123, -0.0371, 3e-5, 0.5, 1.05]) {
    t.ok(Math.abs(fromF16Bits(toF16Bits(x)) - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25, `f16 round trip ${x}`);
    t.ok(Math.abs(fromBf16Bits(toBf16Bits(x)) - x) <= Math.abs(x) * 2 ** -8, `bf16 round trip ${x}`);
  }
});

const cases: Array<[string, RandomModelSpec, number]> = [
  ["llama f32", { kind: "llama", layers: 2 }, 4],
  ["llama3 bf16", { kind: "llama3", dtype: "BF16", layers: 2, heads: 4, kvHeads: 2, headDim: 16 }, 2],
  ["mistral f16", { kind: "mistral", dtype: "F16", slidingWindow: 64 }, 2],
  ["qwen2 f32", { kind: "qwen2", heads: 4, kvHeads: 2 }, 4],
];

for (const [name, spec, bytesPer] of cases) {
  t.test(name, async (t) => {
    const dir = join(tmp, name.replace(" ", "-"));
    const m = writeRandomModel(dir, spec);
    for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]) {
      t.ok(existsSync(join(dir, f)), f);
    }
    const header = checkFile(t, join(dir, "model.safetensors"), bytesPer);
    t.same(Object.keys(header).sort(), [...m.tensorNames].sort());
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    const headDim = spec.headDim ?? cfg.hidden_size / cfg.num_attention_heads;
    t.same(header["model.layers.0.self_attn.k_proj.weight"]!.shape, [cfg.num_key_value_heads * headDim, cfg.hidden_size]);
    t.same(header["model.embed_tokens.weight"]!.shape, [512, cfg.hidden_size]);
    t.equal(header["model.norm.weight"]!.dtype, spec.dtype ?? "F32");
    if (spec.kind === "qwen2") {
      t.equal(cfg.tie_word_embeddings, true);
      t.notOk(header["lm_head.weight"], "tied: no lm_head");
      t.same(header["model.layers.1.self_attn.q_proj.bias"]!.shape, [cfg.num_attention_heads * headDim]);
    } else {
      t.ok(header["lm_head.weight"]);
      t.notOk(header["model.layers.0.self_attn.q_proj.bias"]);
    }
    if (spec.kind === "llama3") {
      t.equal(cfg.rope_scaling.rope_type, "llama3");
      t.equal(cfg.rope_scaling.original_max_position_embeddings, 8192);
      t.ok(Array.isArray(cfg.eos_token_id));
      t.equal(cfg.head_dim, 16);
    }
    if (spec.kind === "mistral") t.equal(cfg.sliding_window, 64);
  });
}

t.test("values: seeded, small matrices, norms near 1", async (t) => {
  const a = join(tmp, "seed-a"), b = join(tmp, "seed-b"), c = join(tmp, "seed-c");
  writeRandomModel(a, { kind: "llama", seed: 7 });
  writeRandomModel(b, { kind: "llama", seed: 7 });
  writeRandomModel(c, { kind: "llama", seed: 8 });
  const fa = readFileSync(join(a, "model.safetensors"));
  t.ok(fa.equals(readFileSync(join(b, "model.safetensors"))), "same seed, same bytes");
  t.notOk(fa.equals(readFileSync(join(c, "model.safetensors"))), "other seed, other bytes");
  const { header, data } = readSafetensors(join(a, "model.safetensors"));
  const view = (name: string) => {
    const [s, e] = header[name]!.data_offsets;
    const copy = Uint8Array.from(data.subarray(s, e));
    return new Float32Array(copy.buffer);
  };
  const w = view("model.layers.0.mlp.up_proj.weight");
  const mean = w.reduce((x, y) => x + y, 0) / w.length;
  const std = Math.sqrt(w.reduce((x, y) => x + (y - mean) ** 2, 0) / w.length);
  t.ok(Math.abs(mean) < 0.002, `mean ${mean}`);
  t.ok(Math.abs(std - 0.02) < 0.002, `std ${std}`);
  const n = view("model.norm.weight");
  t.ok(n.every((x) => x > 0.94 && x < 1.06), "norm weights ≈ 1");
});

t.test("sharded bf16 with index holds the same tensors as one file", async (t) => {
  const one = join(tmp, "one"), many = join(tmp, "many");
  writeRandomModel(one, { kind: "llama3", dtype: "BF16", layers: 3, seed: 3 });
  const m = writeRandomModel(many, { kind: "llama3", dtype: "BF16", layers: 3, seed: 3, shards: 3 });
  t.same(m.files, ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]);
  t.notOk(existsSync(join(many, "model.safetensors")));
  const index = JSON.parse(readFileSync(join(many, "model.safetensors.index.json"), "utf8"));
  const single = readSafetensors(join(one, "model.safetensors"));
  t.same(Object.keys(index.weight_map).sort(), Object.keys(single.header).sort(), "index names every tensor");
  let total = 0;
  for (const f of m.files) {
    const header = checkFile(t, join(many, f), 2);
    const { data } = readSafetensors(join(many, f));
    for (const [name, e] of Object.entries(header)) {
      t.equal(index.weight_map[name], f, `${name} indexed in ${f}`);
      const s = single.header[name]!;
      t.ok(data.subarray(...e.data_offsets).equals(single.data.subarray(...s.data_offsets)), `${name} same bytes`);
      total += e.data_offsets[1] - e.data_offsets[0];
    }
  }
  t.equal(index.metadata.total_size, total);
  t.same(readdirSync(many).filter((f) => f.endsWith(".safetensors")).sort(), m.files);
});

t.test("worker threads write the same bytes as one thread, whatever the split", async (t) => {
  // hidden 513 x vocab 1025 spreads the embedding over two jobs (2^19 elements each at most), the second odd.
  const spec: RandomModelSpec = { kind: "llama", dtype: "BF16", hidden: 513, heads: 3, intermediate: 64, layers: 1, vocab: 1025, seed: 9, shards: 2 };
  const one = join(tmp, "threads-1"), three = join(tmp, "threads-3");
  const m = writeRandomModel(one, spec);
  await writeRandomModelParallel(three, spec, 3);
  for (const f of m.files) t.ok(readFileSync(join(one, f)).equals(readFileSync(join(three, f))), `${f}: same bytes`);
  const { header, data } = readSafetensors(join(one, m.files[0]!));
  const [s, e] = header["model.embed_tokens.weight"]!.data_offsets;
  const values = Array.from(new Uint16Array(Uint8Array.from(data.subarray(s, e)).buffer), fromBf16Bits);
  const mean = values.reduce((x, y) => x + y, 0) / values.length;
  const std = Math.sqrt(values.reduce((x, y) => x + (y - mean) ** 2, 0) / values.length);
  t.ok(Math.abs(mean) < 1e-4 && Math.abs(std - 0.02) < 1e-4, `bf16 embedding: mean ${mean}, std ${std}`);
  t.ok(values.every((x) => Math.abs(x) <= 0.0347), "within the uniform range");
  // Neighbours are not correlated (a broken hash would repeat or pair them).
  let cov = 0;
  for (let i = 1; i < values.length; i++) cov += values[i]! * values[i - 1]!;
  t.ok(Math.abs(cov / (values.length - 1) / std ** 2) < 0.01, "lag-1 correlation ≈ 0");
});

t.test("CLI: the llama3-8b preset with smaller overrides", async (t) => {
  const out = join(tmp, "cli");
  const root = join(import.meta.dirname, "..", "..");
  const stdout = execFileSync(process.execPath, ["--import", "tsx", join(root, "tools", "random-model.ts"),
    "--preset", "llama3-8b", "--out", out, "--hidden", "64", "--intermediate", "96", "--layers", "1",
    "--heads", "4", "--kv-heads", "2", "--vocab", "512"], { encoding: "utf8" });
  t.match(stdout, /wrote 12 tensors in 1 file\(s\) .* \(\d+ threads\)/);
  const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
  t.equal(cfg.torch_dtype, "bfloat16", "preset dtype kept");
  t.equal(cfg.rope_scaling.rope_type, "llama3");
  t.equal(cfg.max_position_embeddings, 131072);
  t.equal(cfg.num_key_value_heads, 2, "override applied");
  checkFile(t, join(out, "model.safetensors"), 2);
  t.throws(() => execFileSync(process.execPath, ["--import", "tsx", join(root, "tools", "random-model.ts"), "--kind", "gpt2", "--out", out],
    { stdio: "pipe" }), /unknown model kind "gpt2"/);
});
