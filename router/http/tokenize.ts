// POST /tokenize: TGI's [{id, text, start, stop}] with byte offsets into `inputs`.
//
// @huggingface/tokenizers gives ids and token strings but no offsets, so we
// recover them: each token's text is found by incremental decoding (the same
// windowed decode as streaming) and then located in `inputs` from where the
// previous token ended. Decoders that add or drop a leading space
// (SentencePiece's "▁") are allowed for. Special tokens added by the
// post-processor get an empty span (text ""); the byte tokens of one character
// all get that character's span, as the Rust tokenizers' offsets do.
// `text` is inputs[start, stop).
import type { ServerResponse } from "node:http";
import { IncrementalDetokenizer } from "../infer/detokenizer.js";
import type { TokenDecoder } from "../infer/types.js";
import { validationError } from "../validation/errors.js";
import type { GenerateRequest } from "../validation/request.js";
import type { HttpContext } from "./context.js";
import { sendJson } from "./errors.js";

export interface SimpleToken {
  id: number;
  text: string;
  start: number;
  stop: number;
}

/** Where `piece` (a token's decoded text) sits in `inputs` at or just after `cursor`. */
function locate(inputs: string, piece: string, cursor: number): [number, number] {
  for (const p of [piece, piece.replace(/^ /, ""), piece.trim()]) {
    if (p === "") continue;
    if (inputs.startsWith(p, cursor)) return [cursor, cursor + p.length];
    // The decoder changed whitespace (e.g. collapsed leading spaces): look a little further.
    const at = inputs.indexOf(p, cursor);
    if (at >= 0 && at - cursor <= 8) return [at, at + p.length];
  }
  return [cursor, cursor];
}

/** Offsets of `ids` (the encoding of `inputs`) in UTF-16 units; [start, stop) per id. */
export function tokenSpans(inputs: string, ids: number[], decoder: TokenDecoder): [number, number][] {
  const detok = new IncrementalDetokenizer(decoder, []);
  const spans: [number, number][] = [];
  // Regular tokens that decoded to nothing yet (bytes of one character): they get that character's span.
  let pending: number[] = [];
  let cursor = 0;
  for (const id of ids) {
    // A special token the post-processor added (BOS) is not in the text; one the user typed is.
    if (decoder.isSpecial(id) && !inputs.startsWith(decoder.decode([id], false), cursor)) {
      spans.push([cursor, cursor]);
      continue;
    }
    const piece = detok.next(id);
    if (piece === "") {
      pending.push(spans.length);
      spans.push([cursor, cursor]);
      continue;
    }
    const span = locate(inputs, piece, cursor);
    for (const i of [...pending, spans.length]) spans[i] = span;
    pending = [];
    cursor = span[1];
  }
  return spans;
}

export async function handleTokenize(ctx: HttpContext, res: ServerResponse, request: GenerateRequest): Promise<void> {
  ctx.validator.checkInputChars(request.inputs);
  let ids: number[];
  try {
    ids = await ctx.tokenizer.encode(request.inputs, true);
  } catch (err) {
    throw validationError(`tokenizer error ${(err as Error).message}`);
  }
  // TGI truncates from the left here too.
  const truncate = request.parameters.truncate;
  const spans = tokenSpans(request.inputs, ids, ctx.tokenizer);
  const first = truncate !== null && ids.length > truncate ? ids.length - truncate : 0;
  // UTF-16 index → UTF-8 byte offset, counted in one pass over the sorted span ends.
  const byteOffsets = new Map<number, number>();
  let [pos, bytes] = [0, 0];
  for (const i of [...new Set(spans.flat())].sort((a, b) => a - b)) {
    bytes += Buffer.byteLength(request.inputs.slice(pos, i));
    pos = i;
    byteOffsets.set(i, bytes);
  }
  const byteAt = (i: number) => byteOffsets.get(i)!;
  const tokens: SimpleToken[] = [];
  for (let i = first; i < ids.length; i++) {
    const [start, stop] = spans[i]!;
    tokens.push({ id: ids[i]!, text: request.inputs.slice(start, stop), start: byteAt(start), stop: byteAt(stop) });
  }
  sendJson(res, 200, JSON.stringify(tokens));
}
