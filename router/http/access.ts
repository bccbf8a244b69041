// Who may call what: the API key (--api-key) and CORS (--cors-allow-origin).
//
// Better than TGI where its users complained: the preflight allows the
// `authorization` header (TGI's allows only content-type, so browsers could
// not send a key), and the x-* timing headers are exposed to scripts.
import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpContext } from "./context.js";
import { HttpError } from "./errors.js";

/** Routes served without the key: health checks and metrics (issue 3). "METHOD /path". */
export const PUBLIC_ROUTES = new Set(["GET /health", "GET /ping", "GET /", "GET /metrics"]);

const EXPOSED_HEADERS = [
  "x-compute-type",
  "x-compute-time",
  "x-compute-characters",
  "x-total-time",
  "x-validation-time",
  "x-queue-time",
  "x-inference-time",
  "x-time-per-token",
  "x-prompt-tokens",
  "x-generated-tokens",
].join(", ");

/** Throws 401 unless the request carries `Authorization: Bearer <key>` (exact, compared in constant time). */
export function checkApiKey(ctx: HttpContext, req: IncomingMessage): void {
  if (ctx.apiKey === undefined) return;
  const given = Buffer.from(req.headers.authorization ?? "");
  const expected = Buffer.from(`Bearer ${ctx.apiKey}`);
  if (given.length === expected.length && timingSafeEqual(given, expected)) return;
  throw new HttpError(401, "unauthorized", "Unauthorized: send the API key as `Authorization: Bearer <key>`", true);
}

/** The allowed origin to echo, "*" for any, or null (no CORS headers). */
function allowedOrigin(ctx: HttpContext, req: IncomingMessage): string | null {
  const list = ctx.corsAllowOrigin;
  if (list.length === 0 || list.includes("*")) return "*";
  const origin = req.headers.origin;
  return origin !== undefined && list.includes(origin) ? origin : null;
}

/** Sets CORS headers on a response about to be written. */
export function setCorsHeaders(ctx: HttpContext, req: IncomingMessage, res: ServerResponse): void {
  const origin = allowedOrigin(ctx, req);
  if (ctx.corsAllowOrigin.length > 0 && !ctx.corsAllowOrigin.includes("*")) res.setHeader("vary", "origin");
  if (origin === null) return;
  res.setHeader("access-control-allow-origin", origin);
  res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
}

/** Answers an OPTIONS preflight for a known path: 204, GET and POST, content-type and authorization. */
export function sendPreflight(ctx: HttpContext, req: IncomingMessage, res: ServerResponse, methods: string[]): void {
  setCorsHeaders(ctx, req, res);
  if (res.hasHeader("access-control-allow-origin")) {
    res.setHeader("access-control-allow-methods", methods.join(", "));
    res.setHeader("access-control-allow-headers", "content-type, authorization");
    res.setHeader("access-control-max-age", "86400");
  }
  res.writeHead(204, { "content-length": 0 });
  res.end();
}
