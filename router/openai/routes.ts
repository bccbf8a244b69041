// The OpenAI routes over HTTP: JSON answers, or SSE chunks written as OpenAI
// writes them (`data: {json}`, then `data: [DONE]`). Refusals before the
// stream starts are TGI's error JSON with their status; a failure after it
// started is one `data: {"error": {...}}` event, then `[DONE]` (TGI's way).
import type { IncomingMessage, ServerResponse } from "node:http";
import { readJsonBody } from "../http/body.js";
import type { HttpContext } from "../http/context.js";
import { errorJson, HttpError, internalError, sendJson } from "../http/errors.js";
import { requestScope } from "../http/lifecycle.js";
import { SseWriter } from "../http/sse.js";
import { InferError } from "../infer/types.js";
import { runChatCompletion } from "./chat.js";
import { runCompletion } from "./completions.js";
import { modelList } from "./models.js";
import type { OpenAIResult } from "./shapes.js";

type Run = (ctx: HttpContext, body: unknown, signal: AbortSignal) => Promise<OpenAIResult<object, object>>;

async function sendStream(ctx: HttpContext, res: ServerResponse, route: string, chunks: AsyncIterable<object>, clientGone: () => boolean) {
  const sse = new SseWriter(res, { "x-compute-type": ctx.computeType }, ctx.keepAliveMs, "data: ");
  try {
    for await (const chunk of chunks) await sse.send(chunk);
    ctx.logger.info({ route }, "Success");
  } catch (err) {
    if (clientGone()) return;
    const known = err instanceof InferError || err instanceof HttpError ? err : internalError(err);
    if (known !== err) ctx.logger.error({ route, err }, "unexpected error");
    else ctx.logger.warn({ route, error: known.message }, "request failed");
    await sse.send({ error: { message: known.message, http_status_code: known.status, type: errorJson(known).error_type } });
  } finally {
    if (!clientGone()) await sse.sendData("[DONE]");
    sse.end();
  }
}

/** A POST route that runs `run`; errors thrown before the answer starts go to the server's error handler. */
const openaiRoute =
  (route: string, run: Run) =>
  async (ctx: HttpContext, req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readJsonBody(req, ctx.payloadLimit);
    const scope = requestScope(res, ctx.shutdown);
    try {
      const result = await run(ctx, body, scope.signal);
      if (result.stream) {
        await sendStream(ctx, res, route, result.chunks, () => scope.clientGone);
        return;
      }
      if (scope.clientGone) return;
      ctx.logger.info({ route }, "Success");
      sendJson(res, 200, JSON.stringify(result.response), { "x-compute-type": ctx.computeType });
    } catch (err) {
      if (scope.clientGone) return; // cancelled: nobody to answer
      throw err;
    } finally {
      scope.dispose();
    }
  };

export const handleChatCompletions = openaiRoute("chat_completions", runChatCompletion);
export const handleCompletions = openaiRoute("completions", runCompletion);

export function handleModels(ctx: HttpContext, _req: IncomingMessage, res: ServerResponse): void {
  sendJson(res, 200, JSON.stringify(modelList(ctx)));
}
