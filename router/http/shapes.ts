// JSON shapes of TGI's responses, keys in serde's field order. NaN and missing
// logprobs become null, as serde_json writes NaN.
import type { FinishReason, TokenInfo } from "../infer/types.js";

const logprobOf = (t: TokenInfo): number | null => (t.logprob === null || Number.isNaN(t.logprob) ? null : t.logprob);

export const tokenJson = (t: TokenInfo) => ({ id: t.id, text: t.text, logprob: logprobOf(t), special: t.special });

export const prefillTokenJson = (t: TokenInfo) => ({ id: t.id, text: t.text, logprob: logprobOf(t) });

export interface CollectedGeneration {
  generatedText: string;
  finishReason: FinishReason;
  generatedTokens: number;
  seed: number | null;
  prefill: TokenInfo[];
  tokens: TokenInfo[];
  topTokens: TokenInfo[][];
}

const topTokensJson = (g: CollectedGeneration) => g.topTokens.map((list) => list.map(tokenJson));

/** A losing best_of sequence: BestOfSequence (top_tokens omitted when empty). */
function bestOfSequenceJson(g: CollectedGeneration, withTopTokens: boolean): object {
  const seq: Record<string, unknown> = {
    generated_text: g.generatedText,
    finish_reason: g.finishReason,
    generated_tokens: g.generatedTokens,
    seed: g.seed,
    prefill: g.prefill.map(prefillTokenJson),
    tokens: g.tokens.map(tokenJson),
  };
  if (withTopTokens && g.topTokens.length > 0) seq.top_tokens = topTokensJson(g);
  return seq;
}

/**
 * GenerateResponse; `details` omitted unless asked, `best_of_sequences` unless
 * best_of > 1, `top_tokens` unless top_n_tokens > 0.
 */
export function generateResponseJson(
  g: CollectedGeneration,
  withDetails: boolean,
  withTopTokens: boolean,
  bestOfSequences: CollectedGeneration[] = [],
): object {
  if (!withDetails) return { generated_text: g.generatedText };
  const details: Record<string, unknown> = {
    finish_reason: g.finishReason,
    generated_tokens: g.generatedTokens,
    seed: g.seed,
    prefill: g.prefill.map(prefillTokenJson),
    tokens: g.tokens.map(tokenJson),
  };
  if (bestOfSequences.length > 0) details.best_of_sequences = bestOfSequences.map((s) => bestOfSequenceJson(s, withTopTokens));
  if (withTopTokens && g.topTokens.length > 0) details.top_tokens = topTokensJson(g);
  return { generated_text: g.generatedText, details };
}

export interface StreamDetails {
  finishReason: FinishReason;
  generatedTokens: number;
  seed: number | null;
  inputLength: number;
}

/** StreamResponse; `top_tokens` omitted when empty, `generated_text` and `details` always present. */
export function streamEventJson(
  index: number,
  token: TokenInfo,
  topTokens: TokenInfo[],
  generatedText: string | null,
  details: StreamDetails | null,
): object {
  const event: Record<string, unknown> = { index, token: tokenJson(token) };
  if (topTokens.length > 0) event.top_tokens = topTokens.map(tokenJson);
  event.generated_text = generatedText;
  event.details =
    details === null
      ? null
      : {
          finish_reason: details.finishReason,
          generated_tokens: details.generatedTokens,
          seed: details.seed,
          input_length: details.inputLength,
        };
  return event;
}
