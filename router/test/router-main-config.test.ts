// The router's CLI (flags, TGI env names, defaults, cross-checks) and its
// start/stop sequence with a fake connectBackend.
import t from "tap";
import { execFile } from "node:child_process";
import { PassThrough } from "node:stream";
import { pino } from "pino";
import { ConfigError, parseRouterConfig } from "../config.js";
import type { BackendOptions } from "../infer/backend.js";
import { startRouter } from "../main.js";
import { FakeBackend, STORIES_DIR } from "./fake-backend.js";

t.test("TGI router defaults", async (t) => {
  const c = parseRouterConfig(["--tokenizer-name", "/m"], {});
  t.match(c, {
    masterShardUdsPath: "/tmp/text-generation-server-0",
    tokenizerName: "/m",
    modelId: "/m",
    hostname: "0.0.0.0",
    port: 3000,
    maxBatchPrefillTokens: 4096,
    maxConcurrentRequests: 128,
    waitingServedRatio: 1.2,
    maxWaitingTokens: 20,
    maxBestOf: 2,
    maxStopSequences: 4,
    maxTopNTokens: 5,
    payloadLimit: 2_000_000,
    validationWorkers: 2,
    maxClientBatchSize: 4,
    jsonOutput: false,
    logLevel: "info",
    warnings: [],
  });
  for (const key of ["maxInputTokens", "maxTotalTokens", "maxBatchTotalTokens", "maxBatchSize"] as const) t.equal(c[key], undefined, key);
});

t.test("flags, env fallbacks, flag wins", async (t) => {
  const env = { TOKENIZER_NAME: "/env-model", MAX_INPUT_TOKENS: "100", PORT: "8080", JSON_OUTPUT: "true", LOG_LEVEL: "info,text_generation_router=debug" };
  const c = parseRouterConfig(["--max-input-tokens", "200", "--max-total-tokens=300", "--hostname", "127.0.0.1", "--model-id", "stories", "--waiting-served-ratio", "0.5"], env);
  t.match(c, { tokenizerName: "/env-model", maxInputTokens: 200, maxTotalTokens: 300, port: 8080, jsonOutput: true, logLevel: "info", hostname: "127.0.0.1", modelId: "stories", waitingServedRatio: 0.5 });
  const docker = parseRouterConfig([], { TOKENIZER_NAME: "/m", HOSTNAME: "4f2a9c1b" });
  t.equal(docker.hostname, "0.0.0.0");
  t.same(docker.warnings, ['Invalid hostname "4f2a9c1b", defaulting to 0.0.0.0']);
});

t.test("bad command lines are ConfigErrors that say what to fix", async (t) => {
  const bad: [string[], Record<string, string>, RegExp][] = [
    [[], {}, /--tokenizer-name \(env TOKENIZER_NAME\) is required/],
    [["--tokenizer-name", "/m", "--port", "abc"], {}, /--port must be a number, got "abc"/],
    [["--tokenizer-name", "/m"], { MAX_BEST_OF: "-1" }, /MAX_BEST_OF \(env\) must be a non-negative integer, got "-1"/],
    [["--tokenizer-name", "/m", "--bogus"], {}, /Unknown option '--bogus'/],
    [["--tokenizer-name", "/m", "--max-input-tokens", "10", "--max-total-tokens", "10"], {}, /--max-input-tokens \(10\) must be < --max-total-tokens \(10\)/],
    [["--tokenizer-name", "/m", "--max-batch-total-tokens", "100"], {}, /--max-batch-prefill-tokens \(4096\) must be <= --max-batch-total-tokens \(100\)/],
    [["--tokenizer-name", "/m", "--validation-workers", "0"], {}, /--validation-workers must be > 0/],
    [["--tokenizer-name", "/m", "--log-level", "loud"], {}, /--log-level must be one of/],
    [["--tokenizer-name", "/m"], { JSON_OUTPUT: "maybe" }, /JSON_OUTPUT \(env\) must be true or false/],
  ];
  for (const [argv, env, message] of bad) t.throws(() => parseRouterConfig(argv, env), { name: "ConfigError", message });
  t.ok(new ConfigError("x") instanceof Error);
});

t.test("startRouter: tokenizer, connectBackend, listen, ready line, close", async (t) => {
  const config = parseRouterConfig(["--tokenizer-name", STORIES_DIR, "--hostname", "127.0.0.1", "--port", "0", "--max-batch-total-tokens", "8192", "--max-batch-size", "7"], {});
  const backend = new FakeBackend({ hangAfter: 1 });
  let seen: BackendOptions | undefined;
  let backendClosed = false;
  Object.assign(backend, { close: () => void (backendClosed = true) });
  const stdout = new PassThrough();
  let printed = "";
  stdout.on("data", (d) => (printed += d));
  const router = await startRouter(
    config,
    async (options) => {
      seen = options;
      return {
        backend,
        limits: { maxInputTokens: 255, maxTotalTokens: 256, maxBatchTotalTokens: 8192, maxBatchPrefillTokens: 4096, blockSize: 16 },
        shardInfo: { dtype: "float32", deviceType: "cpu" },
      };
    },
    pino({ level: "silent" }),
    stdout,
  );
  t.equal(printed, `{"ready":true,"hostname":"127.0.0.1","port":${router.port}}\n`);
  t.match(seen, { masterSocket: "/tmp/text-generation-server-0", eosTokenIds: [1, 2], maxBatchPrefillTokens: 4096, maxBatchTotalTokens: 8192, maxBatchSize: 7, waitingServedRatio: 1.2, maxWaitingTokens: 20 });
  t.equal(seen!.tokenizer.decode([403], true), "Once");

  const info = (await (await fetch(`http://127.0.0.1:${router.port}/info`)).json()) as Record<string, unknown>;
  t.match(info, { model_id: STORIES_DIR, max_input_tokens: 255, max_total_tokens: 256, max_batch_total_tokens: 8192, block_size: 16, model_dtype: "float32", model_device_type: "cpu", version: "0.1.0", router: "text-gen-router" });

  // A stream in flight at close ends with the shutdown event; close resolves.
  const streaming = fetch(`http://127.0.0.1:${router.port}/generate_stream`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"inputs":"x","parameters":{"max_new_tokens":5}}' }).then((r) => r.text());
  while (backend.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
  await router.close();
  t.match(await streaming, /data:\{"error":"Server is shutting down","error_type":"shutdown"\}\n\n$/);
  t.ok(backendClosed);
  await t.rejects(fetch(`http://127.0.0.1:${router.port}/health`), "no longer accepting");
});

t.test("main: a bad command line is one fatal log line and exit 1", async (t) => {
  const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(process.execPath, ["--import", "tsx", "router/main.ts", "--tokenizer-name", "/m", "--port", "x"], { env: { PATH: process.env.PATH } }, (_err, stdout, stderr) =>
      resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
  t.equal(result.code, 1);
  t.equal(result.stdout, "");
  const lines = result.stderr.trim().split("\n");
  t.equal(lines.length, 1);
  t.match(JSON.parse(lines[0]!), { level: 60, msg: '--port must be a number, got "x"' });
});
