// HTTP-level failures and the one JSON error body every route sends:
// {"error": message, "error_type": type}, TGI's ErrorResponse field order.
import type { ServerResponse } from "node:http";
import { InferError } from "../infer/types.js";
import type { FailureKind } from "../metrics/metrics.js";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly errorType: string,
    message: string,
    /** The request body was left unread: close the connection instead of draining it. */
    readonly closeConnection = false,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function errorJson(err: InferError | HttpError): { error: string; error_type: string } {
  return { error: err.message, error_type: err instanceof InferError ? err.kind : err.errorType };
}

export function sendJson(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers });
  res.end(body);
}

export function sendError(res: ServerResponse, err: InferError | HttpError): void {
  const headers: Record<string, string> = {};
  if (err instanceof HttpError && err.closeConnection) headers.connection = "close";
  sendJson(res, err.status, JSON.stringify(errorJson(err)), headers);
}

export const overloaded = (): InferError => new InferError("overloaded", "Model is overloaded");

/** A bug, not a request problem: the client gets a fixed message, the log gets the stack. */
export const internalError = (_err: unknown): HttpError => new HttpError(500, "internal", "Internal server error");

/** tgi_request_failure's `err` label for an error that ended a generation. */
export function failureKind(err: unknown, clientGone: boolean): FailureKind {
  if (clientGone) return "dropped";
  if (err instanceof InferError) {
    return ({ validation: "validation", overloaded: "overloaded", generation: "generation", incomplete_generation: "incomplete" } as const)[err.kind];
  }
  return err instanceof HttpError && err.status === 503 ? "dropped" : "generation";
}
