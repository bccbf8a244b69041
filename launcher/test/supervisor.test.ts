// The launcher's process supervision, run from sources against stand-in shard and router scripts:
// startup order, ready lines, argv contracts, signals, crashes, startup failures, force-kill, and
// children stopping when the launcher is SIGKILLed.
import t from "tap";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlive, launch, SOURCE_LAUNCHER, startLauncher, waitGone, type LaunchOptions } from "../../integration-tests/harness.js";

const fixtures = join(import.meta.dirname, "..", "test-fixtures"); // outside test/, which tap runs file by file
const record = mkdtempSync(join(tmpdir(), "launcher-stub-"));
t.teardown(() => rmSync(record, { recursive: true, force: true }));

function opts(args: string[], env: Record<string, string> = {}): LaunchOptions {
  return {
    entry: SOURCE_LAUNCHER,
    args,
    readyTimeoutMs: 20_000,
    env: {
      TEXT_GEN_SHARD_SCRIPT: join(fixtures, "stub-shard.mjs"),
      TEXT_GEN_ROUTER_SCRIPT: join(fixtures, "stub-router.mjs"),
      STUB_RECORD_DIR: record,
      LOG_LEVEL: undefined,
      CUDA_VISIBLE_DEVICES: undefined,
      ...env,
    },
  } as LaunchOptions;
}

t.test("two shards and the router start; SIGTERM stops everything, exit 0", async (t) => {
  const s = await launch(t, opts(["--num-shard", "2", "--max-input-tokens", "100"]));
  t.ok(s.port > 0, "actual port from the ready line");
  t.equal(await (await fetch(s.url)).text(), "ok", "router serves");
  const pids = s.childPids();
  t.same([...pids.keys()].sort(), ["router", "shard 0", "shard 1"]);

  const shard1 = JSON.parse(readFileSync(join(record, "shard-1.json"), "utf8"));
  const router = JSON.parse(readFileSync(join(record, "router.json"), "utf8"));
  const flag = (argv: string[], name: string) => argv[argv.indexOf(name) + 1];
  t.equal(flag(shard1.argv, "--rank"), "1");
  t.equal(flag(shard1.argv, "--world-size"), "2");
  t.match(flag(shard1.argv, "--comm-name"), /^tg-[0-9a-f]{8}$/);
  t.match(flag(shard1.argv, "--uds-path"), /text-gen-[0-9a-f]{8}-1$/);
  t.same({ RANK: shard1.env.RANK, WORLD_SIZE: shard1.env.WORLD_SIZE }, { RANK: "1", WORLD_SIZE: "2" });
  t.match(flag(router.argv, "--master-shard-uds-path"), /text-gen-[0-9a-f]{8}-0$/);
  t.equal(flag(router.argv, "--max-input-tokens"), "100");
  t.equal(flag(router.argv, "--waiting-served-ratio"), "0.3");
  t.equal(flag(router.argv, "--max-batch-prefill-tokens"), "512", "4096 capped by stories260k's 512 positions");
  t.ok(s.logs.some((l) => l.child === "shard 0" && l.msg === "shard 0 loading"), "shard logs relayed");

  const exit = await s.stop("SIGTERM");
  t.same(exit, { code: 0, signal: null });
  t.same(await waitGone([...pids.values()], 2000), [], "no child left");
});

t.test("a shard killed with SIGKILL: one line naming it, exit 1, nothing left", async (t) => {
  const s = await launch(t, opts(["--num-shard", "2"]));
  const pids = s.childPids();
  process.kill(pids.get("shard 1")!, "SIGKILL");
  const exit = await s.exited;
  t.equal(exit.code, 1);
  const errors = s.logs.filter((l) => (l.level ?? 0) >= 50 && !l.child);
  t.equal(errors.length, 1, "one error line from the launcher");
  t.match(errors[0]!.msg, /^shard 1 exited with signal SIGKILL/);
  t.same(await waitGone([...pids.values()], 2000), []);
});

t.test("a rank stuck when its peer dies (ignoring SIGTERM, as in an NCCL collective) is SIGKILLed within seconds", async (t) => {
  const s = await launch(t, opts(["--num-shard", "2", "-g", "60"], { STUB_IGNORE_SIGTERM: "0" }));
  const pids = s.childPids();
  const started = Date.now();
  process.kill(pids.get("shard 1")!, "SIGKILL");
  t.equal((await s.exited).code, 1);
  const took = Date.now() - started;
  t.ok(took < 12_000, `launcher gone after ${took} ms, not the 60 s graceful timeout`);
  t.match(s.logs.filter((l) => (l.level ?? 0) >= 50 && !l.child).at(-1)?.msg, /^shard 1 exited with signal SIGKILL/);
  t.same(await waitGone([...pids.values()], 2000), [], "shard 0 and the router are gone");
});

t.test("a shard failing at startup: its error in the message, exit 1", async (t) => {
  const s = await launch(t, { ...opts(["--num-shard", "2"], { STUB_FAIL_RANK: "1" }), noWait: true });
  const exit = await s.exited;
  t.equal(exit.code, 1);
  const last = s.logs.at(-1)!;
  t.equal(last.msg, "shard 1 exited with code 1 during startup: cannot load weights for rank 1");
  t.same(await waitGone([...s.childPids().values()], 2000), []);
});

t.test("a shard ignoring SIGTERM is killed after the graceful timeout", async (t) => {
  const s = await launch(t, opts(["-g", "1"], { STUB_IGNORE_SIGTERM: "0" }));
  const started = Date.now();
  const exit = await s.stop("SIGINT");
  t.equal(exit.code, 0);
  t.ok(Date.now() - started >= 900, "waited for the graceful timeout");
  t.same(await waitGone([...s.childPids().values()], 2000), []);
});

t.test("SIGTERM while shards are still loading: exit 0, nothing left", async (t) => {
  const s = await launch(t, { ...opts(["--num-shard", "2"], { STUB_READY_DELAY_MS: "60000" }), noWait: true });
  await s.waitForLog((l) => l.msg === "started shard 1", 10_000);
  const exit = await s.stop("SIGTERM");
  t.same(exit, { code: 0, signal: null });
  t.same(await waitGone([...s.childPids().values()], 2000), []);
});

t.test("a startup timeout names the shard that is not ready", async (t) => {
  const s = await launch(t, { ...opts(["--startup-timeout", "1"], { STUB_READY_DELAY_MS: "60000" }), noWait: true });
  t.equal((await s.exited).code, 1);
  t.equal(s.logs.at(-1)!.msg, "shard 0 not ready after 1 s");
});

t.test("the startup timeout names just the ranks that did not become ready", async (t) => {
  const s = await launch(t, { ...opts(["--num-shard", "3", "--startup-timeout", "2"], { STUB_READY_DELAY_MS: "60000", STUB_READY_DELAY_RANK: "1" }), noWait: true });
  t.equal((await s.exited).code, 1);
  t.equal(s.logs.at(-1)!.msg, "shard 1 not ready after 2 s");
  t.same(await waitGone([...s.childPids().values()], 2000), []);
});

t.test("--nnodes 2 --node-rank 1: this node runs ranks 2 and 3, one GPU each, and no router", async (t) => {
  const s = await launch(t, {
    ...opts(["--num-shard", "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1", "--device", "cuda"],
      { CUDA_VISIBLE_DEVICES: "4,5", NCCL_DEBUG: "WARN" }),
    noWait: true,
  });
  await s.waitForLog((l) => l.msg === "text-gen shards ready", 20_000);
  t.same([...s.childPids().keys()].sort(), ["shard 2", "shard 3"]);
  const shard3 = JSON.parse(readFileSync(join(record, "shard-3.json"), "utf8"));
  t.same(shard3.env, { RANK: "3", WORLD_SIZE: "4", CUDA_VISIBLE_DEVICES: "5", NCCL_NVLS_ENABLE: "0", NCCL_DEBUG: "WARN",
    MASTER_ADDR: "127.0.0.1", MASTER_PORT: "29500" });
  t.same(await s.stop("SIGTERM"), { code: 0, signal: null });
  t.same(await waitGone([...s.childPids().values()], 2000), []);
});

t.test("children stop by themselves when the launcher is SIGKILLed", async (t) => {
  const s = await launch(t, opts(["--num-shard", "2"]));
  const pids = [...s.childPids().values()];
  s.proc.kill("SIGKILL");
  await s.exited;
  t.same(await waitGone(pids, 5000), [], "parent watch stopped every child");
});

t.test("two launches side by side do not collide", async (t) => {
  const [a, b] = await Promise.all([launch(t, opts(["--num-shard", "2"])), launch(t, opts(["--num-shard", "2"]))]);
  t.not(a!.port, b!.port);
  t.equal(await (await fetch(a!.url)).text(), "ok");
  t.equal(await (await fetch(b!.url)).text(), "ok");
});

t.test("a bad --model-id is a clean error", async (t) => {
  const s = await startLauncher({ ...opts(["--model-id", "/nonexistent/model"]), noWait: true });
  t.equal((await s.exited).code, 1);
  t.equal(s.logs.length, 1);
  t.match(s.logs[0]!.msg, /--model-id \/nonexistent\/model: no such directory/);
  const u = await startLauncher({ ...opts(["--bogus"]), noWait: true });
  t.equal((await u.exited).code, 1);
  t.same(u.lines, ["text-gen-launcher: unknown flag --bogus (see --help for the list)"]);
  t.notOk(isAlive(u.proc.pid!));
});
