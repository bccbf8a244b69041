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

/** A number as JSON.stringify writes it (NaN and ±Infinity as null). */
const jsonNumber = (n: number | null): string => (n !== null && Number.isFinite(n) ? String(n) : "null");

/** tokenJson's text, built by concatenation: one JSON.stringify (the token text) instead of an object and a stringify. */
function tokenText(t: TokenInfo): string {
  return `{"id":${t.id},"text":${JSON.stringify(t.text)},"logprob":${jsonNumber(t.logprob)},"special":${t.special}}`;
}

/**
 * StreamResponse as JSON text, byte for byte what JSON.stringify would make of
 * `{ index, token, top_tokens?, generated_text, details }` (serde's field order;
 * `top_tokens` omitted when empty, `generated_text` and `details` always present).
 * Built by concatenation because it runs once per streamed token.
 */
export function streamEventText(
  index: number,
  token: TokenInfo,
  topTokens: TokenInfo[],
  generatedText: string | null,
  details: StreamDetails | null,
): string {
  let json = `{"index":${index},"token":${tokenText(token)}`;
  if (topTokens.length > 0) {
    json += `,"top_tokens":[${tokenText(topTokens[0] as TokenInfo)}`;
    for (let i = 1; i < topTokens.length; i++) json += `,${tokenText(topTokens[i] as TokenInfo)}`;
    json += "]";
  }
  json += `,"generated_text":${generatedText === null ? "null" : JSON.stringify(generatedText)},"details":`;
  if (details === null) return `${json}null}`;
  return `${json}{"finish_reason":"${details.finishReason}","generated_tokens":${details.generatedTokens},"seed":${jsonNumber(details.seed)},"input_length":${details.inputLength}}}`;
}
