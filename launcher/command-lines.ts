// The argv and environment of each child, per the shard and router command-line contracts.
import { DEFAULT_MASTER_PORT } from "./args.js";
import { socketPath, type LaunchPlan } from "./plan.js";

/**
 * The launcher's environment minus what must not leak into children. NCCL_* settings pass
 * through to the shards; MASTER_ADDR/MASTER_PORT are set by shardCommand or not at all.
 */
function baseEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !DROPPED.has(k)) out[k] = v;
  return out;
}
const DROPPED = new Set(["LOG_LEVEL", "MASTER_ADDR", "MASTER_PORT"]);

export function shardCommand(plan: LaunchPlan, rank: number, env: NodeJS.ProcessEnv): { args: string[]; env: Record<string, string> } {
  const world = plan.derived.numShard;
  const uds = socketPath(plan.udsBase, rank);
  const args = ["--model-id", plan.modelDir, "--uds-path", uds, "--rank", String(rank), "--world-size", String(world)];
  if (plan.args.dtype) args.push("--dtype", plan.args.dtype);
  if (plan.args.device) args.push("--device", plan.args.device);
  if (world > 1) args.push("--comm-name", plan.commName, "--rendezvous-timeout", String(plan.args.startupTimeout));
  args.push("--json-output", "--log-level", plan.logLevel);
  const a = plan.args;
  const childEnv: Record<string, string> = {
    ...baseEnv(env),
    RANK: String(rank),
    WORLD_SIZE: String(world),
    SHARD_UDS_PATH: uds,
    CUDA_MEMORY_FRACTION: String(a.cudaMemoryFraction),
    TEXT_GEN_LAUNCH_ID: plan.launchId,
    // Always: the GPU machines this runs on must never use NVLink multicast (NVLS).
    NCCL_NVLS_ENABLE: "0",
  };
  // One GPU per rank (launcher/gpus.ts); a CPU run keeps what it inherited.
  const gpu = plan.derived.gpus?.[rank - plan.derived.firstRank];
  if (gpu !== undefined) childEnv.CUDA_VISIBLE_DEVICES = gpu;
  // Given: rank 0 serves the NCCL id over TCP (across nodes); else over a Unix socket on this node.
  if (a.masterAddr !== undefined || a.masterPort !== undefined) {
    childEnv.MASTER_ADDR = a.masterAddr ?? "localhost";
    childEnv.MASTER_PORT = String(a.masterPort ?? DEFAULT_MASTER_PORT);
  }
  if (a.cudaGraphs !== undefined) childEnv.CUDA_GRAPHS = a.cudaGraphs;
  if (a.maxTotalTokens !== undefined) childEnv.MAX_TOTAL_TOKENS = String(a.maxTotalTokens);
  if (a.maxBatchSize !== undefined) childEnv.MAX_BATCH_SIZE = String(a.maxBatchSize);
  // Unset: the shard's own defaults (TGI's 0.5 and 2.0), or the variables inherited above.
  if (a.watermarkGamma !== undefined) childEnv.WATERMARK_GAMMA = String(a.watermarkGamma);
  if (a.watermarkDelta !== undefined) childEnv.WATERMARK_DELTA = String(a.watermarkDelta);
  return { args, env: childEnv };
}

export function routerCommand(plan: LaunchPlan, masterSocket: string, env: NodeJS.ProcessEnv): { args: string[]; env: Record<string, string> } {
  const a = plan.args;
  const d = plan.derived;
  const args = [
    "--master-shard-uds-path", masterSocket,
    "--tokenizer-name", plan.modelDir,
    "--model-id", plan.modelId,
    "--hostname", a.hostname,
    "--port", String(a.port),
    "--max-batch-prefill-tokens", String(d.maxBatchPrefillTokens),
    "--max-concurrent-requests", String(a.maxConcurrentRequests),
    "--waiting-served-ratio", String(a.waitingServedRatio),
    "--max-waiting-tokens", String(a.maxWaitingTokens),
    "--max-best-of", String(a.maxBestOf),
    "--max-stop-sequences", String(a.maxStopSequences),
    "--max-top-n-tokens", String(a.maxTopNTokens),
    "--payload-limit", String(a.payloadLimit),
    "--validation-workers", String(a.validationWorkers),
  ];
  const optional: Array<[string, string | number | undefined]> = [
    ["--max-input-tokens", d.maxInputTokens],
    ["--max-total-tokens", a.maxTotalTokens],
    ["--max-batch-total-tokens", a.maxBatchTotalTokens],
    // Beyond the router's minimal contract: passed only when the user sets them.
    ["--max-batch-size", a.maxBatchSize],
    ["--api-key", a.apiKey],
    ["--tokenizer-config-path", a.tokenizerConfigPath],
  ];
  for (const [flag, v] of optional) if (v !== undefined) args.push(flag, String(v));
  for (const origin of a.corsAllowOrigin) args.push("--cors-allow-origin", origin);
  args.push("--json-output", "--log-level", plan.logLevel);
  return { args, env: { ...baseEnv(env), TEXT_GEN_LAUNCH_ID: plan.launchId } };
}
