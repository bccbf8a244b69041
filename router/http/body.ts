// Reads a JSON request body the way TGI's axum Json extractor judges it:
// 415 without a JSON content type, 413 past the payload limit (reading stops
// there), 400 for bytes that are not JSON. Shape errors (422) come later.
import type { IncomingMessage } from "node:http";
import { HttpError } from "./errors.js";

function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const mime = value.split(";")[0]!.trim().toLowerCase();
  return mime === "application/json" || (mime.startsWith("application/") && mime.endsWith("+json"));
}

const tooLarge = () => new HttpError(413, "payload_too_large", "Failed to buffer the request body: length limit exceeded", true);

/** Bodies already read, so a route that forwards a request (POST /invocations) hands it on unread twice. */
const parsedBodies = new WeakMap<IncomingMessage, unknown>();

export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  if (parsedBodies.has(req)) return parsedBodies.get(req);
  const body = await readBody(req, limit);
  parsedBodies.set(req, body);
  return body;
}

async function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  if (!isJsonContentType(req.headers["content-type"])) {
    throw new HttpError(415, "unsupported_media_type", "Expected request with `Content-Type: application/json`", true);
  }
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();

  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(400, "aborted", "The client closed the connection while sending the request body");
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new HttpError(400, "invalid_json", "Failed to parse the request body as JSON: invalid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, "invalid_json", `Failed to parse the request body as JSON: ${(err as Error).message}`);
  }
}
