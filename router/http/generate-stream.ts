// POST /generate_stream: token events over SSE. Every failure after the body
// parsed (best_of, decoder_input_details, overload, validation, generation) is
// an error event in a 200 stream, as in TGI, where validation runs in the body.
import type { ServerResponse } from "node:http";
import { InferError } from "../infer/types.js";
import { validationError } from "../validation/errors.js";
import type { GenerateRequest } from "../validation/request.js";
import type { HttpContext } from "./context.js";
import { errorJson, HttpError, internalError, overloaded } from "./errors.js";
import { eventsUntilAborted, requestScope } from "./lifecycle.js";
import { streamEventJson } from "./shapes.js";
import { SseWriter } from "./sse.js";

async function streamGeneration(ctx: HttpContext, sse: SseWriter, request: GenerateRequest, signal: AbortSignal): Promise<void> {
  const p = request.parameters;
  if ((p.best_of ?? 1) !== 1) throw validationError("`best_of` != 1 is not supported when streaming tokens");
  if (p.decoder_input_details) throw validationError("`decoder_input_details` == true is not supported when streaming tokens");
  const release = ctx.permits.tryAcquire();
  if (release === null) throw overloaded();
  try {
    const valid = await ctx.validator.validate(request);
    let index = 0;
    for await (const event of eventsUntilAborted(ctx.backend.generate(valid, signal), signal)) {
      if (event.type === "prefill") continue;
      if (event.type === "error") throw event.error;
      index++;
      if (event.type === "token") {
        await sse.send(streamEventJson(index, event.token, event.topTokens, null, null));
        continue;
      }
      const text = (p.return_full_text ? request.inputs : "") + event.generatedText;
      const details = p.details
        ? { finishReason: event.finishReason, generatedTokens: event.generatedTokens, seed: event.seed, inputLength: event.inputLength }
        : null;
      await sse.send(streamEventJson(index, event.token, event.topTokens, text, details));
      ctx.logger.info({ route: "generate_stream", generatedTokens: event.generatedTokens, finishReason: event.finishReason }, "Success");
      return;
    }
    if (signal.aborted) throw signal.reason;
    throw new HttpError(500, "incomplete_generation_stream", "Incomplete generation stream");
  } finally {
    release();
  }
}

export async function handleGenerateStream(ctx: HttpContext, res: ServerResponse, request: GenerateRequest): Promise<void> {
  const sse = new SseWriter(
    res,
    { "x-compute-type": ctx.computeType, "x-compute-characters": String([...request.inputs].length) },
    ctx.keepAliveMs,
  );
  const scope = requestScope(res, ctx.shutdown);
  try {
    await streamGeneration(ctx, sse, request, scope.signal);
  } catch (err) {
    if (scope.clientGone) return;
    const known = err instanceof InferError || err instanceof HttpError ? err : internalError(err);
    if (known !== err) ctx.logger.error({ route: "generate_stream", err }, "unexpected error");
    else ctx.logger.warn({ route: "generate_stream", error: known.message }, "request failed");
    await sse.send(errorJson(known));
  } finally {
    scope.dispose();
    sse.end();
  }
}
