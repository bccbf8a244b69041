// POST /generate: one generation, answered as one JSON GenerateResponse with
// TGI's timing headers. TGI order: best_of limit, permit, validation.
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { InferError, type InferEvent, type TokenInfo, type ValidRequest } from "../infer/types.js";
import type { GenerateRequest } from "../validation/request.js";
import { rejectBestOf } from "../validation/validate.js";
import type { HttpContext } from "./context.js";
import { overloaded, sendJson } from "./errors.js";
import { eventsUntilAborted, requestScope } from "./lifecycle.js";
import { generateResponseJson, type CollectedGeneration } from "./shapes.js";

type EndEvent = Extract<InferEvent, { type: "end" }>;

interface Collected extends CollectedGeneration {
  end: EndEvent;
}

async function collect(events: AsyncIterable<InferEvent>): Promise<Collected | null> {
  let prefill: TokenInfo[] = [];
  const tokens: TokenInfo[] = [];
  const topTokens: TokenInfo[][] = [];
  for await (const event of events) {
    switch (event.type) {
      case "prefill":
        prefill = event.tokens;
        break;
      case "token":
      case "end":
        tokens.push(event.token);
        topTokens.push(event.topTokens);
        if (event.type === "end") {
          const { generatedText, finishReason, generatedTokens, seed } = event;
          return { generatedText, finishReason, generatedTokens, seed, prefill, tokens, topTokens, end: event };
        }
        break;
      case "error":
        throw event.error;
    }
  }
  return null;
}

/** x-* headers of TGI's /generate; durations in ms except x-compute-time (s). */
function timingHeaders(ctx: HttpContext, request: ValidRequest, g: Collected, startedAt: number): Record<string, string> {
  const now = performance.now();
  const { queuedAt, batchedAt } = g.end.timings;
  const ms = (d: number) => String(Math.max(0, Math.floor(d)));
  const inference = now - batchedAt;
  return {
    "x-compute-type": ctx.computeType,
    "x-compute-time": String((now - startedAt) / 1000),
    "x-compute-characters": String([...request.inputText].length),
    "x-total-time": ms(now - startedAt),
    "x-validation-time": ms(queuedAt - startedAt),
    "x-queue-time": ms(batchedAt - queuedAt),
    "x-inference-time": ms(inference),
    "x-time-per-token": ms(g.generatedTokens > 0 ? inference / g.generatedTokens : 0),
    "x-prompt-tokens": String(g.end.inputLength),
    "x-generated-tokens": String(g.generatedTokens),
  };
}

/** Runs one generation and sends its response; `compat` (POST /) wraps it in a one-element array. */
export async function handleGenerate(
  ctx: HttpContext,
  res: ServerResponse,
  request: GenerateRequest,
  options: { compat: boolean } = { compat: false },
): Promise<void> {
  const startedAt = performance.now();
  const p = request.parameters;
  if ((p.best_of ?? 1) > 1) ctx.validator.checkBestOf(p.best_of!);
  const release = ctx.permits.tryAcquire();
  if (release === null) throw overloaded();
  const scope = requestScope(res, ctx.shutdown);
  try {
    const valid = await ctx.validator.validate(request);
    rejectBestOf(p.best_of);
    const g = await collect(eventsUntilAborted(ctx.backend.generate(valid, scope.signal), scope.signal));
    if (scope.clientGone) return;
    if (scope.signal.aborted) throw scope.signal.reason; // shutdown: 503
    if (g === null) throw new InferError("incomplete_generation", "Incomplete generation");
    if (p.return_full_text) g.generatedText = request.inputs + g.generatedText;
    const body = generateResponseJson(g, p.details || p.decoder_input_details, valid.parameters.topNTokens > 0);
    const headers = timingHeaders(ctx, valid, g, startedAt);
    ctx.logger.info(
      { route: "generate", generatedTokens: g.generatedTokens, finishReason: g.finishReason, totalMs: headers["x-total-time"] },
      "Success",
    );
    sendJson(res, 200, JSON.stringify(options.compat ? [body] : body), headers);
  } finally {
    scope.dispose();
    release();
  }
}
