// Everything decided before any process starts: the resolved model, the derived settings, and the
// per-launch names (socket paths, shared-memory communicator) that keep two launches apart.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Level } from "pino";
import type { LauncherArgs } from "./args.js";
import { deriveAndValidate, type Derived } from "./defaults.js";
import { LauncherError } from "./errors.js";
import { readModelConfig } from "./model-config.js";
import { resolveModelDir } from "./model-resolve.js";

export interface LaunchPlan {
  launchId: string;
  args: LauncherArgs;
  derived: Derived;
  /** What the user asked for (reported by /info). */
  modelId: string;
  modelDir: string;
  /** Rank r listens on `${udsBase}-${r}`. */
  udsBase: string;
  /** Shared-memory communicator name for world size > 1. */
  commName: string;
  logLevel: Level;
  shardScript: string;
  routerScript: string;
}

/** The package root, from launcher/ (tsx) or dist/launcher/ (compiled). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "launcher"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new LauncherError("cannot find the text-gen package root");
    dir = parent;
  }
}

/** Unix socket paths must fit sun_path (108 bytes on Linux); keep a margin. */
const MAX_SOCKET_BYTES = 100;

export function socketPath(base: string, rank: number): string {
  return `${base}-${rank}`;
}

/** Where rank 0 serves the NCCL id on one node (shard/nccl-rendezvous.ts derives the same). */
export function rendezvousSocketPath(base: string): string {
  return `${base}-nccl`;
}

export function makePlan(args: LauncherArgs, env: NodeJS.ProcessEnv, logLevel: Level): LaunchPlan {
  const root = packageRoot();
  const modelId = args.modelId ?? join(root, "models", "stories260k");
  const modelDir = resolveModelDir(modelId, args.revision, env);
  const derived = deriveAndValidate(args, readModelConfig(modelDir), env);
  const launchId = randomBytes(4).toString("hex");
  const udsBase = args.shardUdsPath ?? join(tmpdir(), `text-gen-${launchId}`);
  const paths = [socketPath(udsBase, derived.numShard - 1), ...(derived.numShard > 1 ? [rendezvousSocketPath(udsBase)] : [])];
  const longest = paths.reduce((a, b) => (Buffer.byteLength(b) > Buffer.byteLength(a) ? b : a));
  if (Buffer.byteLength(longest) >= MAX_SOCKET_BYTES) {
    throw new LauncherError(`shard socket path ${longest} is ${Buffer.byteLength(longest)} bytes; Unix sockets need < ${MAX_SOCKET_BYTES}: ` +
      `pass a shorter --shard-uds-path (or a shorter TMPDIR)`);
  }
  const script = (envName: string, rel: string) => {
    const p = resolve(env[envName] ?? join(root, rel));
    if (!existsSync(p)) throw new LauncherError(`${p} is missing: run \`npm run build\` first`);
    return p;
  };
  return {
    launchId,
    args,
    derived,
    modelId,
    modelDir,
    udsBase,
    commName: `tg-${launchId}`,
    logLevel,
    // Overridable so the launcher's own tests can supervise stand-in children.
    shardScript: script("TEXT_GEN_SHARD_SCRIPT", "dist/shard/main.js"),
    routerScript: script("TEXT_GEN_ROUTER_SCRIPT", "dist/router/main.js"),
  };
}
