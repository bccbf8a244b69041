// text-gen-router: loads the tokenizer, connects the scheduling core to the
// shards, serves HTTP, prints `{"ready":true,"hostname":H,"port":P}` on stdout
// and logs pino JSON to stderr. SIGTERM/SIGINT end every request and exit 0;
// a fatal error is one log line and exit 1.
import { once } from "node:events";
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { pino, type Logger } from "pino";
import { ConfigError, parseRouterConfig, type RouterConfig } from "./config.js";
import type { HttpContext } from "./http/context.js";
import { Permits } from "./http/permits.js";
import { createHttpServer } from "./http/server.js";
import type { BackendOptions, Limits } from "./infer/backend.js";
import type { InferBackend } from "./infer/types.js";
import { Metrics } from "./metrics/metrics.js";
import { loadTokenizer, TokenizerLoadError } from "./tokenizer/index.js";
import { loadChatTemplate } from "./tokenizer/chat-template.js";
import { Validator } from "./validation/validate.js";
import { attachWebSocket } from "./ws/server.js";

/** What startRouter needs of infer/backend.ts's connectBackend (tests pass a fake). */
export interface ConnectedBackend {
  /** close(): stop the batcher and the shard connections, at shutdown. */
  backend: InferBackend & { close?: () => Promise<void> | void };
  limits: Limits;
  shardInfo: { dtype?: string; deviceType?: string };
}

export type ConnectBackend = (options: BackendOptions) => Promise<ConnectedBackend>;

export interface RunningRouter {
  server: Server;
  hostname: string;
  port: number;
  /** Stops accepting, ends in-flight requests and streams, closes the backend. */
  close(): Promise<void>;
}

/** How long in-flight responses get to finish their last write at shutdown. */
const SHUTDOWN_GRACE_MS = 2000;

function packageVersion(): string {
  for (const rel of ["../package.json", "../../package.json"]) {
    try {
      return (JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { version: string }).version;
    } catch {
      // compiled (dist/router) or source (router/) layout: try the other
    }
  }
  return "unknown";
}

export async function startRouter(
  config: RouterConfig,
  connectBackend: ConnectBackend,
  logger: Logger,
  stdout: NodeJS.WritableStream = process.stdout,
): Promise<RunningRouter> {
  for (const warning of config.warnings) logger.warn(warning);
  const { tokenizer, eosTokenIds } = await loadTokenizer(config.tokenizerName);
  const chatTemplate = await loadChatTemplate(config.tokenizerName, config.tokenizerConfigPath);
  if (chatTemplate === null) logger.warn("the model has no chat template: /v1/chat/completions will answer 422");
  let backend: InferBackend | undefined;
  const metrics = new Metrics(() => backend?.stats() ?? { queued: 0, freeBlocks: 0, totalBlocks: 0 });
  const connected = await connectBackend({
    observer: metrics,
    masterSocket: config.masterShardUdsPath,
    tokenizer,
    eosTokenIds,
    maxBatchPrefillTokens: config.maxBatchPrefillTokens,
    maxBatchTotalTokens: config.maxBatchTotalTokens,
    maxInputTokens: config.maxInputTokens,
    maxTotalTokens: config.maxTotalTokens,
    waitingServedRatio: config.waitingServedRatio,
    maxWaitingTokens: config.maxWaitingTokens,
    maxBatchSize: config.maxBatchSize,
    logger,
  });
  const { limits, shardInfo } = connected;
  backend = connected.backend;
  metrics.setTokenLimits(limits.maxInputTokens, limits.maxTotalTokens);
  const shutdown = new AbortController();
  const ctx: HttpContext = {
    backend: connected.backend,
    validator: new Validator(
      {
        maxBestOf: config.maxBestOf,
        maxStopSequences: config.maxStopSequences,
        maxTopNTokens: config.maxTopNTokens,
        maxInputTokens: limits.maxInputTokens,
        maxTotalTokens: limits.maxTotalTokens,
      },
      tokenizer,
    ),
    permits: new Permits(config.maxConcurrentRequests),
    info: {
      modelId: config.modelId,
      maxConcurrentRequests: config.maxConcurrentRequests,
      validationWorkers: config.validationWorkers,
      maxClientBatchSize: config.maxClientBatchSize,
      version: packageVersion(),
      maxBatchTotalTokens: limits.maxBatchTotalTokens,
      maxBatchPrefillTokens: limits.maxBatchPrefillTokens,
      maxWaitingTokens: config.maxWaitingTokens,
      waitingServedRatio: config.waitingServedRatio,
      blockSize: limits.blockSize,
      modelDtype: shardInfo.dtype ?? null,
      modelDeviceType: shardInfo.deviceType ?? null,
    },
    computeType: process.env.COMPUTE_TYPE ?? shardInfo.deviceType ?? "cpu",
    payloadLimit: config.payloadLimit,
    keepAliveMs: 15_000,
    logger,
    shutdown: shutdown.signal,
    metrics,
    tokenizer,
    apiKey: config.apiKey,
    corsAllowOrigin: config.corsAllowOrigin,
    chatTemplate,
  };
  const server = createHttpServer(ctx);
  attachWebSocket(server, ctx); // /v1/ws; its sockets close when ctx.shutdown aborts
  server.listen(config.port, config.hostname);
  await Promise.race([
    once(server, "listening"),
    once(server, "error").then(([err]) => {
      throw new Error(`cannot listen on ${config.hostname}:${config.port}: ${(err as Error).message}`);
    }),
  ]);
  const { port } = server.address() as AddressInfo;
  logger.info({ hostname: config.hostname, port, limits }, "router listening");
  stdout.write(`${JSON.stringify({ ready: true, hostname: config.hostname, port })}\n`);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const closed = once(server, "close");
      server.close();
      shutdown.abort();
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
      await closed;
      clearTimeout(timer);
      await connected.backend.close?.();
    })());
  return { server, hostname: config.hostname, port, close };
}

async function main(): Promise<void> {
  let logger = pino({ base: { component: "router" } }, pino.destination(2));
  let config: RouterConfig;
  try {
    config = parseRouterConfig(process.argv.slice(2), process.env);
  } catch (err) {
    logger.fatal((err as Error).message);
    process.exit(1);
  }
  logger = pino({ base: { component: "router" }, level: config.logLevel }, pino.destination(2));
  try {
    const { connectBackend } = await import("./infer/backend.js");
    const router = await startRouter(config, connectBackend, logger);
    const stop = (signal: string) => {
      logger.info({ signal }, "shutting down");
      router.close().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, "error while shutting down");
          process.exit(1);
        },
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  } catch (err) {
    // Errors that already say what to fix get no stack trace.
    const expected = err instanceof ConfigError || err instanceof TokenizerLoadError || (err as Error).name === "LimitError";
    if (expected) logger.fatal((err as Error).message);
    else logger.fatal({ err }, `router failed to start: ${(err as Error).message}`);
    process.exit(1);
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
