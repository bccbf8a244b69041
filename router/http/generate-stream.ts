// POST /generate_stream: token events over SSE. Every failure after the body
// parsed (best_of, decoder_input_details, overload, validation, generation) is
// an error event in a 200 stream, as in TGI, where validation runs in the body.
// streamEvents is the transport-free part, also used by the WebSocket route.
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { InferError } from "../infer/types.js";
import { validationError } from "../validation/errors.js";
import type { GenerateRequest } from "../validation/request.js";
import type { HttpContext } from "./context.js";
import { errorJson, failureKind, HttpError, internalError, overloaded } from "./errors.js";
import { recordSuccess } from "./generate.js";
import { requestScope } from "./lifecycle.js";
import { streamEventJson } from "./shapes.js";
import { SseWriter } from "./sse.js";

/**
 * The StreamResponse events of one request (TGI's generate_stream), with its
 * metrics; throws what the stream must report. Shared by SSE and WebSocket.
 * `clientGone` tells a dropped request from a failed one.
 */
export async function* streamEvents(
  ctx: HttpContext,
  request: GenerateRequest,
  signal: AbortSignal,
  clientGone: () => boolean = () => signal.aborted,
): AsyncGenerator<object> {
  const startedAt = performance.now();
  const p = request.parameters;
  ctx.metrics.requestStarted();
  let recorded = false;
  let release: (() => void) | null = null;
  try {
    if ((p.best_of ?? 1) !== 1) throw validationError("`best_of` != 1 is not supported when streaming tokens");
    if (p.decoder_input_details) throw validationError("`decoder_input_details` == true is not supported when streaming tokens");
    release = ctx.permits.tryAcquire();
    if (release === null) throw overloaded();
    const valid = await ctx.validator.validate(request);
    ctx.metrics.requestValidated(valid.inputIds.length, valid.parameters.maxNewTokens);
    let index = 0;
    for await (const event of ctx.backend.generate(valid, signal)) {
      if (event.type === "prefill") continue;
      if (event.type === "error") throw event.error;
      index++;
      if (event.type === "token") {
        yield streamEventJson(index, event.token, event.topTokens, null, null);
        continue;
      }
      const text = (p.return_full_text ? request.inputs : "") + event.generatedText;
      const details = p.details
        ? { finishReason: event.finishReason, generatedTokens: event.generatedTokens, seed: event.seed, inputLength: event.inputLength }
        : null;
      recordSuccess(ctx, startedAt, event);
      recorded = true;
      ctx.logger.info({ route: "generate_stream", generatedTokens: event.generatedTokens, finishReason: event.finishReason }, "Success");
      yield streamEventJson(index, event.token, event.topTokens, text, details);
      return;
    }
    if (signal.aborted) throw signal.reason;
    throw new HttpError(500, "incomplete_generation_stream", "Incomplete generation stream");
  } catch (err) {
    ctx.metrics.requestFailed(failureKind(err, clientGone()));
    recorded = true;
    throw err;
  } finally {
    release?.();
    // The consumer stopped reading (client gone, socket closed, shutdown).
    if (!recorded) ctx.metrics.requestFailed("dropped");
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
    for await (const event of streamEvents(ctx, request, scope.signal, () => scope.clientGone)) {
      const pending = sse.send(event);
      if (pending) await pending;
    }
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
