// The real launcher's supervision with real shards and router: clean SIGTERM shutdown, a killed
// shard taking the server down with one line naming it, side-by-side launches, and a bad model id.
import t from "tap";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate, info } from "./client.js";
import { launch, startLauncher, STORIES, waitGone } from "./harness.js";

const GREEDY = { max_new_tokens: 8, do_sample: false };

t.test("SIGTERM: exit 0 and no child left", async (t) => {
  const s = await launch(t, { args: ["--model-id", STORIES, "--num-shard", "2"] });
  await generate(s.url, "Once upon a time", GREEDY);
  const pids = [...s.childPids().values()];
  t.equal(pids.length, 3, "two shards and the router");
  t.same(await s.stop("SIGTERM"), { code: 0, signal: null });
  t.same(await waitGone(pids, 5000), [], "no child left");
});

t.test("SIGKILL of a shard: non-zero exit within seconds, one line naming it", async (t) => {
  const s = await launch(t, { args: ["--model-id", STORIES, "--num-shard", "2"] });
  const pids = s.childPids();
  const killedAt = Date.now();
  process.kill(pids.get("shard 1")!, "SIGKILL");
  const timer = setTimeout(() => s.proc.kill("SIGKILL"), 20_000);
  const exit = await s.exited;
  clearTimeout(timer);
  t.not(exit.code, 0);
  t.ok(Date.now() - killedAt < 15_000, `exited ${Date.now() - killedAt} ms after the kill`);
  const own = s.logs.filter((l) => (l.level ?? 0) >= 50 && !l.child);
  t.equal(own.length, 1, "one error line from the launcher");
  t.match(own[0]?.msg, /^shard 1 exited with signal SIGKILL/);
  t.same(await waitGone([...pids.values()], 5000), [], "no process left");
});

t.test("launcher SIGKILLed: its children stop by themselves", async (t) => {
  const s = await launch(t, { args: ["--model-id", STORIES] });
  const pids = [...s.childPids().values()];
  s.proc.kill("SIGKILL");
  await s.exited;
  t.same(await waitGone(pids, 15_000), [], "no process left");
});

t.test("two launchers side by side both serve", async (t) => {
  const [a, b] = await Promise.all([
    launch(t, { args: ["--model-id", STORIES, "--num-shard", "2"] }),
    launch(t, { args: ["--model-id", STORIES, "--num-shard", "2"] }),
  ]);
  const [ra, rb] = await Promise.all([generate(a!.url, "The cat", GREEDY), generate(b!.url, "The cat", GREEDY)]);
  t.equal(ra.generated_text, rb.generated_text);
  t.ok(ra.generated_text.length > 0);
});

t.test("a bad --model-id exits non-zero with a clear message", async (t) => {
  const s = await startLauncher({ args: ["--model-id", "no-such-org/no-such-model"], noWait: true, env: { HF_HOME: "/nonexistent-hf-home" } });
  const exit = await s.exited;
  t.equal(exit.code, 1);
  t.equal(s.logs.length, 1, "one line");
  t.match(s.logs[0]?.msg, /--model-id no-such-org\/no-such-model is not a local directory and is not in the Hugging Face cache/);
  t.same(s.childPids().size, 0, "nothing started");
});

t.test("a hub id is served from the local Hugging Face cache", async (t) => {
  // The cache's layout: refs/main names a commit; snapshot files are symlinks into blobs/.
  const hfHome = mkdtempSync(join(tmpdir(), "tg-hf-home-"));
  t.teardown(() => rmSync(hfHome, { recursive: true, force: true }));
  const repo = join(hfHome, "hub", "models--karpathy--stories260k");
  const commit = "a".repeat(40);
  const snapshot = join(repo, "snapshots", commit);
  mkdirSync(join(repo, "refs"), { recursive: true });
  mkdirSync(snapshot, { recursive: true });
  writeFileSync(join(repo, "refs", "main"), commit);
  for (const f of readdirSync(STORIES)) symlinkSync(join(STORIES, f), join(snapshot, f));
  const s = await launch(t, { args: ["--model-id", "karpathy/stories260k"], env: { HF_HOME: hfHome, HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined } });
  t.equal((await info(s.url)).model_id, "karpathy/stories260k", "/info names the hub id");
  const r = await generate(s.url, "Once upon a time", GREEDY);
  t.match(r.generated_text, /^, there was a little girl/);
});
