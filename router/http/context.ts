// Everything the route handlers share, built once by main.ts.
import type { Logger } from "pino";
import type { InferBackend, TokenDecoder } from "../infer/types.js";
import type { ChatTemplate } from "../tokenizer/chat-template.js";
import type { Metrics } from "../metrics/metrics.js";
import type { PromptEncoder, Validator } from "../validation/validate.js";
import type { Permits } from "./permits.js";

/** Static fields of GET /info that do not come from the validator's limits. */
export interface ServerInfo {
  modelId: string;
  maxConcurrentRequests: number;
  validationWorkers: number;
  maxClientBatchSize: number;
  version: string;
  maxBatchTotalTokens: number;
  maxBatchPrefillTokens: number;
  maxWaitingTokens: number;
  waitingServedRatio: number;
  blockSize: number;
  modelDtype: string | null;
  modelDeviceType: string | null;
}

export interface HttpContext {
  backend: InferBackend;
  validator: Validator;
  permits: Permits;
  info: ServerInfo;
  /** x-compute-type header: env COMPUTE_TYPE, else the shards' device type. */
  computeType: string;
  payloadLimit: number;
  /** SSE keep-alive comment interval (15 s, as axum's default). */
  keepAliveMs: number;
  logger: Logger;
  /** Aborted on shutdown: every in-flight request ends. */
  shutdown: AbortSignal;
  /** Prometheus metrics of this server (GET /metrics). */
  metrics: Metrics;
  /** POST /tokenize. */
  tokenizer: PromptEncoder & TokenDecoder;
  /** Bearer token every route but the health checks and /metrics requires; undefined: none. */
  apiKey?: string;
  /** Origins allowed by CORS; empty: any origin (TGI's default). */
  corsAllowOrigin: string[];
  /** The model's chat template for /v1/chat/completions; null or absent: 422 "template not found". */
  chatTemplate?: ChatTemplate | null;
}
