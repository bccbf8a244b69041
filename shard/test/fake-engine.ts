// A deterministic stand-in for the native engine that also checks the shard
// keeps the engine's rules: positions contiguous per sequence, KV inside the
// sequence's blocks, block ids inside the cache, sampler state created once.
import type { EngineInfo, NativeEngine, StepOutput, StepSequence } from "../../native/engine-types.js";

export type NextToken = (id: number, position: number, lastToken: number) => number;

/** Default: a token that depends on the sequence, its position and the token before. */
export const defaultNextToken: NextToken = (id, position, last) => 10 + ((id * 7 + position * 3 + last) % 400);

export class FakeEngine implements NativeEngine {
  readonly steps: StepSequence[][] = [];
  readonly released: number[] = [];
  /** Tokens in KV per live sequence. */
  readonly kvLength = new Map<number, number>();
  numBlocks = 0;
  /** What info() reports as warmupBatchSizes ([] as the CPU engine: no decode warm-up). */
  warmupBatchSizes: number[] = [];
  closed = false;
  failNextStep: string | undefined;

  constructor(
    readonly blockSize = 4,
    public nextToken: NextToken = defaultNextToken,
  ) {}

  memoryInfo(): { freeBytes: number; totalBytes: number } {
    return { freeBytes: 0, totalBytes: 0 };
  }

  info(): EngineInfo {
    if (this.closed) throw new Error("engine closed");
    return {
      device: "cpu",
      dtype: "float32",
      attentionImpl: "paged",
      blockSize: this.blockSize,
      kvBytesPerBlock: 1024,
      weightBytes: 1,
      numBlocks: this.numBlocks,
      warmupBatchSizes: this.warmupBatchSizes,
    };
  }

  allocateKvCache(numBlocks: number): void {
    this.numBlocks = numBlocks;
    this.kvLength.clear();
  }

  async step(sequences: StepSequence[]): Promise<StepOutput[]> {
    await new Promise((r) => setImmediate(r));
    this.steps.push(sequences);
    if (this.failNextStep) {
      const message = this.failNextStep;
      this.failNextStep = undefined;
      for (const s of sequences) if (s.init) this.kvLength.set(s.id, s.position);
      throw new Error(message);
    }
    return sequences.map((s) => this.stepOne(s));
  }

  private stepOne(s: StepSequence): StepOutput {
    const known = this.kvLength.get(s.id);
    if (s.init) {
      if (known !== undefined) throw new Error(`sequence ${s.id} initialised twice`);
      if (s.init.prefix.length !== s.position) throw new Error(`sequence ${s.id}: prefix ${s.init.prefix.length} ≠ position ${s.position}`);
    } else if (known === undefined) {
      throw new Error(`sequence ${s.id} stepped without init`);
    } else if (known !== s.position) {
      throw new Error(`sequence ${s.id}: position ${s.position} but ${known} tokens in KV`);
    }
    if (s.tokens.length === 0) throw new Error(`sequence ${s.id}: no tokens`);
    const end = s.position + s.tokens.length;
    if (end > s.blocks.length * this.blockSize) throw new Error(`sequence ${s.id}: KV overflow`);
    for (const b of s.blocks) if (b < 0 || b >= this.numBlocks) throw new Error(`sequence ${s.id}: bad block ${b}`);
    this.kvLength.set(s.id, end);
    const out: StepOutput = { id: s.id };
    if (s.promptLogprobs) {
      out.promptLogprobs = Float32Array.from(s.tokens, (_, k) => (k === 0 ? Number.NaN : -(s.position + k) / 100));
    }
    if (s.sample) {
      const token = this.nextToken(s.id, end, s.tokens[s.tokens.length - 1]!);
      out.token = token;
      out.logprob = -0.25;
      if (s.topN > 0) {
        out.topIds = Int32Array.from({ length: s.topN }, (_, i) => token + i);
        out.topLogprobs = Float32Array.from({ length: s.topN }, (_, i) => -0.25 - i);
      }
    }
    return out;
  }

  release(ids: number[]): void {
    for (const id of ids) {
      if (!this.kvLength.delete(id)) throw new Error(`release of unknown sequence ${id}`);
      this.released.push(id);
    }
  }

  close(): void {
    this.closed = true;
  }
}
