// The TypeScript face of the native engine (build/Release/text_gen_engine.node).
// Hand-written: every export of the addon is declared here, and nothing else
// touches the .node file. See native/src/addon/ for the C++ side.

/** The model's shape, parsed from config.json by shard/model-config.ts. */
export interface ModelConfig {
  /** "llama" (Llama 2/3/3.1/3.2), "mistral" or "qwen2". */
  architecture: "llama" | "mistral" | "qwen2";
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  rope: RopeConfig;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2). */
  attentionBias: boolean;
  /** Sliding attention window in tokens; 0: none. */
  slidingWindow: number;
}

export interface RopeConfig {
  theta: number;
  scaling: "none" | "linear" | "dynamic" | "llama3";
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export type ComputeDtype = "float32" | "bfloat16" | "float16";

export interface EngineOptions {
  /** Directory with model.safetensors or model.safetensors.index.json. */
  modelDir: string;
  config: ModelConfig;
  /** Dtype the weights are kept in (the CPU backend computes in float32 whatever this is; CUDA in this dtype). */
  dtype: ComputeDtype;
  /**
   * "cpu" always works; "cuda" needs a build with the CUDA backend and a visible GPU (with
   * worldSize > 1: one GPU per rank, NCCL and `ncclId`) and dtype "bfloat16" or "float16" (tokens
   * are sampled on the GPU where its sampler covers the request).
   */
  device: "cpu" | "cuda";
  rank: number;
  worldSize: number;
  /** POSIX shared-memory name for the CPU tensor-parallel communicator (worldSize > 1). */
  commName?: string;
  /**
   * Rank 0's ncclUniqueId (128 bytes, from ncclUniqueId() on rank 0, the same Buffer on every
   * rank): needed on "cuda" with worldSize > 1, where the ranks run collectives over NCCL.
   */
  ncclId?: Buffer;
  /** Milliseconds to wait for the other ranks at rendezvous. */
  commTimeoutMs?: number;
  /** Tokens per KV block. */
  blockSize: number;
  /** Worker threads for the CPU backend (0: one per core). */
  threads?: number;
  /**
   * Batch sizes whose decode steps replay a CUDA graph (TGI's --cuda-graphs); a step of
   * b sequences runs in the smallest one >= b. Omitted: the backend's default buckets
   * (1–8, then up to 256); empty: no graphs. Ignored on the CPU.
   */
  cudaGraphs?: Int32Array | readonly number[];
}

/** Sampling parameters of one sequence (validated by the router). */
export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  typicalP: number;
  doSample: boolean;
  /** Below 2^53. */
  seed: number;
  repetitionPenalty: number;
  frequencyPenalty: number;
  /** OpenAI's presence penalty: subtracted once from each token already present (absent: 0). */
  presencePenalty?: number;
  /**
   * TGI's `watermark` (Kirchenbauer et al. 2023; absent: false): before the penalties, adds
   * `watermarkDelta` to the logits of a greenlist of about `watermarkGamma` x vocab ids seeded by
   * the previous token (native/src/sampling/sampler.h: not TGI's ids, the same statistics).
   */
  watermark?: boolean;
  /** Greenlist fraction, in (0, 1) (absent: 0.5, TGI's WATERMARK_GAMMA default). */
  watermarkGamma?: number;
  /** Logit bias of green tokens, >= 0 (absent: 2.0, TGI's WATERMARK_DELTA default). */
  watermarkDelta?: number;
}

/** One sequence's share of a step: a prefill chunk, a whole prompt, or one decode token. */
export interface StepSequence {
  /** Sequence id (the router's request id). */
  id: number;
  /** Tokens to compute in this step; their K/V is written into the KV cache. */
  tokens: Int32Array;
  /** Position of tokens[0]: how many tokens of this sequence are already in the KV cache. */
  position: number;
  /** KV blocks of this sequence; position p lives in blocks[p / blockSize] at offset p % blockSize. */
  blocks: Int32Array;
  /** Sample a next token after the last of `tokens` (false while a prompt is still being chunked). */
  sample: boolean;
  /** How many top alternatives to report with the sampled token. */
  topN: number;
  /** Report the logprob of each of `tokens` given the tokens before it. */
  promptLogprobs: boolean;
  /**
   * Given on the sequence's first step only: creates its sampler state. `prefix` lists the
   * tokens already in KV (a prefix-cache hit) so that penalties see the whole prompt.
   */
  init?: { params: SamplingParams; prefix: Int32Array };
}

export interface StepOutput {
  id: number;
  /** Present when the sequence was sampled in this step. */
  token?: number;
  /** log_softmax after penalties and temperature, before top-k/top-p/typical truncation. */
  logprob?: number;
  topIds?: Int32Array;
  topLogprobs?: Float32Array;
  /** With promptLogprobs: logprob of each of `tokens` (NaN for position 0). */
  promptLogprobs?: Float32Array;
}

export interface EngineInfo {
  device: "cpu" | "cuda";
  dtype: ComputeDtype;
  attentionImpl: string;
  blockSize: number;
  /** Bytes of KV cache one block takes on this rank. */
  kvBytesPerBlock: number;
  /** Bytes of weights held by this rank. */
  weightBytes: number;
  /** KV blocks allocated so far (0 before allocateKvCache). */
  numBlocks: number;
  /**
   * Decode batch sizes the shard's warm-up runs before serving, ascending: on CUDA the graph
   * buckets (a size's first step tunes its GEMMs, its second captures the graph), or the default
   * buckets when graphs are off; [] on the CPU, where nothing is tuned.
   */
  warmupBatchSizes: number[];
}

/** A loaded model on one rank. step() runs on a native thread; allocateKvCache() is synchronous (warm-up only). */
export interface NativeEngine {
  info(): EngineInfo;
  /** Free and total memory of the device the engine computes on, in bytes (both 0 on the CPU). */
  memoryInfo(): { freeBytes: number; totalBytes: number };
  /** Allocates the paged KV cache (block 0 included); replaces an earlier one. */
  allocateKvCache(numBlocks: number): void;
  /**
   * Runs one batched forward pass (prefill chunks and decodes mixed) and samples.
   * `ahead`: also start the next decode step of these sequences on the device, fed with
   * the tokens this step samples, before this one's results come back, so that the device
   * computes while the caller turns them around; a later step asking for exactly that
   * (each sequence's sampled token, at the next position, same blocks and topN) takes its
   * result from there. Only where every sequence samples on the device without penalties
   * and holds the KV block for one more token (CUDA); otherwise it is a plain step.
   */
  step(sequences: StepSequence[], options?: { ahead?: boolean }): Promise<StepOutput[]>;
  /** Drops the sampler state of finished or cancelled sequences. */
  release(ids: number[]): void;
  /** Frees the weights and the KV cache; the engine is unusable afterwards. */
  close(): void;
}

export interface SafetensorsTensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
}

/** Everything the .node file exports. */
export interface NativeBinding {
  /** Loads weights (mmap, validated) on a native thread; TP ranks rendezvous here. */
  loadEngine(options: EngineOptions): Promise<NativeEngine>;
  /** Validates and lists the tensors of a safetensors file or sharded index, without loading data. */
  inspectSafetensors(modelDir: string): SafetensorsTensorInfo[];
  /** Number of CUDA devices the backend can see (0 without CUDA or a driver). */
  cudaDeviceCount(): number;
  /** Whether this build includes the CUDA backend. */
  hasCuda(): boolean;
  /**
   * A fresh ncclUniqueId (128 bytes) for rank 0 to hand to the other ranks. Loads NCCL
   * ($TEXT_GEN_NCCL_LIBRARY, else libnccl.so.2): throws an Error saying what was tried when it
   * is missing, or when the build has no CUDA backend.
   */
  ncclUniqueId(): Buffer;
}
