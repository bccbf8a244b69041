// POST /v1/chat/completions without HTTP: a body in, a response or a chunk
// stream out (the WebSocket route runs the same function). Messages become a
// prompt through the model's chat template, then the TGI validation path.
import { performance } from "node:perf_hooks";
import { HttpError } from "../http/errors.js";
import { ref } from "../schema/index.js";
import { ChatTemplateError, type TemplateMessage } from "../tokenizer/chat-template.js";
import { validationError } from "../validation/errors.js";
import { checkBody } from "../validation/request.js";
import { Generations, type OpenAIContext } from "./generations.js";
import { openaiFinishReason, samplingChoice, type Body } from "./params.js";
import { openaiSchemas } from "./schemas.js";
import { textPieces } from "./stop-text.js";
import { chatLogprob, openaiBody, responseMeta, usage } from "./shapes.js";
import type { ChatTokenLogprob, OpenAIResult, ResponseMeta, Usage } from "./shapes.js";

type FinishReason = "stop" | "length";

export interface ChatCompletion extends ResponseMeta {
  object: "chat.completion";
  choices: {
    index: number;
    message: { role: "assistant"; content: string };
    logprobs: { content: ChatTokenLogprob[] } | null;
    finish_reason: FinishReason;
  }[];
  usage: Usage;
}

export interface ChatCompletionChunk extends ResponseMeta {
  object: "chat.completion.chunk";
  choices: {
    index: number;
    delta: { role?: "assistant"; content: string };
    logprobs: { content: ChatTokenLogprob[] } | null;
    finish_reason: FinishReason | null;
  }[];
  /** Only with stream_options.include_usage: null on every chunk but the last, which has no choices. */
  usage?: Usage | null;
}

const templateNotFound = () => new HttpError(422, "template_error", "Template error: template not found");

/** A tool call's arguments as templates expect them: an object, not OpenAI's JSON string. */
function parsedArguments(call: Body): Body {
  const fn = call.function as Body;
  if (typeof fn.arguments !== "string") return call;
  try {
    return { ...call, function: { ...fn, arguments: JSON.parse(fn.arguments) as unknown } };
  } catch {
    return call;
  }
}

/** OpenAI messages as templates read them: content flattened to text, null fields dropped. */
export function templateMessages(messages: Body[]): TemplateMessage[] {
  return messages.map((message, i) => {
    const fields = Object.fromEntries(Object.entries(message).filter(([, v]) => v !== null && v !== undefined));
    const content = message.content ?? "";
    let text: string;
    if (typeof content === "string") {
      text = content;
    } else {
      text = (content as Body[])
        .map((part) => {
          if (part.type !== "text") throw validationError(`messages[${i}]: image content is not supported: this server serves text models`);
          return typeof part.text === "string" ? part.text : "";
        })
        .join("");
    }
    if (Array.isArray(fields.tool_calls)) fields.tool_calls = (fields.tool_calls as Body[]).map(parsedArguments);
    // "developer" is OpenAI's newer name for "system"; chat templates know only the latter.
    const role = message.role === "developer" ? "system" : (message.role as string);
    return { ...fields, role, content: text };
  });
}

/** The rendered prompt; template problems are 422 template_error, as TGI answers them. */
function renderPrompt(ctx: OpenAIContext, body: Body): string {
  const template = ctx.chatTemplate;
  if (template === null || template === undefined) throw templateNotFound();
  const tools = body.tools as unknown[] | null | undefined;
  try {
    return template.render(templateMessages(body.messages as Body[]), tools ? { tools } : {});
  } catch (err) {
    if (err instanceof ChatTemplateError) throw new HttpError(422, "template_error", err.message);
    throw err;
  }
}

/** Features that need constrained decoding: refused clearly rather than ignored. */
function checkUnsupported(body: Body): void {
  const format = body.response_format as Body | null | undefined;
  if (format && format.type !== "text") {
    throw validationError(`\`response_format\` of type "${String(format.type)}" is not supported yet (no constrained decoding)`);
  }
  const choice = body.tool_choice;
  if (body.tools && choice !== undefined && choice !== null && choice !== "auto" && choice !== "none") {
    throw validationError("`tool_choice` other than \"auto\" or \"none\" is not supported yet (no constrained decoding)");
  }
}

/**
 * Runs one chat completion. Rejects (HttpError / InferError with status and
 * error_type) before anything was generated when the request is refused; a
 * stream's chunks throw the same errors if generation fails later. Aborting
 * `signal` cancels every choice and gives its permits back.
 */
export async function runChatCompletion(
  ctx: OpenAIContext,
  body: unknown,
  signal: AbortSignal,
): Promise<OpenAIResult<ChatCompletionChunk, ChatCompletion>> {
  const startedAt = performance.now();
  checkBody(ref("ChatRequest"), body, openaiSchemas);
  const b = body as Body;
  const logprobs = b.logprobs === true;
  const topLogprobs = logprobs ? ((b.top_logprobs as number | null | undefined) ?? 0) : 0;
  const { maxTopNTokens } = ctx.validator.limits;
  if (topLogprobs > maxTopNTokens) throw validationError(`\`top_logprobs\` must be >= 0 and <= ${maxTopNTokens}. Given: ${topLogprobs}`);
  const maxTokens = (b.max_completion_tokens ?? b.max_tokens ?? null) as number | null;
  const sampling = samplingChoice(b, maxTokens, topLogprobs, { maxChoices: ctx.info.maxConcurrentRequests });
  checkUnsupported(b);
  const inputs = renderPrompt(ctx, b);
  const generations = await Generations.admit(
    ctx,
    [{ request: { inputs, parameters: sampling.parameters, stream: false }, addSpecialTokens: false, presencePenalty: sampling.presencePenalty }],
    sampling.n,
    startedAt,
  );
  const meta = responseMeta(ctx, "chatcmpl");
  if (b.stream === true) {
    signal.addEventListener("abort", () => generations.release(), { once: true });
    const includeUsage = (b.stream_options as Body | null | undefined)?.include_usage === true;
    return { stream: true, chunks: chatChunks(generations, meta, { logprobs, includeUsage }, signal) };
  }
  // collect() gives the permits back when it ends.
  const choices = await generations.collect(signal);
  const response = openaiBody(
    meta,
    "chat.completion",
    choices.map((c, index) => ({
      index,
      message: { role: "assistant" as const, content: generations.textOf(index, c) },
      logprobs: logprobs ? { content: c.tokens.map((t, i) => chatLogprob(t, c.topTokens[i]!)) } : null,
      finish_reason: openaiFinishReason(c.end.finishReason),
    })),
    usage(generations.promptTokens, generations.completionTokens),
  );
  return { stream: false, response };
}

async function* chatChunks(
  generations: Generations,
  meta: ResponseMeta,
  options: { logprobs: boolean; includeUsage: boolean },
  signal: AbortSignal,
): AsyncGenerator<ChatCompletionChunk> {
  const usageField = options.includeUsage ? null : undefined;
  const started = new Set<number>();
  for await (const { index, text, token, topTokens, finishReason } of textPieces(generations, signal)) {
    const logprobs = options.logprobs ? { content: [chatLogprob(token, topTokens)] } : null;
    // A token whose text is held back (or special) sends nothing, unless it carries logprobs or the end.
    if (text === "" && logprobs === null && finishReason === null && started.has(index)) continue;
    const delta = started.has(index) ? { content: text } : { role: "assistant" as const, content: text };
    started.add(index);
    yield openaiBody(meta, "chat.completion.chunk", [{ index, delta, logprobs, finish_reason: finishReason }], usageField);
  }
  if (options.includeUsage) yield openaiBody(meta, "chat.completion.chunk", [], usage(generations.promptTokens, generations.completionTokens));
}
