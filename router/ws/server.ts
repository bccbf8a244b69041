// The WebSocket endpoint /v1/ws on the router's node:http server: upgrades
// (after the API-key check), one WsSession per socket, pings that drop clients
// which stopped answering, and closing every socket when the server shuts down.
import { STATUS_CODES, type IncomingMessage, type Server } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { checkApiKey } from "../http/access.js";
import type { HttpContext } from "../http/context.js";
import { errorJson, HttpError, internalError } from "../http/errors.js";
import { WS_PATH } from "./protocol.js";
import { WsSession, type EventSources } from "./session.js";
import { defaultSources } from "./sources.js";

export interface WsOptions {
  /** Default: every request kind this server runs (sources.ts). */
  sources?: EventSources;
  /** Ping every this many ms; a socket that did not pong since the last ping is terminated. */
  pingIntervalMs?: number;
  /** Generations stop pulling events while more than this many bytes wait for the client. */
  highWaterMark?: number;
  /** A client with this many bytes unread is dropped. */
  maxBufferedBytes?: number;
}

export const WS_DEFAULTS = { pingIntervalMs: 30_000, highWaterMark: 256 * 1024, maxBufferedBytes: 16 * 1024 * 1024 };

/** How long sockets get to finish the close handshake at shutdown. */
const CLOSE_GRACE_MS = 1000;

export interface WsEndpoint {
  readonly wss: WebSocketServer;
  /** The session of every open socket. */
  readonly sessions: ReadonlyMap<WebSocket, WsSession>;
}

function refuse(socket: Duplex, err: HttpError): void {
  const body = JSON.stringify(errorJson(err));
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status]}\r\nconnection: close\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** The HTTP routes' API key; with --cors-allow-origin, a browser's Origin must be listed (no cross-site sockets). */
function checkAccess(ctx: HttpContext, req: IncomingMessage): void {
  checkApiKey(ctx, req);
  const origin = req.headers.origin;
  const allowed = ctx.corsAllowOrigin;
  if (origin !== undefined && allowed.length > 0 && !allowed.includes("*") && !allowed.includes(origin)) {
    throw new HttpError(403, "forbidden", `Origin ${origin} is not allowed by --cors-allow-origin`);
  }
}

export function attachWebSocket(server: Server, ctx: HttpContext, options: WsOptions = {}): WsEndpoint {
  const o = { ...WS_DEFAULTS, ...options };
  const sources = options.sources ?? defaultSources(ctx);
  const wss = new WebSocketServer({ noServer: true, maxPayload: ctx.payloadLimit, perMessageDeflate: false });
  const sessions = new Map<WebSocket, WsSession>();
  const alive = new WeakSet<WebSocket>();

  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? "/").split("?")[0];
    try {
      if (path !== WS_PATH) throw new HttpError(404, "not_found", "Not found");
      checkAccess(ctx, req);
    } catch (err) {
      if (!(err instanceof HttpError)) ctx.logger.error({ err }, "websocket upgrade failed");
      return refuse(socket, err instanceof HttpError ? err : internalError(err));
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
  });

  wss.on("connection", (ws: WebSocket) => {
    if (ctx.shutdown.aborted) return ws.close(1001, "server shutting down");
    const session = new WsSession(ws, {
      sources,
      highWaterMark: o.highWaterMark,
      maxBufferedBytes: o.maxBufferedBytes,
      logger: ctx.logger,
      shutdown: ctx.shutdown,
    });
    sessions.set(ws, session);
    alive.add(ws);
    ws.on("pong", () => alive.add(ws));
    ws.on("message", (data, isBinary) => session.onMessage(data, isBinary));
    ws.on("error", (err) => ctx.logger.debug({ err: err.message }, "websocket error"));
    ws.on("close", () => {
      sessions.delete(ws);
      session.close();
    });
  });

  const heartbeat = setInterval(() => {
    for (const ws of sessions.keys()) {
      if (!alive.has(ws)) {
        ctx.logger.info("websocket client did not answer a ping; closing it");
        ws.terminate();
        continue;
      }
      alive.delete(ws);
      ws.ping();
    }
  }, o.pingIntervalMs);
  heartbeat.unref();

  const onShutdown = () => {
    clearInterval(heartbeat);
    // After the generations' shutdown errors, which go out on the microtasks before this.
    setImmediate(() => {
      for (const ws of sessions.keys()) ws.close(1001, "server shutting down");
      setTimeout(() => {
        for (const ws of sessions.keys()) ws.terminate();
      }, CLOSE_GRACE_MS).unref();
    });
  };
  if (ctx.shutdown.aborted) onShutdown();
  else ctx.shutdown.addEventListener("abort", onShutdown, { once: true });
  server.once("close", () => clearInterval(heartbeat));

  return { wss, sessions };
}
