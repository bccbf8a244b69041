// OpenAI returns text up to a stop sequence, without it; the scheduler (like
// TGI) ends a request once its streamed text ends with one, and keeps it in
// the text. These helpers take it back out, for whole texts and for streamed
// pieces. A stop string met inside a token's text does not stop the scheduler,
// so here too only a text that ends with it counts.
import type { TokenInfo } from "../infer/types.js";
import type { Generations } from "./generations.js";
import { openaiFinishReason } from "./params.js";

/** `text` without the stop sequence it ends with (the longest, when several do). */
export function withoutStop(text: string, stops: string[]): string {
  let cut = 0;
  for (const stop of stops) if (stop.length > cut && text.endsWith(stop)) cut = stop.length;
  return text.slice(0, text.length - cut);
}

/**
 * A stream's text, held back while its end could still become a stop
 * sequence, so that a stop sequence is never sent before it is known to be one.
 */
export class StopHoldback {
  private pending = "";

  constructor(private readonly stops: string[]) {}

  /** Adds a token's text; returns what can be sent now. */
  push(text: string): string {
    if (this.stops.length === 0) return text;
    this.pending += text;
    const keep = this.heldLength();
    const ready = this.pending.slice(0, this.pending.length - keep);
    this.pending = this.pending.slice(this.pending.length - keep);
    return ready;
  }

  /** The rest at the end of the stream: without the stop sequence when one ended it. */
  finish(stoppedBySequence: boolean): string {
    const rest = stoppedBySequence ? withoutStop(this.pending, this.stops) : this.pending;
    this.pending = "";
    return rest;
  }

  /** Length of the longest end of `pending` that is the start of a stop sequence (or one whole). */
  private heldLength(): number {
    let held = 0;
    for (const stop of this.stops) {
      for (let len = Math.min(stop.length, this.pending.length); len > held; len--) {
        if (this.pending.endsWith(stop.slice(0, len))) {
          held = len;
          break;
        }
      }
    }
    return held;
  }
}

/** A streamed token of one choice, with the text that may be sent for it now. */
export interface TextPiece {
  index: number;
  /** Held back while it could be the start of a stop sequence; cut before one; "" for special tokens. */
  text: string;
  token: TokenInfo;
  topTokens: TokenInfo[];
  /** Set on the choice's last token. */
  finishReason: "stop" | "length" | null;
}

/** Every choice's tokens as OpenAI streams them: stop sequences never sent. */
export async function* textPieces(generations: Generations, signal: AbortSignal): AsyncGenerator<TextPiece> {
  const holdbacks = generations.requests.map((r) => new StopHoldback(r.parameters.stop));
  for await (const { index, event } of generations.events(signal)) {
    if (event.type === "prefill") continue;
    const holdback = holdbacks[index]!;
    let text = holdback.push(event.token.special ? "" : event.token.text);
    let finishReason: TextPiece["finishReason"] = null;
    if (event.type === "end") {
      text += holdback.finish(event.finishReason === "stop_sequence");
      finishReason = openaiFinishReason(event.finishReason);
    }
    yield { index, text, token: event.token, topTokens: event.topTokens, finishReason };
  }
}
