// Parity of the engine with Hugging Face transformers (float32) on the prompts of a golden
// written by tools/hf_parity.py. Run on the GPU machine by scripts/device-parity.sh (plain JS:
// the machine has node but no tsx); native/test/hf-parity.test.ts imports the comparison for CI.
//
//   node native/tests/cuda/parity.mjs MODEL_DIR GOLDEN_DIR [--device cuda|cpu]
//     [--dtype bfloat16,float16] [--chunk N] [--world-size N] [--max-rel-err 2e-2]
//     [--tie-margin 0.05] [--name NAME]
//
// All prompts run batched. Step 0 prefills each prompt (in chunks of --chunk tokens if given)
// and takes the whole last-position distribution (topN = vocab: log-softmax). Steps 1..63 are
// teacher-forced: each feeds HF's greedy token of the step before, so every one of the 64
// steps compares our argmax with HF's, also after a near-tie. Up to the first difference this
// is the free-running greedy sequence, so "first diff at k" is where free-running greedy parts.
//
// Measures, per prompt:
//   logits rel err  ||c(ours) - c(hf)|| / ||c(hf)|| over the whole vocabulary, c = centred
//                   (mean removed): our log-softmax against HF's logits, so the error of the
//                   logits up to their softmax-invariant shift (the engine hands out
//                   log-softmax, not raw logits); without HF's logits file, top-20 only.
//   top-20 diff     max |our logprob - HF's| over HF's 20 most likely ids.
//   greedy N/64     steps whose argmax equals HF's token; at the first that does not, HF's
//                   top-2 margin (log-softmax top1 - top2).
// Fails (exit 1) when a rel err (without a logits file: the top-20 diff) passes --max-rel-err,
// or when a step's argmax differs from HF's where HF's own margin is at least --tie-margin
// (0.05 by default: bf16 rounding moves logits by a few 1e-2, so only a gap that wide is
// a real difference; CI's float32 test uses 1e-3). Where the golden holds transformers' own
// run in the dtype (hf_parity.py --control-dtype), its error and parted margins raise both bars
// (verdict).
// --world-size N > 1 starts ranks 1..N-1 as child processes (CPU: shared-memory communicator;
// CUDA: NCCL, one GPU per rank) that run the same steps; rank 0 reports.
import { createRequire } from "node:module";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const BLOCK = 16;
const greedy = { temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 0, repetitionPenalty: 1, frequencyPenalty: 0 };

/** golden.json and, when the golden has one, its last-position logits (prompts x vocab). */
export function readGolden(goldenDir) {
  const path = join(goldenDir, "golden.json");
  if (!existsSync(path)) throw new Error(`${path} is missing: make it with tools/hf_parity.py (scripts/device-parity.sh on the GPU machine)`);
  const golden = JSON.parse(readFileSync(path, "utf8"));
  let logits = null;
  if (golden.logits_file && existsSync(join(goldenDir, golden.logits_file))) {
    const buf = readFileSync(join(goldenDir, golden.logits_file));
    const [rows, vocab] = golden.logits_shape;
    if (buf.length !== rows * vocab * 4) throw new Error(`${golden.logits_file}: ${buf.length} bytes, expected ${rows} x ${vocab} float32`);
    logits = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  }
  return { golden, logits };
}

/**
 * Runs the golden's prompts through the engine (KV cache allocated here): per prompt the dense
 * last-position log-softmax, and the argmax and top-2 margin of each teacher-forced step.
 */
export async function runPrompts(engine, golden, { chunk = Infinity } = {}) {
  const vocab = golden.logits_shape[1];
  const steps = golden.steps;
  let nextBlock = 1;
  const seqs = golden.prompts.map((p, i) => {
    const nBlocks = Math.ceil((p.ids.length + steps) / BLOCK);
    const blocks = Int32Array.from({ length: nBlocks }, (_, j) => nextBlock + j);
    nextBlock += nBlocks;
    return { id: 100 + i, prompt: p.ids, hf: p.greedy, blocks, position: 0, logprobs: null, tokens: [], margins: [] };
  });
  engine.allocateKvCache(nextBlock);
  for (let active = seqs; active.length > 0; active = seqs.filter((s) => s.tokens.length < steps)) {
    const inputs = active.map((s) => {
      const prefill = s.position < s.prompt.length;
      // Decode steps feed HF's token of the step before (teacher forcing).
      const tokens = prefill ? s.prompt.slice(s.position, s.position + chunk) : [s.hf[s.tokens.length - 1]];
      const input = {
        id: s.id, tokens: Int32Array.from(tokens), position: s.position, blocks: s.blocks,
        sample: !prefill || s.position + tokens.length === s.prompt.length,
        topN: s.logprobs ? 2 : vocab, promptLogprobs: false,
      };
      if (s.position === 0) input.init = { params: greedy, prefix: new Int32Array(0) };
      s.position += tokens.length;
      return input;
    });
    const outputs = await engine.step(inputs);
    outputs.forEach((out, i) => {
      const s = active[i];
      if (!inputs[i].sample) return;
      if (!s.logprobs) {
        s.logprobs = new Float64Array(vocab).fill(-Infinity);
        out.topIds.forEach((id, k) => (s.logprobs[id] = out.topLogprobs[k]));
      }
      s.tokens.push(out.token);
      s.margins.push(out.topLogprobs[0] - out.topLogprobs[1]);
    });
  }
  engine.release(seqs.map((s) => s.id));
  return seqs.map(({ logprobs, tokens, margins }) => ({ logprobs, tokens, margins }));
}

/** Relative L2 error of the centred vectors (each minus its mean): logits up to a shift. */
export function centredRelError(ours, theirs) {
  const n = theirs.length;
  let mo = 0, mt = 0;
  for (let i = 0; i < n; ++i) { mo += ours[i]; mt += theirs[i]; }
  mo /= n; mt /= n;
  let num = 0, den = 0;
  for (let i = 0; i < n; ++i) {
    num += (ours[i] - mo - (theirs[i] - mt)) ** 2;
    den += (theirs[i] - mt) ** 2;
  }
  return Math.sqrt(num / den);
}

/** One prompt's comparison; hfLogits: HF's last-position logits row, or null. */
export function comparePrompt(hf, ours, hfLogits) {
  const top20Diff = Math.max(...hf.top20.ids.map((id, k) => Math.abs(ours.logprobs[id] - hf.top20.logprobs[k])));
  const relErr = hfLogits ? centredRelError(ours.logprobs, hfLogits) : null;
  const mismatches = [];
  hf.greedy.forEach((tok, k) => {
    if (ours.tokens[k] !== tok) mismatches.push({ step: k, hfMargin: hf.margins[k], ours: ours.tokens[k], hf: tok, ourMargin: ours.margins[k] });
  });
  return {
    relErr, top20Diff, mismatches, matches: hf.greedy.length - mismatches.length,
    worstMismatchMargin: Math.max(0, ...mismatches.map((m) => m.hfMargin)),
  };
}

/**
 * Whether a dtype's rows pass. The bar is --max-rel-err and --tie-margin, or, where the golden
 * holds transformers' own run in this dtype (hf_parity.py --control-dtype), that run's worst
 * logits error and widest float32 margin where its argmax parted, if larger: rounding to bf16
 * alone moves these random models' logits by ~1e-1 in transformers itself, so a fixed 2e-2 bar
 * can only fail there, while "no worse than transformers in the same dtype" still can.
 * control: golden.control.prompts ({ rel_err, max_margin_parted } each) for this dtype, or null.
 */
export function verdict(rows, control, { maxRelErr, tieMargin }) {
  const relErrLimit = Math.max(maxRelErr, ...(control ?? []).map((r) => r.rel_err));
  // Transformers' own widest part (-Infinity without a control): a part at a margin that wide or
  // narrower is one transformers makes too.
  const controlPart = Math.max(-Infinity, ...(control ?? []).map((r) => r.max_margin_parted));
  const partLimit = Math.max(tieMargin, controlPart);
  const worstErr = Math.max(...rows.map((c) => c.relErr ?? c.top20Diff));
  const badTokens = rows.flatMap((c) => c.mismatches.filter((m) => m.hfMargin >= tieMargin && m.hfMargin > controlPart));
  return {
    ok: worstErr <= relErrLimit && badTokens.length === 0,
    worstErr, badTokens, relErrLimit, partLimit,
    matches: rows.reduce((a, c) => a + c.matches, 0),
  };
}

/** The RESULT line of one prompt. */
export function describe(name, label, i, hf, c) {
  const err = c.relErr === null ? "n/a (no logits file)" : c.relErr.toExponential(2);
  const first = c.mismatches[0];
  const diff = first
    ? ` (first diff at ${first.step}, HF margin ${first.hfMargin.toExponential(2)}, ours ${first.ourMargin.toExponential(2)}` +
      `${c.mismatches.length > 1 ? `; ${c.mismatches.length} diffs, largest HF margin ${c.worstMismatchMargin.toExponential(2)}` : ""})`
    : "";
  return `RESULT parity ${name} ${label} prompt ${i} (${hf.length} tok): logits rel err ${err}, top-20 logprob diff ${c.top20Diff.toExponential(2)}, ` +
    `greedy ${c.matches}/${hf.greedy.length} match${diff}`;
}

// ---- the command line ----

function parseArgs(argv) {
  const opts = { device: "cuda", dtypes: ["bfloat16", "float16"], chunk: Infinity, worldSize: 1, rank: 0, maxRelErr: 2e-2, tieMargin: 0.05, dirs: [] };
  for (let i = 0; i < argv.length; ++i) {
    const flag = argv[i], value = argv[i + 1];
    const take = () => { ++i; if (value === undefined) throw new Error(`${flag} needs a value`); return value; };
    if (flag === "--device") opts.device = take();
    else if (flag === "--dtype") opts.dtypes = take().split(",");
    else if (flag === "--chunk") opts.chunk = Number(take());
    else if (flag === "--world-size") opts.worldSize = Number(take());
    else if (flag === "--max-rel-err") opts.maxRelErr = Number(take());
    else if (flag === "--tie-margin") opts.tieMargin = Number(take());
    else if (flag === "--name") opts.name = take();
    else if (flag === "--rank") opts.rank = Number(take());          // the child ranks' own flags
    else if (flag === "--comm-name") opts.commName = take();
    else if (flag === "--nccl-id") opts.ncclId = take();
    else if (flag.startsWith("--")) throw new Error(`unknown flag ${flag}`);
    else opts.dirs.push(flag);
  }
  if (opts.dirs.length !== 2) throw new Error("usage: parity.mjs MODEL_DIR GOLDEN_DIR [--device cuda|cpu] [--dtype bfloat16,float16] [--chunk N] [--world-size N] [--max-rel-err X] [--tie-margin X]");
  return opts;
}

/** Starts ranks 1..N-1 for one dtype; resolves when they exit (rejects on a non-zero exit). */
function startRanks(opts, dtype, commName, ncclId) {
  const script = fileURLToPath(import.meta.url);
  return Array.from({ length: opts.worldSize - 1 }, (_, r) => new Promise((resolvePromise, reject) => {
    const args = [script, ...opts.dirs, "--device", opts.device, "--dtype", dtype, "--world-size", String(opts.worldSize),
      "--rank", String(r + 1), "--comm-name", commName, ...(ncclId ? ["--nccl-id", ncclId] : []),
      ...(Number.isFinite(opts.chunk) ? ["--chunk", String(opts.chunk)] : [])];
    // PARITY_GPUS="0,1": one GPU per rank (the caller starts rank 0 with CUDA_VISIBLE_DEVICES=0).
    const gpus = process.env.PARITY_GPUS?.split(",");
    const env = gpus ? { ...process.env, CUDA_VISIBLE_DEVICES: gpus[r + 1] } : process.env;
    const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"], env });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => (code === 0 ? resolvePromise() : reject(new Error(`rank ${r + 1} exited ${code}: ${stderr.slice(-2000)}`))));
  }));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const [modelDir, goldenDir] = opts.dirs;
  const root = resolve(import.meta.dirname, "../../..");
  const addon = process.env.TEXT_GEN_NATIVE_ADDON ?? join(root, "native/build/Release/text_gen_engine.node");
  const native = createRequire(import.meta.url)(addon);
  const { readModelConfig } = await import(join(root, "dist/shard/model-config.js"));
  if (opts.device === "cuda" && (!native.hasCuda() || native.cudaDeviceCount() === 0)) {
    console.log(`skipped: hasCuda ${native.hasCuda()}, devices ${native.cudaDeviceCount()}`);
    return 0;
  }
  const { golden, logits } = readGolden(goldenDir);
  const { config } = readModelConfig(modelDir);
  const name = opts.name ?? golden.model.name;
  const vocab = golden.logits_shape[1];
  if (config.vocabSize !== vocab) throw new Error(`${modelDir} has vocabulary ${config.vocabSize}, the golden ${vocab}`);
  let failed = false;
  for (const dtype of opts.dtypes) {
    const base = { modelDir, config, dtype, device: opts.device, rank: opts.rank, worldSize: opts.worldSize, blockSize: BLOCK, threads: 0 };
    let ranks = [];
    if (opts.worldSize > 1 && opts.rank === 0) {
      base.commName = `/tg-parity-${process.pid}-${dtype}`;
      if (opts.device === "cuda") base.ncclId = native.ncclUniqueId();
      ranks = startRanks(opts, dtype, base.commName, base.ncclId?.toString("hex"));
    } else if (opts.worldSize > 1) {
      base.commName = opts.commName;
      if (opts.ncclId) base.ncclId = Buffer.from(opts.ncclId, "hex");
    }
    const t0 = performance.now();
    const engine = await native.loadEngine({ ...base, commTimeoutMs: 120_000 });
    const loadS = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    const ours = await runPrompts(engine, golden, { chunk: opts.chunk });
    const runS = (performance.now() - t1) / 1000;
    engine.close();
    await Promise.all(ranks);
    if (opts.rank !== 0) continue;
    const label = `${opts.device}/${dtype}${opts.worldSize > 1 ? ` tp${opts.worldSize}` : ""}${Number.isFinite(opts.chunk) ? ` chunk ${opts.chunk}` : ""}`;
    const rows = golden.prompts.map((hf, i) => {
      const c = comparePrompt(hf, ours[i], logits ? logits.subarray(i * vocab, (i + 1) * vocab) : null);
      console.log(describe(name, label, i, hf, c));
      return c;
    });
    // What rounding to this dtype costs transformers itself on the same weights (hf_parity.py --control-dtype).
    const control = golden.control?.dtype === dtype ? golden.control.prompts : null;
    const { ok, worstErr, badTokens, matches, relErrLimit, partLimit } = verdict(rows, control, opts);
    const against = control ? `, transformers' own ${dtype}'s if larger` : "";
    console.log(`RESULT parity ${name} ${label} summary: ${ok ? "ok" : "FAIL"}, max ${logits ? "logits rel err" : "top-20 diff"} ${worstErr.toExponential(2)} ` +
      `(limit ${relErrLimit.toExponential(2)}${against}), greedy ${matches}/${rows.length * golden.steps} match, ${badTokens.length} differences past a ` +
      `near-tie (HF margin ${control ? `> ${partLimit.toExponential(2)}` : `>= ${opts.tieMargin}`}); load ${loadS.toFixed(1)} s, ${rows.length} prompts x ${golden.steps} steps ${runS.toFixed(1)} s`);
    if (control) {
      console.log(`RESULT parity ${name} ${label} HF's own ${dtype} against its float32: max logits rel err ` +
        `${Math.max(...control.map((r) => r.rel_err)).toExponential(2)}, greedy ${control.reduce((a, r) => a + golden.steps - r.parted, 0)}/` +
        `${control.length * golden.steps} match, parted at float32 margins up to ${Math.max(...control.map((r) => r.max_margin_parted)).toExponential(2)}`);
    }
    if (!ok) failed = true;
  }
  return failed ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exit(await main());
  } catch (e) {
    console.error(`parity: ${e.message ?? e}`);
    process.exit(2);
  }
}
