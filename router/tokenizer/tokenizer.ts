// The model's tokenizer as the router uses it: encode prompts, decode ids, tell
// special tokens apart. Wraps @huggingface/tokenizers (pure JS).
import { Tokenizer } from "@huggingface/tokenizers";
import type { TokenDecoder } from "../infer/types.js";
import { readModelJson, TokenizerLoadError } from "./files.js";
import { loadEosTokenIds } from "./eos.js";

export class RouterTokenizer implements TokenDecoder {
  private readonly special: ReadonlySet<number>;

  constructor(
    private readonly tokenizer: Tokenizer,
    specialIds: Iterable<number>,
  ) {
    this.special = new Set(specialIds);
  }

  /**
   * Token ids of `text`. Async on purpose: encoding a long prompt takes ~100 ms
   * on the event loop today; a worker pool (TGI's --validation-workers) can take
   * its place behind this signature without touching callers.
   */
  async encode(text: string, addSpecialTokens: boolean): Promise<number[]> {
    return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens: boolean): string {
    // The library throws on an empty list.
    if (ids.length === 0) return "";
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }

  isSpecial(id: number): boolean {
    return this.special.has(id);
  }
}

export interface LoadedTokenizer {
  tokenizer: RouterTokenizer;
  eosTokenIds: number[];
}

function specialIdsOf(tokenizerJson: unknown): number[] {
  const added = (tokenizerJson as { added_tokens?: unknown }).added_tokens;
  if (!Array.isArray(added)) return [];
  return added
    .filter((t): t is { id: number; special: true } => t !== null && typeof t === "object" && t.special === true && Number.isInteger(t.id))
    .map((t) => t.id);
}

/** Loads tokenizer.json (required), tokenizer_config.json (optional) and the EOS ids of a model dir. */
export async function loadTokenizer(dir: string): Promise<LoadedTokenizer> {
  const tokenizerJson = await readModelJson(dir, "tokenizer.json", true);
  const configJson = (await readModelJson(dir, "tokenizer_config.json", false)) ?? {};
  if (tokenizerJson === null || typeof tokenizerJson !== "object") {
    throw new TokenizerLoadError(`${dir}/tokenizer.json is not a tokenizer (expected a JSON object)`);
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(tokenizerJson, configJson as object);
  } catch (err) {
    throw new TokenizerLoadError(`cannot build the tokenizer from ${dir}/tokenizer.json: ${(err as Error).message}`);
  }
  return {
    tokenizer: new RouterTokenizer(tokenizer, specialIdsOf(tokenizerJson)),
    eosTokenIds: await loadEosTokenIds(dir),
  };
}
