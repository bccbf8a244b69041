// A request's cancellation: the client going away or the server shutting down
// aborts the signal handed to the backend, which frees the request's KV blocks.
import type { ServerResponse } from "node:http";
import type { InferEvent } from "../infer/types.js";
import { HttpError } from "./errors.js";

/** What a request still in flight at shutdown gets: 503, or an error event in a stream. */
export class ShutdownError extends HttpError {
  constructor() {
    super(503, "shutdown", "Server is shutting down");
  }
}

export interface RequestScope {
  signal: AbortSignal;
  /** True when the client closed the connection before the response ended. */
  readonly clientGone: boolean;
  dispose(): void;
}

export function requestScope(res: ServerResponse, shutdown: AbortSignal): RequestScope {
  const controller = new AbortController();
  let clientGone = false;
  // Not req.on("close"): that fires once the request body is read, not when the client leaves.
  const onClose = () => {
    if (!res.writableFinished) {
      clientGone = true;
      controller.abort(new Error("client disconnected"));
    }
  };
  const onShutdown = () => controller.abort(new ShutdownError());
  res.on("close", onClose);
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener("abort", onShutdown, { once: true });
  return {
    signal: controller.signal,
    get clientGone() {
      return clientGone;
    },
    dispose() {
      res.off("close", onClose);
      shutdown.removeEventListener("abort", onShutdown);
    },
  };
}

