// POST /generate_stream: token events over SSE. Every failure after the body
// parsed (best_of, decoder_input_details, overload, validation, generation) is
// an error event in a 200 stream, as in TGI, where validation runs in the body.
// GenerateEvents is the transport-free part, also used by the WebSocket route.
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { listenable } from "../infer/event-channel.js";
import { InferError, type InferEvent, type Listenable, type ListenResult } from "../infer/types.js";
import { validationError } from "../validation/errors.js";
import type { GenerateRequest } from "../validation/request.js";
import type { HttpContext } from "./context.js";
import { errorJson, failureKind, HttpError, internalError, overloaded } from "./errors.js";
import { recordSuccess } from "./generate.js";
import { requestScope } from "./lifecycle.js";
import { streamEventText } from "./shapes.js";
import { SseWriter } from "./sse.js";

/**
 * The StreamResponse events of one request (TGI's generate_stream) as JSON text,
 * with its metrics; listen() rejects with what the stream must report. Shared by
 * SSE and WebSocket. Events reach the listener synchronously from the batcher's
 * step when the backend's stream is Listenable. `clientGone` tells a dropped
 * request from a failed one. The consumer calls stop() when it is done, however
 * it ended: that frees the permit and counts a request it gave up on as dropped.
 */
export class GenerateEvents implements Listenable<string> {
  private events: Listenable<InferEvent> | null = null;
  private startedAt = 0;
  private index = 0;
  private release: (() => void) | null = null;
  /** The end event was formatted. */
  private finished = false;
  /** The request's outcome went to the metrics. */
  private recorded = false;

  constructor(
    private readonly ctx: HttpContext,
    private readonly request: GenerateRequest,
    private readonly signal: AbortSignal,
    private readonly clientGone: () => boolean = () => signal.aborted,
  ) {}

  async listen(onValue: (json: string) => boolean): Promise<ListenResult> {
    try {
      this.events ??= await this.open();
      const result = await this.events.listen((event) => {
        const json = this.format(event);
        return json === null || onValue(json);
      });
      if (result === "paused") return result;
      if (!this.finished) {
        if (this.signal.aborted) throw this.signal.reason;
        throw new HttpError(500, "incomplete_generation_stream", "Incomplete generation stream");
      }
      this.releasePermit();
      return result;
    } catch (err) {
      if (!this.recorded) this.ctx.metrics.requestFailed(failureKind(err, this.clientGone()));
      this.recorded = true;
      this.releasePermit();
      throw err;
    }
  }

  stop(): void {
    this.events?.stop();
    this.releasePermit();
    // The consumer stopped reading (client gone, socket closed, shutdown).
    if (!this.recorded) this.ctx.metrics.requestFailed("dropped");
    this.recorded = true;
  }

  private releasePermit(): void {
    this.release?.();
    this.release = null;
  }

  /** Checks, permit and validation: everything before the first event. */
  private async open(): Promise<Listenable<InferEvent>> {
    const { ctx, request } = this;
    this.startedAt = performance.now();
    const p = request.parameters;
    ctx.metrics.requestStarted();
    if ((p.best_of ?? 1) !== 1) throw validationError("`best_of` != 1 is not supported when streaming tokens");
    if (p.decoder_input_details) throw validationError("`decoder_input_details` == true is not supported when streaming tokens");
    this.release = ctx.permits.tryAcquire();
    if (this.release === null) throw overloaded();
    const valid = await ctx.validator.validate(request);
    ctx.metrics.requestValidated(valid.inputIds.length, valid.parameters.maxNewTokens);
    return listenable(ctx.backend.generate(valid, this.signal));
  }

  /** One event's JSON, null for events the stream does not show; throws the stream's error. */
  private format(event: InferEvent): string | null {
    if (event.type === "prefill" || this.finished) return null;
    if (event.type === "error") throw event.error;
    this.index++;
    if (event.type === "token") return streamEventText(this.index, event.token, event.topTokens, null, null);
    const { ctx, request } = this;
    const p = request.parameters;
    const text = (p.return_full_text ? request.inputs : "") + event.generatedText;
    const details = p.details
      ? { finishReason: event.finishReason, generatedTokens: event.generatedTokens, seed: event.seed, inputLength: event.inputLength }
      : null;
    recordSuccess(ctx, this.startedAt, event);
    this.recorded = true;
    this.finished = true;
    ctx.logger.info({ route: "generate_stream", generatedTokens: event.generatedTokens, finishReason: event.finishReason }, "Success");
    return streamEventText(this.index, event.token, event.topTokens, text, details);
  }
}

export async function handleGenerateStream(ctx: HttpContext, res: ServerResponse, request: GenerateRequest): Promise<void> {
  const sse = new SseWriter(
    res,
    { "x-compute-type": ctx.computeType, "x-compute-characters": String([...request.inputs].length) },
    ctx.keepAliveMs,
  );
  const scope = requestScope(res, ctx.shutdown);
  const events = new GenerateEvents(ctx, request, scope.signal, () => scope.clientGone);
  const write = (json: string) => sse.write(json);
  try {
    // Each event is written from the batcher's step; a full socket pauses the stream until it drains.
    while ((await events.listen(write)) === "paused") await sse.drained();
  } catch (err) {
    if (scope.clientGone) return;
    const known = err instanceof InferError || err instanceof HttpError ? err : internalError(err);
    if (known !== err) ctx.logger.error({ route: "generate_stream", err }, "unexpected error");
    else ctx.logger.warn({ route: "generate_stream", error: known.message }, "request failed");
    await sse.send(errorJson(known));
  } finally {
    events.stop();
    scope.dispose();
    sse.end();
  }
}
