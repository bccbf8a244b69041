// What one engine step computes for each request of a batch. A request's share
// is decided at the end of the step before (or on arrival, for a new request)
// and kept in `nextTokens`, so that CachedBatch.current_tokens tells the router
// exactly what the next step will cost:
//   * a new request: its first chunk (chunk_len, else the whole uncached prompt);
//   * a request still being chunk-prefilled: its next chunk, under the budget
//     max_prefill_tokens − (batch size − 1), handed out from the end of the
//     batch, at least one token each (TGI's rule, reference §4.6);
//   * a decoding request: one token, its last generated one.
// A token is sampled only when a step reaches the end of the prompt, or decodes.
import type { StepSequence } from "../native/engine-types.js";
import { isPrefilling, type ShardRequest } from "./batch-state.js";
import { badRequest } from "./errors.js";

export function planStep(requests: readonly ShardRequest[], blockSize: number): StepSequence[] {
  return requests.map((r) => planSequence(r, blockSize));
}

function planSequence(r: ShardRequest, blockSize: number): StepSequence {
  let tokens: Int32Array;
  let position: number;
  let sample: boolean;
  if (isPrefilling(r)) {
    position = r.computed;
    tokens = r.inputIds.subarray(position, position + r.nextTokens);
    sample = position + tokens.length === r.inputIds.length;
  } else {
    const last = r.generated[r.generated.length - 1];
    if (last === undefined) throw new Error(`request ${r.id} has neither prompt left nor a generated token`);
    tokens = Int32Array.of(last);
    position = r.inputIds.length + r.generated.length - 1;
    sample = true;
  }
  const end = position + tokens.length;
  if (end > r.blocks.length * blockSize) {
    throw badRequest(
      `request ${r.id} needs KV for ${end} tokens but has ${r.blocks.length} blocks of ${blockSize} tokens`,
    );
  }
  const seq: StepSequence = {
    id: r.id,
    tokens,
    position,
    blocks: r.blocks,
    sample,
    topN: sample ? r.topN : 0,
    promptLogprobs: r.prefillLogprobs && isPrefilling(r),
  };
  if (!r.started) seq.init = { params: r.params, prefix: r.inputIds.subarray(0, r.cacheLen) };
  return seq;
}

/**
 * Sets `nextTokens` of every request for the step after this one. Requests still
 * prefilling share the budget, the last of the batch first; the others decode.
 */
export function scheduleNextStep(requests: readonly ShardRequest[], maxPrefillTokens: number): void {
  let budget = maxPrefillTokens - (requests.length - 1);
  for (let i = requests.length - 1; i >= 0; i--) {
    const r = requests[i]!;
    if (!isPrefilling(r)) {
      r.nextTokens = 1;
      continue;
    }
    const chunk = Math.max(Math.min(r.inputIds.length - r.computed, budget), 1);
    r.nextTokens = chunk;
    budget -= chunk;
  }
}
