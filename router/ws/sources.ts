// The request kinds /v1/ws runs, each the event stream of an HTTP route:
// generate → /generate_stream's events, chat and completion → the OpenAI
// routes' chunks (`stream` implied).
import type { HttpContext } from "../http/context.js";
import { GenerateEvents } from "../http/generate-stream.js";
import { runChatCompletion } from "../openai/chat.js";
import { runCompletion } from "../openai/completions.js";
import type { OpenAIResult } from "../openai/shapes.js";
import { parseGenerateRequest } from "../validation/request.js";
import type { EventSource, EventSources } from "./session.js";

type OpenAIRun = (ctx: HttpContext, body: unknown, signal: AbortSignal) => Promise<OpenAIResult<object, object>>;

/** A body that is not an object is left as is: the route's own check refuses it. */
function openaiEvents(ctx: HttpContext, run: OpenAIRun): EventSource {
  return async function* (body: unknown, signal: AbortSignal) {
    const streamed = typeof body === "object" && body !== null && !Array.isArray(body) ? { ...body, stream: true } : body;
    const result = await run(ctx, streamed, signal);
    if (result.stream) for await (const chunk of result.chunks) yield JSON.stringify(chunk);
    else yield JSON.stringify(result.response);
  };
}

export function defaultSources(ctx: HttpContext): EventSources {
  return {
    generate: (body, signal) => new GenerateEvents(ctx, parseGenerateRequest(body), signal),
    chat: openaiEvents(ctx, runChatCompletion),
    completion: openaiEvents(ctx, runCompletion),
  };
}
