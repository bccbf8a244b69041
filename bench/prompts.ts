// Prompts of exact token lengths, from random vocabulary tokens of the model's
// own tokenizer: decode random ids to text, re-encode it as the server will
// (special tokens added), and trim or extend until the count is exact — merges
// across token boundaries make the first guess drift by a few tokens.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadTokenizer, type RouterTokenizer } from "../router/tokenizer/index.js";
import { uniformInt, type Rng } from "./random.js";

export interface Prompt {
  text: string;
  /** The ids the server's tokenizer makes of `text`, special tokens included; length is the target. */
  ids: number[];
}

const WORDLIKE = /^[\p{L}\p{N} .,;:'!?-]+$/u;
const MAX_TRIES = 40;

export class PromptBuilder {
  private constructor(
    private readonly tokenizer: RouterTokenizer,
    /** Ids that decode alone to plain word-like text. */
    private readonly pool: number[],
    /** Tokens the tokenizer adds around any text (BOS for Llama). */
    readonly specialCount: number,
  ) {}

  /** Loads `<dir>/tokenizer.json`; fails if the vocabulary has no plain-text tokens. */
  static async load(dir: string): Promise<PromptBuilder> {
    const { tokenizer } = await loadTokenizer(dir);
    const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")) as { model?: { vocab?: unknown } };
    const vocab = json.model?.vocab;
    const size = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === "object" ? Object.keys(vocab).length : 0;
    if (size === 0) throw new Error(`${dir}/tokenizer.json has no model.vocab to draw prompt tokens from`);
    const pool: number[] = [];
    for (let id = 0; id < size; id++) {
      if (tokenizer.isSpecial(id)) continue;
      const text = tokenizer.decode([id], true);
      if (text.trim() !== "" && WORDLIKE.test(text)) pool.push(id);
    }
    if (pool.length < 16) throw new Error(`${dir}/tokenizer.json has only ${pool.length} plain-text tokens`);
    const probe = "hello world";
    const specialCount = (await tokenizer.encode(probe, true)).length - (await tokenizer.encode(probe, false)).length;
    return new PromptBuilder(tokenizer, pool, specialCount);
  }

  get poolSize(): number {
    return this.pool.length;
  }

  /** A prompt that encodes (special tokens included) to exactly `length` tokens. */
  async build(length: number, rng: Rng): Promise<Prompt> {
    if (length <= this.specialCount) throw new Error(`prompt length ${length} leaves no room after ${this.specialCount} special token(s)`);
    const want = length - this.specialCount;
    let content = this.draw(want, rng);
    for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
      const text = this.tokenizer.decode(content, true);
      const plain = await this.tokenizer.encode(text, false);
      const diff = plain.length - want;
      if (diff === 0) {
        const ids = await this.tokenizer.encode(text, true);
        if (ids.length === length) return { text, ids };
      }
      // Restart from scratch now and then: trimming can oscillate on a merge.
      if (attempt % 10 === 9) content = this.draw(want, rng);
      else if (diff > 0) content = plain.slice(0, plain.length - diff);
      else content = plain.concat(this.draw(-diff || 1, rng));
    }
    throw new Error(`could not build a prompt of exactly ${length} tokens in ${MAX_TRIES} tries`);
  }

  private draw(count: number, rng: Rng): number[] {
    return Array.from({ length: count }, () => this.pool[uniformInt(rng, 0, this.pool.length - 1)]!);
  }
}
