// The router's view of all shards as one: every call goes to every shard at
// once (they run the same step on their slice of the model), rank 0's answer is
// used, and any shard's error fails the call (TGI's sharded_client.rs).
import type {
  CachedBatch,
  DecodeRequest,
  DecodeResponse,
  InfoResponse,
  PrefillRequest,
  PrefillResponse,
  WarmupRequest,
  WarmupResponse,
} from "../../proto/gen/generate.js";
import { ShardClient, ShardError } from "./shard-client.js";

export class ShardedClient {
  private constructor(readonly shards: ShardClient[]) {}

  /**
   * Connects to rank 0 (a socket path or `unix://` URL), asks it for every
   * shard's URL (ServiceDiscovery) and opens one client per shard.
   */
  static async connect(masterSocket: string): Promise<ShardedClient> {
    const master = new ShardClient(masterSocket);
    let urls: string[];
    try {
      urls = await master.serviceDiscovery();
    } catch (error) {
      const why = error instanceof ShardError ? error.details : String(error);
      throw new Error(`cannot reach the rank-0 shard at ${masterSocket} (ServiceDiscovery failed): ${why}`);
    } finally {
      master.close();
    }
    if (urls.length === 0) throw new Error(`shard at ${masterSocket} listed no shards in ServiceDiscovery`);
    return new ShardedClient(urls.map((url) => new ShardClient(url)));
  }

  /** Wraps already open clients (rank order); for tests and tools. */
  static of(shards: ShardClient[]): ShardedClient {
    return new ShardedClient(shards);
  }

  get worldSize(): number {
    return this.shards.length;
  }

  async info(): Promise<InfoResponse> {
    return rankZero(await this.all((s) => s.info()));
  }

  async health(): Promise<void> {
    await this.all((s) => s.health());
  }

  async clearCache(batchId?: number): Promise<void> {
    await this.all((s) => s.clearCache(batchId));
  }

  async filterBatch(batchId: number, requestIds: number[]): Promise<CachedBatch | undefined> {
    return rankZero(await this.all((s) => s.filterBatch(batchId, requestIds)));
  }

  /** The smallest (capacity, max input, max total) of all shards; an unknown capacity counts as smallest. */
  async warmup(request: WarmupRequest): Promise<WarmupResponse> {
    const answers = await this.all((s) => s.warmup(request));
    return answers.reduce((min, a) => (compareWarmup(a, min) < 0 ? a : min));
  }

  async prefill(request: PrefillRequest): Promise<PrefillResponse> {
    return rankZero(await this.all((s) => s.prefill(request)));
  }

  async decode(request: DecodeRequest): Promise<DecodeResponse> {
    return rankZero(await this.all((s) => s.decode(request)));
  }

  close(): void {
    for (const shard of this.shards) shard.close();
  }

  /** Waits for every shard even when one fails early, so no call is left running unobserved. */
  private async all<T>(call: (shard: ShardClient) => Promise<T>): Promise<T[]> {
    const settled = await Promise.allSettled(this.shards.map(call));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  }
}

function rankZero<T>(answers: T[]): T {
  return answers[0] as T;
}

function compareWarmup(a: WarmupResponse, b: WarmupResponse): number {
  const capacity = (w: WarmupResponse) => w.maxSupportedTotalTokens ?? -1;
  return (
    capacity(a) - capacity(b) || a.maxInputTokens - b.maxInputTokens || a.maxTotalTokens - b.maxTotalTokens
  );
}
