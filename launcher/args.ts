// Command-line and environment parsing for text-gen-launcher. Flag names, environment variables
// and defaults follow TGI's launcher: every flag `--kebab-case` also reads UPPER_SNAKE_CASE from the
// environment; the command line wins over the environment, which wins over the default.
import { LauncherError } from "./errors.js";

export interface LauncherArgs {
  modelId?: string;
  revision?: string;
  validationWorkers: number;
  sharded?: boolean;
  numShard?: number;
  quantize?: string;
  speculate?: number;
  dtype?: string;
  device?: string;
  trustRemoteCode: boolean;
  maxConcurrentRequests: number;
  maxBestOf: number;
  maxStopSequences: number;
  maxTopNTokens: number;
  maxInputTokens?: number;
  maxInputLength?: number;
  maxTotalTokens?: number;
  waitingServedRatio: number;
  maxBatchPrefillTokens?: number;
  maxBatchTotalTokens?: number;
  maxWaitingTokens: number;
  maxBatchSize?: number;
  hostname: string;
  port: number;
  shardUdsPath?: string;
  /** Unset (with masterPort): the shards meet over a Unix socket on this node. */
  masterAddr?: string;
  masterPort?: number;
  nnodes: number;
  nodeRank: number;
  cudaMemoryFraction: number;
  cudaGraphs?: string;
  jsonOutput: boolean;
  corsAllowOrigin: string[];
  apiKey?: string;
  tokenizerConfigPath?: string;
  payloadLimit: number;
  watermarkGamma?: number;
  watermarkDelta?: number;
  gracefulTerminationTimeout: number;
  startupTimeout: number;
  help: boolean;
}

/** TGI's and torch's MASTER_PORT when only --master-addr is given. */
export const DEFAULT_MASTER_PORT = 29500;

type Kind = "string" | "int" | "float" | "bool" | "switch" | "list";

interface FlagSpec {
  flag: string;
  key: keyof LauncherArgs;
  kind: Kind;
  help: string;
  short?: string;
  /** Not read from the environment (--help). */
  noEnv?: boolean;
  default?: string | number | boolean | string[];
  choices?: string[];
}

export const FLAGS: FlagSpec[] = [
  { flag: "--model-id", key: "modelId", kind: "string", help: "local model directory, or a hub id found in the local Hugging Face cache (default: the built-in models/stories260k)" },
  { flag: "--revision", key: "revision", kind: "string", help: "hub revision (branch, tag or commit) to pick from the local cache (default: main)" },
  { flag: "--validation-workers", key: "validationWorkers", kind: "int", default: 2, help: "accepted for TGI compatibility (must be > 0); the router tokenizes on its event loop for now" },
  { flag: "--sharded", key: "sharded", kind: "bool", help: "true/false: shard the model over several processes (see --num-shard)" },
  { flag: "--num-shard", key: "numShard", kind: "int", help: "number of shard processes, over every node (default: number of CUDA_VISIBLE_DEVICES entries, else 1)" },
  { flag: "--quantize", key: "quantize", kind: "string", help: "quantization method (not supported yet)" },
  { flag: "--speculate", key: "speculate", kind: "int", help: "number of speculative tokens (not supported yet; only 0 is accepted)" },
  { flag: "--dtype", key: "dtype", kind: "string", choices: ["float16", "bfloat16", "float32"], help: "weight and activation dtype: float16, bfloat16 or float32 (default: the model's; on cuda bfloat16 unless the model is float16)" },
  { flag: "--device", key: "device", kind: "string", choices: ["auto", "cpu", "cuda"], help: "where the shards compute: auto (cuda when the engine has it and a GPU is visible, else cpu), cpu or cuda (default: auto)" },
  { flag: "--trust-remote-code", key: "trustRemoteCode", kind: "switch", default: false, help: "accepted for compatibility; no remote code is ever run" },
  { flag: "--max-concurrent-requests", key: "maxConcurrentRequests", kind: "int", default: 128, help: "requests in flight before the router answers 429" },
  { flag: "--max-best-of", key: "maxBestOf", kind: "int", default: 2, help: "largest best_of a request may ask for" },
  { flag: "--max-stop-sequences", key: "maxStopSequences", kind: "int", default: 4, help: "most stop sequences per request" },
  { flag: "--max-top-n-tokens", key: "maxTopNTokens", kind: "int", default: 5, help: "largest top_n_tokens a request may ask for" },
  { flag: "--max-input-tokens", key: "maxInputTokens", kind: "int", help: "longest prompt in tokens (default: decided at warm-up)" },
  { flag: "--max-input-length", key: "maxInputLength", kind: "int", help: "legacy alias of --max-input-tokens; giving both is an error" },
  { flag: "--max-total-tokens", key: "maxTotalTokens", kind: "int", help: "prompt + generated tokens per request (default: decided at warm-up)" },
  { flag: "--waiting-served-ratio", key: "waitingServedRatio", kind: "float", default: 0.3, help: "waiting/running ratio above which waiting requests are merged into the batch" },
  { flag: "--max-batch-prefill-tokens", key: "maxBatchPrefillTokens", kind: "int", help: "token budget of one prefill (default: 4096, capped by max_position_embeddings)" },
  { flag: "--max-batch-total-tokens", key: "maxBatchTotalTokens", kind: "int", help: "token budget of the whole running batch (default: the KV cache capacity)" },
  { flag: "--max-waiting-tokens", key: "maxWaitingTokens", kind: "int", default: 20, help: "decode steps before waiting requests are forced into the batch" },
  { flag: "--max-batch-size", key: "maxBatchSize", kind: "int", help: "hard cap on requests per batch; must be > 0" },
  { flag: "--hostname", key: "hostname", kind: "string", default: "0.0.0.0", help: "address the HTTP server listens on" },
  { flag: "--port", short: "-p", key: "port", kind: "int", default: 3000, help: "HTTP port (0 picks a free one; the actual port is logged with \"text-gen ready\")" },
  { flag: "--shard-uds-path", key: "shardUdsPath", kind: "string", help: "socket base path; rank r listens on <path>-<r> (default: <tmpdir>/text-gen-<launch id>)" },
  { flag: "--master-addr", key: "masterAddr", kind: "string", help: "address of node 0, where rank 0 serves the NCCL id over TCP (passed to shards as MASTER_ADDR; localhost when only --master-port is given). Unset with --master-port: a Unix socket beside the shard sockets, single node only" },
  { flag: "--master-port", key: "masterPort", kind: "int", help: "TCP port of that rendezvous (passed to shards as MASTER_PORT; 29500 when only --master-addr is given)" },
  { flag: "--nnodes", key: "nnodes", kind: "int", default: 1, help: "nodes the shards span (torchrun's and vLLM's name): each runs --num-shard / nnodes of them; needs --master-addr (untested beyond one node: see launcher/README.md)" },
  { flag: "--node-rank", key: "nodeRank", kind: "int", default: 0, help: "this node's index, 0..nnodes-1: it runs ranks node-rank x (num-shard / nnodes) onwards; only node 0 runs the router" },
  { flag: "--cuda-memory-fraction", key: "cudaMemoryFraction", kind: "float", default: 1.0, help: "fraction of GPU memory the shards may use (passed as CUDA_MEMORY_FRACTION)" },
  { flag: "--cuda-graphs", key: "cudaGraphs", kind: "string", help: "comma list of decode batch sizes run as CUDA graphs; values <= 0 are dropped, so 0 disables (passed to shards as CUDA_GRAPHS; default: 1-8, then steps up to 256)" },
  { flag: "--json-output", key: "jsonOutput", kind: "switch", default: false, help: "log JSON lines instead of pretty text" },
  { flag: "--cors-allow-origin", key: "corsAllowOrigin", kind: "list", default: [], help: "allowed CORS origin; repeatable (env: comma-separated)" },
  { flag: "--api-key", key: "apiKey", kind: "string", help: "require this bearer token on every request" },
  { flag: "--tokenizer-config-path", key: "tokenizerConfigPath", kind: "string", help: "alternative tokenizer_config.json (chat template)" },
  { flag: "--payload-limit", key: "payloadLimit", kind: "int", default: 2000000, help: "largest request body in bytes" },
  { flag: "--watermark-gamma", key: "watermarkGamma", kind: "float", help: "share of the vocabulary in the greenlist of requests with `watermark: true`, in (0, 1) (passed to shards as WATERMARK_GAMMA; default 0.5)" },
  { flag: "--watermark-delta", key: "watermarkDelta", kind: "float", help: "logit bias the watermark adds to green tokens, >= 0 (passed to shards as WATERMARK_DELTA; default 2.0)" },
  { flag: "--graceful-termination-timeout", short: "-g", key: "gracefulTerminationTimeout", kind: "int", default: 90, help: "seconds between SIGTERM and SIGKILL when stopping a child" },
  { flag: "--startup-timeout", key: "startupTimeout", kind: "int", default: 1800, help: "seconds each shard and the router may take to become ready (text-gen extension)" },
  { flag: "--help", short: "-h", key: "help", kind: "switch", default: false, noEnv: true, help: "print this help" },
];

export function envName(flag: string): string {
  return flag.slice(2).replace(/-/g, "_").toUpperCase();
}

const TRUE = new Set(["true", "1", "yes", "on", "y", "t"]);
const FALSE = new Set(["false", "0", "no", "off", "n", "f", ""]);

function convert(spec: FlagSpec, raw: string, source: string): string | number | boolean {
  switch (spec.kind) {
    case "int": {
      if (!/^-?\d+$/.test(raw.trim())) throw new LauncherError(`${source} expects an integer, got "${raw}"`);
      return Number(raw);
    }
    case "float": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) throw new LauncherError(`${source} expects a number, got "${raw}"`);
      return n;
    }
    case "bool":
    case "switch": {
      const v = raw.trim().toLowerCase();
      if (TRUE.has(v)) return true;
      if (FALSE.has(v)) return false;
      throw new LauncherError(`${source} expects true or false, got "${raw}"`);
    }
    default:
      if (spec.choices && !spec.choices.includes(raw)) {
        throw new LauncherError(`${source} must be one of ${spec.choices.join(", ")}, got "${raw}"`);
      }
      return raw;
  }
}

/** Parses argv (without node and script) and env into LauncherArgs. Throws LauncherError. */
export function parseArgs(argv: string[], env: NodeJS.ProcessEnv): LauncherArgs {
  const byName = new Map<string, FlagSpec>();
  for (const f of FLAGS) {
    byName.set(f.flag, f);
    if (f.short) byName.set(f.short, f);
  }
  const out: Record<string, unknown> = {};
  for (const f of FLAGS) {
    if (f.default !== undefined) out[f.key] = Array.isArray(f.default) ? [...f.default] : f.default;
    const raw = f.noEnv ? undefined : env[envName(f.flag)];
    if (raw === undefined) continue;
    const source = `environment variable ${envName(f.flag)}`;
    out[f.key] = f.kind === "list"
      ? raw.split(",").map((s) => s.trim()).filter(Boolean)
      : convert(f, raw, source);
  }
  const fromCli = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const eq = token.startsWith("--") ? token.indexOf("=") : -1;
    const name = eq > 0 ? token.slice(0, eq) : token;
    const spec = byName.get(name);
    if (!spec) {
      if (!token.startsWith("-")) throw new LauncherError(`unexpected argument "${token}" (flags only; see --help)`);
      throw new LauncherError(`unknown flag ${name} (see --help for the list)`);
    }
    let raw: string;
    if (eq > 0) raw = token.slice(eq + 1);
    else if (spec.kind === "switch") raw = "true";
    else {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith("--") && byName.has(next.split("=")[0]!))) {
        throw new LauncherError(`${spec.flag} needs a value`);
      }
      raw = next;
      i++;
    }
    if (spec.kind === "list") {
      out[spec.key] = fromCli.has(spec.flag) ? [...(out[spec.key] as string[]), raw] : [raw];
    } else {
      out[spec.key] = convert(spec, raw, spec.flag);
    }
    fromCli.add(spec.flag);
  }
  return out as unknown as LauncherArgs;
}

export function helpText(): string {
  const rows = FLAGS.map((f) => {
    const names = f.short ? `${f.short}, ${f.flag}` : `    ${f.flag}`;
    const value = f.kind === "switch" ? "" : f.kind === "list" ? " <VALUE>..." : f.kind === "bool" ? " <true|false>" : " <VALUE>";
    const dflt = f.default !== undefined && f.kind !== "switch" && !(Array.isArray(f.default) && f.default.length === 0)
      ? ` [default: ${String(f.default)}]` : "";
    const envPart = f.noEnv ? "" : ` [env: ${envName(f.flag)}]`;
    return `  ${names}${value}\n          ${f.help}${dflt}${envPart}`;
  });
  return [
    "text-gen-launcher: start the shards and the router of a TGI-compatible text generation server",
    "",
    "Usage: text-gen-launcher [OPTIONS]",
    "",
    "Options:",
    ...rows,
    "",
    "Other environment: LOG_LEVEL (trace|debug|info|warn|error), CUDA_VISIBLE_DEVICES (default shard count; shard i",
    "gets its i-th entry), NCCL_* (passed to the shards, except NCCL_NVLS_ENABLE, always 0),",
    "HF_HOME / HF_HUB_CACHE (where hub ids are looked up; nothing is downloaded).",
    "",
  ].join("\n");
}
