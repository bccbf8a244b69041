// Unit tests of flag parsing, default derivation, validation and model resolution.
import t from "tap";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FLAGS, helpText, parseArgs, type LauncherArgs } from "../args.js";
import { shardCommand } from "../command-lines.js";
import { deriveAndValidate, findNumShards, visibleDeviceCount } from "../defaults.js";
import { LauncherError } from "../errors.js";
import { hubCacheDir, resolveModelDir } from "../model-resolve.js";
import { makePlan } from "../plan.js";

t.test("defaults match TGI's launcher", async (t) => {
  const a = parseArgs([], {});
  t.equal(a.port, 3000);
  t.equal(a.hostname, "0.0.0.0");
  t.equal(a.maxConcurrentRequests, 128);
  t.equal(a.waitingServedRatio, 0.3);
  t.equal(a.maxWaitingTokens, 20);
  t.equal(a.maxBestOf, 2);
  t.equal(a.maxStopSequences, 4);
  t.equal(a.maxTopNTokens, 5);
  t.equal(a.payloadLimit, 2000000);
  t.equal(a.validationWorkers, 2);
  t.equal(a.gracefulTerminationTimeout, 90);
  t.equal(a.jsonOutput, false);
  t.same(a.corsAllowOrigin, []);
  t.equal(a.modelId, undefined);
  t.equal(a.numShard, undefined);
});

t.test("command line beats environment beats default", async (t) => {
  const env = { PORT: "8080", NUM_SHARD: "2", JSON_OUTPUT: "true", CORS_ALLOW_ORIGIN: "a.com, b.com", SHARDED: "false" };
  const a = parseArgs(["--port", "9000", "--max-total-tokens=300", "-g", "5"], env);
  t.equal(a.port, 9000);
  t.equal(a.numShard, 2);
  t.equal(a.jsonOutput, true);
  t.equal(a.sharded, false);
  t.same(a.corsAllowOrigin, ["a.com", "b.com"]);
  t.equal(a.maxTotalTokens, 300);
  t.equal(a.gracefulTerminationTimeout, 5);
  const b = parseArgs(["--cors-allow-origin", "x", "--cors-allow-origin", "y", "--json-output", "--sharded", "true"], env);
  t.same(b.corsAllowOrigin, ["x", "y"]);
  t.equal(b.sharded, true);
  t.equal(b.jsonOutput, true);
});

t.test("bad flags and values are clear errors", async (t) => {
  t.throws(() => parseArgs(["--nope"], {}), new LauncherError("unknown flag --nope (see --help for the list)"));
  t.throws(() => parseArgs(["stray"], {}), /unexpected argument "stray"/);
  t.throws(() => parseArgs(["--port"], {}), /--port needs a value/);
  t.throws(() => parseArgs(["--port", "--json-output"], {}), /--port needs a value/);
  t.throws(() => parseArgs(["--port", "x1"], {}), /--port expects an integer, got "x1"/);
  t.throws(() => parseArgs([], { MAX_BEST_OF: "two" }), /environment variable MAX_BEST_OF expects an integer/);
  t.throws(() => parseArgs(["--dtype", "float64"], {}), /--dtype must be one of float16, bfloat16, float32/);
  t.throws(() => parseArgs(["--sharded", "maybe"], {}), /expects true or false/);
});

t.test("--help lists every flag and its environment variable", async (t) => {
  const help = helpText();
  for (const f of FLAGS) t.match(help, f.flag);
  t.match(help, "[env: MAX_INPUT_TOKENS]");
  t.match(help, "[default: 0.3]");
  t.equal(parseArgs(["-h"], {}).help, true);
});

t.test("shard count (find_num_shards)", async (t) => {
  t.equal(visibleDeviceCount({ CUDA_VISIBLE_DEVICES: "0,1,2" }), 3);
  t.equal(visibleDeviceCount({ NVIDIA_VISIBLE_DEVICES: "all" }), undefined);
  t.equal(visibleDeviceCount({}), undefined);
  t.equal(findNumShards(undefined, undefined, undefined), 1);
  t.equal(findNumShards(undefined, undefined, 4), 4);
  t.equal(findNumShards(undefined, 2, 4), 2);
  t.equal(findNumShards(false, undefined, 4), 1);
  t.equal(findNumShards(true, undefined, 2), 2);
  t.throws(() => findNumShards(true, undefined, 1), /`sharded` is true but only found 1 CUDA devices/);
  t.throws(() => findNumShards(true, 1, 8), /`sharded` is true but `num_shard` <= 1/);
  t.throws(() => findNumShards(undefined, 0, undefined), /`num_shard` cannot be < 1/);
});

const base = (over: Partial<LauncherArgs> = {}): LauncherArgs => ({ ...parseArgs([], {}), ...over });

t.test("derivation and validation", async (t) => {
  t.equal(deriveAndValidate(base(), { maxPositionEmbeddings: 512 }, {}).maxBatchPrefillTokens, 512, "capped by max_position_embeddings");
  t.equal(deriveAndValidate(base(), { maxPositionEmbeddings: 131072 }, {}).maxBatchPrefillTokens, 4096);
  t.equal(deriveAndValidate(base({ maxBatchPrefillTokens: 100 }), {}, {}).maxBatchPrefillTokens, 100);
  t.equal(deriveAndValidate(base(), {}, { CUDA_VISIBLE_DEVICES: "0,1" }).numShard, 2);
  t.equal(deriveAndValidate(base({ maxInputLength: 100 }), {}, {}).maxInputTokens, 100, "alias");
  const bad: Array<[Partial<LauncherArgs>, RegExp, object?]> = [
    [{ maxInputTokens: 10, maxInputLength: 10 }, /`max_input_tokens` and `max_input_length`/],
    [{ maxInputTokens: 10, maxTotalTokens: 10 }, /`max_input_tokens`\(10\) must be < `max_total_tokens`\(10\)/],
    [{ maxTotalTokens: 100, maxBatchTotalTokens: 50 }, /`max_total_tokens`\(100\) must be <= `max_batch_total_tokens`\(50\)/],
    [{ validationWorkers: 0 }, /`validation_workers` must be > 0/],
    [{ maxBatchSize: 0 }, /`max_batch_size` must be > 0/],
    [{ quantize: "awq" }, /--quantize awq: quantization is not supported yet/],
    [{ speculate: 2 }, /--speculate: speculative decoding is not supported yet/],
    [{ cudaMemoryFraction: 1.5 }, /--cuda-memory-fraction/],
    [{ cudaGraphs: "1,two" }, /--cuda-graphs must be a comma-separated list of batch sizes \(0 disables\), got "1,two"/],
    [{ watermarkGamma: 1 }, /--watermark-gamma must be in \(0, 1\), got 1/],
    [{ watermarkGamma: 0 }, /--watermark-gamma must be in \(0, 1\), got 0/],
    [{ watermarkDelta: -1 }, /--watermark-delta must be >= 0, got -1/],
  ];
  for (const [over, re] of bad) t.throws(() => deriveAndValidate(base(over), {}, {}), re, JSON.stringify(over));
  t.throws(() => deriveAndValidate(base(), { quantMethod: "gptq" }, {}), /quant_method gptq/);
  t.equal(deriveAndValidate(base({ speculate: 0 }), {}, {}).numShard, 1);
});

t.test("model resolution: local dirs and the local HF cache", async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), "launcher-resolve-"));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const local = join(tmp, "local");
  mkdirSync(local);
  t.throws(() => resolveModelDir(local, undefined, {}), new LauncherError(`model dir ${local} has no config.json`));
  writeFileSync(join(local, "config.json"), "{}");
  t.equal(resolveModelDir(local, undefined, {}), local);
  t.equal(resolveModelDir("local", undefined, {}, tmp), local, "relative to cwd");
  t.throws(() => resolveModelDir(join(tmp, "missing"), undefined, {}), /no such directory/);
  t.throws(() => resolveModelDir("./missing", undefined, {}, tmp), /no such directory/);

  const hfHome = join(tmp, "hf");
  t.equal(hubCacheDir({ HF_HOME: hfHome }), join(hfHome, "hub"));
  t.equal(hubCacheDir({ HF_HOME: hfHome, HF_HUB_CACHE: "/x" }), "/x");
  const repo = join(hfHome, "hub", "models--org--tiny");
  const commit = "0123456789abcdef0123456789abcdef01234567";
  mkdirSync(join(repo, "refs"), { recursive: true });
  mkdirSync(join(repo, "snapshots", commit), { recursive: true });
  mkdirSync(join(repo, "snapshots", "feedbeef"), { recursive: true });
  writeFileSync(join(repo, "refs", "main"), commit + "\n");
  writeFileSync(join(repo, "snapshots", commit, "config.json"), "{}");
  writeFileSync(join(repo, "snapshots", "feedbeef", "config.json"), "{}");
  const env = { HF_HOME: hfHome };
  t.equal(resolveModelDir("org/tiny", undefined, env, tmp), join(repo, "snapshots", commit), "refs/main");
  t.equal(resolveModelDir("org/tiny", "feedbeef", env, tmp), join(repo, "snapshots", "feedbeef"), "commit revision");
  t.throws(() => resolveModelDir("org/tiny", "v2", env, tmp), /revision "v2" is not in the Hugging Face cache .*cached snapshots: /);
  t.throws(() => resolveModelDir("org/absent", undefined, env, tmp),
    /--model-id org\/absent is not a local directory and is not in the Hugging Face cache .*models--org--absent does not exist.*does not download/);
});

t.test("plan: per-launch names and socket length", async (t) => {
  const stub = join(import.meta.dirname, "..", "test-fixtures", "stub-shard.mjs");
  const env = { TEXT_GEN_SHARD_SCRIPT: stub, TEXT_GEN_ROUTER_SCRIPT: stub };
  const a = makePlan(parseArgs(["--num-shard", "2"], {}), env, "info");
  const b = makePlan(parseArgs(["--num-shard", "2"], {}), env, "info");
  t.match(a.udsBase, new RegExp(`^${tmpdir()}/text-gen-[0-9a-f]{8}$`));
  t.equal(a.commName, `tg-${a.launchId}`);
  t.not(a.launchId, b.launchId, "two launches, two ids");
  t.match(a.modelDir, /models\/stories260k$/, "built-in model by default");
  t.equal(a.derived.maxBatchPrefillTokens, 512);
  t.throws(() => makePlan(parseArgs(["--shard-uds-path", "/tmp/" + "x".repeat(100)], {}), env, "info"),
    /Unix sockets need < 100: pass a shorter --shard-uds-path/);
  t.throws(() => makePlan(parseArgs([], {}), { TEXT_GEN_SHARD_SCRIPT: "/nope/main.js" }, "info"),
    /\/nope\/main.js is missing: run `npm run build` first/);
});

t.test("--watermark-gamma/--watermark-delta reach the shards as WATERMARK_GAMMA/WATERMARK_DELTA", async (t) => {
  const stub = join(import.meta.dirname, "..", "test-fixtures", "stub-shard.mjs");
  const env = { TEXT_GEN_SHARD_SCRIPT: stub, TEXT_GEN_ROUTER_SCRIPT: stub };
  const flags = makePlan(parseArgs(["--watermark-gamma", "0.25", "--watermark-delta", "4"], {}), env, "info");
  t.match(shardCommand(flags, 0, {}).env, { WATERMARK_GAMMA: "0.25", WATERMARK_DELTA: "4" });
  const fromEnv = { ...env, WATERMARK_GAMMA: "0.3" };
  const inherited = makePlan(parseArgs([], fromEnv), fromEnv, "info");
  t.equal(inherited.args.watermarkGamma, 0.3, "the launcher reads the variable as its flag");
  t.match(shardCommand(inherited, 0, fromEnv).env, { WATERMARK_GAMMA: "0.3" });
  t.notOk("WATERMARK_DELTA" in shardCommand(inherited, 0, fromEnv).env, "unset: the shard's default");
  t.throws(() => makePlan(parseArgs([], { WATERMARK_GAMMA: "2" }), env, "info"), /--watermark-gamma must be in \(0, 1\), got 2/);
});
