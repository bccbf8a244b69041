// End to end through the real launcher on the built-in stories260k model: greedy generations equal
// llama2.c's reference, streaming equals non-streaming, concurrent requests equal solo ones, and a
// client that disconnects mid-stream gives its KV blocks back.
import t from "tap";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generate, generateStream, ids, info } from "./client.js";
import { launch, sleep, STORIES } from "./harness.js";

interface Reference {
  prompt: string;
  prompt_token_ids: number[];
  greedy_token_ids: number[];
  greedy_text: string;
}

const references = readFileSync(join(STORIES, "reference-sample.jsonl"), "utf8")
  .split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Reference);
const GREEDY = { max_new_tokens: 64, details: true, do_sample: false };
const EOS = new Set([1, 2]); // generation_config.json

const server = await launch(t, { args: ["--model-id", STORIES] });

t.test("/generate reproduces the llama2.c greedy references", async (t) => {
  for (const ref of references) {
    const r = await generate(server.url, ref.prompt, GREEDY);
    const got = ids(r);
    if (r.details!.finish_reason === "eos_token") {
      // Stopped early on an end id: everything before it must still match.
      t.ok(EOS.has(got.at(-1)!), `${ref.prompt}: ends with an EOS id`);
      t.same(got.slice(0, -1), ref.greedy_token_ids.slice(0, got.length - 1), `${ref.prompt}: ids before EOS`);
      t.ok(ref.greedy_text.startsWith(r.generated_text), `${ref.prompt}: text is a prefix of the reference`);
    } else {
      t.equal(r.details!.finish_reason, "length");
      t.same(got, ref.greedy_token_ids, `${ref.prompt}: token ids`);
      t.equal(r.generated_text, ref.greedy_text, `${ref.prompt}: text`);
    }
  }
});

t.test("/generate_stream gives the same tokens", async (t) => {
  for (const ref of references) {
    const solo = await generate(server.url, ref.prompt, GREEDY);
    const events = await generateStream(server.url, ref.prompt, GREEDY);
    t.same(events.map((e) => e.token.id), ids(solo), `${ref.prompt}: streamed ids`);
    const last = events.at(-1)!;
    t.equal(last.generated_text, solo.generated_text, "final event carries the full text");
    t.equal(last.details?.finish_reason, solo.details!.finish_reason);
  }
});

t.test("8 concurrent requests each equal their solo result", async (t) => {
  const prompts = [
    ...references.map((r) => r.prompt),
    "Lily and Ben", "The dog was", "One day, a big", "Sam wanted to", "The sun",
  ];
  const params = { max_new_tokens: 48, details: true, do_sample: false };
  const solo: number[][] = [];
  for (const p of prompts) solo.push(ids(await generate(server.url, p, params)));
  const together = await Promise.all(prompts.map((p) => generate(server.url, p, params)));
  together.forEach((r, i) => t.same(ids(r), solo[i], `prompt ${JSON.stringify(prompts[i])}`));
});

t.test("a client that disconnects mid-stream is cancelled and its KV blocks freed", async (t) => {
  const before = await info(server.url);
  t.ok(before.kv_cache, "/info reports kv_cache");
  const maxNew = before.max_total_tokens - 16;
  let seen = 0;
  const started = Date.now();
  const events = await generateStream(server.url, "Once upon a time", { max_new_tokens: maxNew, do_sample: false }, () => ++seen < 3);
  const perToken = (Date.now() - started) / 3;
  // Probe right after the disconnect: the request held blocks while it ran.
  const duringFree = (await info(server.url)).kv_cache?.free_blocks;
  t.equal(events.length, 3, "stopped reading after 3 tokens");
  let after = await info(server.url);
  for (let i = 0; i < 100 && after.kv_cache!.free_blocks !== after.kv_cache!.total_blocks; i++) {
    await sleep(100);
    after = await info(server.url);
  }
  const freedAfter = Date.now() - started;
  const fullRun = perToken * maxNew;
  t.equal(after.kv_cache!.free_blocks, after.kv_cache!.total_blocks, "every block free again");
  t.comment(`free blocks right after the disconnect: ${duringFree} of ${after.kv_cache!.total_blocks}; ` +
    `all free ${freedAfter} ms after the start; a full run would take about ${Math.round(fullRun)} ms`);
  // perToken includes the prefill, so fullRun overestimates a full run; a quarter of it is safe.
  t.ok(freedAfter < fullRun / 4, "freed long before the request could have finished: it was cancelled");
  // The server is still healthy and answers normally.
  const r = await generate(server.url, references[0]!.prompt, GREEDY);
  t.same(ids(r), references[0]!.greedy_token_ids);
});
