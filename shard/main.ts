// text-gen-shard: one rank of the model. Loads the engine, serves the gRPC
// service on this rank's Unix socket, prints one ready line on stdout, logs
// pino JSON on stderr, and exits 0 on SIGTERM/SIGINT or 1 on a fatal error.
import { existsSync, unlinkSync } from "node:fs";
import { pino, type Logger } from "pino";
import { loadNative } from "../native/index.js";
import { parseShardArgs, shardUrls } from "./cli.js";
import { chooseDtype, resolveDevice } from "./device.js";
import { startGrpcServer, stopGrpcServer } from "./grpc-server.js";
import { readModelConfig } from "./model-config.js";
import { describeAddress, ncclRendezvous, rendezvousAddress, type Rendezvous } from "./nccl-rendezvous.js";
import { ShardService } from "./service.js";

/** How long in-flight RPCs (a step) may take to finish after SIGTERM. */
const SHUTDOWN_GRACE_MS = 5000;

function makeLogger(level: string, rank?: number): Logger {
  return pino({ level, base: rank === undefined ? {} : { rank } }, pino.destination({ dest: 2, sync: true }));
}

async function main(): Promise<void> {
  let logger = makeLogger("info");
  const fatal = (err: unknown): never => {
    logger.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  };
  process.on("uncaughtException", fatal);
  process.on("unhandledRejection", fatal);

  try {
    const opts = parseShardArgs(process.argv.slice(2), process.env);
    logger = makeLogger(opts.logLevel, opts.rank);
    const urls = shardUrls(opts.udsPath, opts.rank, opts.worldSize);
    const { config, dtype: checkpointDtype } = readModelConfig(opts.modelId);
    const native = loadNative();
    const { device, why } = resolveDevice(opts.device, opts.worldSize, native);
    if (why && opts.device === "auto") logger.info({ device }, `device auto: ${why}`);
    const { dtype, note } = chooseDtype(device, opts.dtype, checkpointDtype);
    if (note) logger.info({ dtype }, note);
    // cuda ranks meet over NCCL, whose group id rank 0 hands out here; the CPU's shared-memory
    // communicator meets inside loadEngine.
    let rendezvous: Rendezvous | undefined;
    if (device === "cuda" && opts.worldSize > 1) {
      const address = rendezvousAddress(opts.udsPath, opts.rank, process.env);
      logger.info({ rendezvous: describeAddress(address) }, opts.rank === 0 ? "serving the NCCL id" : "fetching the NCCL id from rank 0");
      rendezvous = await ncclRendezvous({
        address, rank: opts.rank, worldSize: opts.worldSize, timeoutMs: opts.rendezvousTimeoutS * 1000, makeId: () => native.ncclUniqueId(),
      });
    }
    logger.info({ modelId: opts.modelId, device, dtype, worldSize: opts.worldSize, architecture: config.architecture }, "loading model");
    const loading = native.loadEngine({
      modelDir: opts.modelId,
      config,
      dtype,
      device,
      rank: opts.rank,
      worldSize: opts.worldSize,
      blockSize: opts.blockSize,
      threads: opts.threads,
      ...(opts.commName !== undefined ? { commName: opts.commName } : {}),
      ...(rendezvous ? { ncclId: rendezvous.id } : {}),
      ...(opts.cudaGraphs !== undefined ? { cudaGraphs: opts.cudaGraphs } : {}),
    });
    // Rank 0 fails here, instead of waiting in NCCL forever, when a rank never fetches the id.
    const [engine] = await Promise.all([loading, rendezvous?.served]);
    const info = engine.info();
    logger.info({ weightBytes: info.weightBytes, device: info.device, attention: info.attentionImpl }, "model loaded");
    const service = new ShardService({
      engine,
      config,
      rank: opts.rank,
      worldSize: opts.worldSize,
      urls,
      kvCacheBytes: opts.kvCacheBytes,
      cudaMemoryFraction: opts.cudaMemoryFraction,
      watermark: opts.watermark,
      lookahead: opts.lookahead,
      logger,
      onUnrecoverable: (err) => {
        logger.fatal({ err }, "engine step failed with several ranks: the communicator may be out of step, exiting");
        // Let the failed RPC's answer reach the router first.
        setTimeout(() => process.exit(1), 200);
      },
    });
    const server = await startGrpcServer(service, opts.udsPath, logger);
    process.stdout.write(`${JSON.stringify({ ready: true, rank: opts.rank, socket: opts.udsPath })}\n`);
    logger.info({ socket: opts.udsPath }, "shard ready");

    let stopping = false;
    const shutdown = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "shutting down");
      await stopGrpcServer(server, SHUTDOWN_GRACE_MS);
      await service.close();
      engine.close();
      if (existsSync(opts.udsPath)) unlinkSync(opts.udsPath);
      process.exit(0);
    };
    process.on("SIGTERM", () => void shutdown("SIGTERM").catch(fatal));
    process.on("SIGINT", () => void shutdown("SIGINT").catch(fatal));
  } catch (err) {
    fatal(err);
  }
}

await main();
