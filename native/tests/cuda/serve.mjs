// The real launcher serving on the GPU, run on the GPU machine by scripts/device-run.sh
// (plain JS over dist/: the machine has node but no tsx or tap):
//
//   node native/tests/cuda/serve.mjs MODEL_DIR [launcher flags...]
//
// starts dist/launcher/main.js with --device cuda (SERVE_DEVICE=cpu to try it here; plus the given flags) on port 0,
// reports the time from spawn to "text-gen ready" and what /info says (device type,
// dtype, max total tokens), checks that /generate reproduces every reference-sample.jsonl
// greedy text (64 tokens; a stop on an end id must leave a prefix of the reference), and
// that a seeded sampling request gives the same text twice. Prints RESULT lines; exits
// non-zero on a mismatch or a launch failure.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../../..");
const [modelDir, ...extra] = process.argv.slice(2);
if (!modelDir) throw new Error("usage: serve.mjs MODEL_DIR [launcher flags...]");
const refs = readFileSync(join(modelDir, "reference-sample.jsonl"), "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));

const t0 = performance.now();
const child = spawn(process.execPath, [join(root, "dist/launcher/main.js"), "--model-id", modelDir, "--device", process.env.SERVE_DEVICE ?? "cuda",
  "--port", "0", "--hostname", "127.0.0.1", "--json-output", ...extra], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
let failed = false;
const logs = [];
const ready = new Promise((resolveReady, reject) => {
  for (const stream of [child.stdout, child.stderr]) {
    let buf = "";
    stream.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        logs.push(line);
        try {
          const v = JSON.parse(line);
          if (v.msg === "text-gen ready") resolveReady(v);
          if (/GPU memory after warm-up|KV cache allocated|loaded as bfloat16|model loaded/.test(v.msg ?? "")) console.log(`log: ${line}`);
        } catch {
          // not JSON: kept in `logs` for the failure report
        }
      }
    });
  }
  child.on("exit", (code) => reject(new Error(`launcher exited with ${code} before ready`)));
  setTimeout(() => reject(new Error("launcher not ready after 180 s")), 180_000);
});

async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

try {
  const r = await ready;
  const readyMs = performance.now() - t0;
  const url = `http://127.0.0.1:${r.port}`;
  const info = await (await fetch(`${url}/info`)).json();
  console.log(`RESULT serve launcher start to ready ${(readyMs / 1000).toFixed(2)} s; /info model_device_type ${info.model_device_type}, ` +
    `model_dtype ${info.model_dtype}, max_total_tokens ${info.max_total_tokens}, max_batch_total_tokens ${info.max_batch_total_tokens ?? "-"}`);
  if (info.model_device_type !== (process.env.SERVE_DEVICE ?? "cuda")) failed = true;
  let same = 0;
  for (const ref of refs) {
    const out = await post(`${url}/generate`, { inputs: ref.prompt, parameters: { max_new_tokens: 64, do_sample: false, details: true } });
    const ok = out.details.finish_reason === "length" ? out.generated_text === ref.greedy_text : ref.greedy_text.startsWith(out.generated_text);
    same += ok ? 1 : 0;
    console.log(`serve greedy "${ref.prompt}": ${ok ? "matches" : "DIFFERS"} (${out.details.generated_tokens} tokens, ${out.details.finish_reason})`);
    if (!ok) console.log(`  got:  ${JSON.stringify(out.generated_text)}\n  want: ${JSON.stringify(ref.greedy_text)}`);
  }
  console.log(`RESULT serve /generate greedy reproduces ${same}/${refs.length} reference texts`);
  if (same !== refs.length) failed = true;
  const seeded = { max_new_tokens: 48, do_sample: true, temperature: 0.8, top_k: 40, top_p: 0.9, seed: 7, repetition_penalty: 1.2 };
  const a = await post(`${url}/generate`, { inputs: refs[0].prompt, parameters: seeded });
  const b = await post(`${url}/generate`, { inputs: refs[0].prompt, parameters: seeded });
  console.log(`RESULT serve seeded sampling (seed 7, repetition penalty 1.2) twice: ${a.generated_text === b.generated_text ? "identical" : "DIFFERENT"}`);
  console.log(`  text: ${JSON.stringify(a.generated_text)}`);
  if (a.generated_text !== b.generated_text) failed = true;
} catch (err) {
  console.log(`serve failed: ${err.message}\n${logs.slice(-30).join("\n")}`);
  failed = true;
} finally {
  child.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 500));
}
process.exit(failed ? 1 : 0);
