// The native engine end to end on the real stories260k model: greedy decoding
// must reproduce the reference generations token for token, and batching,
// chunked prefill and prompt logprobs must not change any result.
import t from "tap";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadNative, type EngineOptions, type ModelConfig, type NativeEngine, type StepSequence } from "../index.js";

const modelDir = resolve(import.meta.dirname, "../../models/stories260k");
const addonPath = resolve(import.meta.dirname, "../build/Release/text_gen_engine.node");
const BLOCK_SIZE = 16;

interface Reference {
  prompt: string;
  prompt_token_ids: number[];
  greedy_token_ids: number[];
}
const references: Reference[] = readFileSync(join(modelDir, "reference-sample.jsonl"), "utf8")
  .split("\n")
  .filter((line) => line.trim() !== "")
  .map((line) => JSON.parse(line) as Reference);

// The fields of models/stories260k/config.json, as shard/model-config.ts would hand them over.
const config: ModelConfig = {
  architecture: "llama",
  hiddenSize: 64,
  intermediateSize: 172,
  numLayers: 5,
  numHeads: 8,
  numKvHeads: 4,
  headDim: 8,
  vocabSize: 512,
  maxPositionEmbeddings: 512,
  rmsNormEps: 1e-5,
  rope: { theta: 10000, scaling: "none", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 512 },
  tieWordEmbeddings: true,
  attentionBias: false,
  slidingWindow: 0,
};

function options(overrides: Partial<EngineOptions> = {}): EngineOptions {
  return { modelDir, config, dtype: "float32", device: "cpu", rank: 0, worldSize: 1, blockSize: BLOCK_SIZE, threads: 2, ...overrides };
}

const greedy = { temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 0, repetitionPenalty: 1, frequencyPenalty: 0 };

/** Hands out KV blocks 1, 2, ... (block 0 is the router's). */
class BlockAllocator {
  private next = 1;
  take(tokens: number): Int32Array {
    const n = Math.ceil(tokens / BLOCK_SIZE);
    const blocks = Int32Array.from({ length: n }, (_, i) => this.next + i);
    this.next += n;
    return blocks;
  }
}

/** One sequence's driver: prompt (optionally in chunks), then greedy decode steps. */
class Seq {
  readonly generated: number[] = [];
  position = 0;
  private started = false;
  constructor(
    readonly id: number,
    readonly prompt: number[],
    readonly blocks: Int32Array,
  ) {}
  /** The next prompt chunk of at most `max` tokens, or the decode token once the prompt is done. */
  next(max = Infinity, extra: Partial<StepSequence> = {}): StepSequence {
    let tokens: number[];
    let sample = true;
    if (this.position < this.prompt.length) {
      tokens = this.prompt.slice(this.position, this.position + max);
      sample = this.position + tokens.length === this.prompt.length;
    } else {
      tokens = [this.generated[this.generated.length - 1]!];
    }
    const seq: StepSequence = {
      id: this.id,
      tokens: Int32Array.from(tokens),
      position: this.position,
      blocks: this.blocks,
      sample,
      topN: 0,
      promptLogprobs: false,
      ...extra,
    };
    if (!this.started) seq.init = { params: greedy, prefix: new Int32Array(0) };
    this.started = true;
    this.position += tokens.length;
    return seq;
  }
  accept(token: number | undefined): void {
    if (token !== undefined) this.generated.push(token);
  }
}

async function stepAll(engine: NativeEngine, parts: [Seq, StepSequence][], options?: { ahead?: boolean }): Promise<void> {
  const outputs = await engine.step(parts.map(([, s]) => s), options);
  outputs.forEach((out, i) => {
    const [seq, input] = parts[i]!;
    if (out.id !== seq.id) throw new Error(`output ${i} is for sequence ${out.id}, not ${seq.id}`);
    if (input.sample) seq.accept(out.token);
  });
}

/** Greedy tokens of one sequence run alone: prompt in chunks of `chunk`, then decodes. */
async function runAlone(
  engine: NativeEngine,
  id: number,
  prompt: number[],
  count: number,
  chunk = Infinity,
  options?: { ahead?: boolean },
): Promise<number[]> {
  const seq = new Seq(id, prompt, new BlockAllocator().take(prompt.length + count));
  while (seq.generated.length < count) await stepAll(engine, [[seq, seq.next(chunk)]], options);
  engine.release([id]);
  return seq.generated;
}

const native = loadNative();
let engine: NativeEngine;

t.before(async () => {
  engine = await native.loadEngine(options());
  engine.allocateKvCache(64);
});
t.teardown(() => engine?.close());

t.test("exports and info", async (t) => {
  t.equal(typeof native.hasCuda(), "boolean");
  t.ok(Number.isInteger(native.cudaDeviceCount()) && native.cudaDeviceCount() >= 0);
  const info = engine.info();
  t.match(info, { device: "cpu", dtype: "float32", blockSize: BLOCK_SIZE, numBlocks: 64 });
  t.same(info.warmupBatchSizes, [], "nothing tuned or captured on the CPU: the shard warms no decode sizes");
  t.equal(info.kvBytesPerBlock, 2 * 5 * BLOCK_SIZE * 4 * 8 * 4, "K and V of 5 layers, 4 KV heads of 8 floats");
  t.equal(info.weightBytes, 260_032 * 4 + 512 * 64 * 4, "all parameters, lm_head stored apart from the embedding");
  const tensors = native.inspectSafetensors(modelDir);
  t.equal(tensors.length, 48);
  t.match(tensors.find((x) => x.name === "model.embed_tokens.weight"), { dtype: "F32", shape: [512, 64], file: "model.safetensors" });
});

t.test("greedy decoding reproduces the reference generations", async (t) => {
  for (const [i, ref] of references.entries()) {
    const tokens = await runAlone(engine, 100 + i, ref.prompt_token_ids, ref.greedy_token_ids.length);
    t.same(tokens, ref.greedy_token_ids, `"${ref.prompt}"`);
  }
});

t.test("asking steps to run ahead changes no token (the CPU runs none ahead)", async (t) => {
  const ref = references[1]!;
  const tokens = await runAlone(engine, 150, ref.prompt_token_ids, ref.greedy_token_ids.length, 5, { ahead: true });
  t.same(tokens, ref.greedy_token_ids);
  t.throws(() => engine.step([new Seq(151, [1], Int32Array.from([1])).next()], { ahead: 1 } as never), /ahead must be a boolean/);
  t.throws(() => engine.step([new Seq(152, [1], Int32Array.from([1])).next()], 7 as never), /options must be an object/);
});

t.test("chunked prefill gives the same tokens", async (t) => {
  for (const chunk of [1, 3, 7]) {
    const ref = references[2]!;
    const tokens = await runAlone(engine, 200 + chunk, ref.prompt_token_ids, 20, chunk);
    t.same(tokens, ref.greedy_token_ids.slice(0, 20), `chunks of ${chunk}`);
  }
});

t.test("a long prefill batched with other sequences' decodes changes nothing", async (t) => {
  const blocks = new BlockAllocator();
  const [a, b, c] = references as [Reference, Reference, Reference];
  // A long prompt: a reference prompt followed by its own generation.
  const longPrompt = [...a.prompt_token_ids, ...a.greedy_token_ids.slice(0, 40)];
  const alone = await runAlone(engine, 300, longPrompt, 16);
  const sa = new Seq(301, longPrompt, blocks.take(longPrompt.length + 16));
  const sb = new Seq(302, b.prompt_token_ids, blocks.take(b.prompt_token_ids.length + 40));
  const sc = new Seq(303, c.prompt_token_ids, blocks.take(c.prompt_token_ids.length + 40));
  await stepAll(engine, [[sb, sb.next()], [sc, sc.next()]]);
  for (let i = 0; i < 5; ++i) await stepAll(engine, [[sb, sb.next()], [sc, sc.next()]]);
  // B and C decode while A's whole prompt is computed in the same step.
  await stepAll(engine, [[sb, sb.next()], [sa, sa.next()], [sc, sc.next()]]);
  while (sa.generated.length < 16) await stepAll(engine, [[sc, sc.next()], [sa, sa.next()], [sb, sb.next()]]);
  engine.release([301, 302, 303]);
  t.same(sa.generated, alone, "the long prefill");
  t.same(sb.generated, b.greedy_token_ids.slice(0, sb.generated.length), "decoding sequence B");
  t.same(sc.generated, c.greedy_token_ids.slice(0, sc.generated.length), "decoding sequence C");
});

t.test("steps requested together run one after the other", async (t) => {
  const ref = references[0]!;
  const seq = new Seq(400, ref.prompt_token_ids, new BlockAllocator().take(64));
  const first = engine.step([seq.next()]);
  // Not yet awaited: the second step (a different sequence) waits in the queue.
  const other = new Seq(401, references[1]!.prompt_token_ids, Int32Array.from([10, 11]));
  const second = engine.step([other.next()]);
  const [o1, o2] = await Promise.all([first, second]);
  t.equal(o1[0]!.token, ref.greedy_token_ids[0]);
  t.equal(o2[0]!.token, references[1]!.greedy_token_ids[0]);
  engine.release([400, 401]);
});

t.test("prompt logprobs", async (t) => {
  const ref = references[0]!;
  const full = [...ref.prompt_token_ids, ...ref.greedy_token_ids.slice(0, 10)];
  // The logprob reported for each greedy sample (temperature 1: the plain log_softmax).
  const seq = new Seq(500, ref.prompt_token_ids, new BlockAllocator().take(64));
  const sampledLogprobs: number[] = [];
  while (seq.generated.length < 10) {
    const out = await engine.step([seq.next(Infinity, { topN: 3 })]);
    seq.accept(out[0]!.token);
    sampledLogprobs.push(out[0]!.logprob!);
    t.equal(out[0]!.topIds![0], out[0]!.token, "the greedy token is the most likely");
    t.equal(out[0]!.topLogprobs![0], out[0]!.logprob);
  }
  engine.release([500]);

  const whole = new Seq(501, full, new BlockAllocator().take(64));
  const out = (await engine.step([whole.next(Infinity, { promptLogprobs: true, sample: false })]))[0]!;
  engine.release([501]);
  const lps = Array.from(out.promptLogprobs!);
  t.equal(lps.length, full.length);
  t.ok(Number.isNaN(lps[0]), "NaN for position 0");
  t.ok(lps.slice(1).every((x) => Number.isFinite(x) && x <= 0), "finite and at most 0");
  const generatedPart = lps.slice(ref.prompt_token_ids.length);
  generatedPart.forEach((lp, i) => t.ok(Math.abs(lp - sampledLogprobs[i]!) < 1e-4, `token ${i}: ${lp} vs ${sampledLogprobs[i]}`));

  // In chunks: the first token of each later chunk gets its logprob from the previous chunk.
  const chunked = new Seq(502, full, new BlockAllocator().take(64));
  const pieces: number[] = [];
  while (chunked.position < full.length) {
    const o = (await engine.step([chunked.next(4, { promptLogprobs: true, sample: false })]))[0]!;
    pieces.push(...o.promptLogprobs!);
  }
  engine.release([502]);
  t.ok(Number.isNaN(pieces[0]));
  pieces.slice(1).forEach((lp, i) => t.ok(Math.abs(lp - lps[i + 1]!) < 1e-5, `chunked token ${i + 1}`));
});

t.test("errors reject cleanly and leave the engine usable", async (t) => {
  const dir = t.testdir({ "config.json": readFileSync(join(modelDir, "config.json"), "utf8") });
  await t.rejects(native.loadEngine(options({ modelDir: dir })), /model\.safetensors/);
  t.throws(() => native.loadEngine({ ...options(), blockSize: "16" } as unknown as EngineOptions), TypeError);
  // --cuda-graphs reaches the engine as batch sizes; nonsense is refused before anything loads.
  t.throws(() => native.loadEngine(options({ cudaGraphs: [1, 0] })), { message: "options.cudaGraphs must hold batch sizes from 1 to 4096" });
  t.throws(() => native.loadEngine(options({ cudaGraphs: "1,2" as unknown as number[] })), { message: /options.cudaGraphs must be an Int32Array/ });
  await t.rejects(native.loadEngine(options({ config: { ...config, numKvHeads: 3 } })), /num_attention_heads 8/);

  const ref = references[0]!;
  const seq = new Seq(600, ref.prompt_token_ids, Int32Array.from([64]));
  await t.rejects(engine.step([seq.next()]), /KV block 64 is out of range \[0, 64\)/);
  await t.rejects(
    engine.step([{ id: 601, tokens: Int32Array.from([1]), position: 0, blocks: Int32Array.from([1]), sample: true, topN: 0, promptLogprobs: false }]),
    /sequence 601: unknown/,
  );
  await t.rejects(engine.step([{ ...new Seq(602, [1, 9999], Int32Array.from([1])).next() }]), /token id 9999/);
  await t.rejects(engine.step([{ ...new Seq(603, [1, 2, 3], Int32Array.from([])).next() }]), /need 1 KV blocks, got 0/);
  t.throws(() => engine.step([{ id: 1 } as unknown as StepSequence]), TypeError);
  t.throws(() => engine.allocateKvCache(0), TypeError);

  const tokens = await runAlone(engine, 604, ref.prompt_token_ids, 8);
  t.same(tokens, ref.greedy_token_ids.slice(0, 8), "still decodes correctly");
});

t.test("close() while a step runs", async (t) => {
  const other = await native.loadEngine(options());
  other.allocateKvCache(16);
  const ref = references[0]!;
  const running = other.step([new Seq(700, ref.prompt_token_ids, Int32Array.from([1])).next()]);
  const queued = other.step([new Seq(701, ref.prompt_token_ids, Int32Array.from([2])).next()]);
  const queuedRejects = t.rejects(queued, /closed/, "the queued step is rejected");
  other.close();
  const out = await running;
  t.equal(out[0]!.token, ref.greedy_token_ids[0], "the step in flight completes");
  await queuedRejects;
  t.throws(() => other.step([]), /closed/);
  t.throws(() => other.info(), /closed/);
});

// Two ranks in two processes through the shared-memory communicator.
const rankScript = `
import { createRequire } from "node:module";
const [addon, optionsJson, promptJson, count] = process.argv.slice(1);
const native = createRequire(import.meta.url)(addon);
const engine = await native.loadEngine(JSON.parse(optionsJson));
engine.allocateKvCache(8);
const prompt = JSON.parse(promptJson);
const params = ${JSON.stringify(greedy)};
const blocks = Int32Array.from([1, 2, 3, 4, 5]);
let out = await engine.step([{ id: 1, tokens: Int32Array.from(prompt), position: 0, blocks, sample: true, topN: 0,
  promptLogprobs: false, init: { params, prefix: new Int32Array(0) } }]);
const tokens = [out[0].token];
while (tokens.length < Number(count)) {
  out = await engine.step([{ id: 1, tokens: Int32Array.from([tokens.at(-1)]), position: prompt.length + tokens.length - 1,
    blocks, sample: true, topN: 0, promptLogprobs: false }]);
  tokens.push(out[0].token);
}
engine.close();
console.log(JSON.stringify(tokens));
`;

function runRank(rank: number, commName: string, prompt: number[], count: number): Promise<number[]> {
  const opts = options({ rank, worldSize: 2, commName, commTimeoutMs: 60_000, threads: 1 });
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", rankScript, addonPath, JSON.stringify(opts), JSON.stringify(prompt), String(count)]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => {
      if (code === 0) resolvePromise(JSON.parse(stdout.trim()) as number[]);
      else reject(new Error(`rank ${rank} exited ${code}: ${stderr}`));
    });
  });
}

t.test("two tensor-parallel ranks decode like one", async (t) => {
  const ref = references[0]!;
  const commName = `/tg-test-${process.pid}-${Date.now()}`;
  const [r0, r1] = await Promise.all([0, 1].map((rank) => runRank(rank, commName, ref.prompt_token_ids, 64)));
  t.same(r0, ref.greedy_token_ids, "rank 0 matches the reference");
  t.same(r1, r0, "both ranks sample the same tokens");
});
