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

/**
 * The backend's events until the signal aborts. Ends at once on abort even if
 * the backend only notices at its next step; the backend still sees the signal.
 */
export async function* eventsUntilAborted(events: AsyncIterable<InferEvent>, signal: AbortSignal): AsyncGenerator<InferEvent> {
  if (signal.aborted) return;
  const iterator = events[Symbol.asyncIterator]();
  let onAbort!: () => void;
  const aborted = new Promise<"aborted">((resolve) => {
    onAbort = () => resolve("aborted");
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    for (;;) {
      const pending = iterator.next();
      pending.catch(() => {}); // a rejection after we stopped listening must not go unhandled
      const next = await Promise.race([pending, aborted]);
      if (next === "aborted" || next.done) return;
      yield next.value;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    // Not awaited: a backend stuck in next() would hold this up; return() queues behind it.
    iterator.return?.()?.catch(() => {});
  }
}
