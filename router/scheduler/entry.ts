// A request as the scheduler sees it: what the shard must be told, the KV
// blocks it holds, and where its results go.
import type {
  Generation,
  NextTokenChooserParameters,
  StoppingCriteriaParameters,
} from "../../proto/gen/generate.js";
import type { Allocation } from "./block-allocator.js";

/** The per-request fields of the proto Request, fixed at validation. */
export interface ShardRequest {
  inputIds: number[];
  parameters: NextTokenChooserParameters;
  stoppingParameters: StoppingCriteriaParameters;
  prefillLogprobs: boolean;
  topNTokens: number;
}

/** Where the batcher sends one request's results (the infer layer implements it). */
export interface EntrySink {
  /** True once the client went away or the request ended on the router's side (stop sequence). */
  readonly gone: boolean;
  /** Called once, when the request's first batch is sent. */
  batched(at: number): void;
  /** One step's output for this request; returns true when the request has finished. */
  deliver(generation: Generation): boolean;
  /** The request cannot complete; `error.message` is the reason for the user. */
  fail(error: Error): void;
}

export interface Entry {
  /** Router-assigned, unique and increasing; the proto Request id. */
  readonly id: number;
  readonly request: ShardRequest;
  readonly sink: EntrySink;
  /** KV blocks, held from batching until the request leaves the running batch. */
  allocation: Allocation | null;
}

/** KV positions a request may need: prompt + generated tokens + speculation, minus the last token, never written. */
export function tokensNeeded(request: ShardRequest, speculate: number): number {
  return request.inputIds.length + request.stoppingParameters.maxNewTokens + speculate - 1;
}
