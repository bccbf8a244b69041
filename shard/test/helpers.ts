// Builders shared by the shard tests.
import { pino } from "pino";
import type { ServiceError } from "@grpc/grpc-js";
import type { ModelConfig, NativeEngine } from "../../native/engine-types.js";
import type { Request, TextGenerationServiceClient, TextGenerationServiceServer } from "../../proto/gen/generate.js";
import { ShardService, type ShardServiceOptions } from "../service.js";
import { GREEDY_PARAMETERS } from "../../proto/defaults.js";
import { FakeEngine } from "./fake-engine.js";

export const tinyConfig: ModelConfig = {
  architecture: "llama",
  hiddenSize: 8,
  intermediateSize: 16,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  headDim: 4,
  vocabSize: 512,
  maxPositionEmbeddings: 128,
  rmsNormEps: 1e-5,
  rope: { theta: 10000, scaling: "none", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 128 },
  tieWordEmbeddings: false,
  attentionBias: false,
  slidingWindow: 0,
};

export interface RequestOptions {
  maxNewTokens?: number;
  blocks?: number[];
  eos?: number[];
  ignoreEos?: boolean;
  chunkLen?: number;
  cacheLen?: number;
  prefillLogprobs?: boolean;
  topN?: number;
  doSample?: boolean;
  seed?: number;
}

/** A request whose prompt is 100, 101, …; blocks default to enough for prompt + generation (block size 4). */
export function request(id: number, promptLength: number, o: RequestOptions = {}): Request {
  const maxNewTokens = o.maxNewTokens ?? 5;
  const blocks = o.blocks ?? Array.from({ length: Math.ceil((promptLength + maxNewTokens) / 4) }, (_, i) => id * 10 + i + 1);
  const r: Request = {
    id,
    inputIds: Array.from({ length: promptLength }, (_, i) => 100 + (i % 400)),
    truncate: promptLength,
    parameters: { ...GREEDY_PARAMETERS, doSample: o.doSample ?? false, seed: o.seed ?? 0 },
    stoppingParameters: {
      maxNewTokens,
      stopSequences: [],
      ignoreEosToken: o.ignoreEos ?? false,
      eosTokenIds: o.eos ?? [],
    },
    prefillLogprobs: o.prefillLogprobs ?? false,
    topNTokens: o.topN ?? 0,
    blocks,
    slots: [],
    cacheLen: o.cacheLen ?? 0,
  };
  if (o.chunkLen !== undefined) r.chunkLen = o.chunkLen;
  return r;
}

export function batch(id: number, requests: Request[]) {
  return { id, requests, size: requests.length, maxTokens: 0, maxBlocks: 0 };
}

export const silentLogger = pino({ level: "silent" });

export function newService(engine: NativeEngine, o: Partial<ShardServiceOptions> = {}): ShardService {
  return new ShardService({
    engine,
    config: tinyConfig,
    rank: 0,
    worldSize: 1,
    urls: [],
    kvCacheBytes: 1 << 20,
    logger: silentLogger,
    ...o,
  });
}

/** A service over a fake engine with block size 4, warmed up with 1000 blocks. */
export async function warmService(engine = new FakeEngine(), maxPrefillTokens = 64) {
  const service = newService(engine);
  await service.warmup({ maxPrefillTokens, maxBatchTotalTokens: 999 * 4 });
  return { service, engine };
}

/** A promisified unary call on the generated client: `call(client, "prefill", req)`. */
export function call<Res = any>(client: TextGenerationServiceClient, method: keyof TextGenerationServiceServer, req: unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, Function>)[method]!;
    fn.call(client, req, (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}
