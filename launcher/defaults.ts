// Derives what the user left out (shard count, prefill budget) and rejects inconsistent settings,
// following TGI's launcher (find_num_shards, max_batch_prefill_tokens, argument validation).
import type { LauncherArgs } from "./args.js";
import { LauncherError } from "./errors.js";
import { countNvidiaGpus, gpuPerRank } from "./gpus.js";
import type { ModelConfig } from "./model-config.js";

/** Number of visible accelerators from the environment, or undefined when unknown. */
export function visibleDeviceCount(env: NodeJS.ProcessEnv): number | undefined {
  for (const name of ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"]) {
    const v = env[name];
    if (v === undefined) continue;
    // "all"/"void" would need nvidia-smi; treat them as unknown rather than guess.
    if (v === "all" || v === "void") return undefined;
    return v.split(",").filter((s) => s.trim() !== "").length;
  }
  return undefined;
}

export function findNumShards(sharded: boolean | undefined, numShard: number | undefined, devices: number | undefined): number {
  let n: number;
  if (sharded === true) {
    if (numShard === undefined) {
      const d = devices ?? 0;
      if (d <= 1) throw new LauncherError(`\`sharded\` is true but only found ${d} CUDA devices`);
      n = d;
    } else {
      if (numShard <= 1) throw new LauncherError(`\`sharded\` is true but \`num_shard\` <= 1`);
      n = numShard;
    }
  } else if (sharded === false) {
    n = numShard ?? 1;
  } else {
    n = numShard ?? devices ?? 1;
  }
  if (n < 1) throw new LauncherError("`num_shard` cannot be < 1");
  return n;
}

export interface Derived {
  /** The world size: shards over every node. */
  numShard: number;
  /** This node's ranks: firstRank .. firstRank + localShards - 1. */
  firstRank: number;
  localShards: number;
  /** CUDA_VISIBLE_DEVICES of each local rank; undefined: inherited (a CPU run). */
  gpus?: string[];
  maxInputTokens?: number;
  maxBatchPrefillTokens: number;
}

const DEFAULT_PREFILL_TOKENS = 4096;

export function deriveAndValidate(args: LauncherArgs, config: ModelConfig, env: NodeJS.ProcessEnv,
  nvidiaGpus: number | undefined = countNvidiaGpus()): Derived {
  if (args.maxInputTokens !== undefined && args.maxInputLength !== undefined) {
    throw new LauncherError("`max_input_tokens` and `max_input_length` are the same setting; give only --max-input-tokens");
  }
  const maxInputTokens = args.maxInputTokens ?? args.maxInputLength;
  if (args.quantize !== undefined) throw new LauncherError(`--quantize ${args.quantize}: quantization is not supported yet`);
  if (config.quantMethod) {
    throw new LauncherError(`the model is quantized (quantization_config.quant_method ${config.quantMethod}); quantized models are not supported yet`);
  }
  if (args.speculate !== undefined && args.speculate !== 0) throw new LauncherError("--speculate: speculative decoding is not supported yet");
  if (args.validationWorkers <= 0) throw new LauncherError("`validation_workers` must be > 0");
  if (args.maxBatchSize !== undefined && args.maxBatchSize <= 0) throw new LauncherError("`max_batch_size` must be > 0");
  if (args.port < 0 || args.port > 65535) throw new LauncherError(`--port ${args.port} is not a valid port`);
  if (args.cudaGraphs !== undefined && !/^\s*-?\d+\s*(,\s*-?\d+\s*)*$/.test(args.cudaGraphs)) {
    throw new LauncherError(`--cuda-graphs must be a comma-separated list of batch sizes (0 disables), got "${args.cudaGraphs}"`);
  }
  if (!(args.cudaMemoryFraction > 0 && args.cudaMemoryFraction <= 1)) {
    throw new LauncherError(`--cuda-memory-fraction must be in (0, 1], got ${args.cudaMemoryFraction}`);
  }
  if (args.watermarkGamma !== undefined && !(args.watermarkGamma > 0 && args.watermarkGamma < 1)) {
    throw new LauncherError(`--watermark-gamma must be in (0, 1), got ${args.watermarkGamma}`);
  }
  if (args.watermarkDelta !== undefined && !(args.watermarkDelta >= 0)) {
    throw new LauncherError(`--watermark-delta must be >= 0, got ${args.watermarkDelta}`);
  }
  if (args.gracefulTerminationTimeout < 0) throw new LauncherError("--graceful-termination-timeout must be >= 0");
  if (args.startupTimeout <= 0) throw new LauncherError("--startup-timeout must be > 0");
  if (maxInputTokens !== undefined && args.maxTotalTokens !== undefined && maxInputTokens >= args.maxTotalTokens) {
    throw new LauncherError(`\`max_input_tokens\`(${maxInputTokens}) must be < \`max_total_tokens\`(${args.maxTotalTokens})`);
  }
  if (args.maxTotalTokens !== undefined && args.maxBatchTotalTokens !== undefined && args.maxTotalTokens > args.maxBatchTotalTokens) {
    throw new LauncherError(`\`max_total_tokens\`(${args.maxTotalTokens}) must be <= \`max_batch_total_tokens\`(${args.maxBatchTotalTokens})`);
  }
  let maxBatchPrefillTokens = args.maxBatchPrefillTokens;
  if (maxBatchPrefillTokens === undefined) {
    // TGI also estimates a compute-optimal budget from the GPU's FLOPs; 4096 is its fallback.
    maxBatchPrefillTokens = Math.min(DEFAULT_PREFILL_TOKENS, config.maxPositionEmbeddings ?? DEFAULT_PREFILL_TOKENS);
  }
  if (maxBatchPrefillTokens <= 0) throw new LauncherError("`max_batch_prefill_tokens` must be > 0");
  if (args.maxBatchTotalTokens !== undefined && maxBatchPrefillTokens > args.maxBatchTotalTokens) {
    throw new LauncherError(`\`max_batch_prefill_tokens\`(${maxBatchPrefillTokens}) must be <= \`max_batch_total_tokens\`(${args.maxBatchTotalTokens})`);
  }
  if (args.masterPort !== undefined && (args.masterPort < 1 || args.masterPort > 65535)) {
    throw new LauncherError(`--master-port ${args.masterPort} is not a valid port`);
  }
  const numShard = findNumShards(args.sharded, args.numShard, visibleDeviceCount(env));
  const { firstRank, localShards } = nodeShare(args, numShard);
  if (args.nnodes > 1 && args.device === "cpu") {
    throw new LauncherError("--nnodes > 1 needs GPUs: the CPU's tensor-parallel communicator is shared memory, on one node");
  }
  const gpus = gpuPerRank(args.device, localShards, env, nvidiaGpus);
  return { numShard, firstRank, localShards, ...(gpus ? { gpus } : {}), maxInputTokens, maxBatchPrefillTokens };
}

/** This node's consecutive share of the ranks (torchrun's layout: node n runs n x k .. n x k + k - 1). */
export function nodeShare(args: Pick<LauncherArgs, "nnodes" | "nodeRank" | "masterAddr">, numShard: number): { firstRank: number; localShards: number } {
  const { nnodes, nodeRank } = args;
  if (nnodes < 1) throw new LauncherError("--nnodes must be >= 1");
  if (nodeRank < 0 || nodeRank >= nnodes) throw new LauncherError(`--node-rank ${nodeRank} must be in 0..${nnodes - 1} (--nnodes ${nnodes})`);
  if (numShard % nnodes !== 0) {
    throw new LauncherError(`--num-shard ${numShard} must be a multiple of --nnodes ${nnodes}: every node runs the same number of shards`);
  }
  if (nnodes > 1 && args.masterAddr === undefined) {
    throw new LauncherError(`--nnodes ${nnodes} needs --master-addr: the address of node 0, where rank 0 serves the NCCL id`);
  }
  const localShards = numShard / nnodes;
  return { firstRank: nodeRank * localShards, localShards };
}
