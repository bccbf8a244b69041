// Serves a ShardService over gRPC on a Unix socket. Every failure becomes a
// gRPC status with a message (INVALID_ARGUMENT for a bad request, INTERNAL for
// the engine); nothing a client sends can crash the process.
import { existsSync, unlinkSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { TextGenerationServiceService, type TextGenerationServiceServer } from "../proto/gen/generate.js";
import { asShardError } from "./errors.js";
import type { ShardService } from "./service.js";

/** Batches of long prompts with prefill logprobs and top-n easily pass grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

export const GRPC_OPTIONS: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
};

function unary<Req, Res>(
  name: string,
  logger: Logger,
  handler: (req: Req) => Res | Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => handler(call.request))
      .then(
        (response) => callback(null, response),
        (err: unknown) => {
          const error = asShardError(err, name);
          // A bad request is the router's problem; an engine failure is ours.
          const level = error.kind === "internal" ? "error" : "warn";
          logger[level]({ rpc: name, code: grpc.status[error.grpcCode] }, error.message);
          callback({ code: error.grpcCode, details: error.message });
        },
      );
  };
}

export function serviceHandlers(service: ShardService, logger: Logger): TextGenerationServiceServer {
  return {
    info: unary("Info", logger, () => service.info()),
    serviceDiscovery: unary("ServiceDiscovery", logger, () => service.serviceDiscovery()),
    clearCache: unary("ClearCache", logger, async (req) => {
      await service.clearCache(req);
      return {};
    }),
    filterBatch: unary("FilterBatch", logger, (req) => service.filterBatch(req)),
    warmup: unary("Warmup", logger, (req) => service.warmup(req)),
    prefill: unary("Prefill", logger, (req) => service.prefill(req)),
    decode: unary("Decode", logger, (req) => service.decode(req)),
    health: unary("Health", logger, async () => {
      await service.health();
      return {};
    }),
  };
}

/** Binds `unix://<socketPath>` (removing a stale socket file first) and serves. */
export async function startGrpcServer(service: ShardService, socketPath: string, logger: Logger): Promise<grpc.Server> {
  if (existsSync(socketPath)) unlinkSync(socketPath);
  const server = new grpc.Server(GRPC_OPTIONS);
  server.addService(TextGenerationServiceService, serviceHandlers(service, logger));
  await new Promise<number>((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });
  return server;
}

/** Graceful shutdown, forced after `graceMs` (a long step must not hold up SIGTERM forever). */
export function stopGrpcServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
