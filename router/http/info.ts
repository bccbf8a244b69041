// GET /info (TGI's Info fields in order, then the older and our own extras) and
// GET /health (200 empty, or 503 TGI error JSON).
import type { ServerResponse } from "node:http";
import type { HttpContext } from "./context.js";
import { sendJson } from "./errors.js";

export function infoJson(ctx: HttpContext): object {
  const { info } = ctx;
  const limits = ctx.validator.limits;
  const stats = ctx.backend.stats();
  return {
    model_id: info.modelId,
    model_sha: null,
    model_pipeline_tag: null,
    max_concurrent_requests: info.maxConcurrentRequests,
    max_best_of: limits.maxBestOf,
    max_stop_sequences: limits.maxStopSequences,
    max_input_tokens: limits.maxInputTokens,
    max_total_tokens: limits.maxTotalTokens,
    validation_workers: info.validationWorkers,
    max_client_batch_size: info.maxClientBatchSize,
    router: "text-gen-router",
    version: info.version,
    sha: null,
    docker_label: null,
    // Fields TGI dropped from /info in 2024 (PR #2331) that clients still read, and ours.
    max_batch_total_tokens: info.maxBatchTotalTokens,
    max_batch_prefill_tokens: info.maxBatchPrefillTokens,
    max_waiting_tokens: info.maxWaitingTokens,
    waiting_served_ratio: info.waitingServedRatio,
    block_size: info.blockSize,
    model_dtype: info.modelDtype,
    model_device_type: info.modelDeviceType,
    kv_cache: { free_blocks: stats.freeBlocks, total_blocks: stats.totalBlocks },
  };
}

export function handleInfo(ctx: HttpContext, res: ServerResponse): void {
  sendJson(res, 200, JSON.stringify(infoJson(ctx)));
}

export async function handleHealth(ctx: HttpContext, res: ServerResponse): Promise<void> {
  let healthy: boolean;
  try {
    healthy = await ctx.backend.health();
  } catch (err) {
    ctx.logger.warn({ err }, "health check failed");
    healthy = false;
  }
  if (healthy) {
    res.writeHead(200, { "content-length": 0 });
    res.end();
  } else {
    sendJson(res, 503, JSON.stringify({ error: "unhealthy", error_type: "healthcheck" }));
  }
}
