// The router's command line: TGI router flag names and defaults (backends/v3
// main.rs), each flag also read from its TGI environment variable
// (--max-input-tokens ← MAX_INPUT_TOKENS); the command line wins.
import { isIP } from "node:net";
import { parseArgs } from "node:util";

export interface RouterConfig {
  masterShardUdsPath: string;
  /** Model directory holding tokenizer.json, tokenizer_config.json and config.json. */
  tokenizerName: string;
  /** Name shown by /info; the tokenizer directory when not given. */
  modelId: string;
  hostname: string;
  port: number;
  maxInputTokens?: number;
  maxTotalTokens?: number;
  maxBatchPrefillTokens: number;
  maxBatchTotalTokens?: number;
  maxBatchSize?: number;
  maxConcurrentRequests: number;
  waitingServedRatio: number;
  maxWaitingTokens: number;
  maxBestOf: number;
  maxStopSequences: number;
  maxTopNTokens: number;
  payloadLimit: number;
  validationWorkers: number;
  maxClientBatchSize: number;
  jsonOutput: boolean;
  logLevel: string;
  /** When set, `Authorization: Bearer <key>` is required on every route but /health, /ping, GET / and /metrics. */
  apiKey?: string;
  /** CORS origins allowed; empty: no CORS headers at all. "*" allows any origin. */
  corsAllowOrigin: string[];
  /** An alternative tokenizer_config.json (its chat_template is the one used). */
  tokenizerConfigPath?: string;
  /** Messages for the log once it exists (e.g. a hostname that was replaced). */
  warnings: string[];
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Kind = "string" | "uint" | "float" | "bool" | "list";

// flag → [kind, TGI default or undefined for optional]
const FLAGS = {
  "master-shard-uds-path": ["string", "/tmp/text-generation-server-0"],
  "tokenizer-name": ["string", undefined],
  "model-id": ["string", undefined],
  hostname: ["string", "0.0.0.0"],
  port: ["uint", 3000],
  "max-input-tokens": ["uint", undefined],
  "max-total-tokens": ["uint", undefined],
  "max-batch-prefill-tokens": ["uint", 4096],
  "max-batch-total-tokens": ["uint", undefined],
  "max-batch-size": ["uint", undefined],
  "max-concurrent-requests": ["uint", 128],
  "waiting-served-ratio": ["float", 1.2],
  "max-waiting-tokens": ["uint", 20],
  "max-best-of": ["uint", 2],
  "max-stop-sequences": ["uint", 4],
  "max-top-n-tokens": ["uint", 5],
  "payload-limit": ["uint", 2_000_000],
  "validation-workers": ["uint", 2],
  "max-client-batch-size": ["uint", 4],
  "json-output": ["bool", false],
  "log-level": ["string", "info"],
  "api-key": ["string", undefined],
  // Repeatable on the command line; a comma-separated list in the environment.
  "cors-allow-origin": ["list", undefined],
  "tokenizer-config-path": ["string", undefined],
} as const satisfies Record<string, readonly [Kind, string | number | boolean | undefined]>;

type Flag = keyof typeof FLAGS;

const envName = (flag: string) => flag.toUpperCase().replaceAll("-", "_");

function convert(flag: Flag, raw: string | boolean | string[], source: string): string | number | boolean | string[] {
  const kind = FLAGS[flag][0];
  if (kind === "list") {
    const items = Array.isArray(raw) ? raw : String(raw).split(",");
    return items.map((x) => x.trim()).filter((x) => x !== "");
  }
  if (Array.isArray(raw)) throw new ConfigError(`${source} may be given once`);
  if (kind === "bool") {
    if (typeof raw === "boolean") return raw;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off|)$/i.test(raw)) return false;
    throw new ConfigError(`${source} must be true or false, got "${raw}"`);
  }
  const text = String(raw);
  if (kind === "string") return text;
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) throw new ConfigError(`${source} must be a number, got "${text}"`);
  if (kind === "uint" && (!Number.isSafeInteger(value) || value < 0)) {
    throw new ConfigError(`${source} must be a non-negative integer, got "${text}"`);
  }
  return value;
}

export function parseRouterConfig(argv: string[], env: NodeJS.ProcessEnv): RouterConfig {
  const options = Object.fromEntries(
    Object.entries(FLAGS).map(([flag, [kind]]) => [flag, { type: kind === "bool" ? ("boolean" as const) : ("string" as const), multiple: kind === "list" }]),
  );
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | string[] | undefined>;
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const get = (flag: Flag): string | number | boolean | string[] | undefined => {
    const cli = values[flag];
    if (cli !== undefined) return convert(flag, cli, `--${flag}`);
    const fromEnv = env[envName(flag)];
    if (fromEnv !== undefined) return convert(flag, fromEnv, `${envName(flag)} (env)`);
    return FLAGS[flag][1];
  };
  const num = (flag: Flag) => get(flag) as number;
  const optNum = (flag: Flag) => get(flag) as number | undefined;

  const tokenizerName = get("tokenizer-name") as string | undefined;
  if (tokenizerName === undefined) throw new ConfigError("--tokenizer-name (env TOKENIZER_NAME) is required: the model directory");
  const warnings: string[] = [];
  let hostname = get("hostname") as string;
  // As TGI: Docker sets HOSTNAME to the container id, which is no address to bind.
  if (isIP(hostname) === 0 && hostname !== "localhost") {
    warnings.push(`Invalid hostname "${hostname}", defaulting to 0.0.0.0`);
    hostname = "0.0.0.0";
  }
  const config: RouterConfig = {
    masterShardUdsPath: get("master-shard-uds-path") as string,
    tokenizerName,
    modelId: (get("model-id") as string | undefined) ?? tokenizerName,
    hostname,
    port: num("port"),
    maxInputTokens: optNum("max-input-tokens"),
    maxTotalTokens: optNum("max-total-tokens"),
    maxBatchPrefillTokens: num("max-batch-prefill-tokens"),
    maxBatchTotalTokens: optNum("max-batch-total-tokens"),
    maxBatchSize: optNum("max-batch-size"),
    maxConcurrentRequests: num("max-concurrent-requests"),
    waitingServedRatio: num("waiting-served-ratio"),
    maxWaitingTokens: num("max-waiting-tokens"),
    maxBestOf: num("max-best-of"),
    maxStopSequences: num("max-stop-sequences"),
    maxTopNTokens: num("max-top-n-tokens"),
    payloadLimit: num("payload-limit"),
    validationWorkers: num("validation-workers"),
    maxClientBatchSize: num("max-client-batch-size"),
    jsonOutput: get("json-output") as boolean,
    // TGI's LOG_LEVEL may carry per-module filters ("info,text_generation_router=debug"): keep the level.
    logLevel: (get("log-level") as string).split(",")[0]!.trim().toLowerCase(),
    apiKey: get("api-key") as string | undefined,
    corsAllowOrigin: (get("cors-allow-origin") as string[] | undefined) ?? [],
    tokenizerConfigPath: get("tokenizer-config-path") as string | undefined,
    warnings,
  };
  checkConfig(config);
  return config;
}

/** The cross-checks of TGI's router that need no shard. */
function checkConfig(c: RouterConfig): void {
  if (c.port > 65535) throw new ConfigError(`--port must be at most 65535, got ${c.port}`);
  if (c.validationWorkers === 0) throw new ConfigError("--validation-workers must be > 0");
  if (c.maxConcurrentRequests === 0) throw new ConfigError("--max-concurrent-requests must be > 0");
  if (c.maxInputTokens !== undefined && c.maxTotalTokens !== undefined && c.maxInputTokens >= c.maxTotalTokens) {
    throw new ConfigError(`--max-input-tokens (${c.maxInputTokens}) must be < --max-total-tokens (${c.maxTotalTokens})`);
  }
  if (c.maxBatchTotalTokens !== undefined) {
    if (c.maxBatchPrefillTokens > c.maxBatchTotalTokens) {
      throw new ConfigError(`--max-batch-prefill-tokens (${c.maxBatchPrefillTokens}) must be <= --max-batch-total-tokens (${c.maxBatchTotalTokens})`);
    }
    if (c.maxTotalTokens !== undefined && c.maxTotalTokens > c.maxBatchTotalTokens) {
      throw new ConfigError(`--max-total-tokens (${c.maxTotalTokens}) must be <= --max-batch-total-tokens (${c.maxBatchTotalTokens})`);
    }
  }
  if (!(c.waitingServedRatio >= 0)) throw new ConfigError("--waiting-served-ratio must be >= 0");
  if (c.apiKey !== undefined && c.apiKey === "") throw new ConfigError("--api-key must not be empty");
  const levels = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
  if (!levels.includes(c.logLevel)) throw new ConfigError(`--log-level must be one of ${levels.join(", ")}, got "${c.logLevel}"`);
}
