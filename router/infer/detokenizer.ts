// Incremental detokenization, TGI's decode_token: decode a sliding window of
// ids twice (without and with the newest tokens) and emit the difference once it
// is whole. Decoding a lone id breaks characters split across byte-fallback
// tokens and drops the leading space of SentencePiece pieces; the window fixes both.
import type { TokenDecoder } from "./types.js";

/** Prompt ids kept as context for the first generated tokens (TGI: input_length - 5). */
const PROMPT_CONTEXT = 5;

export class IncrementalDetokenizer {
  /** The window: TGI's all_input_ids[prefix_offset:], cut at prefix_offset each time text is emitted. */
  private ids: number[];
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
    // In the steady state the prefix is the previous token alone, which SingleTokenMemo answers from memory.
    const prefixText = this.decoder.decode(this.ids.slice(0, this.readOffset), false);
    const newText = this.decoder.decode(this.ids, false);
    if (newText.length <= prefixText.length || newText.endsWith("\uFFFD")) return "";
    // TGI: prefix_offset = read_offset, read_offset = len(ids). Ids before the
    // new prefix are never decoded again, so the window is cut there.
    this.ids = this.ids.slice(this.readOffset);
    this.readOffset = this.ids.length;
    return newText.slice(prefixText.length);
  }
}

/** Above every real vocabulary (Llama 3: 128k, Gemma: 256k). */
const MEMO_LIMIT = 1 << 20;

/**
 * A decoder that remembers the text of single ids: the detokenizer's prefix window
 * (the previous token, once streaming), top tokens and prefill tokens decode one id at
 * a time, and an id always decodes to the same text. One entry per vocabulary id and
 * skip flag, capped in case a shard sends ids beyond the vocabulary; longer lists go to
 * the wrapped decoder.
 */
export class SingleTokenMemo implements TokenDecoder {
  private readonly kept = new Map<number, string>();
  private readonly skipped = new Map<number, string>();

  constructor(private readonly decoder: TokenDecoder) {}

  decode(ids: number[], skipSpecialTokens: boolean): string {
    if (ids.length !== 1) return this.decoder.decode(ids, skipSpecialTokens);
    const id = ids[0] as number;
    const memo = skipSpecialTokens ? this.skipped : this.kept;
    let text = memo.get(id);
    if (text === undefined) {
      text = this.decoder.decode(ids, skipSpecialTokens);
      if (memo.size < MEMO_LIMIT) memo.set(id, text);
    }
    return text;
  }

  isSpecial(id: number): boolean {
    return this.decoder.isSpecial(id);
  }
}
