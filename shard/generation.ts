// Turns one engine step's outputs into the proto Generations the router reads,
// and advances each request: prompt tokens computed, token generated, and
// whether it stopped (LENGTH first, then EOS_TOKEN, TGI's order; stop
// sequences are text and belong to the router).
import type { StepOutput, StepSequence } from "../native/engine-types.js";
import { FinishReason, type Generation, type GeneratedText, type Tokens } from "../proto/gen/generate.js";
import type { ShardRequest } from "./batch-state.js";
import { ShardError } from "./errors.js";

export interface StepResult {
  generations: Generation[];
  /** Requests still running, in batch order. */
  running: ShardRequest[];
  /** Requests that finished in this step; their engine state is to be released. */
  finished: ShardRequest[];
}

/** `sequences[i]` is the plan of `requests[i]`; `outputs` come from engine.step(sequences). */
export function applyStep(
  requests: readonly ShardRequest[],
  sequences: readonly StepSequence[],
  outputs: readonly StepOutput[],
): StepResult {
  const byId = new Map(outputs.map((o) => [o.id, o]));
  const result: StepResult = { generations: [], running: [], finished: [] };
  requests.forEach((r, i) => {
    const seq = sequences[i]!;
    const out = byId.get(r.id);
    if (!out) throw engineError(`the engine returned no output for request ${r.id}`);
    r.started = true;
    const wasPrefilling = seq.position < r.inputIds.length;
    if (wasPrefilling) recordPromptChunk(r, seq, out);
    if (!seq.sample) {
      result.running.push(r);
      return;
    }
    if (out.token === undefined) throw engineError(`the engine sampled no token for request ${r.id}`);
    r.generated.push(out.token);
    const generation: Generation = {
      requestId: r.id,
      tokens: tokens([out.token], [out.logprob ?? Number.NaN]),
      topTokens: r.topN > 0 && out.topIds ? [tokens(Array.from(out.topIds), Array.from(out.topLogprobs ?? []))] : [],
    };
    if (wasPrefilling && r.prefillLogprobs) {
      generation.prefillTokens = tokens(Array.from(r.inputIds), Array.from(r.promptLogprobs!));
    }
    const generatedText = stopping(r, out.token);
    if (generatedText) {
      generation.generatedText = generatedText;
      result.finished.push(r);
    } else {
      result.running.push(r);
    }
    result.generations.push(generation);
  });
  return result;
}

function recordPromptChunk(r: ShardRequest, seq: StepSequence, out: StepOutput): void {
  r.computed = seq.position + seq.tokens.length;
  if (!r.prefillLogprobs) return;
  // NaN stays where nothing is known: the first prompt token, tokens served from
  // the prefix cache, and (from the engine) the first token of each later chunk,
  // whose logits were computed, unread, by the step before.
  r.promptLogprobs ??= new Float32Array(r.inputIds.length).fill(Number.NaN);
  const lps = out.promptLogprobs;
  if (!lps) return;
  for (let k = 0; k < Math.min(lps.length, seq.tokens.length); k++) r.promptLogprobs[seq.position + k] = lps[k]!;
}

function stopping(r: ShardRequest, token: number): GeneratedText | undefined {
  let finishReason: FinishReason | undefined;
  if (r.generated.length >= r.maxNewTokens) finishReason = FinishReason.FINISH_REASON_LENGTH;
  else if (!r.ignoreEos && r.eosTokenIds.has(token)) finishReason = FinishReason.FINISH_REASON_EOS_TOKEN;
  if (finishReason === undefined) return undefined;
  const text: GeneratedText = { text: "", generatedTokens: r.generated.length, finishReason };
  if (r.samples) text.seed = r.params.seed;
  return text;
}

function tokens(ids: number[], logprobs: number[]): Tokens {
  return { ids, logprobs, texts: [], isSpecial: [] };
}

function engineError(message: string): ShardError {
  return new ShardError("internal", message);
}
