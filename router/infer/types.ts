// The contract between the router's HTTP front (http/, validation/, tokenizer/)
// and its scheduling core (infer/, scheduler/, client/): a validated request goes
// in, a stream of events comes out.

/** Parameters after TGI's validation and defaulting. */
export interface ValidParameters {
  temperature: number;
  topK: number;
  topP: number;
  typicalP: number;
  doSample: boolean;
  /** Below 2^53; chosen at random by the validator when the client gave none. */
  seed: number;
  repetitionPenalty: number;
  frequencyPenalty: number;
  /** OpenAI's presence_penalty: subtracted once from each token already present (0 on TGI's routes). */
  presencePenalty: number;
  /** TGI's watermark (gamma and delta are the shards' WATERMARK_GAMMA/WATERMARK_DELTA); false on the OpenAI routes. */
  watermark: boolean;
  maxNewTokens: number;
  stop: string[];
  /** Generate exactly maxNewTokens (benchmarks; TGI's ignore_eos_token). */
  ignoreEos: boolean;
  topNTokens: number;
  /** Return prompt tokens with logprobs (decoder_input_details). */
  decoderInputDetails: boolean;
}

export interface ValidRequest {
  /** Prompt token ids after truncation, special tokens included. */
  inputIds: number[];
  /** The prompt text as the client sent it (for return_full_text, x-compute-characters). */
  inputText: string;
  parameters: ValidParameters;
}

export interface TokenInfo {
  id: number;
  text: string;
  /** null where unknown (first prompt token). */
  logprob: number | null;
  special: boolean;
}

export type FinishReason = "length" | "eos_token" | "stop_sequence";

export interface Timings {
  /** performance.now() when the request entered the queue. */
  queuedAt: number;
  /** When its first batch started (end of queueing). */
  batchedAt: number;
  /** When it finished. */
  finishedAt: number;
}

export type InferEvent =
  | { type: "prefill"; tokens: TokenInfo[] }
  | { type: "token"; token: TokenInfo; topTokens: TokenInfo[] }
  | {
      type: "end";
      token: TokenInfo;
      topTokens: TokenInfo[];
      /** Decoded generated ids, special tokens skipped; stop sequence kept (as TGI). */
      generatedText: string;
      finishReason: FinishReason;
      generatedTokens: number;
      /** The seed, when the request sampled. */
      seed: number | null;
      inputLength: number;
      timings: Timings;
    }
  | { type: "error"; error: InferError };

/** TGI's InferError kinds with their HTTP status and error_type. */
export type InferErrorKind = "generation" | "overloaded" | "validation" | "incomplete_generation";

export class InferError extends Error {
  constructor(
    readonly kind: InferErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "InferError";
  }

  get status(): number {
    return { generation: 424, overloaded: 429, validation: 422, incomplete_generation: 500 }[this.kind];
  }
}

/** What the scheduling core needs from the tokenizer. */
export interface TokenDecoder {
  /** Decodes ids; must accept an empty list. */
  decode(ids: number[], skipSpecialTokens: boolean): string;
  isSpecial(id: number): boolean;
}

/** How a listen() ended: the stream is over, or the listener asked to pause. */
export type ListenResult = "closed" | "paused";

/**
 * A single-consumer stream with a synchronous fast path. `listen(onValue)` hands every
 * value to `onValue` as the producer makes it, inside the producer's own call: for a
 * generation, within the batcher's step, so a transport writes each token with no
 * promise, microtask or async iterator between the shard's answer and the socket.
 * `onValue` returns false when its consumer cannot take more now (socket above its
 * high-water mark): listen() then resolves "paused", later values wait in the stream,
 * and the consumer calls listen() again once it can. It resolves "closed" when the
 * stream ended and every value was handed over. A throw from `onValue` ends the stream
 * (as a `break` out of for-await would) and rejects listen() with it. `stop()` is the
 * consumer leaving early: buffered values are dropped and the producer is told.
 * One listen() at a time.
 */
export interface Listenable<T> {
  listen(onValue: (value: T) => boolean): Promise<ListenResult>;
  stop(): void;
}

/** The scheduling core as the HTTP front sees it. */
export interface InferBackend {
  /**
   * Queues a request and streams its events; the last event is "end" or "error".
   * Aborting `signal` (client gone) ends the stream at once (transports rely on this: they do not
   * race the signal themselves) and cancels the request at the next step, freeing its KV blocks.
   * The stream may also be Listenable (ShardedBackend's is): transports take it through
   * `listenable()` (infer/event-channel.ts), which uses the fast path where there is one and
   * iterates otherwise, so a backend written as an async generator (the test fakes) still works.
   */
  generate(request: ValidRequest, signal: AbortSignal): AsyncIterable<InferEvent>;
  /** Cheap health check of every shard (Health RPC), or a real one-token prefill when unhealthy. */
  health(): Promise<boolean>;
  /** Scheduler state for /info and tests. */
  stats(): { queued: number; running: number; freeBlocks: number; totalBlocks: number };
}
