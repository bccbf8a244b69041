// The shard's memory between steps: every request's progress (prompt tokens
// computed, tokens generated) and the cached batches that group them, keyed by
// the router's batch id. The KV itself lives in the engine, in the blocks the
// router assigned.
import type { SamplingParams } from "../native/engine-types.js";
import type { CachedBatch, NextTokenChooserParameters, Request } from "../proto/gen/generate.js";
import { badRequest } from "./errors.js";

export interface ShardRequest {
  readonly id: number;
  readonly inputIds: Int32Array;
  readonly blocks: Int32Array;
  /** Prompt tokens whose KV was already in `blocks` when the request arrived. */
  readonly cacheLen: number;
  readonly params: SamplingParams;
  /** Whether the request samples (TGI's rule); its seed is then reported. */
  readonly samples: boolean;
  readonly maxNewTokens: number;
  readonly eosTokenIds: ReadonlySet<number>;
  readonly ignoreEos: boolean;
  readonly prefillLogprobs: boolean;
  readonly topN: number;
  /** Prompt tokens whose KV is written (from cacheLen up to inputIds.length). */
  computed: number;
  /** Tokens the next step computes for this request: a prompt chunk, or 1 when decoding. */
  nextTokens: number;
  /** The engine holds sampler state for this request (it has been in a step). */
  started: boolean;
  generated: number[];
  /** Logprob of each prompt token, filled chunk by chunk (prefillLogprobs only). */
  promptLogprobs?: Float32Array;
}

export function isPrefilling(r: ShardRequest): boolean {
  return r.computed < r.inputIds.length;
}

/** The watermark's greenlist fraction and logit bias: the shard's WATERMARK_GAMMA and WATERMARK_DELTA. */
export interface WatermarkSettings {
  gamma: number;
  delta: number;
}

/** TGI's defaults. */
export const DEFAULT_WATERMARK: WatermarkSettings = { gamma: 0.5, delta: 2.0 };

/**
 * Proto3 sends 0 for unset fields; 0 is never valid for these, so it means "off".
 * `watermark` is per request; its gamma and delta are per shard (TGI's env), hence `settings`.
 */
export function samplingParams(p: NextTokenChooserParameters | undefined, settings: WatermarkSettings = DEFAULT_WATERMARK): SamplingParams {
  const orOne = (v: number | undefined) => (v === undefined || !(v > 0) ? 1 : v);
  return {
    temperature: orOne(p?.temperature),
    topK: p?.topK ?? 0,
    topP: orOne(p?.topP),
    typicalP: orOne(p?.typicalP),
    doSample: p?.doSample ?? false,
    seed: p?.seed ?? 0,
    repetitionPenalty: orOne(p?.repetitionPenalty),
    frequencyPenalty: p?.frequencyPenalty ?? 0,
    presencePenalty: p?.presencePenalty ?? 0,
    watermark: p?.watermark ?? false,
    watermarkGamma: settings.gamma,
    watermarkDelta: settings.delta,
  };
}

/** TGI's rule: greedy unless sampling or a warper is asked for. */
export function samples(p: SamplingParams): boolean {
  return p.doSample || p.temperature !== 1 || p.topK !== 0 || p.topP < 1 || p.typicalP < 1;
}

export interface RequestLimits {
  blockSize: number;
  /** KV blocks in the cache; ids must be below it. */
  numBlocks: number;
  /** Token ids must be below it (the embedding's rows). */
  vocabSize?: number;
  /** Gamma and delta of watermarked requests (absent: TGI's defaults). */
  watermark?: WatermarkSettings;
}

/** Validates a proto Request and builds its state, ready for its first step. */
export function requestFromProto(r: Request, limits: RequestLimits): ShardRequest {
  const n = r.inputIds.length;
  if (n === 0) throw badRequest(`request ${r.id} has no input_ids`);
  if (limits.vocabSize !== undefined) {
    const bad = r.inputIds.find((id) => id >= limits.vocabSize!);
    if (bad !== undefined) throw badRequest(`request ${r.id} has token id ${bad}, but the model's vocabulary has ${limits.vocabSize} ids`);
  }
  // Checked before the Int32Array conversion, which would turn ids >= 2^31 negative.
  for (const b of r.blocks) {
    if (b >= limits.numBlocks) {
      throw badRequest(`request ${r.id} uses KV block ${b}, but the cache has ${limits.numBlocks} blocks`);
    }
  }
  const blocks = Int32Array.from(r.blocks);
  if (blocks.length * limits.blockSize < n) {
    throw badRequest(
      `request ${r.id} has ${n} prompt tokens but only ${blocks.length} KV blocks of ${limits.blockSize} tokens`,
    );
  }
  // At least the last prompt token is computed, to have logits to sample from.
  const cacheLen = Math.min(r.cacheLen, n - 1);
  const remaining = n - cacheLen;
  const params = samplingParams(r.parameters, limits.watermark);
  const stop = r.stoppingParameters;
  return {
    id: r.id,
    inputIds: Int32Array.from(r.inputIds),
    blocks,
    cacheLen,
    params,
    samples: samples(params),
    maxNewTokens: stop?.maxNewTokens ?? 0,
    eosTokenIds: new Set(stop?.eosTokenIds ?? []),
    ignoreEos: stop?.ignoreEosToken ?? false,
    prefillLogprobs: r.prefillLogprobs,
    topN: r.topNTokens,
    computed: cacheLen,
    nextTokens: r.chunkLen === undefined ? remaining : Math.max(1, Math.min(r.chunkLen, remaining)),
    started: false,
    generated: [],
  };
}

/** The router's handle on a batch of requests. */
export function toCachedBatch(id: number, requests: readonly ShardRequest[], blockSize: number): CachedBatch {
  let maxTokens = 0;
  let currentTokens = 0;
  for (const r of requests) {
    maxTokens += r.blocks.length * blockSize;
    currentTokens += r.nextTokens;
  }
  return { id, requestIds: requests.map((r) => r.id), size: requests.length, maxTokens, currentTokens };
}

/** Cached batches by id. Every method validates before it changes anything. */
export class BatchCache {
  private readonly batches = new Map<number, ShardRequest[]>();

  get size(): number {
    return this.batches.size;
  }

  has(id: number): boolean {
    return this.batches.has(id);
  }

  /** Throws TGI's error for the first id that is not cached. */
  requireAll(ids: readonly number[]): void {
    const seen = new Set<number>();
    for (const id of ids) {
      if (!this.batches.has(id)) throw badRequest(`Batch ID ${id} not found in cache.`);
      if (seen.has(id)) throw badRequest(`Batch ID ${id} is listed twice.`);
      seen.add(id);
    }
  }

  /** The batch holding a request with this id, if any. */
  batchOfRequest(requestId: number): number | undefined {
    for (const [id, requests] of this.batches) {
      if (requests.some((r) => r.id === requestId)) return id;
    }
    return undefined;
  }

  /** Removes the listed batches and returns their requests concatenated in list order. */
  popMerged(ids: readonly number[]): ShardRequest[] {
    this.requireAll(ids);
    const merged: ShardRequest[] = [];
    for (const id of ids) {
      merged.push(...this.batches.get(id)!);
      this.batches.delete(id);
    }
    return merged;
  }

  /** The batch's requests, in order (not a copy), if it is cached. */
  get(id: number): readonly ShardRequest[] | undefined {
    return this.batches.get(id);
  }

  put(id: number, requests: ShardRequest[]): void {
    this.batches.set(id, requests);
  }

  /** Keeps only `keep` (in the batch's order); returns the batch and the requests dropped. */
  filter(id: number, keep: readonly number[]): { kept: ShardRequest[]; dropped: ShardRequest[] } {
    this.requireAll([id]);
    const requests = this.batches.get(id)!;
    const keepSet = new Set(keep);
    for (const rid of keepSet) {
      if (!requests.some((r) => r.id === rid)) throw badRequest(`request ${rid} is not in batch ${id}`);
    }
    const kept = requests.filter((r) => keepSet.has(r.id));
    const dropped = requests.filter((r) => !keepSet.has(r.id));
    if (kept.length === 0) this.batches.delete(id);
    else this.batches.set(id, kept);
    return { kept, dropped };
  }

  /** Drops one batch (absent: no-op, as TGI) or all; returns the requests dropped. */
  clear(id?: number): ShardRequest[] {
    if (id !== undefined) {
      const requests = this.batches.get(id) ?? [];
      this.batches.delete(id);
      return requests;
    }
    const all = [...this.batches.values()].flat();
    this.batches.clear();
    return all;
  }
}
