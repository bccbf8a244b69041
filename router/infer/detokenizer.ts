// Incremental detokenization, TGI's decode_token: decode a sliding window of
// ids twice (without and with the newest tokens) and emit the difference once it
// is whole. Decoding a lone id breaks characters split across byte-fallback
// tokens and drops the leading space of SentencePiece pieces; the window fixes both.
import type { TokenDecoder } from "./types.js";

/** Prompt ids kept as context for the first generated tokens (TGI: input_length - 5). */
const PROMPT_CONTEXT = 5;

export class IncrementalDetokenizer {
  private ids: number[];
  private prefixOffset = 0;
  private readOffset: number;

  constructor(
    private readonly decoder: TokenDecoder,
    promptIds: readonly number[],
  ) {
    this.ids = promptIds.slice(Math.max(0, promptIds.length - PROMPT_CONTEXT));
    this.readOffset = this.ids.length;
  }

  /** Adds one generated id; returns the new text, "" while a character is incomplete. */
  next(id: number): string {
    this.ids.push(id);
    const prefixText = this.decoder.decode(this.ids.slice(this.prefixOffset, this.readOffset), false);
    const newText = this.decoder.decode(this.ids.slice(this.prefixOffset), false);
    if (newText.length <= prefixText.length || newText.endsWith("\uFFFD")) return "";
    // TGI: prefix_offset = read_offset, read_offset = len(ids). Ids before the
    // new prefix are never decoded again, so the window is cut there.
    this.ids = this.ids.slice(this.readOffset);
    this.prefixOffset = 0;
    this.readOffset = this.ids.length;
    return newText.slice(prefixText.length);
  }
}
