// The generations behind one OpenAI request: prompts × n choices, each a
// validated request holding one concurrency permit (as TGI counts them),
// run side by side and merged into one event stream tagged with the choice.
import { performance } from "node:perf_hooks";
import type { HttpContext } from "../http/context.js";
import { failureKind, overloaded } from "../http/errors.js";
import { InferError, type InferEvent, type TokenInfo, type ValidRequest } from "../infer/types.js";
import type { ChatTemplate } from "../tokenizer/chat-template.js";
import type { GenerateRequest } from "../validation/request.js";
import { randomSeed, validSeed } from "../validation/seed.js";
import { withoutStop } from "./stop-text.js";

/** What the OpenAI routes need of the server; HttpContext has it all (the WebSocket route too). */
export type OpenAIContext = Pick<HttpContext, "backend" | "validator" | "permits" | "info" | "logger"> &
  Partial<Pick<HttpContext, "metrics">> & {
  /** The model's chat template; null or absent: chat requests get 422 "template not found". */
  chatTemplate?: ChatTemplate | null;
};

export interface PromptSpec {
  /** Prompt text and TGI parameters (from params.ts). */
  request: GenerateRequest;
  /** False for a rendered chat template, which holds its special tokens already. */
  addSpecialTokens: boolean;
  presencePenalty: number;
}

export interface ChoiceEvent {
  /** Choice index: prompt index × n + j. */
  index: number;
  event: Exclude<InferEvent, { type: "error" }>;
}

export type EndEvent = Extract<InferEvent, { type: "end" }>;

/** A finished choice, for the non-streaming responses. */
export interface CollectedChoice {
  /** Prompt tokens with logprobs, when the request asked for them (decoder_input_details). */
  prefill: TokenInfo[];
  tokens: TokenInfo[];
  topTokens: TokenInfo[][];
  end: EndEvent;
}

export class Generations {
  private released = false;
  /** usage.completion_tokens: generated tokens of the choices that ended so far. */
  completionTokens = 0;

  private constructor(
    private readonly ctx: OpenAIContext,
    /** One per choice, in choice order. */
    readonly requests: ValidRequest[],
    /** Choices per prompt. */
    readonly n: number,
    private readonly releases: (() => void)[],
    /** performance.now() when the request arrived, for the request metrics. */
    private readonly startedAt: number,
  ) {}

  /** usage.prompt_tokens: each prompt counted once, however many choices it has. */
  get promptTokens(): number {
    return this.requests.reduce((sum, r, i) => (i % this.n === 0 ? sum + r.inputIds.length : sum), 0);
  }

  /**
   * Takes a permit per choice (429 when any is missing), then validates each
   * prompt once (TGI's order). Seeds: choice j of a prompt gets seed + j when
   * the client gave one, an independent random seed otherwise.
   */
  static async admit(ctx: OpenAIContext, prompts: PromptSpec[], n: number, startedAt = performance.now()): Promise<Generations> {
    const choices = prompts.length * n;
    for (let i = 0; i < choices; i++) ctx.metrics?.requestStarted();
    const releases: (() => void)[] = [];
    const releaseAll = () => releases.forEach((release) => release());
    try {
      for (let i = 0; i < choices; i++) {
        const release = ctx.permits.tryAcquire();
        if (release === null) throw overloaded();
        releases.push(release);
      }
      const requests: ValidRequest[] = [];
      for (const prompt of prompts) {
        const valid = await ctx.validator.validate(prompt.request, prompt.addSpecialTokens);
        for (let j = 0; j < n; j++) ctx.metrics?.requestValidated(valid.inputIds.length, valid.parameters.maxNewTokens);
        const given = prompt.request.parameters.seed;
        for (let j = 0; j < n; j++) {
          const seed = j === 0 ? valid.parameters.seed : given === null ? randomSeed() : validSeed(given + j);
          requests.push({ ...valid, parameters: { ...valid.parameters, seed, presencePenalty: prompt.presencePenalty } });
        }
      }
      return new Generations(ctx, requests, n, releases, startedAt);
    } catch (err) {
      releaseAll();
      for (let i = 0; i < choices; i++) ctx.metrics?.requestFailed(failureKind(err, false));
      throw err;
    }
  }

  /** Gives the permits back; idempotent. Called when the events end, and by whoever abandons them. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.releases.forEach((release) => release());
  }

  private recordSuccess(end: EndEvent): void {
    const { queuedAt, batchedAt, finishedAt } = end.timings;
    this.ctx.metrics?.requestSucceeded({
      total: (finishedAt - this.startedAt) / 1000,
      validation: (queuedAt - this.startedAt) / 1000,
      queue: (batchedAt - queuedAt) / 1000,
      inference: (finishedAt - batchedAt) / 1000,
      generatedTokens: end.generatedTokens,
    });
  }

  /** A finished choice's text as OpenAI returns it: without the stop sequence that ended it. */
  textOf(index: number, choice: CollectedChoice): string {
    const { generatedText, finishReason } = choice.end;
    return finishReason === "stop_sequence" ? withoutStop(generatedText, this.requests[index]!.parameters.stop) : generatedText;
  }

  /** Runs every choice to its end. */
  async collect(signal: AbortSignal): Promise<CollectedChoice[]> {
    const partial = this.requests.map(() => ({ prefill: [] as TokenInfo[], tokens: [] as TokenInfo[], topTokens: [] as TokenInfo[][] }));
    const done: CollectedChoice[] = [];
    for await (const { index, event } of this.events(signal)) {
      const choice = partial[index]!;
      if (event.type === "prefill") {
        choice.prefill = event.tokens;
        continue;
      }
      choice.tokens.push(event.token);
      choice.topTokens.push(event.topTokens);
      if (event.type === "end") done[index] = { ...choice, end: event };
    }
    return done; // events() threw unless every choice ended
  }

  /**
   * Every choice's events as they come, interleaved. Throws the first error
   * (the other choices are cancelled) and, when `signal` aborts, its reason.
   * Releases the permits when it ends.
   */
  async *events(signal: AbortSignal): AsyncGenerator<ChoiceEvent> {
    const cancel = new AbortController();
    const onAbort = () => cancel.abort(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    const iterators = this.requests.map((request) =>
      this.ctx.backend.generate(request, cancel.signal)[Symbol.asyncIterator](),
    );
    // Never rejects: a backend that throws is an error of its choice, raised in turn.
    const next = (index: number) =>
      iterators[index]!.next().then(
        (result) => ({ index, result, error: undefined }),
        (error: unknown) => ({ index, result: undefined, error }),
      );
    const pending = new Map(iterators.map((_, index) => [index, next(index)]));
    const ended = new Set<number>();
    try {
      while (pending.size > 0) {
        const { index, result, error } = await Promise.race(pending.values());
        if (result === undefined) throw error;
        if (result.done) {
          pending.delete(index);
          continue;
        }
        const event = result.value;
        if (event.type === "error") throw event.error;
        if (event.type === "end") {
          ended.add(index);
          this.completionTokens += event.generatedTokens;
          this.recordSuccess(event);
        }
        pending.set(index, next(index));
        yield { index, event };
      }
      if (signal.aborted) throw signal.reason;
      if (ended.size < this.requests.length) throw new InferError("incomplete_generation", "Incomplete generation");
    } catch (err) {
      // Aborted: the client left or the server is shutting down (TGI counts both as dropped).
      const kind = failureKind(err, signal.aborted);
      for (let i = ended.size; i < this.requests.length; i++) this.ctx.metrics?.requestFailed(kind);
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
      cancel.abort(new Error("OpenAI request ended"));
      for (const iterator of iterators) iterator.return?.(undefined).catch(() => {});
      this.release();
    }
  }
}
