// OpenAI's sampling fields mapped onto TGI's GenerateParameters, so both kinds
// of route share router/validation/'s rules. Where OpenAI is looser than TGI
// and TGI's users complained (top_p = 1, temperature = 0, stop as a string,
// n > 1), this follows OpenAI.
import { validationError } from "../validation/errors.js";
import type { GenerateParameters } from "../validation/request.js";

/** A body that passed its schema (schemas.ts), so every present field has the right type. */
export type Body = Record<string, unknown>;

export interface SamplingChoice {
  parameters: GenerateParameters;
  /** OpenAI's presence_penalty (no TGI field), checked here. */
  presencePenalty: number;
  /** Choices per prompt. */
  n: number;
}

const opt = <T>(body: Body, key: string): T | null => (body[key] ?? null) as T | null;

export interface SamplingLimits {
  /** Most choices a request may ask for in all (each one holds a concurrency permit). */
  maxChoices: number;
}

/**
 * The GenerateParameters of an OpenAI body. `maxTokens` and `topNTokens` come
 * from the route (their field names differ between chat and completions).
 */
export function samplingChoice(body: Body, maxTokens: number | null, topNTokens: number, limits: SamplingLimits): SamplingChoice {
  const n = opt<number>(body, "n") ?? 1;
  if (n === 0) throw validationError("`n` must be strictly positive");
  if (n > limits.maxChoices) throw validationError(`\`n\` must be <= ${limits.maxChoices}. Given: ${n}`);
  if (maxTokens === 0) throw validationError("`max_tokens` must be strictly positive");
  const presencePenalty = opt<number>(body, "presence_penalty") ?? 0;
  if (!(presencePenalty >= -2 && presencePenalty <= 2)) throw validationError("`presence_penalty` must be >= -2.0 and <= 2.0");
  const logitBias = opt<object>(body, "logit_bias");
  if (logitBias !== null && Object.keys(logitBias).length > 0) throw validationError("`logit_bias` is not supported");

  const temperature = opt<number>(body, "temperature");
  let topP = opt<number>(body, "top_p");
  if (topP === 1) topP = null; // OpenAI's default value, which TGI's rule (< 1) refuses
  // OpenAI samples unless temperature is 0; top_p = 0 keeps only the most likely token: greedy too.
  const greedy = temperature === 0 || topP === 0;
  const stop = opt<string | string[]>(body, "stop");
  return {
    n,
    presencePenalty,
    parameters: {
      best_of: null,
      temperature: greedy ? null : temperature,
      repetition_penalty: opt(body, "repetition_penalty"),
      frequency_penalty: opt(body, "frequency_penalty"),
      top_k: greedy ? null : opt(body, "top_k"),
      top_p: greedy ? null : topP,
      typical_p: null,
      do_sample: !greedy,
      max_new_tokens: maxTokens,
      return_full_text: false,
      stop: stop === null ? [] : typeof stop === "string" ? [stop] : stop,
      truncate: null,
      watermark: false,
      details: true,
      decoder_input_details: false,
      seed: opt(body, "seed"),
      top_n_tokens: topNTokens,
      grammar: null,
      adapter_id: null,
      ignore_eos_token: opt<boolean>(body, "ignore_eos") ?? false,
    },
  };
}

/** OpenAI's finish reasons: a stop sequence and EOS are both "stop". */
export function openaiFinishReason(reason: "length" | "eos_token" | "stop_sequence"): "stop" | "length" {
  return reason === "length" ? "length" : "stop";
}
