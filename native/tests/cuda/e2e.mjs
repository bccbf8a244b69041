// End-to-end checks of the CUDA backend through the Node-API addon, run on the GPU
// machine by scripts/device-run.sh (plain JS: the machine has node but no tsx).
//
//   node native/tests/cuda/e2e.mjs stories MODEL_DIR
//     stories260k greedy, 64 tokens per reference-sample.jsonl line, all lines batched
//     together, on cpu/float32 and cuda/bfloat16 and cuda/float16: matching tokens.
//   node native/tests/cuda/e2e.mjs sampler MODEL_DIR
//     the GPU sampler wired into the step (cuda/bfloat16, stories260k's reference prompts,
//     48 tokens each, batched): a seeded sampling request twice (must be identical), and
//     the device sampler against the host sampler over the same GPU logits (topN 21 is
//     above the GPU sampler's limit, so those steps fall back to the CPU sampler) for
//     seeded draws, penalties (repetition, frequency, presence), and penalties with the
//     sampler switching between device and host every other step (the device counts
//     refilled from the sequence's history after each host step).
//   node native/tests/cuda/e2e.mjs logits MODEL_DIR...
//     each model's last-position distribution on cuda (bf16, fp16) against the CPU
//     backend (float32) for prompts of several lengths, some prefilled in chunks:
//     relative L2 error of the centred logits (log-softmax over the whole vocabulary,
//     through topN = vocab, minus its mean: the logits up to their softmax-invariant
//     shift), plus greedy agreement over 32 steps.
//
//   node native/tests/cuda/e2e.mjs bench MODEL_DIR
//     timings on cuda/bfloat16 (meant for the Llama-3-8B shape): load time; one prefill
//     step of 1k, 4k and 8k tokens (TFLOP/s over the GEMM and causal-attention FLOPs);
//     whole decode steps (GPU sampling included) at batch 1, 16, 64, 256 after 1k-token
//     prompts (ms/step, tokens/s, and for batch 1 the weight bytes streamed per second),
//     with decode CUDA graphs and without.
//
// Prints one "RESULT ..." line per figure. Exits non-zero when the CPU backend misses a
// stories260k reference token or a centred-logit error passes 3e-2 (bf16) / 1e-2 (fp16);
// GPU token matches are reported, not enforced (bf16 may part at near-ties).
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../../..");
const addon = process.env.TEXT_GEN_NATIVE_ADDON ?? join(root, "native/build/Release/text_gen_engine.node");
const native = createRequire(import.meta.url)(addon);
const { readModelConfig } = await import(join(root, "dist/shard/model-config.js"));

const BLOCK = 16;
const greedy = { temperature: 1, topK: 0, topP: 1, typicalP: 1, doSample: false, seed: 0, repetitionPenalty: 1, frequencyPenalty: 0 };
let failed = false;

async function load(modelDir, device, dtype) {
  const { config } = readModelConfig(modelDir);
  const engine = await native.loadEngine({ modelDir, config, dtype, device, rank: 0, worldSize: 1, blockSize: BLOCK, threads: 8 });
  engine.allocateKvCache(4096);
  return { engine, config };
}

/** Runs sequences together: prompts (in chunks of `chunk` tokens), then greedy decodes. */
async function generate(engine, prompts, steps, { chunk = Infinity, topN = 0, ahead = false } = {}) {
  let nextBlock = 1;
  const seqs = prompts.map((prompt, i) => {
    const nBlocks = Math.ceil((prompt.length + steps) / BLOCK);
    const blocks = Int32Array.from({ length: nBlocks }, (_, j) => nextBlock + j);
    nextBlock += nBlocks;
    return { id: 1000 + i, prompt, blocks, position: 0, generated: [], margins: [], firstTop: null, started: false };
  });
  while (seqs.some((s) => s.generated.length < steps)) {
    const active = seqs.filter((s) => s.generated.length < steps);
    const inputs = active.map((s) => {
      let tokens, sample = true;
      if (s.position < s.prompt.length) {
        tokens = s.prompt.slice(s.position, s.position + chunk);
        sample = s.position + tokens.length === s.prompt.length;
      } else {
        tokens = [s.generated[s.generated.length - 1]];
      }
      const input = { id: s.id, tokens: Int32Array.from(tokens), position: s.position, blocks: s.blocks, sample, topN: s.firstTop ? Math.min(topN, 2) : topN, promptLogprobs: false };
      if (!s.started) input.init = { params: greedy, prefix: new Int32Array(0) };
      s.started = true;
      s.position += tokens.length;
      return input;
    });
    const outputs = await engine.step(inputs, { ahead });
    outputs.forEach((out, i) => {
      const s = active[i];
      if (!inputs[i].sample) return;
      if (!s.firstTop && topN > 0) s.firstTop = { ids: out.topIds, logprobs: out.topLogprobs };
      if (topN > 0) s.margins.push(out.topLogprobs[0] - out.topLogprobs[1]);  // top-2 logprob gap
      s.generated.push(out.token);
    });
  }
  engine.release(seqs.map((s) => s.id));
  return seqs;
}

function agreement(a, b) {
  let same = 0, firstDiff = -1;
  for (let i = 0; i < a.length; ++i) {
    if (a[i] === b[i]) ++same;
    else if (firstDiff < 0) firstDiff = i;
  }
  return { same, firstDiff };
}

/** Dense log-softmax vector from topN = vocab output, centred (mean removed). */
function centred(top, vocab) {
  const v = new Float64Array(vocab);
  top.ids.forEach((id, i) => (v[id] = top.logprobs[i]));
  const mean = v.reduce((a, b) => a + b, 0) / vocab;
  return v.map((x) => x - mean);
}

function relError(got, want) {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; ++i) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

async function stories(modelDir) {
  const refs = readFileSync(join(modelDir, "reference-sample.jsonl"), "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  for (const [device, dtype] of [["cpu", "float32"], ["cuda", "bfloat16"], ["cuda", "float16"]]) {
    const { engine } = await load(modelDir, device, dtype);
    const t0 = performance.now();
    const seqs = await generate(engine, refs.map((r) => r.prompt_token_ids), 64);
    const ms = performance.now() - t0;
    // Steps run ahead (Engine::Step's ahead) must give the same tokens as steps one by one.
    const ahead = await generate(engine, refs.map((r) => r.prompt_token_ids), 64, { ahead: true });
    const aheadSame = ahead.reduce((n, s, i) => n + agreement(s.generated, seqs[i].generated).same, 0);
    console.log(`RESULT stories260k ${device}/${dtype} steps run ahead: ${aheadSame}/${64 * seqs.length} tokens as without`);
    if (aheadSame !== 64 * seqs.length) failed = true;
    engine.close();
    let total = 0;
    seqs.forEach((s, i) => {
      const { same, firstDiff } = agreement(s.generated, refs[i].greedy_token_ids);
      total += same;
      console.log(`stories260k ${device}/${dtype} line ${i}: ${same}/64 match${firstDiff >= 0 ? ` (first differs at ${firstDiff})` : ""}`);
    });
    console.log(`RESULT stories260k ${device}/${dtype} matching ${total}/${64 * seqs.length} tokens (${refs.length} lines batched, ${ms.toFixed(0)} ms)`);
    if (device === "cpu" && total !== 64 * seqs.length) failed = true;
  }
}

/** Runs sequences with their own params; topNAt(step) picks topN per decode step (21: host sampler). */
async function sampleRun(engine, prompts, steps, paramsOf, topNAt = () => 0, ahead = false) {
  let nextBlock = 1;
  const seqs = prompts.map((prompt, i) => {
    const nBlocks = Math.ceil((prompt.length + steps) / BLOCK);
    const blocks = Int32Array.from({ length: nBlocks }, (_, j) => nextBlock + j);
    nextBlock += nBlocks;
    return { id: 5000 + i, prompt, blocks, generated: [] };
  });
  for (let step = 0; step < steps; ++step) {
    const inputs = seqs.map((s, i) => {
      const first = step === 0;
      const input = {
        id: s.id, tokens: Int32Array.from(first ? s.prompt : [s.generated.at(-1)]), position: first ? 0 : s.prompt.length + step - 1,
        blocks: s.blocks, sample: true, topN: topNAt(step), promptLogprobs: false,
      };
      if (first) input.init = { params: paramsOf(i), prefix: new Int32Array(0) };
      return input;
    });
    const outputs = await engine.step(inputs, { ahead });
    outputs.forEach((o, i) => seqs[i].generated.push(o.token));
  }
  engine.release(seqs.map((s) => s.id));
  return seqs.map((s) => s.generated);
}

async function sampler(modelDir) {
  const refs = readFileSync(join(modelDir, "reference-sample.jsonl"), "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  const prompts = refs.map((r) => r.prompt_token_ids);
  const steps = 48;
  const { engine } = await load(modelDir, "cuda", "bfloat16");
  const seeded = (i) => ({ ...greedy, doSample: true, temperature: 0.8, topK: 40, topP: 0.9, seed: 1234 + i });
  const penalised = (i) => ({ ...greedy, repetitionPenalty: 1.3, frequencyPenalty: 0.2, presencePenalty: 0.3, seed: i });
  const both = (i) => ({ ...seeded(i), repetitionPenalty: 1.2, presencePenalty: 0.5 });
  const compare = (name, a, b, enforce) => {
    const parts = a.map((g, i) => agreement(g, b[i]));
    const same = parts.reduce((n, p) => n + p.same, 0);
    const firsts = parts.map((p) => (p.firstDiff < 0 ? "-" : p.firstDiff)).join(" ");
    console.log(`RESULT sampler ${name}: ${same}/${steps * a.length} tokens equal (first difference per line: ${firsts})`);
    if (enforce && same !== steps * a.length) failed = true;
  };
  const runA = await sampleRun(engine, prompts, steps, seeded);
  const runB = await sampleRun(engine, prompts, steps, seeded);
  compare("seeded (temperature 0.8, top-k 40, top-p 0.9) run 1 vs run 2, device sampler", runA, runB, true);
  compare("seeded, steps run ahead vs one by one", await sampleRun(engine, prompts, steps, seeded, () => 0, true), runA, true);
  compare("seeded + penalties, ahead asked (never runs ahead) vs one by one",
    await sampleRun(engine, prompts, steps, both, () => 0, true), await sampleRun(engine, prompts, steps, both), true);
  compare("seeded, ahead asked with top-n changing every other step vs one by one",
    await sampleRun(engine, prompts, steps, seeded, (k) => (k % 2 ? 3 : 0), true), runA, true);
  compare("seeded, device vs host sampler", runA, await sampleRun(engine, prompts, steps, seeded, () => 21), false);
  compare("penalties greedy, device vs host sampler", await sampleRun(engine, prompts, steps, penalised),
    await sampleRun(engine, prompts, steps, penalised, () => 21), false);
  compare("seeded + penalties, device vs host sampler", await sampleRun(engine, prompts, steps, both),
    await sampleRun(engine, prompts, steps, both, () => 21), false);
  compare("seeded + penalties, device/host alternating vs host", await sampleRun(engine, prompts, steps, both, (k) => (k % 2 ? 21 : 0)),
    await sampleRun(engine, prompts, steps, both, () => 21), false);
  const greedyRuns = await sampleRun(engine, prompts, steps, () => greedy);
  compare("greedy, device vs host sampler", greedyRuns, await sampleRun(engine, prompts, steps, () => greedy, () => 21), false);
  engine.close();
}

async function logits(modelDirs) {
  for (const modelDir of modelDirs) {
    const name = modelDir.split("/").filter(Boolean).pop();
    const lengths = [1, 7, 16, 17, 100, 333];
    const cpu = await load(modelDir, "cpu", "float32");
    const vocab = cpu.config.vocabSize;
    const prompts = lengths.map((n, i) => Array.from({ length: n }, (_, j) => (j * 7919 + i * 104729 + 13) % vocab));
    const ref = await generate(cpu.engine, prompts, 32, { topN: vocab });
    cpu.engine.close();
    for (const dtype of ["bfloat16", "float16"]) {
      const gpu = await load(modelDir, "cuda", dtype);
      for (const chunk of [Infinity, 24]) {
        const got = await generate(gpu.engine, prompts, 32, { topN: vocab, chunk });
        // The same with steps run ahead (prompts finish prefill at different steps; topN
        // drops from the whole vocabulary, sampled on the host, to 2 after the first token).
        const ahead = await generate(gpu.engine, prompts, 32, { topN: vocab, chunk, ahead: true });
        const aheadSame = ahead.reduce((n, s, i) => n + agreement(s.generated, got[i].generated).same, 0);
        console.log(`RESULT ${name} cuda/${dtype} chunk ${chunk}: steps run ahead ${aheadSame}/${32 * prompts.length} tokens as without`);
        if (aheadSame !== 32 * prompts.length) failed = true;
        const errs = got.map((s, i) => relError(centred(s.firstTop, vocab), centred(ref[i].firstTop, vocab)));
        const agree = got.map((s, i) => agreement(s.generated, ref[i].generated));
        // Where greedy parts from the CPU, the CPU's own top-2 margin at that step (a near-tie?).
        const partings = agree.map((a, i) => (a.firstDiff < 0 ? "" : `prompt ${lengths[i]} at step ${a.firstDiff} (cpu top-2 margin ${ref[i].margins[a.firstDiff].toExponential(1)})`)).filter(Boolean);
        const maxErr = Math.max(...errs);
        const tol = dtype === "bfloat16" ? 3e-2 : 1e-2;
        console.log(`RESULT ${name} cuda/${dtype} chunk ${chunk}: centred-logit rel err max ${maxErr.toExponential(2)} ` +
          `[${errs.map((e) => e.toExponential(1)).join(" ")}] over prompt lengths [${lengths.join(" ")}]; ` +
          `greedy 32-step agreement [${agree.map((a) => a.same).join(" ")}]${partings.length ? "; parts: " + partings.join(", ") : ""}`);
        if (!(maxErr <= tol)) failed = true;
      }
      // Quick timing: batched greedy decode steps.
      for (const batch of [1, 16, 64]) {
        const ps = Array.from({ length: batch }, (_, i) => prompts[i % prompts.length]);
        await generate(gpu.engine, ps, 4);  // warm-up (GEMM plans, buffers)
        const t0 = performance.now();
        const steps = 64;
        await generate(gpu.engine, ps, steps);
        const ms = performance.now() - t0;
        console.log(`RESULT ${name} cuda/${dtype} batch ${batch}: ${(ms / steps).toFixed(2)} ms/step incl. prefill (${steps} steps, ${(batch * steps / ms * 1000).toFixed(0)} tok/s)`);
      }
      gpu.engine.close();
    }
  }
}

async function bench(modelDir) {
  const { config } = readModelConfig(modelDir);
  const contextBlocks = Math.ceil((1024 + 64) / BLOCK);
  const kvBlocks = 256 * contextBlocks + 8;
  const open = async (cudaGraphs) => {
    const t0 = performance.now();
    const engine = await native.loadEngine({ modelDir, config, dtype: "bfloat16", device: "cuda", rank: 0, worldSize: 1, blockSize: BLOCK, ...(cudaGraphs ? {} : { cudaGraphs: [] }) });
    const loadMs = performance.now() - t0;
    engine.allocateKvCache(kvBlocks);
    return { engine, loadMs };
  };
  let { engine, loadMs } = await open(true);
  const info = engine.info();
  console.log(`RESULT bench load ${(loadMs / 1000).toFixed(1)} s, weights ${(info.weightBytes / 2 ** 30).toFixed(2)} GiB, KV ${(kvBlocks * info.kvBytesPerBlock / 2 ** 30).toFixed(1)} GiB`);
  const c = config, d = c.headDim;
  const layerParams = c.hiddenSize * (c.numHeads + 2 * c.numKvHeads) * d + c.numHeads * d * c.hiddenSize + 3 * c.hiddenSize * c.intermediateSize;
  const tokens = (n, salt) => Array.from({ length: n }, (_, j) => (j * 7919 + salt * 104729 + 13) % c.vocabSize);
  let id = 1;
  const seqOf = (prompt, firstBlock) => ({ id: id++, prompt, blocks: Int32Array.from({ length: contextBlocks * Math.ceil(prompt.length / 1024) }, (_, j) => firstBlock + j) });
  const stepOf = (s, tokens, position, sample) => ({ id: s.id, tokens: Int32Array.from(tokens), position, blocks: s.blocks, sample, topN: 0, promptLogprobs: false, init: position === 0 ? { params: greedy, prefix: new Int32Array(0) } : undefined });

  // E2E_BENCH=decode: graph decode steps only (for quick A/B runs of a switch such as TEXT_GEN_PDL);
  // E2E_BENCH=prefill: the prefills only; E2E_BATCHES=1,16: those decode batch sizes only;
  // E2E_STEPS: decode steps per batch size (default 20). E2E_LABEL names the run's switches
  // in its result lines (device-run.sh's envsets, pdlsets and prefill).
  const decodeOnly = process.env.E2E_BENCH === "decode";
  const label = process.env.E2E_LABEL ? `, ${process.env.E2E_LABEL}` : "";
  // E2E_AB="K=V ...": each prefill size also runs with those variables set (the engine reads
  // them at every step), alternating with the plain runs, 5 of each: under the GPU's power
  // cap consecutive runs drift, which would favour whichever variant went first.
  const ab = process.env.E2E_AB ? process.env.E2E_AB.split(" ").map((kv) => kv.split("=")) : null;
  const setAb = (on) => {
    for (const [k, v] of ab ?? []) {
      if (on) process.env[k] = v;
      else delete process.env[k];
    }
  };
  for (const n of decodeOnly ? [] : [1024, 4096, 8192]) {
    const times = [[], []];
    const variants = ab ? 2 : 1;
    for (let rep = 0; rep < (ab ? 6 : 3); ++rep) {  // the first run plans the GEMMs and grows the buffers
      for (let v = 0; v < variants; ++v) {
        setAb(v === 1);
        const s = seqOf(tokens(n, rep), 1);
        const t = performance.now();
        await engine.step([stepOf(s, s.prompt, 0, true)]);
        times[v].push(performance.now() - t);
        engine.release([s.id]);
      }
    }
    setAb(false);
    // Causal attention: n(n+1)/2 query-key pairs, 4·d FLOPs each (QKᵀ and PV).
    const flops = 2 * n * layerParams * c.numLayers + 2 * n * (n + 1) * d * c.numHeads * c.numLayers + 2 * c.hiddenSize * c.vocabSize;
    for (let v = 0; v < variants; ++v) {
      const ms = Math.min(...times[v].slice(1));
      const which = v === 1 ? `, ${process.env.E2E_AB}` : label;
      console.log(`RESULT bench prefill ${n} tokens${which}: ${ms.toFixed(1)} ms, ${(flops / ms / 1e9).toFixed(0)} TFLOP/s (runs ${times[v].map((x) => x.toFixed(0)).join(" ")} ms)`);
    }
  }

  // Whole decode steps (forward, lm_head, GPU sampling, tokens back), with the decode
  // CUDA graphs and then without them (a second engine): steps 0 and 1 of each batch
  // size are left out (the eager first use and the capture).
  const decode = async (label) => {
    const batches = process.env.E2E_BATCHES ? process.env.E2E_BATCHES.split(",").map(Number) : [1, 16, 64, 256];
    const steps = Number(process.env.E2E_STEPS ?? 20);  // timed steps per batch size (the first two are left out)
    for (const batch of batches) {
      const seqs = Array.from({ length: batch }, (_, i) => seqOf(tokens(1024, i), 1 + i * contextBlocks));
      const last = new Map();
      for (let i = 0; i < batch; i += 8) {  // prefill in steps of at most 8 prompts (8k tokens)
        const group = seqs.slice(i, i + 8);
        const outs = await engine.step(group.map((s) => stepOf(s, s.prompt, 0, true)));
        outs.forEach((o) => last.set(o.id, o.token));
      }
      let position = 1024;
      // E2E_AHEAD=1: the same steps again, each starting the next on the device before
      // its own tokens come back (Engine::Step's ahead), as the shard runs them.
      for (const ahead of process.env.E2E_AHEAD === "1" ? [false, true] : [false]) {
        const times = [];
        for (let k = 0; k < steps; ++k) {
          const t = performance.now();
          const outs = await engine.step(seqs.map((s) => stepOf(s, [last.get(s.id)], position, true)), { ahead });
          times.push(performance.now() - t);
          ++position;
          outs.forEach((o) => last.set(o.id, o.token));
        }
        const sorted = times.slice(2).sort((a, b) => a - b);
        const ms = sorted[Math.floor(sorted.length / 2)];
        const gbs = batch === 1 ? `, ${(info.weightBytes / ms / 1e6).toFixed(0)} GB/s of weights` : "";
        console.log(`RESULT bench decode ${label}${ahead ? ", ahead" : ""} batch ${batch} at 1k context: ${ms.toFixed(2)} ms/step median, ${(batch / ms * 1000).toFixed(0)} tok/s${gbs}`);
      }
      engine.release(seqs.map((s) => s.id));
    }
  };
  if (process.env.E2E_BENCH === "prefill") {
    engine.close();
    return;
  }
  await decode(label ? `graphs${label},` : "graphs");
  engine.close();
  if (decodeOnly) return;
  ({ engine } = await open(false));
  await decode("eager");
  engine.close();
}

const [mode, ...dirs] = process.argv.slice(2);
if (!native.hasCuda() || native.cudaDeviceCount() === 0) {
  console.log(`skipped: hasCuda ${native.hasCuda()}, devices ${native.cudaDeviceCount()}`);
  process.exit(0);
}
if (mode === "stories") await stories(dirs[0]);
else if (mode === "logits") await logits(dirs);
else if (mode === "sampler") await sampler(dirs[0]);
else if (mode === "bench") await bench(dirs[0]);
else throw new Error("usage: e2e.mjs stories DIR | sampler DIR | logits DIR... | bench DIR");
process.exit(failed ? 1 : 0);
