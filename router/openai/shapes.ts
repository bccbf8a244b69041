// JSON pieces shared by the OpenAI responses: ids, the model fields, usage,
// and the two logprobs shapes (chat's and the legacy completions').
import { randomBytes } from "node:crypto";
import type { TokenInfo } from "../infer/types.js";
import type { OpenAIContext } from "./generations.js";

/** A request's answer: one response, or (stream: true) chunks to send in order, before `data: [DONE]`. */
export type OpenAIResult<Chunk, Response> = { stream: true; chunks: AsyncIterable<Chunk> } | { stream: false; response: Response };

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export const usage = (promptTokens: number, completionTokens: number): Usage => ({
  prompt_tokens: promptTokens,
  completion_tokens: completionTokens,
  total_tokens: promptTokens + completionTokens,
});

/** The fields every response and chunk of one request repeats. */
export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  system_fingerprint: string;
}

export function responseMeta(ctx: OpenAIContext, idPrefix: "chatcmpl" | "cmpl"): ResponseMeta {
  return {
    id: `${idPrefix}-${randomBytes(12).toString("hex")}`,
    created: Math.floor(Date.now() / 1000),
    // The request's `model` is ignored: this server serves one model and names it.
    model: ctx.info.modelId,
    system_fingerprint: `${ctx.info.version}-native`,
  };
}

export type OpenAIBody<O extends string, C> = ResponseMeta & { object: O; choices: C[]; usage?: Usage | null };

/**
 * A response or chunk in OpenAI's key order. `usage` undefined leaves the key
 * out (chunks of a stream without include_usage); null on chunks with it.
 */
export function openaiBody<O extends string, C>(meta: ResponseMeta, object: O, choices: C[], usage: Usage): OpenAIBody<O, C> & { usage: Usage };
export function openaiBody<O extends string, C>(meta: ResponseMeta, object: O, choices: C[], usage?: Usage | null): OpenAIBody<O, C>;
export function openaiBody<O extends string, C>(meta: ResponseMeta, object: O, choices: C[], usage?: Usage | null): OpenAIBody<O, C> {
  const { id, created, model, system_fingerprint } = meta;
  return { id, object, created, model, system_fingerprint, choices, ...(usage === undefined ? {} : { usage }) };
}

const logprob = (t: TokenInfo): number | null => (t.logprob === null || Number.isNaN(t.logprob) ? null : t.logprob);
const utf8 = (text: string): number[] => [...Buffer.from(text, "utf8")];

/**
 * An alternative's text. Alternatives are decoded one by one, which drops the
 * leading space of SentencePiece pieces; the chosen token's streamed text keeps
 * it, so the chosen one among the alternatives reads the same as the token.
 */
const textOf = (alternative: TokenInfo, chosen: TokenInfo): string => (alternative.id === chosen.id ? chosen.text : alternative.text);

export interface ChatTokenLogprob {
  token: string;
  logprob: number | null;
  bytes: number[];
  top_logprobs: { token: string; logprob: number | null; bytes: number[] }[];
}

export function chatLogprob(token: TokenInfo, top: TokenInfo[]): ChatTokenLogprob {
  return {
    token: token.text,
    logprob: logprob(token),
    bytes: utf8(token.text),
    top_logprobs: top.map((t) => {
      const text = textOf(t, token);
      return { token: text, logprob: logprob(t), bytes: utf8(text) };
    }),
  };
}

/** The legacy completions logprobs: parallel lists, one entry per token. */
export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  /** Per token: alternative text → logprob; null where unknown (echoed prompt tokens). */
  top_logprobs: (Record<string, number | null> | null)[];
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
}

export class LegacyLogprobsBuilder {
  readonly value: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };

  /** Character offset in the choice's text of the next token added. */
  constructor(public offset = 0) {}

  add(token: TokenInfo, top: TokenInfo[] | null): void {
    this.value.tokens.push(token.text);
    this.value.token_logprobs.push(logprob(token));
    this.value.top_logprobs.push(top === null ? null : Object.fromEntries(top.map((t) => [textOf(t, token), logprob(t)])));
    this.value.text_offset.push(this.offset);
    this.offset += token.text.length;
  }
}
