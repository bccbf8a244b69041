// TGI's Validation::validate: checks GenerateParameters in TGI's order with its
// exact messages (first failure wins), tokenizes, truncates and derives
// max_new_tokens. Rules past TGI's (features we lack) come after its own.
import type { ValidParameters, ValidRequest } from "../infer/types.js";
import { validationError } from "./errors.js";
import type { GenerateRequest } from "./request.js";
import { randomSeed, validSeed } from "./seed.js";

export interface ValidationLimits {
  maxBestOf: number;
  maxStopSequences: number;
  maxTopNTokens: number;
  maxInputTokens: number;
  maxTotalTokens: number;
  /**
   * `inputs` longer than this many characters are refused before tokenizing
   * (not in TGI: bounds the tokenizer's work). Default: maxInputTokens × 32.
   */
  maxInputChars?: number;
}

/** Characters per token allowed in `inputs` unless maxInputChars says otherwise. */
export const CHARS_PER_TOKEN_LIMIT = 32;

export interface PromptEncoder {
  encode(text: string, addSpecialTokens: boolean): Promise<number[]>;
}

export class Validator {
  readonly maxInputChars: number;

  constructor(
    readonly limits: ValidationLimits,
    private readonly encoder: PromptEncoder,
  ) {
    this.maxInputChars = limits.maxInputChars ?? limits.maxInputTokens * CHARS_PER_TOKEN_LIMIT;
  }

  /** Our rule before any tokenization: the prompt's length in characters (code points). */
  checkInputChars(inputs: string): void {
    // Cheap bound first: a string of n UTF-16 units has at most n code points.
    if (inputs.length <= this.maxInputChars) return;
    const chars = [...inputs].length;
    if (chars > this.maxInputChars) {
      throw validationError(`\`inputs\` must have at most ${this.maxInputChars} characters. Given: ${chars}`);
    }
  }

  /** TGI's validate_best_of, run by /generate before a best_of > 1 request is split. */
  checkBestOf(bestOf: number): void {
    const { maxBestOf } = this.limits;
    if (maxBestOf === 1 && bestOf !== 1) throw validationError("`best_of` != 1 is not allowed for this endpoint");
    if (bestOf > maxBestOf) throw validationError(`\`best_of\` must be > 0 and <= ${maxBestOf}. Given: ${bestOf}`);
  }

  /** `addSpecialTokens` false: the prompt is a rendered chat template that already holds them. */
  async validate(request: GenerateRequest, addSpecialTokens = true): Promise<ValidRequest> {
    const p = request.parameters;
    const bestOf = p.best_of ?? 1;
    const sampling = p.do_sample || p.temperature !== null || p.top_k !== null || p.top_p !== null || p.typical_p !== null;
    if (bestOf > 1 && !sampling) throw validationError("you must use sampling when `best_of` is > 1");

    const temperature = p.temperature ?? 1.0;
    if (temperature <= 0) throw validationError("`temperature` must be strictly positive");
    const repetitionPenalty = p.repetition_penalty ?? 1.0;
    if (repetitionPenalty <= 0) throw validationError("`repetition_penalty` must be strictly positive");
    const frequencyPenalty = p.frequency_penalty ?? 0.0;
    if (!(frequencyPenalty >= -2 && frequencyPenalty <= 2)) throw validationError("`frequency_penalty` must be >= -2.0 and <= 2.0");
    // For top_p and typical_p the proto default (1.0) is not a valid user value.
    if (p.top_p !== null && (p.top_p <= 0 || p.top_p >= 1)) throw validationError("`top_p` must be > 0.0 and < 1.0");
    if (p.typical_p !== null && (p.typical_p <= 0 || p.typical_p >= 1)) throw validationError("`typical_p` must be > 0.0 and < 1.0");
    if (p.top_k !== null && p.top_k <= 0) throw validationError("`top_k` must be strictly positive");
    if (p.max_new_tokens === 0) throw validationError("`max_new_tokens` must be strictly positive");
    const { maxStopSequences, maxTopNTokens, maxInputTokens, maxTotalTokens } = this.limits;
    if (p.stop.length > maxStopSequences) {
      throw validationError(`\`stop\` supports up to ${maxStopSequences} stop sequences. Given: ${p.stop.length}`);
    }
    let seed: number;
    if (p.seed === null) {
      seed = randomSeed();
    } else {
      if (bestOf > 1) throw validationError("`seed` must not be set when `best_of` > 1");
      seed = validSeed(p.seed);
    }
    const topNTokens = p.top_n_tokens ?? 0;
    if (topNTokens > maxTopNTokens) {
      throw validationError(`\`top_n_tokens\` must be >= 0 and <= ${maxTopNTokens}. Given: ${topNTokens}`);
    }
    if (request.inputs.length === 0) throw validationError("`inputs` cannot be empty");
    if (p.truncate !== null && (p.truncate === 0 || p.truncate > maxInputTokens)) {
      throw validationError(`\`truncate\` must be strictly positive and less than ${maxInputTokens}. Given: ${p.truncate}`);
    }

    this.checkInputChars(request.inputs);
    let inputIds: number[];
    try {
      inputIds = await this.encoder.encode(request.inputs, addSpecialTokens);
    } catch (err) {
      throw validationError(`tokenizer error ${(err as Error).message}`);
    }
    // Left truncation: the prompt's end is what the model continues.
    if (p.truncate !== null && inputIds.length > p.truncate) inputIds = inputIds.slice(inputIds.length - p.truncate);
    const inputLength = inputIds.length;
    // TGI also caps each scheduling round at 1024 tokens and continues; we schedule it whole.
    const maxNewTokens = p.max_new_tokens ?? Math.max(0, maxTotalTokens - inputLength);
    if (inputLength + maxNewTokens > maxTotalTokens) {
      throw validationError(
        `\`inputs\` tokens + \`max_new_tokens\` must be <= ${maxTotalTokens}. Given: ${inputLength} \`inputs\` tokens and ${maxNewTokens} \`max_new_tokens\``,
      );
    }
    if (inputLength > maxInputTokens) {
      throw validationError(`\`inputs\` must have less than ${maxInputTokens} tokens. Given: ${inputLength}`);
    }
    if (p.grammar !== null) {
      checkGrammar(p.grammar);
      throw validationError("grammar is not supported yet");
    }

    const parameters: ValidParameters = {
      temperature,
      topK: p.top_k ?? 0,
      topP: p.top_p ?? 1.0,
      typicalP: p.typical_p ?? 1.0,
      doSample: p.do_sample,
      seed,
      repetitionPenalty,
      frequencyPenalty,
      presencePenalty: 0, // not a TGI parameter; the OpenAI routes set it
      watermark: p.watermark,
      maxNewTokens,
      stop: p.stop,
      ignoreEos: p.ignore_eos_token,
      topNTokens,
      decoderInputDetails: p.decoder_input_details,
    };
    return { inputIds, inputText: request.inputs, parameters };
  }
}

/**
 * TGI's grammar checks that need no grammar compiler: a JSON schema (or a
 * string holding one) with a top-level `properties`, or a regex that compiles.
 */
function checkGrammar(grammar: NonNullable<GenerateRequest["parameters"]["grammar"]>): void {
  if (grammar.type === "regex") {
    try {
      new RegExp(grammar.value as string, "u");
    } catch (err) {
      throw validationError(`grammar is not valid: ${(err as Error).message}`);
    }
    return;
  }
  let schema = grammar.type === "json_schema" ? (grammar.value as { schema: unknown }).schema : grammar.value;
  if (typeof schema === "string") {
    try {
      schema = JSON.parse(schema);
    } catch {
      throw validationError("grammar is not valid: the JSON schema is a string that does not parse as JSON");
    }
  }
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
    throw validationError("grammar is not valid: a JSON schema must be an object");
  }
  if (!Object.hasOwn(schema, "properties")) throw validationError("grammar is not valid: Grammar must have a 'properties' field");
}
