// The NCCL rendezvous of a group of cuda shards: rank 0 makes an ncclUniqueId and serves its
// 128 bytes; every other rank fetches them (retrying until rank 0 listens); all then pass them to
// loadEngine, where NCCL joins the group. On one node it runs over a Unix socket beside the shard
// sockets (`<uds base>-nccl`, per launch, so two servers never collide); with MASTER_ADDR or
// MASTER_PORT set (the launcher's --master-addr/--master-port) over TCP, so ranks may span nodes.
//
// Wire format, one JSON line each way: the rank asks `{"rank":R,"worldSize":W}`, rank 0 answers
// `{"ncclId":"<base64>"}` or `{"error":"<message>"}` and closes.
import { rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { NCCL_UNIQUE_ID_BYTES } from "../native/index.js";
import { CliError } from "./cli.js";

export type RendezvousAddress = { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };

/** TGI's and torch's MASTER_PORT default. */
export const DEFAULT_MASTER_PORT = 29500;
/** Longest request or answer line accepted (the answer is about 200 bytes). */
const MAX_LINE_BYTES = 4096;
/** One connection attempt, from connect to answer. */
const ATTEMPT_TIMEOUT_MS = 5000;

export function describeAddress(a: RendezvousAddress): string {
  return a.kind === "unix" ? `unix:${a.path}` : `tcp://${a.host}:${a.port}`;
}

/**
 * TCP to MASTER_ADDR:MASTER_PORT when either is set (the other defaults to localhost / 29500),
 * else the Unix socket `<base>-nccl`, where rank r's own socket is `<base>-r`.
 */
export function rendezvousAddress(udsPath: string, rank: number, env: NodeJS.ProcessEnv): RendezvousAddress {
  const addr = env.MASTER_ADDR?.trim(), portText = env.MASTER_PORT?.trim();
  if (addr || portText) {
    const port = Number(portText || DEFAULT_MASTER_PORT);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CliError(`MASTER_PORT must be a port number in 1..65535 (got '${portText}')`);
    return { kind: "tcp", host: addr || "localhost", port };
  }
  const suffix = `-${rank}`;
  if (!udsPath.endsWith(suffix)) throw new CliError(`--uds-path ${udsPath} must end with -${rank} (the rank) for the NCCL rendezvous`);
  return { kind: "unix", path: `${udsPath.slice(0, -suffix.length)}-nccl` };
}

export interface RendezvousOptions {
  address: RendezvousAddress;
  rank: number;
  worldSize: number;
  /** How long rank 0 waits for every rank to fetch the id, and how long the others keep trying. */
  timeoutMs: number;
  /** Rank 0's id maker: native.ncclUniqueId (throws when NCCL is missing). */
  makeId: () => Buffer;
  /** Pause between connection attempts. */
  retryMs?: number;
}

export interface Rendezvous {
  /** The 128 bytes every rank passes to loadEngine as ncclId. */
  id: Buffer;
  /**
   * Rank 0: resolves once every other rank has the id, rejects naming the ranks that did not
   * fetch it in time. Other ranks: already resolved. Rank 0 awaits it beside loadEngine, which
   * blocks in NCCL until every rank has joined.
   */
  served: Promise<void>;
  /** Stops serving (rank 0) and removes the Unix socket; idempotent. */
  close(): void;
}

export async function ncclRendezvous(o: RendezvousOptions): Promise<Rendezvous> {
  if (o.rank === 0) return serveId(o, checkId(o.makeId(), "ncclUniqueId()"));
  const id = await fetchId(o);
  return { id, served: Promise.resolve(), close: () => {} };
}

function checkId(id: Buffer, from: string): Buffer {
  if (!Buffer.isBuffer(id) || id.length !== NCCL_UNIQUE_ID_BYTES) {
    throw new Error(`${from} gave ${Buffer.isBuffer(id) ? `${id.length} bytes` : typeof id}, not the ${NCCL_UNIQUE_ID_BYTES} bytes of an ncclUniqueId`);
  }
  return id;
}

async function serveId(o: RendezvousOptions, id: Buffer): Promise<Rendezvous> {
  const where = describeAddress(o.address);
  const waiting = new Set(Array.from({ length: o.worldSize - 1 }, (_, i) => i + 1));
  const answer = `${JSON.stringify({ ncclId: id.toString("base64") })}\n`;
  let settle!: { resolve: () => void; reject: (e: Error) => void };
  const served = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  const server: Server = createServer((socket) => {
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => socket.destroy());
    socket.on("error", () => {}); // a rank that hangs up early simply asks again
    readLine(socket, (line) => {
      const asked = parseRequest(line, o.worldSize);
      if ("error" in asked) {
        socket.end(`${JSON.stringify(asked)}\n`);
        return;
      }
      socket.end(answer, () => {
        waiting.delete(asked.rank);
        if (waiting.size === 0) finish();
      });
    });
  });
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    server.close();
    if (o.address.kind === "unix") rmSync(o.address.path, { force: true });
  };
  const finish = (err?: Error) => {
    close();
    if (err) settle.reject(err);
    else settle.resolve();
  };
  const timer = setTimeout(() => {
    const missing = [...waiting].join(", ");
    finish(new Error(`rank 0: rank${waiting.size > 1 ? "s" : ""} ${missing} did not fetch the NCCL id from ${where} within ` +
      `${seconds(o.timeoutMs)}; check that ${waiting.size > 1 ? "they" : "it"} started (${waiting.size > 1 ? "their logs say" : "its log says"} why not)`));
  }, o.timeoutMs);
  timer.unref();

  if (o.address.kind === "unix") rmSync(o.address.path, { force: true }); // a socket left by a killed run
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const hint = err.code === "EADDRINUSE" && o.address.kind === "tcp" ? ` (port ${o.address.port} is taken: pick another --master-port)` : "";
      reject(new Error(`rank 0: cannot serve the NCCL id on ${where}: ${err.message}${hint}`));
    });
    const listening = () => resolve();
    if (o.address.kind === "unix") server.listen(o.address.path, listening);
    // Every interface, as torch's TCPStore: MASTER_ADDR is how the other nodes reach this one.
    else server.listen(o.address.port, listening);
  });
  if (waiting.size === 0) finish();
  return { id, served, close };
}

function parseRequest(line: string, worldSize: number): { rank: number } | { error: string } {
  let v: { rank?: unknown; worldSize?: unknown };
  try {
    v = JSON.parse(line) as typeof v;
  } catch {
    return { error: "not a rendezvous request" };
  }
  if (v?.worldSize !== worldSize) return { error: `rank 0 runs with world size ${worldSize}, this rank with ${String(v?.worldSize)}` };
  if (typeof v.rank !== "number" || !Number.isInteger(v.rank) || v.rank < 1 || v.rank >= worldSize) {
    return { error: `rank ${String(v.rank)} is not one of 1..${worldSize - 1}` };
  }
  return { rank: v.rank };
}

/** An answer that tells the asking rank to stop retrying: the group is misconfigured. */
class RendezvousRefused extends Error {}

async function fetchId(o: RendezvousOptions): Promise<Buffer> {
  const deadline = Date.now() + o.timeoutMs;
  let lastError = "no attempt";
  for (;;) {
    try {
      return await askOnce(o);
    } catch (err) {
      if (err instanceof RendezvousRefused) throw err;
      lastError = (err as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new Error(`rank ${o.rank}: no NCCL id from rank 0 at ${describeAddress(o.address)} after ${seconds(o.timeoutMs)} ` +
        `(last error: ${lastError}); check that rank 0 is running (its log says why not)` +
        (o.address.kind === "tcp" ? " and that MASTER_ADDR/MASTER_PORT reach its node" : ""));
    }
    await new Promise((r) => setTimeout(r, Math.min(o.retryMs ?? 200, Math.max(0, deadline - Date.now()))));
  }
}

function askOnce(o: RendezvousOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const a = o.address;
    const socket = a.kind === "unix" ? createConnection(a.path) : createConnection(a.port, a.host);
    socket.setTimeout(ATTEMPT_TIMEOUT_MS, () => socket.destroy(new Error("no answer")));
    socket.on("error", reject);
    socket.on("close", () => reject(new Error("connection closed before an answer")));
    socket.on("connect", () => socket.write(`${JSON.stringify({ rank: o.rank, worldSize: o.worldSize })}\n`));
    readLine(socket, (line) => {
      socket.destroy();
      let v: { ncclId?: unknown; error?: unknown };
      try {
        v = JSON.parse(line) as typeof v;
      } catch {
        reject(new Error(`not a text-gen rendezvous answer from ${describeAddress(a)}`));
        return;
      }
      if (typeof v.error === "string") {
        reject(new RendezvousRefused(`rank ${o.rank}: rank 0 at ${describeAddress(a)} refused the NCCL id: ${v.error}`));
        return;
      }
      try {
        resolve(checkId(Buffer.from(typeof v.ncclId === "string" ? v.ncclId : "", "base64"), `rank 0 at ${describeAddress(a)}`));
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

/** Calls `onLine` with the first newline-terminated line (destroying sockets that send too much). */
function readLine(socket: Socket, onLine: (line: string) => void): void {
  let buf = "";
  const onData = (chunk: Buffer) => {
    buf += chunk.toString("utf8");
    const nl = buf.indexOf("\n");
    if (nl >= 0) {
      socket.off("data", onData);
      onLine(buf.slice(0, nl));
    } else if (buf.length > MAX_LINE_BYTES) {
      socket.destroy(new Error("line too long"));
    }
  };
  socket.on("data", onData);
}

function seconds(ms: number): string {
  return `${ms / 1000} s`;
}
