// POST /v1/completions without HTTP: one or several prompts, n choices each
// (choice index = prompt index × n + j), answered whole or as a chunk stream.
import { performance } from "node:perf_hooks";
import { HttpError } from "../http/errors.js";
import type { TokenInfo } from "../infer/types.js";
import { ref } from "../schema/index.js";
import { shapeError, validationError } from "../validation/errors.js";
import { checkBody } from "../validation/request.js";
import { Generations, type OpenAIContext } from "./generations.js";
import { openaiFinishReason, samplingChoice, type Body } from "./params.js";
import { openaiSchemas } from "./schemas.js";
import { textPieces } from "./stop-text.js";
import { LegacyLogprobsBuilder, openaiBody, responseMeta, usage } from "./shapes.js";
import type { LegacyLogprobs, OpenAIResult, ResponseMeta, Usage } from "./shapes.js";

type FinishReason = "stop" | "length";

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: LegacyLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface Completion extends ResponseMeta {
  object: "text_completion";
  choices: (CompletionChoice & { finish_reason: FinishReason })[];
  usage: Usage;
}

export interface CompletionChunk extends ResponseMeta {
  object: "text_completion";
  choices: CompletionChoice[];
  /** Only with stream_options.include_usage: null on every chunk but the last, which has no choices. */
  usage?: Usage | null;
}

/** TGI's checks that come before any validation, with its messages and error types. */
function checkPrompts(ctx: OpenAIContext, body: Body): string[] {
  if (Array.isArray(body.prompt) && body.prompt.length === 0) {
    throw shapeError("prompt", "Empty array detected. Do not use an empty array for the prompt.");
  }
  checkBody(ref("CompletionRequest"), body, openaiSchemas);
  if (body.suffix !== undefined && body.suffix !== null) {
    throw new HttpError(422, "suffix not supported", "Suffix is not supported and can be achieved by preprocessing the prompt.");
  }
  const prompts = typeof body.prompt === "string" ? [body.prompt] : (body.prompt as string[]);
  const max = ctx.info.maxClientBatchSize;
  if (prompts.length > max) {
    throw new HttpError(422, "batch size exceeded", `Number of prompts exceeds the maximum allowed batch size of ${max}`);
  }
  return prompts;
}

/**
 * The echoed prompt's tokens with their text as it stands in the prompt.
 * Prompt tokens are decoded one by one, which loses SentencePiece's leading
 * spaces; each is found in the prompt instead, from where the previous ended,
 * so the texts join to the prompt and text_offset is right. Special tokens
 * (BOS) are not part of the prompt's text and are left out.
 */
export function promptTokens(prompt: string, prefill: TokenInfo[]): TokenInfo[] {
  let cursor = 0;
  return prefill
    .filter((t) => !t.special)
    .map((t) => {
      const at = t.text === "" ? -1 : prompt.indexOf(t.text, cursor);
      if (at < 0) return t;
      const text = prompt.slice(cursor, at + t.text.length);
      cursor = at + t.text.length;
      return { ...t, text };
    });
}

/**
 * Runs one completions request; errors as runChatCompletion's (chat.ts).
 * Text stops before a stop sequence; `echo` puts the prompt in front of it.
 */
export async function runCompletion(ctx: OpenAIContext, body: unknown, signal: AbortSignal): Promise<OpenAIResult<CompletionChunk, Completion>> {
  const startedAt = performance.now();
  const b = body as Body;
  const prompts = checkPrompts(ctx, b);
  if (((b.best_of as number | null | undefined) ?? 1) > 1) throw validationError("`best_of` > 1 is not supported yet");
  const logprobs = (b.logprobs as number | null | undefined) ?? null;
  const { maxTopNTokens } = ctx.validator.limits;
  if (logprobs !== null && logprobs > maxTopNTokens) {
    throw validationError(`\`logprobs\` must be >= 0 and <= ${maxTopNTokens}. Given: ${logprobs}`);
  }
  const sampling = samplingChoice(b, (b.max_tokens ?? null) as number | null, logprobs ?? 0, { maxChoices: ctx.info.maxConcurrentRequests });
  const echo = b.echo === true;
  const stream = b.stream === true;
  // Echoed prompts carry their own logprobs (non-streaming only: the prompt goes out before they exist).
  sampling.parameters.decoder_input_details = echo && logprobs !== null && !stream;
  const generations = await Generations.admit(
    ctx,
    prompts.map((inputs) => ({
      request: { inputs, parameters: sampling.parameters, stream: false },
      addSpecialTokens: true,
      presencePenalty: sampling.presencePenalty,
    })),
    sampling.n,
    startedAt,
  );
  const meta = responseMeta(ctx, "cmpl");
  const promptOf = (index: number) => prompts[Math.floor(index / sampling.n)]!;
  if (stream) {
    signal.addEventListener("abort", () => generations.release(), { once: true });
    const includeUsage = (b.stream_options as Body | null | undefined)?.include_usage === true;
    const options = { logprobs: logprobs !== null, includeUsage, echo: echo ? promptOf : null };
    return { stream: true, chunks: completionChunks(generations, meta, options, signal) };
  }
  // collect() gives the permits back when it ends.
  const choices = await generations.collect(signal);
  const response = openaiBody(
    meta,
    "text_completion",
    choices.map((c, index) => {
      const prefix = echo ? promptOf(index) : "";
      let lp: LegacyLogprobs | null = null;
      if (logprobs !== null) {
        const builder = new LegacyLogprobsBuilder();
        for (const t of promptTokens(promptOf(index), c.prefill)) builder.add(t, null);
        builder.offset = prefix.length; // generated text starts after the echoed prompt
        c.tokens.forEach((t, i) => builder.add(t, c.topTokens[i]!));
        lp = builder.value;
      }
      return { index, text: prefix + generations.textOf(index, c), logprobs: lp, finish_reason: openaiFinishReason(c.end.finishReason) };
    }),
    usage(generations.promptTokens, generations.completionTokens),
  );
  return { stream: false, response };
}

async function* completionChunks(
  generations: Generations,
  meta: ResponseMeta,
  options: { logprobs: boolean; includeUsage: boolean; echo: ((index: number) => string) | null },
  signal: AbortSignal,
): AsyncGenerator<CompletionChunk> {
  const usageField = options.includeUsage ? null : undefined;
  const offsets = generations.requests.map(() => 0);
  const started = new Set<number>();
  for await (const piece of textPieces(generations, signal)) {
    const { index, finishReason } = piece;
    const prefix = !started.has(index) && options.echo !== null ? options.echo(index) : "";
    const text = prefix + piece.text;
    let logprobs: LegacyLogprobs | null = null;
    if (options.logprobs) {
      const builder = new LegacyLogprobsBuilder(offsets[index]! + prefix.length);
      builder.add(piece.token, piece.topTokens);
      logprobs = builder.value;
    }
    offsets[index]! += text.length;
    if (text === "" && logprobs === null && finishReason === null) continue;
    started.add(index);
    yield openaiBody(meta, "text_completion", [{ index, text, logprobs, finish_reason: finishReason }], usageField);
  }
  if (options.includeUsage) yield openaiBody(meta, "text_completion", [], usage(generations.promptTokens, generations.completionTokens));
}
