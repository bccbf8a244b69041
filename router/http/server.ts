// The router's HTTP server: a route table over node:http, the API key and
// CORS in front of it, body decoding for the POST routes, and one place that
// turns thrown errors into TGI error JSON.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { InferError } from "../infer/types.js";
import { openApiJson, type RouteKey } from "../openapi/document.js";
import { shapeError } from "../validation/errors.js";
import { parseGenerateRequest, type GenerateRequest } from "../validation/request.js";
import { checkApiKey, PUBLIC_ROUTES, sendPreflight, setCorsHeaders } from "./access.js";
import { readJsonBody } from "./body.js";
import type { HttpContext } from "./context.js";
import { docsAssetPaths, sendDocsAsset, sendDocsPage } from "./docs.js";
import { HttpError, internalError, sendError, sendJson } from "./errors.js";
import { handleGenerate } from "./generate.js";
import { handleGenerateStream } from "./generate-stream.js";
import { handleHealth, handleInfo } from "./info.js";
import { handleTokenize } from "./tokenize.js";
import { handleChatCompletions, handleCompletions, handleModels } from "../openai/routes.js";

const REFUSED_BODY_GRACE_MS = 5000;

export type Handler = (ctx: HttpContext, req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

type Schema = "GenerateRequest" | "CompatGenerateRequest";

/** POST handlers take the decoded body, shape-checked against a router/schema/ schema. */
const withRequest =
  (schema: Schema, handler: (ctx: HttpContext, res: ServerResponse, request: GenerateRequest) => Promise<void>): Handler =>
  async (ctx, req, res) =>
    handler(ctx, res, parseGenerateRequest(await readJsonBody(req, ctx.payloadLimit), schema));

const health: Handler = (ctx, _req, res) => handleHealth(ctx, res);

// TGI's compat route: an array answer, or the /generate_stream SSE with "stream": true.
// return_full_text defaults to true: TGI's default for local and text-generation models.
const compatGenerate = withRequest("CompatGenerateRequest", (ctx, res, request) => {
  request.parameters.return_full_text ??= true;
  return request.stream ? handleGenerateStream(ctx, res, request) : handleGenerate(ctx, res, request, { compat: true });
});

/** SageMaker's route: the body's keys pick the route, as TGI's untagged SagemakerRequest. */
const invocations: Handler = async (ctx, req, res) => {
  const body = await readJsonBody(req, ctx.payloadLimit);
  const fields = body !== null && typeof body === "object" && !Array.isArray(body) ? body : {};
  const target = Object.hasOwn(fields, "inputs")
    ? "/"
    : Object.hasOwn(fields, "messages")
      ? "/v1/chat/completions"
      : Object.hasOwn(fields, "prompt")
        ? "/v1/completions"
        : undefined;
  if (target === undefined) {
    throw shapeError("", "data did not match any variant of untagged enum SagemakerRequest (expected `inputs`, `messages` or `prompt`)");
  }
  const handler = routes[target]?.POST;
  if (handler === undefined) throw new HttpError(422, "validation", `this body is for POST ${target}, which this server does not serve`);
  // The body is cached by readJsonBody: the target handler reads it again for free.
  return handler(ctx, req, res);
};

const metrics: Handler = async (ctx, _req, res) => {
  const { body, contentType } = await ctx.metrics.render();
  res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
  res.end(body);
};

/** The document, built on first request, per server. */
const openApiDocuments = new WeakMap<HttpContext, string>();
const openApi: Handler = (ctx, _req, res) => {
  let text = openApiDocuments.get(ctx);
  if (text === undefined) openApiDocuments.set(ctx, (text = openApiJson(routeList(), ctx.info.version)));
  sendJson(res, 200, text);
};

const routes: Record<string, Record<string, Handler>> = {
  "/": { GET: health, POST: compatGenerate },
  "/generate": { POST: withRequest("GenerateRequest", (ctx, res, request) => handleGenerate(ctx, res, request)) },
  "/generate_stream": { POST: withRequest("GenerateRequest", handleGenerateStream) },
  "/invocations": { POST: invocations },
  "/tokenize": { POST: withRequest("GenerateRequest", handleTokenize) },
  "/health": { GET: health },
  "/ping": { GET: health },
  "/info": { GET: (ctx, _req, res) => handleInfo(ctx, res) },
  "/metrics": { GET: metrics },
  "/api-doc/openapi.json": { GET: openApi },
  "/docs": { GET: (_ctx, _req, res) => sendDocsPage(res) },
  "/v1/chat/completions": { POST: handleChatCompletions },
  "/v1/completions": { POST: handleCompletions },
  "/v1/models": { GET: handleModels },
};

/** Swagger UI's files: served like routes, left out of the OpenAPI document. */
const assets: Record<string, Record<string, Handler>> = Object.fromEntries(
  docsAssetPaths.map((path) => [path, { GET: (_ctx: HttpContext, _req: IncomingMessage, res: ServerResponse) => sendDocsAsset(res, path) }]),
);

/** Routes served outside the table (the WebSocket upgrade), for the OpenAPI document. */
const UPGRADE_ROUTES: RouteKey[] = [{ method: "GET", path: "/v1/ws" }];

/** Every route of the table, in order, plus the upgrade routes: what docs/openapi.json describes. */
export function routeList(): RouteKey[] {
  const table = Object.entries(routes).flatMap(([path, methods]) => Object.keys(methods).map((method) => ({ method, path })));
  return [...table, ...UPGRADE_ROUTES];
}

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
  const methods = Object.hasOwn(routes, path) ? routes[path]! : Object.hasOwn(assets, path) ? assets[path]! : undefined;
  try {
    if (methods === undefined) throw new HttpError(404, "not_found", `Not found: ${req.method} ${path}`);
    if (req.method === "OPTIONS") return sendPreflight(ctx, req, res, Object.keys(methods));
    setCorsHeaders(ctx, req, res);
    const handler = Object.hasOwn(methods, req.method ?? "") ? methods[req.method!] : undefined;
    if (handler === undefined) {
      res.setHeader("allow", Object.keys(methods).join(", "));
      throw new HttpError(405, "method_not_allowed", `Method not allowed: ${path} accepts ${Object.keys(methods).join(", ")}`);
    }
    if (!PUBLIC_ROUTES.has(`${req.method} ${path}`)) checkApiKey(ctx, req);
    await handler(ctx, req, res);
  } catch (err) {
    fail(ctx, req, res, err);
  }
}

export function createHttpServer(ctx: HttpContext): Server {
  return createServer((req, res) => void dispatch(ctx, req, res));
}
