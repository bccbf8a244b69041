// The router's HTTP server: a route table over node:http, body decoding for the
// POST routes, and one place that turns thrown errors into TGI error JSON.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { InferError } from "../infer/types.js";
import { parseGenerateRequest, type GenerateRequest } from "../validation/request.js";
import { readJsonBody } from "./body.js";
import type { HttpContext } from "./context.js";
import { HttpError, internalError, sendError } from "./errors.js";
import { handleGenerate } from "./generate.js";
import { handleGenerateStream } from "./generate-stream.js";
import { handleHealth, handleInfo } from "./info.js";

const REFUSED_BODY_GRACE_MS = 5000;

type Handler = (ctx: HttpContext, req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

/** POST handlers take the decoded, shape-checked GenerateRequest. */
const withRequest =
  (handler: (ctx: HttpContext, res: ServerResponse, request: GenerateRequest) => Promise<void>): Handler =>
  async (ctx, req, res) =>
    handler(ctx, res, parseGenerateRequest(await readJsonBody(req, ctx.payloadLimit)));

const health: Handler = (ctx, _req, res) => handleHealth(ctx, res);

const routes: Record<string, Record<string, Handler>> = {
  "/": {
    GET: health,
    // TGI's compat route: an array answer, or the /generate_stream SSE with "stream": true.
    // return_full_text defaults to true: TGI's default for local and text-generation models.
    POST: withRequest((ctx, res, request) => {
      request.parameters.return_full_text ??= true;
      return request.stream ? handleGenerateStream(ctx, res, request) : handleGenerate(ctx, res, request, { compat: true });
    }),
  },
  "/generate": { POST: withRequest((ctx, res, request) => handleGenerate(ctx, res, request)) },
  "/generate_stream": { POST: withRequest(handleGenerateStream) },
  "/health": { GET: health },
  "/ping": { GET: health },
  "/info": { GET: (ctx, _req, res) => handleInfo(ctx, res) },
};

/** Sends the error if nothing was sent yet; a connection with an unread body is closed soon after. */
function fail(ctx: HttpContext, req: IncomingMessage, res: ServerResponse, err: unknown): void {
  const known = err instanceof InferError || err instanceof HttpError ? err : internalError(err);
  if (known !== err) ctx.logger.error({ err, url: req.url }, "unexpected error");
  else if (known.status >= 424) ctx.logger.warn({ url: req.url, status: known.status, error: known.message }, "request failed");
  else ctx.logger.debug({ url: req.url, status: known.status, error: known.message }, "request refused");
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (res.destroyed) return;
  sendError(res, known);
  if (known instanceof HttpError && known.closeConnection) {
    // A body we refused is no longer buffered, only discarded (Node drains it); closing at once
    // would reset the connection before the client reads the answer, so drop it after a grace.
    res.once("finish", () => setTimeout(() => req.socket.destroy(), REFUSED_BODY_GRACE_MS).unref());
  }
}

async function dispatch(ctx: HttpContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? "/").split("?")[0]!;
  const methods = Object.hasOwn(routes, path) ? routes[path]! : undefined;
  try {
    if (methods === undefined) throw new HttpError(404, "not_found", "Not found");
    const handler = Object.hasOwn(methods, req.method ?? "") ? methods[req.method!] : undefined;
    if (handler === undefined) {
      res.setHeader("allow", Object.keys(methods).join(", "));
      throw new HttpError(405, "method_not_allowed", "Method not allowed");
    }
    await handler(ctx, req, res);
  } catch (err) {
    fail(ctx, req, res, err);
  }
}

export function createHttpServer(ctx: HttpContext): Server {
  return createServer((req, res) => void dispatch(ctx, req, res));
}
