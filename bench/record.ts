// What the load generator keeps of one request: when it was sent, when each
// token arrived, and how it ended. Times are performance.now() milliseconds.

export interface RequestRecord {
  index: number;
  inputTokens: number;
  /** max_new_tokens asked for. */
  maxTokens: number;
  sent: number;
  /** Arrival time of each token event. */
  tokenTimes: number[];
  /** Arrival of the final event (or the end of the stream). */
  done: number;
  /** Generated tokens: the server's own count when given, else token events. */
  outputTokens: number;
  error?: string;
}

/** Builds a record from a stream's events, whatever the transport. */
export class RecordBuilder {
  readonly record: RequestRecord;
  private reported: number | undefined;
  private finished = false;

  constructor(index: number, inputTokens: number, maxTokens: number, sent: number) {
    this.record = { index, inputTokens, maxTokens, sent, tokenTimes: [], done: sent, outputTokens: 0 };
  }

  get isFinished(): boolean {
    return this.finished;
  }

  tokens(count: number, at: number): void {
    for (let i = 0; i < count; i++) this.record.tokenTimes.push(at);
  }

  reportedCount(count: number | undefined): void {
    if (count !== undefined) this.reported = count;
  }

  fail(message: string, at: number): void {
    if (this.finished) return;
    this.record.error ??= message;
    this.finish(at);
  }

  finish(at: number): RequestRecord {
    if (!this.finished) {
      this.finished = true;
      this.record.done = at;
      this.record.outputTokens = this.reported ?? this.record.tokenTimes.length;
      if (this.record.error === undefined && this.record.tokenTimes.length === 0) this.record.error = "the stream ended without a token";
    }
    return this.record;
  }
}
