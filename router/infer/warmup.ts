// Start-up sizing, as TGI's router does it: send the largest prefill the router
// will ever send (Warmup), let the shards size their KV cache from what is left,
// then derive and check the token limits the router enforces.
import type { Batch, InfoResponse, Request, WarmupRequest, WarmupResponse } from "../../proto/gen/generate.js";

export interface LimitOptions {
  maxBatchPrefillTokens: number;
  /** User's KV budget; with a paged shard its Warmup answer replaces it. */
  maxBatchTotalTokens?: number;
  maxInputTokens?: number;
  maxTotalTokens?: number;
  maxBatchSize?: number;
}

export interface Limits {
  maxInputTokens: number;
  maxTotalTokens: number;
  maxBatchTotalTokens: number;
  maxBatchPrefillTokens: number;
  blockSize: number;
}

/** A start-up error with the message TGI's router gives. */
export class LimitError extends Error {
  override name = "LimitError";
}

/**
 * TGI's warmup batch with token ids: requests of `tokenId` repeated, each as
 * long as max_input_tokens allows, until they add up to max_batch_prefill_tokens;
 * every sampling processor on, EOS ignored, prefill logprobs and top-n on, so
 * that the warmup exercises every code path. Blocks are left empty: the shard
 * assigns its own for warmup.
 */
export function warmupRequest(options: LimitOptions, tokenId: number, topNTokens = 5): WarmupRequest {
  const { maxBatchPrefillTokens, maxInputTokens, maxTotalTokens, maxBatchSize } = options;
  const inputLength = maxInputTokens ?? maxBatchPrefillTokens;
  const requests: Request[] = [];
  for (let tokens = 0; tokens < maxBatchPrefillTokens; tokens += inputLength) {
    const truncate = Math.min(inputLength, maxBatchPrefillTokens - tokens);
    requests.push({
      id: requests.length,
      inputIds: new Array<number>(truncate).fill(tokenId),
      truncate,
      parameters: {
        temperature: 0.9,
        topK: 10,
        topP: 0.9,
        typicalP: 0.9,
        doSample: false,
        seed: 0,
        repetitionPenalty: 1.2,
        // TGI turns it on; here it would move the batch off the GPU sampler (which lacks it) to the host.
        watermark: false,
        frequencyPenalty: 0.1,
        presencePenalty: 0.1,
        grammar: "",
        grammarType: 0,
      },
      stoppingParameters: {
        maxNewTokens: maxTotalTokens !== undefined ? Math.max(1, maxTotalTokens - truncate) : 1,
        stopSequences: [],
        ignoreEosToken: true,
        eosTokenIds: [],
      },
      prefillLogprobs: true,
      topNTokens,
      blocks: [],
      slots: [],
      cacheLen: 0,
    });
    if (maxBatchSize !== undefined && requests.length >= maxBatchSize) break;
  }
  const batch: Batch = {
    id: 0,
    requests,
    size: requests.length,
    maxTokens: maxBatchPrefillTokens,
    maxBlocks: 0,
  };
  return {
    batch,
    maxInputTokens,
    maxPrefillTokens: maxBatchPrefillTokens,
    maxTotalTokens,
    maxBatchTotalTokens: options.maxBatchTotalTokens,
  };
}

/** TGI's limit derivation after Warmup (backends/v3 connect_backend and validate). */
export function deriveLimits(options: LimitOptions, info: InfoResponse, warmup: WarmupResponse): Limits {
  const maxInputTokens = options.maxInputTokens ?? warmup.maxInputTokens;
  const maxTotalTokens = options.maxTotalTokens ?? warmup.maxTotalTokens;
  if (options.maxInputTokens !== undefined && warmup.maxInputTokens !== options.maxInputTokens) {
    throw new LimitError(
      `the shards answered max_input_tokens=${warmup.maxInputTokens} but --max-input-tokens is ${options.maxInputTokens}`,
    );
  }
  if (options.maxTotalTokens !== undefined && warmup.maxTotalTokens !== options.maxTotalTokens) {
    throw new LimitError(
      `the shards answered max_total_tokens=${warmup.maxTotalTokens} but --max-total-tokens is ${options.maxTotalTokens}`,
    );
  }
  if (maxInputTokens >= maxTotalTokens) throw new LimitError("`max_input_tokens` must be < `max_total_tokens`");

  let maxBatchTotalTokens: number;
  if (warmup.maxSupportedTotalTokens !== undefined) {
    if (maxTotalTokens > warmup.maxSupportedTotalTokens) {
      throw new LimitError(`Not enough memory to handle \`max_total_tokens=${maxTotalTokens}\``);
    }
    maxBatchTotalTokens = warmup.maxSupportedTotalTokens;
  } else {
    maxBatchTotalTokens =
      options.maxBatchTotalTokens ?? Math.max(16000, maxTotalTokens, options.maxBatchPrefillTokens);
  }

  const prefill = options.maxBatchPrefillTokens;
  if (!info.supportChunking && prefill < maxInputTokens) {
    throw new LimitError(
      `\`max_batch_prefill_tokens\` must be >= \`max_input_tokens\`. Given: ${prefill} and ${maxInputTokens}`,
    );
  }
  if (prefill > maxBatchTotalTokens) {
    throw new LimitError(
      `\`max_batch_prefill_tokens\` must be <= \`max_batch_total_tokens\`. Given: ${prefill} and ${maxBatchTotalTokens}`,
    );
  }
  if (maxTotalTokens > maxBatchTotalTokens) {
    throw new LimitError(
      `\`max_total_tokens\` must be <= \`max_batch_total_tokens\`. Given: ${maxTotalTokens} and ${maxBatchTotalTokens}`,
    );
  }
  if (info.blockSize < 1) throw new LimitError(`the shards reported an invalid KV block size ${info.blockSize}`);
  return {
    maxInputTokens,
    maxTotalTokens,
    maxBatchTotalTokens,
    maxBatchPrefillTokens: prefill,
    blockSize: info.blockSize,
  };
}
