// One request's way back to its client: turns the shard's Generations into
// InferEvents (text by incremental detokenization; a stop sequence ends the
// request when the streamed text ends with it, as TGI's StopSequenceCriteria
// checks) and hands them to the HTTP
// layer through an async iterable that never makes the batcher wait.
import {
  FinishReason as ProtoFinishReason,
  type GeneratedText,
  type Generation,
  type Tokens,
} from "../../proto/gen/generate.js";
import type { EntrySink } from "../scheduler/entry.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import { EventChannel } from "./event-channel.js";
import {
  InferError,
  type FinishReason,
  type InferEvent,
  type TokenDecoder,
  type TokenInfo,
  type ValidRequest,
} from "./types.js";

/** TGI keeps this much of the generated text for stop-sequence matching. */
const STOP_WINDOW = 300;

/** Shared by every event without top tokens (nearly all): consumers only read the list. */
const NO_TOP_TOKENS: TokenInfo[] = Object.freeze([]) as unknown as TokenInfo[];

const FINISH_REASONS: Partial<Record<ProtoFinishReason, FinishReason>> = {
  [ProtoFinishReason.FINISH_REASON_LENGTH]: "length",
  [ProtoFinishReason.FINISH_REASON_EOS_TOKEN]: "eos_token",
  [ProtoFinishReason.FINISH_REASON_STOP_SEQUENCE]: "stop_sequence",
};

export class RequestStream implements EntrySink {
  readonly events: EventChannel<InferEvent>;
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly generatedIds: number[] = [];
  private readonly stopWindow: number;
  private recentText = "";
  private batchedAt: number | null = null;
  private ended = false;
  private cancelled = false;

  constructor(
    private readonly request: ValidRequest,
    private readonly decoder: TokenDecoder,
    readonly queuedAt: number,
    /** Called once when the request ends for any reason (finished, failed, cancelled). */
    private readonly onDone: (cancelled: boolean) => void,
  ) {
    this.events = new EventChannel(() => this.cancel());
    this.detokenizer = new IncrementalDetokenizer(decoder, request.inputIds);
    this.stopWindow = Math.max(STOP_WINDOW, ...request.parameters.stop.map((s) => s.length));
  }

  get gone(): boolean {
    return this.ended || this.cancelled;
  }

  /** The client went away: end the stream now; the batcher drops the request at its next step. */
  cancel(): void {
    if (this.gone) return;
    this.cancelled = true;
    this.events.discard();
    this.onDone(true);
  }

  batched(at: number): void {
    this.batchedAt ??= at;
  }

  deliver(generation: Generation): boolean {
    if (this.gone) return true;
    if (generation.prefillTokens && this.request.parameters.decoderInputDetails) {
      this.events.push({ type: "prefill", tokens: this.prefillTokens(generation.prefillTokens) });
    }
    const ids = generation.tokens?.ids ?? [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      this.generatedIds.push(id);
      const token: TokenInfo = {
        id,
        text: this.detokenizer.next(id),
        logprob: finite(generation.tokens?.logprobs[i]),
        special: this.decoder.isSpecial(id),
      };
      const topTokens = this.topTokens(generation.topTokens[i]);
      const shardFinished = i === ids.length - 1 ? generation.generatedText : undefined;
      // The shard checks length and EOS first, as TGI's StoppingCriteria does.
      if (shardFinished) {
        const reason = FINISH_REASONS[shardFinished.finishReason] ?? "length";
        return this.finish(token, topTokens, reason, shardFinished);
      }
      if (this.matchesStopSequence(token.text)) return this.finish(token, topTokens, "stop_sequence", undefined);
      this.events.push({ type: "token", token, topTokens });
    }
    return false;
  }

  fail(error: Error): void {
    if (this.gone) return;
    this.ended = true;
    const inferError =
      error instanceof InferError
        ? error
        : new InferError("generation", `Request failed during generation: ${error.message}`);
    this.events.push({ type: "error", error: inferError });
    this.events.close();
    this.onDone(false);
  }

  private finish(
    token: TokenInfo,
    topTokens: TokenInfo[],
    finishReason: FinishReason,
    shard: GeneratedText | undefined,
  ): true {
    this.ended = true;
    const finishedAt = performance.now();
    const { parameters, inputIds } = this.request;
    this.events.push({
      type: "end",
      token,
      topTokens,
      generatedText: this.generatedText(),
      finishReason,
      generatedTokens: shard?.generatedTokens ?? this.generatedIds.length,
      seed: shard?.seed ?? (parameters.doSample ? parameters.seed : null),
      inputLength: inputIds.length,
      timings: { queuedAt: this.queuedAt, batchedAt: this.batchedAt ?? finishedAt, finishedAt },
    });
    this.events.close();
    this.onDone(false);
    return true;
  }

  private matchesStopSequence(text: string): boolean {
    const stops = this.request.parameters.stop;
    if (stops.length === 0 || text === "") return false;
    this.recentText = (this.recentText + text).slice(-this.stopWindow);
    return stops.some((stop) => stop !== "" && this.recentText.endsWith(stop));
  }

  /**
   * TGI decodes the generated ids after the last prompt id, special tokens
   * skipped, and drops that id's text: so a leading space survives decoders
   * that strip the first one.
   */
  private generatedText(): string {
    const context = this.request.inputIds.slice(-1);
    const prefix = this.decoder.decode(context, true);
    const text = this.decoder.decode([...context, ...this.generatedIds], true);
    return text.length > prefix.length ? text.slice(prefix.length) : "";
  }

  private prefillTokens(tokens: Tokens): TokenInfo[] {
    return tokens.ids.map((id, i) => ({
      id,
      text: this.decoder.decode([id], false),
      logprob: i === 0 ? null : finite(tokens.logprobs[i]),
      special: this.decoder.isSpecial(id),
    }));
  }

  private topTokens(tokens: Tokens | undefined): TokenInfo[] {
    if (!tokens || tokens.ids.length === 0) return NO_TOP_TOKENS;
    return tokens.ids.map((id, i) => ({
      id,
      text: this.decoder.decode([id], false),
      logprob: finite(tokens.logprobs[i]),
      special: this.decoder.isSpecial(id),
    }));
  }
}

function finite(value: number | undefined): number | null {
  return value === undefined || Number.isNaN(value) ? null : value;
}
