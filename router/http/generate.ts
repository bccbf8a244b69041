// POST /generate (and POST / without stream): one generation, answered as one
// JSON GenerateResponse with TGI's timing headers. TGI order: best_of limit,
// then per generation: permit, validation, inference. best_of > 1 runs that
// many independent generations (each its own permit and random seed) and
// answers with the one of highest mean token logprob; the others go to
// details.best_of_sequences.
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { InferError, type InferEvent, type TokenInfo, type ValidRequest } from "../infer/types.js";
import type { GenerateRequest } from "../validation/request.js";
import type { HttpContext } from "./context.js";
import { failureKind, overloaded, sendJson } from "./errors.js";
import { requestScope } from "./lifecycle.js";
import { generateResponseJson, type CollectedGeneration } from "./shapes.js";

type EndEvent = Extract<InferEvent, { type: "end" }>;

/** One finished generation with what its headers and metrics need. */
export interface Generation extends CollectedGeneration {
  end: EndEvent;
  valid: ValidRequest;
}

async function collect(events: AsyncIterable<InferEvent>): Promise<Omit<Generation, "valid"> | null> {
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

/** The request metrics of a finished generation; `startedAt` is when its HTTP request arrived. */
export function recordSuccess(ctx: HttpContext, startedAt: number, end: EndEvent): void {
  const { queuedAt, batchedAt, finishedAt } = end.timings;
  ctx.metrics.requestSucceeded({
    total: (finishedAt - startedAt) / 1000,
    validation: (queuedAt - startedAt) / 1000,
    queue: (batchedAt - queuedAt) / 1000,
    inference: (finishedAt - batchedAt) / 1000,
    generatedTokens: end.generatedTokens,
  });
}

/**
 * One generation end to end (TGI's Infer::generate): permit, validation,
 * inference, and its metrics. `clientGone` tells a dropped request from a failed one.
 */
export async function generateOne(
  ctx: HttpContext,
  request: GenerateRequest,
  signal: AbortSignal,
  clientGone: () => boolean = () => false,
): Promise<Generation> {
  const startedAt = performance.now();
  ctx.metrics.requestStarted();
  const release = ctx.permits.tryAcquire();
  try {
    if (release === null) throw overloaded();
    const valid = await ctx.validator.validate(request);
    ctx.metrics.requestValidated(valid.inputIds.length, valid.parameters.maxNewTokens);
    const g = await collect(ctx.backend.generate(valid, signal));
    if (signal.aborted) throw signal.reason;
    if (g === null) throw new InferError("incomplete_generation", "Incomplete generation");
    recordSuccess(ctx, startedAt, g.end);
    return { ...g, valid };
  } catch (err) {
    ctx.metrics.requestFailed(failureKind(err, clientGone()));
    throw err;
  } finally {
    release?.();
  }
}

/** Mean logprob of the generated tokens: TGI's best_of criterion. */
function meanLogprob(g: Generation): number {
  if (g.tokens.length === 0) return Number.NEGATIVE_INFINITY;
  return g.tokens.reduce((sum, t) => sum + (t.logprob ?? Number.NEGATIVE_INFINITY), 0) / g.tokens.length;
}

/** best_of generations at once; the first failure cancels the others. Best first. */
async function generateBestOf(ctx: HttpContext, request: GenerateRequest, bestOf: number, signal: AbortSignal, clientGone: () => boolean) {
  const controller = new AbortController();
  const abort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", abort, { once: true });
  try {
    const runs = Array.from({ length: bestOf }, () => generateOne(ctx, request, controller.signal, clientGone));
    runs.forEach((run) => run.catch((err: unknown) => controller.abort(err)));
    const all = await Promise.all(runs);
    const best = all.reduce((a, b) => (meanLogprob(b) > meanLogprob(a) ? b : a));
    return { best, others: all.filter((g) => g !== best) };
  } finally {
    signal.removeEventListener("abort", abort);
  }
}

/** x-* headers of TGI's /generate; durations in ms except x-compute-time (s). */
function timingHeaders(ctx: HttpContext, g: Generation, startedAt: number): Record<string, string> {
  const now = performance.now();
  const { queuedAt, batchedAt } = g.end.timings;
  const ms = (d: number) => String(Math.max(0, Math.floor(d)));
  const inference = now - batchedAt;
  return {
    "x-compute-type": ctx.computeType,
    "x-compute-time": String((now - startedAt) / 1000),
    "x-compute-characters": String([...g.valid.inputText].length),
    "x-total-time": ms(now - startedAt),
    "x-validation-time": ms(queuedAt - startedAt),
    "x-queue-time": ms(batchedAt - queuedAt),
    "x-inference-time": ms(inference),
    "x-time-per-token": ms(g.generatedTokens > 0 ? inference / g.generatedTokens : 0),
    "x-prompt-tokens": String(g.end.inputLength),
    "x-generated-tokens": String(g.generatedTokens),
  };
}

/** Runs the request and sends its response; `compat` (POST /) wraps it in a one-element array. */
export async function handleGenerate(
  ctx: HttpContext,
  res: ServerResponse,
  request: GenerateRequest,
  options: { compat: boolean } = { compat: false },
): Promise<void> {
  const startedAt = performance.now();
  const p = request.parameters;
  const bestOf = p.best_of ?? 1;
  if (bestOf > 1) ctx.validator.checkBestOf(bestOf);
  const scope = requestScope(res, ctx.shutdown);
  const clientGone = () => scope.clientGone;
  try {
    const { best, others } =
      bestOf > 1
        ? await generateBestOf(ctx, request, bestOf, scope.signal, clientGone)
        : { best: await generateOne(ctx, request, scope.signal, clientGone), others: [] };
    if (scope.clientGone) return;
    if (p.return_full_text) for (const g of [best, ...others]) g.generatedText = request.inputs + g.generatedText;
    const body = generateResponseJson(best, p.details || p.decoder_input_details, best.valid.parameters.topNTokens > 0, others);
    const headers = timingHeaders(ctx, best, startedAt);
    ctx.logger.info(
      { route: "generate", generatedTokens: best.generatedTokens, finishReason: best.finishReason, totalMs: headers["x-total-time"] },
      "Success",
    );
    sendJson(res, 200, JSON.stringify(options.compat ? [body] : body), headers);
  } catch (err) {
    if (scope.clientGone) return; // nobody to answer; the backend already dropped the request
    throw err;
  } finally {
    scope.dispose();
  }
}
