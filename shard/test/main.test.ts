// The shard process: command line, fatal errors, and the real engine on
// models/stories260k reproducing llama2.c's greedy reference over gRPC.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import t from "tap";
import { FinishReason, TextGenerationServiceClient } from "../../proto/gen/generate.js";
import { parseShardArgs, shardUrls } from "../cli.js";
import { GRPC_OPTIONS } from "../grpc-server.js";
import { call, request } from "./helpers.js";

const root = resolve(import.meta.dirname, "../..");
const addon = join(root, "native/build/Release/text_gen_engine.node");
const stories = join(root, "models/stories260k");

t.test("command line and environment fallbacks", async (t) => {
  const opts = parseShardArgs(["--model-id", "m", "--uds-path", "/tmp/s-1", "--world-size", "2", "--rank", "1", "--dtype", "bfloat16", "--json-output"], {});
  t.match(opts, { modelId: "m", udsPath: "/tmp/s-1", rank: 1, worldSize: 2, dtype: "bfloat16", blockSize: 16, logLevel: "info" });
  const env = parseShardArgs(["--model-id", "m"], { SHARD_UDS_PATH: "/tmp/e-0", RANK: "0", WORLD_SIZE: "1", TEXT_GEN_KV_CACHE_BYTES: "4096" });
  t.match(env, { udsPath: "/tmp/e-0", rank: 0, worldSize: 1, kvCacheBytes: 4096, watermark: { gamma: 0.5, delta: 2 } });
  const marked = parseShardArgs(["--model-id", "m", "--uds-path", "x"], { WATERMARK_GAMMA: "0.25", WATERMARK_DELTA: "0" });
  t.same(marked.watermark, { gamma: 0.25, delta: 0 }, "TGI's WATERMARK_GAMMA and WATERMARK_DELTA");
  for (const [name, value] of [["WATERMARK_GAMMA", "1"], ["WATERMARK_GAMMA", "0"], ["WATERMARK_GAMMA", "half"], ["WATERMARK_DELTA", "-2"], ["WATERMARK_DELTA", "inf"]]) {
    t.throws(() => parseShardArgs(["--model-id", "m", "--uds-path", "x"], { [name!]: value }), { name: "CliError", message: new RegExp(`^${name} must be a number .*\\(got '${value}'\\)`) });
  }
  t.throws(() => parseShardArgs(["--uds-path", "x"], {}), { message: "--model-id is required" });
  t.throws(() => parseShardArgs(["--model-id", "m"], {}), { message: /--uds-path \(or SHARD_UDS_PATH\) is required/ });
  t.throws(() => parseShardArgs(["--model-id", "m", "--uds-path", "x", "--rank", "2", "--world-size", "2"], {}), {
    message: "--rank 2 must be below --world-size 2",
  });
  t.throws(() => parseShardArgs(["--model-id", "m", "--uds-path", "x", "--dtype", "int8"], {}), { message: /--dtype 'int8'/ });
  t.throws(() => parseShardArgs(["--model-id", "m", "--uds-path", "x", "--block-size", "abc"], {}), { message: /--block-size must be an integer/ });
  t.throws(() => parseShardArgs(["--model-id", "m", "--bogus"], {}), { message: /bogus/ });
  t.same(shardUrls("/tmp/tg-1", 1, 3), ["unix:///tmp/tg-0", "unix:///tmp/tg-1", "unix:///tmp/tg-2"]);
  t.same(shardUrls("/tmp/tg", 0, 1), ["unix:///tmp/tg"]);
  t.throws(() => shardUrls("/tmp/tg", 0, 2), { message: /must end with -0/ });
});

interface Shard {
  child: ChildProcess;
  stderr: string[];
  exit: Promise<number | null>;
}

function spawnShard(args: string[], env: NodeJS.ProcessEnv = process.env): Shard {
  const child = spawn(process.execPath, ["--import", "tsx", "shard/main.ts", ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
  const exit = new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
  return { child, stderr, exit };
}

function readyLine(shard: Shard): Promise<unknown> {
  return new Promise((res, rej) => {
    const lines = createInterface({ input: shard.child.stdout! });
    lines.once("line", (line) => res(JSON.parse(line)));
    shard.exit.then((code) => rej(new Error(`shard exited with ${code}: ${shard.stderr.join("\n")}`)));
  });
}

t.test("a missing model exits 1 with one clear error line", async (t) => {
  const shard = spawnShard(["--model-id", "/nonexistent-model", "--uds-path", "/tmp/tgs-none-0"]);
  t.equal(await shard.exit, 1);
  t.equal(shard.stderr.length, 1);
  t.match(JSON.parse(shard.stderr[0]!), { level: 50, msg: "model dir /nonexistent-model has no config.json" });
});

t.test("an out-of-range WATERMARK_GAMMA exits 1 at startup with one clear error line", async (t) => {
  const shard = spawnShard(["--model-id", stories, "--uds-path", "/tmp/tgs-wm-0"], { ...process.env, WATERMARK_GAMMA: "1.5" });
  t.equal(await shard.exit, 1);
  t.equal(shard.stderr.length, 1);
  t.match(JSON.parse(shard.stderr[0]!), { level: 50, msg: "WATERMARK_GAMMA must be a number strictly between 0 and 1 (got '1.5'): it is the share of the vocabulary in the watermark's greenlist" });
});

interface Reference {
  prompt_token_ids: number[];
  greedy_token_ids: number[];
}
const refs: Reference[] = readFileSync(join(stories, "reference-sample.jsonl"), "utf8")
  .trim()
  .split("\n")
  .map((l) => JSON.parse(l));
const needsAddon = { skip: existsSync(addon) ? false : `${addon} not built` };

t.test("stories260k: greedy reference over gRPC", needsAddon, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tgs-"));
  const socket = join(dir, "s-0");
  const shard = spawnShard(["--model-id", stories, "--uds-path", socket, "--rank", "0", "--world-size", "1"]);
  t.teardown(() => {
    shard.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  t.same(await readyLine(shard), { ready: true, rank: 0, socket });
  const client = new TextGenerationServiceClient(`unix://${socket}`, grpc.credentials.createInsecure(), GRPC_OPTIONS);

  t.match(await call(client, "info", {}), { dtype: "float32", deviceType: "cpu", blockSize: 16, supportChunking: true });
  const warm = await call<any>(client, "warmup", {
    maxPrefillTokens: 4,
    maxBatchTotalTokens: 2048,
    batch: { id: 0, requests: [request(0, 40, { blocks: [], maxNewTokens: 2, ignoreEos: true, topN: 5, prefillLogprobs: true })], size: 1, maxTokens: 0, maxBlocks: 0 },
  });
  t.same(warm, { maxSupportedTotalTokens: 2048, maxInputTokens: 511, maxTotalTokens: 512 });

  // Two references at once: the first prefilled whole, the third (18 prompt
  // tokens) merged into the running batch in chunks of 2, then 3 (budget
  // 4 − 1), with blocks the test assigns.
  const [a, b] = [refs[0]!, refs[2]!];
  const proto = (id: number, ids: number[], firstBlock: number, chunkLen?: number) => ({
    ...request(id, 1, { maxNewTokens: 64, eos: [1, 2] }),
    inputIds: ids,
    blocks: Array.from({ length: Math.ceil((ids.length + 64) / 16) }, (_, i) => firstBlock + i),
    ...(chunkLen !== undefined ? { chunkLen } : {}),
  });
  const generated = new Map<number, number[]>([
    [1, []],
    [2, []],
  ]);
  const collect = (res: any) => {
    for (const g of res.generations) generated.get(g.requestId)!.push(...g.tokens.ids);
    return res;
  };
  let res = collect(await call<any>(client, "prefill", { batch: { id: 1, requests: [proto(1, a.prompt_token_ids, 1)], size: 1, maxTokens: 0, maxBlocks: 0 } }));
  res = collect(
    await call<any>(client, "prefill", {
      batch: { id: 2, requests: [proto(2, b.prompt_token_ids, 20, 2)], size: 1, maxTokens: 0, maxBlocks: 0 },
      cachedBatch: res.batch,
    }),
  );
  const finished: any[] = [];
  while (res.batch) {
    res = collect(await call<any>(client, "decode", { batches: [res.batch] }));
    finished.push(...res.generations.filter((g: any) => g.generatedText));
  }
  t.same(generated.get(1), a.greedy_token_ids, "first reference reproduced");
  t.same(generated.get(2), b.greedy_token_ids, "third reference reproduced through chunked prefill");
  t.same(
    finished.map((g) => g.generatedText),
    [1, 2].map(() => ({ text: "", generatedTokens: 64, finishReason: FinishReason.FINISH_REASON_LENGTH })),
  );

  // Prefix cache hit: the third prompt again, reusing block 20, which still holds
  // the KV of its first 16 tokens.
  const hit = { ...proto(3, b.prompt_token_ids, 40), cacheLen: 16 };
  hit.blocks = [20, ...hit.blocks.slice(0, -1)];
  generated.set(3, []);
  res = collect(await call<any>(client, "prefill", { batch: { id: 3, requests: [hit], size: 1, maxTokens: 0, maxBlocks: 0 } }));
  while (res.batch) res = collect(await call<any>(client, "decode", { batches: [res.batch] }));
  t.same(generated.get(3), b.greedy_token_ids, "reference reproduced from a prefix-cache hit");

  client.close();
  shard.child.kill("SIGTERM");
  t.equal(await shard.exit, 0, "SIGTERM exits 0");
  t.notOk(existsSync(socket), "socket removed");
});

t.test("stories260k on two ranks (tensor parallel): same tokens from both", needsAddon, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tgs-"));
  const comm = `tgs${process.pid}`;
  const shards = [0, 1].map((rank) =>
    spawnShard(["--model-id", stories, "--uds-path", join(dir, `s-${rank}`), "--rank", String(rank), "--world-size", "2", "--comm-name", comm]),
  );
  t.teardown(() => {
    for (const s of shards) s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  await Promise.all(shards.map(readyLine));
  const clients = [0, 1].map(
    (rank) => new TextGenerationServiceClient(`unix://${join(dir, `s-${rank}`)}`, grpc.credentials.createInsecure(), GRPC_OPTIONS),
  );
  t.same(await call(clients[0]!, "serviceDiscovery", {}), { urls: [`unix://${dir}/s-0`, `unix://${dir}/s-1`] });
  // Every call goes to both ranks at once, as the router's sharded client does.
  const both = (method: Parameters<typeof call>[1], req: unknown) => Promise.all(clients.map((c) => call(c, method, req)));
  await both("warmup", { maxPrefillTokens: 32, maxBatchTotalTokens: 512 });
  const ref = refs[1]!;
  const req = {
    ...request(1, 1, { maxNewTokens: 64 }),
    inputIds: ref.prompt_token_ids,
    blocks: [1, 2, 3, 4, 5],
  };
  const tokens: number[][] = [[], []];
  let res = await both("prefill", { batch: { id: 1, requests: [req], size: 1, maxTokens: 0, maxBlocks: 0 } });
  for (;;) {
    res.forEach((r, rank) => tokens[rank]!.push(...r.generations.flatMap((g: any) => g.tokens.ids)));
    if (!res[0].batch) break;
    res = await both("decode", { batches: [res[0].batch] });
  }
  t.same(tokens[0], ref.greedy_token_ids, "rank 0 reproduces the reference");
  t.same(tokens[1], tokens[0], "rank 1 agrees");
  for (const c of clients) c.close();
  for (const s of shards) s.child.kill("SIGTERM");
  t.same(await Promise.all(shards.map((s) => s.exit)), [0, 0]);
});
