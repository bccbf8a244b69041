// One gRPC client for one shard's Unix socket: each RPC as a promise, every
// failure as a ShardError that carries the shard's own message.
import { credentials, type ServiceError } from "@grpc/grpc-js";
import {
  TextGenerationServiceClient,
  type CachedBatch,
  type DecodeRequest,
  type DecodeResponse,
  type FilterBatchResponse,
  type InfoResponse,
  type PrefillRequest,
  type PrefillResponse,
  type ServiceDiscoveryResponse,
  type WarmupRequest,
  type WarmupResponse,
} from "../../proto/gen/generate.js";

/** Batches and logprobs can be large; grpc-js defaults to 4 MiB. */
const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** An RPC to a shard failed; `message` is TGI's "Server error: <shard message>". */
export class ShardError extends Error {
  constructor(
    /** The RPC that failed, e.g. "prefill". */
    readonly rpc: string,
    /** The shard's status details (for a Python-like shard, the exception text). */
    readonly details: string,
    /** gRPC status code. */
    readonly code: number | undefined,
    /** Socket of the shard that answered with the error. */
    readonly socket: string,
  ) {
    super(`Server error: ${details}`);
    this.name = "ShardError";
  }
}

type Callback<Res> = (error: ServiceError | null, response: Res) => void;

export class ShardClient {
  private readonly client: TextGenerationServiceClient;

  /** `socket` is a path (`/tmp/x-0`) or a `unix://` URL. */
  constructor(readonly socket: string) {
    const address = socket.startsWith("unix:") ? socket : `unix://${socket}`;
    this.client = new TextGenerationServiceClient(address, credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
  }

  info(): Promise<InfoResponse> {
    return this.unary("info", (cb) => this.client.info({}, cb));
  }

  health(): Promise<void> {
    return this.unary("health", (cb) => this.client.health({}, cb)).then(() => undefined);
  }

  serviceDiscovery(): Promise<string[]> {
    return this.unary<ServiceDiscoveryResponse>("serviceDiscovery", (cb) => this.client.serviceDiscovery({}, cb)).then(
      (r) => r.urls,
    );
  }

  clearCache(batchId?: number): Promise<void> {
    return this.unary("clearCache", (cb) => this.client.clearCache({ id: batchId }, cb)).then(() => undefined);
  }

  filterBatch(batchId: number, requestIds: number[]): Promise<CachedBatch | undefined> {
    const request = { batchId, requestIds };
    return this.unary<FilterBatchResponse>("filterBatch", (cb) => this.client.filterBatch(request, cb)).then((r) => r.batch);
  }

  warmup(request: WarmupRequest): Promise<WarmupResponse> {
    return this.unary("warmup", (cb) => this.client.warmup(request, cb));
  }

  prefill(request: PrefillRequest): Promise<PrefillResponse> {
    return this.unary("prefill", (cb) => this.client.prefill(request, cb));
  }

  decode(request: DecodeRequest): Promise<DecodeResponse> {
    return this.unary("decode", (cb) => this.client.decode(request, cb));
  }

  close(): void {
    this.client.close();
  }

  private unary<Res>(rpc: string, send: (callback: Callback<Res>) => void): Promise<Res> {
    return new Promise((resolve, reject) => {
      send((error, response) => {
        if (error) reject(new ShardError(rpc, error.details || error.message, error.code, this.socket));
        else resolve(response);
      });
    });
  }
}
