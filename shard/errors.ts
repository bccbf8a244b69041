// The shard's one error type. Each kind maps to one gRPC status code, so the
// router can tell a bad request (its own bug) from an engine failure.
import { status } from "@grpc/grpc-js";

export type ShardErrorKind = "invalid_argument" | "failed_precondition" | "resource_exhausted" | "internal";

const GRPC_CODE: Record<ShardErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  internal: status.INTERNAL,
};

export class ShardError extends Error {
  constructor(
    readonly kind: ShardErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "ShardError";
  }

  get grpcCode(): status {
    return GRPC_CODE[this.kind];
  }
}

export function badRequest(message: string): ShardError {
  return new ShardError("invalid_argument", message);
}

/** Wraps anything thrown below the shard (the engine, mostly) as INTERNAL, keeping ShardErrors. */
export function asShardError(err: unknown, context: string): ShardError {
  if (err instanceof ShardError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ShardError("internal", `${context}: ${message}`);
}
