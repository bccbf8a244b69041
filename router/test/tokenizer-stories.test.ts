// The router tokenizer on the built-in stories260k model, and its file errors.
import t from "tap";
import { readFileSync, writeFileSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { loadEosTokenIds, loadTokenizer, TokenizerLoadError } from "../tokenizer/index.js";
import { STORIES_DIR } from "./fake-backend.js";

const reference = readFileSync(join(STORIES_DIR, "reference-sample.jsonl"), "utf8")
  .trim()
  .split("\n")
  .map((line) => JSON.parse(line) as { prompt: string; prompt_token_ids: number[] });

t.test("stories260k prompts encode to the reference ids, BOS from the post-processor", async (t) => {
  const { tokenizer } = await loadTokenizer(STORIES_DIR);
  t.ok(reference.length >= 3);
  t.same(await tokenizer.encode("Once upon a time", true), [1, 403, 407, 261, 378]);
  for (const r of reference) t.same(await tokenizer.encode(r.prompt, true), r.prompt_token_ids, r.prompt);
  t.same(await tokenizer.encode("Once upon a time", false), [403, 407, 261, 378], "no BOS without special tokens");
});

t.test("decode and special ids", async (t) => {
  const { tokenizer } = await loadTokenizer(STORIES_DIR);
  t.equal(tokenizer.decode([], true), "");
  t.equal(tokenizer.decode([], false), "");
  t.equal(tokenizer.decode([1, 403, 407, 261, 378, 2], true), "Once upon a time");
  t.equal(tokenizer.decode([1, 403, 2], false), "<s> Once</s>");
  t.same([0, 1, 2, 3, 403].map((id) => tokenizer.isSpecial(id)), [true, true, true, false, false]);
});

t.test("EOS ids: config.json united with generation_config.json", async (t) => {
  t.same((await loadTokenizer(STORIES_DIR)).eosTokenIds, [1, 2]);
  const dir = t.testdir({
    "config.json": JSON.stringify({ eos_token_id: [7, 3] }),
    "generation_config.json": JSON.stringify({ eos_token_id: 5 }),
  });
  t.same(await loadEosTokenIds(dir), [3, 5, 7]);
  const noGeneration = t.testdir({ "config.json": JSON.stringify({ eos_token_id: 2 }) });
  t.same(await loadEosTokenIds(noGeneration), [2]);
  const bad = t.testdir({ "config.json": JSON.stringify({ eos_token_id: "x" }) });
  await t.rejects(loadEosTokenIds(bad), /config.json: eos_token_id must be a token id or a list of them/);
});

t.test("missing or broken files give errors that name them", async (t) => {
  const empty = t.testdir({});
  await t.rejects(loadTokenizer(empty), new TokenizerLoadError(`model dir ${empty} has no tokenizer.json`));
  const noConfig = t.testdir({});
  copyFileSync(join(STORIES_DIR, "tokenizer.json"), join(noConfig, "tokenizer.json"));
  await t.rejects(loadTokenizer(noConfig), { message: `model dir ${noConfig} has no config.json` });
  writeFileSync(join(noConfig, "config.json"), "{not json");
  await t.rejects(loadTokenizer(noConfig), { name: "TokenizerLoadError", message: /config.json is not valid JSON/ });
  // tokenizer_config.json is optional
  writeFileSync(join(noConfig, "config.json"), JSON.stringify({ eos_token_id: 2 }));
  const loaded = await loadTokenizer(noConfig);
  t.same(loaded.eosTokenIds, [2]);
  t.same(await loaded.tokenizer.encode("Once upon a time", true), [1, 403, 407, 261, 378]);
});
