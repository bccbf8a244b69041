// The shard's command line (docs/processes.md), with environment fallbacks, parsed
// into plain options. Errors are CliErrors with the message a user needs.
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import type { ComputeDtype } from "../native/engine-types.js";
import { DEFAULT_WATERMARK, type WatermarkSettings } from "./batch-state.js";
import { DEFAULT_KV_CACHE_BYTES } from "./warmup.js";

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** `--device`: auto picks cuda when the engine has it and sees a GPU (shard/device.ts). */
export type DeviceChoice = "auto" | "cpu" | "cuda";
const DEVICES: readonly DeviceChoice[] = ["auto", "cpu", "cuda"];

export interface ShardOptions {
  modelId: string;
  /** Absolute path of this rank's socket. */
  udsPath: string;
  rank: number;
  worldSize: number;
  dtype?: ComputeDtype;
  device: DeviceChoice;
  /** Share of the GPU's memory the shard may use (TGI's CUDA_MEMORY_FRACTION): sizes the KV cache on cuda. */
  cudaMemoryFraction: number;
  /** Compute a decoding batch's next step before the router asks (shard/service.ts); --no-lookahead or TEXT_GEN_LOOKAHEAD=0 turns it off. */
  lookahead: boolean;
  /** Decode batch sizes run as CUDA graphs (TGI's CUDA_GRAPHS); unset: the engine's default, []: none. */
  cudaGraphs?: number[];
  commName?: string;
  /** Seconds the cuda ranks wait for each other at the NCCL rendezvous (shard/nccl-rendezvous.ts). */
  rendezvousTimeoutS: number;
  blockSize: number;
  logLevel: string;
  kvCacheBytes: number;
  /** CPU worker threads (0: one per core). */
  threads: number;
  /** Gamma and delta of watermarked requests, from WATERMARK_GAMMA and WATERMARK_DELTA as in TGI. */
  watermark: WatermarkSettings;
}

const DTYPES: readonly ComputeDtype[] = ["float32", "bfloat16", "float16"];
const DEFAULT_RENDEZVOUS_TIMEOUT_S = 600;

export function parseShardArgs(argv: string[], env: NodeJS.ProcessEnv): ShardOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        "model-id": { type: "string" },
        "uds-path": { type: "string" },
        rank: { type: "string" },
        "world-size": { type: "string" },
        dtype: { type: "string" },
        device: { type: "string" },
        "cuda-memory-fraction": { type: "string" },
        "cuda-graphs": { type: "string" },
        "no-lookahead": { type: "boolean" },
        "comm-name": { type: "string" },
        "rendezvous-timeout": { type: "string" },
        "block-size": { type: "string" },
        "json-output": { type: "boolean" },
        "log-level": { type: "string" },
        "kv-cache-bytes": { type: "string" },
        threads: { type: "string" },
      },
    }));
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  const modelId = values["model-id"];
  if (!modelId) throw new CliError("--model-id is required");
  const uds = values["uds-path"] ?? env.SHARD_UDS_PATH;
  if (!uds) throw new CliError("--uds-path (or SHARD_UDS_PATH) is required");
  const rank = integer("--rank", values.rank ?? env.RANK ?? "0", 0);
  const worldSize = integer("--world-size", values["world-size"] ?? env.WORLD_SIZE ?? "1", 1);
  if (rank >= worldSize) throw new CliError(`--rank ${rank} must be below --world-size ${worldSize}`);
  const dtype = values.dtype;
  if (dtype !== undefined && !DTYPES.includes(dtype as ComputeDtype)) {
    throw new CliError(`--dtype '${dtype}' is not one of ${DTYPES.join(", ")}`);
  }
  const device = values.device ?? "auto";
  if (!DEVICES.includes(device as DeviceChoice)) throw new CliError(`--device '${device}' is not one of ${DEVICES.join(", ")}`);
  const fractionText = values["cuda-memory-fraction"] ?? env.CUDA_MEMORY_FRACTION ?? "1.0";
  const cudaMemoryFraction = Number(fractionText);
  if (!(cudaMemoryFraction > 0 && cudaMemoryFraction <= 1)) {
    throw new CliError(`--cuda-memory-fraction must be in (0, 1] (got '${fractionText}')`);
  }
  const options: ShardOptions = {
    modelId,
    device: device as DeviceChoice,
    cudaMemoryFraction,
    udsPath: resolve(uds),
    rank,
    worldSize,
    rendezvousTimeoutS: integer("--rendezvous-timeout", values["rendezvous-timeout"] ?? String(DEFAULT_RENDEZVOUS_TIMEOUT_S), 1),
    blockSize: integer("--block-size", values["block-size"] ?? "16", 1),
    logLevel: values["log-level"] ?? env.LOG_LEVEL ?? "info",
    kvCacheBytes: integer("--kv-cache-bytes", values["kv-cache-bytes"] ?? env.TEXT_GEN_KV_CACHE_BYTES ?? String(DEFAULT_KV_CACHE_BYTES), 1),
    threads: integer("--threads", values.threads ?? "0", 0),
    watermark: watermarkFromEnv(env),
    lookahead: !values["no-lookahead"] && env.TEXT_GEN_LOOKAHEAD !== "0",
  };
  if (dtype !== undefined) options.dtype = dtype as ComputeDtype;
  const graphs = values["cuda-graphs"] ?? env.CUDA_GRAPHS;
  if (graphs !== undefined) options.cudaGraphs = parseCudaGraphs(graphs);
  const commName = values["comm-name"];
  if (commName !== undefined) options.commName = commName;
  return options;
}

/** TGI's CUDA_GRAPHS: comma-separated batch sizes; values <= 0 are dropped ("0" disables). */
export function parseCudaGraphs(text: string): number[] {
  const sizes = text.split(",").map((part) => part.trim());
  if (sizes.some((part) => !/^-?\d+$/.test(part))) {
    throw new CliError(`--cuda-graphs must be a comma-separated list of batch sizes (0 disables), got '${text}'`);
  }
  const kept = sizes.map(Number).filter((n) => n > 0);
  if (kept.some((n) => n > 4096)) throw new CliError(`--cuda-graphs batch sizes must be at most 4096, got '${text}'`);
  return kept;
}

/**
 * `unix://<path>` of every rank. The launcher names rank r's socket `<base>-<r>`,
 * so the others follow from this rank's path.
 */
export function shardUrls(udsPath: string, rank: number, worldSize: number): string[] {
  if (worldSize === 1) return [`unix://${udsPath}`];
  const suffix = `-${rank}`;
  if (!udsPath.endsWith(suffix)) {
    throw new CliError(`--uds-path ${udsPath} must end with -${rank} (the rank) when --world-size is ${worldSize}`);
  }
  const base = udsPath.slice(0, -suffix.length);
  return Array.from({ length: worldSize }, (_, i) => `unix://${base}-${i}`);
}

/** TGI's shard reads these two from its environment; unset means TGI's defaults (0.5, 2.0). */
export function watermarkFromEnv(env: NodeJS.ProcessEnv): WatermarkSettings {
  const read = (name: string, fallback: number, ok: (v: number) => boolean, rule: string, meaning: string): number => {
    const text = env[name];
    if (text === undefined || text.trim() === "") return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || !ok(value)) throw new CliError(`${name} must be ${rule} (got '${text}'): it is ${meaning}`);
    return value;
  };
  return {
    gamma: read("WATERMARK_GAMMA", DEFAULT_WATERMARK.gamma, (v) => v > 0 && v < 1, "a number strictly between 0 and 1",
      "the share of the vocabulary in the watermark's greenlist"),
    delta: read("WATERMARK_DELTA", DEFAULT_WATERMARK.delta, (v) => v >= 0, "a number ≥ 0", "the logit bias the watermark adds to green tokens"),
  };
}

function integer(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min) {
    throw new CliError(`${flag} must be an integer ≥ ${min} (got '${text}')`);
  }
  return value;
}
