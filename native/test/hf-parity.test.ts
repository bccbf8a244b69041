// The CPU engine (float32) against Hugging Face transformers (float32) on three small random
// checkpoints: Llama-3 kind with GQA and head_dim != hidden / heads, Mistral kind with a
// sliding window shorter than most prompts (prefilled in chunks that cross it), Qwen2 kind
// with q/k/v biases and tied embeddings. The goldens in tests/golden/hf/NAME/ come from
// tools/hf_parity.py on the GPU machine (tools/make-hf-goldens.sh, run by
// scripts/device-parity.sh); each records the tools/random-model.ts flags and the weights'
// sha256, so the checkpoint is rebuilt here and checked to be the one HF saw.
//
// Per model, 8 prompts of 16 to 2,000 tokens: the last position's top-20 logprobs within 1e-3
// of HF's, the centred logits over the whole vocabulary within 1e-3 (relative), and 64
// teacher-forced greedy steps (native/tests/cuda/parity.mjs) whose argmax is HF's token
// except where HF's own top-2 margin is under 1e-3 (a near-tie).
// HF_GOLDEN_DIR=DIR points the test at other goldens (a scratch run of make-hf-goldens.sh).
import t from "tap";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseRandomModelArgs, writeRandomModel } from "../../tools/random-model.js";
import { readModelConfig } from "../../shard/model-config.js";
import { loadNative } from "../index.js";
import { BLOCK, comparePrompt, describe, readGolden, runPrompts, verdict } from "../tests/cuda/parity.mjs";

const GOLDEN_ROOT = process.env.HF_GOLDEN_DIR ?? resolve(import.meta.dirname, "../../tests/golden/hf");
/** The models of tools/make-hf-goldens.sh, with the prefill chunk each runs with here. */
const MODELS: Array<[name: string, chunk: number]> = [["llama3-gqa", Infinity], ["mistral-swa", 96], ["qwen2-bias", Infinity]];
const NEAR_TIE = 1e-3;
const LOGPROB_TOL = 1e-3;
const REL_ERR_TOL = 1e-3;

const native = loadNative();

function sha256s(dir: string, files: string[]): Record<string, string> {
  return Object.fromEntries(files.map((f) => [f, createHash("sha256").update(readFileSync(join(dir, f))).digest("hex")]));
}

for (const [name, chunk] of MODELS) {
  t.test(name, async (t) => {
    const goldenDir = join(GOLDEN_ROOT, name);
    if (!existsSync(join(goldenDir, "golden.json"))) {
      t.fail(`no HF golden at ${goldenDir}/golden.json: run scripts/device-parity.sh on the GPU machine ` +
        `(it runs tools/make-hf-goldens.sh) and commit what it brings back into tests/golden/hf/`);
      return;
    }
    const { golden, logits } = readGolden(goldenDir);
    t.equal(golden.reference.library, "transformers", "the golden comes from HF transformers");
    t.equal(golden.reference.dtype, "float32");

    const dir = t.testdir({});
    const model = writeRandomModel(dir, parseRandomModelArgs([...golden.generator.args, "--out", dir]).spec);
    if (!t.same(sha256s(dir, model.files), golden.generator.sha256,
      "tools/random-model.ts rebuilds the checkpoint HF saw (if not, the generator changed: regenerate the goldens)")) return;

    const { config } = readModelConfig(dir);
    const engine = await native.loadEngine({ modelDir: dir, config, dtype: "float32", device: "cpu", rank: 0, worldSize: 1, blockSize: BLOCK, threads: 2 });
    let ours;
    try {
      ours = await runPrompts(engine, golden, { chunk });
    } finally {
      engine.close();
    }
    const vocab = golden.logits_shape[1];
    golden.prompts.forEach((hf: { length: number }, i: number) => {
      const c = comparePrompt(hf, ours[i], logits ? logits.subarray(i * vocab, (i + 1) * vocab) : null);
      t.comment(describe(name, `cpu/float32${Number.isFinite(chunk) ? ` chunk ${chunk}` : ""}`, i, hf, c));
      t.ok(c.top20Diff <= LOGPROB_TOL, `prompt ${i} (${hf.length} tok): top-20 logprobs within ${LOGPROB_TOL} of HF's (max diff ${c.top20Diff.toExponential(2)})`);
      if (c.relErr !== null) t.ok(c.relErr <= REL_ERR_TOL, `prompt ${i}: centred logits rel err ${c.relErr.toExponential(2)} <= ${REL_ERR_TOL}`);
      t.same(c.mismatches.filter((m: { hfMargin: number }) => m.hfMargin >= NEAR_TIE), [],
        `prompt ${i}: greedy argmax is HF's token at all ${golden.steps} steps but near-ties (HF margin < ${NEAR_TIE})`);
    });
  });
}

// parity.mjs's pass/fail on the GPU machine: a fixed bar, raised to transformers' own error in the
// same dtype where the golden holds that run (the bf16 rows of run 143, session 18, as numbers).
t.test("parity verdict: the fixed bar, or transformers' own in the same dtype", async (t) => {
  const row = (relErr: number, ...margins: number[]) => ({
    relErr, top20Diff: 0, matches: 64 - margins.length, mismatches: margins.map((hfMargin) => ({ hfMargin })),
  });
  const bars = { maxRelErr: 2e-2, tieMargin: 0.05 };
  const bf16 = [row(5.99e-2, 0.0203, 0.138), row(4.4e-2, 0.048)];
  const plain = verdict(bf16, null, bars);
  t.notOk(plain.ok, "without a control, bf16's rounding fails the fixed bar");
  t.equal(plain.badTokens.length, 1, "one part at a margin of 0.05 or more");
  t.equal(plain.matches, 125);
  const hfOwn = [{ rel_err: 1.1e-1, max_margin_parted: 0.32 }, { rel_err: 8e-2, max_margin_parted: 0.1 }];
  const raised = verdict(bf16, hfOwn, bars);
  t.ok(raised.ok, "no worse than transformers' own bf16: passes");
  t.equal(raised.relErrLimit, 1.1e-1);
  t.equal(raised.partLimit, 0.32);
  t.notOk(verdict([row(1.2e-1)], hfOwn, bars).ok, "a logits error past transformers' own fails");
  t.notOk(verdict([row(1e-2, 0.4)], hfOwn, bars).ok, "a part at a margin wider than any of transformers' own fails");
  const tight = [{ rel_err: 1e-3, max_margin_parted: 0.01 }];
  t.notOk(verdict(bf16, tight, bars).ok, "a control better than the fixed bar never lowers it");
  t.ok(verdict([row(1.5e-2, 0.04)], tight, bars).ok, "within the fixed bar passes whatever the control");
});
