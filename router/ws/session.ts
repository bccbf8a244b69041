// One WebSocket connection: many generations at once, each under the client's
// id. Each runs its event source, forwards every event through the socket's
// send gate, and ends with exactly one of end, error or cancelled. A cancel, the
// socket closing or the server shutting down aborts the generation's signal,
// which the scheduler sees at its next step and frees the KV blocks.
import type { Logger } from "pino";
import type { RawData, WebSocket } from "ws";
import { errorJson, HttpError, internalError } from "../http/errors.js";
import { ShutdownError } from "../http/lifecycle.js";
import { InferError } from "../infer/types.js";
import {
  cancelledMessage,
  endMessage,
  errorMessage,
  eventMessage,
  parseClientMessage,
  ProtocolError,
  type RequestKind,
} from "./protocol.js";
import { SendGate } from "./send-gate.js";

/**
 * Runs one request's JSON (as its HTTP route would take it) and yields the events
 * its SSE stream would send. Throws InferError or HttpError for failures; must
 * stop soon after `signal` aborts.
 */
export type EventSource = (request: unknown, signal: AbortSignal) => AsyncIterable<object>;

export type EventSources = Partial<Record<RequestKind, EventSource>>;

export interface SessionOptions {
  sources: EventSources;
  highWaterMark: number;
  maxBufferedBytes: number;
  logger: Logger;
  shutdown: AbortSignal;
}

class CancelledError extends Error {
  constructor() {
    super("cancelled by the client");
  }
}

/** `promise`'s value, or "aborted" as soon as the signal aborts (the promise may still be pending). */
function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | "aborted"> {
  if (signal.aborted) return Promise.resolve("aborted");
  promise.catch(() => {}); // rejected after we stopped listening: not unhandled
  let onAbort!: () => void;
  const aborted = new Promise<"aborted">((resolve) => {
    onAbort = () => resolve("aborted");
    signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([promise, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}

export class WsSession {
  private readonly generations = new Map<string, AbortController>();
  private readonly gate: SendGate;
  private closed = false;

  constructor(
    ws: WebSocket,
    private readonly options: SessionOptions,
  ) {
    this.gate = new SendGate(ws, options.highWaterMark, options.maxBufferedBytes, () => {
      options.logger.warn({ buffered: this.gate.buffered }, "websocket client is not reading; closing it");
      ws.terminate();
    });
  }

  /** Generations running now. */
  get running(): number {
    return this.generations.size;
  }

  /** Bytes queued for the client. */
  get buffered(): number {
    return this.gate.buffered;
  }

  onMessage(data: RawData, isBinary: boolean): void {
    if (this.closed) return;
    try {
      if (isBinary) throw new ProtocolError(null, 400, "invalid_message", "Binary messages are not supported: send JSON text");
      const message = parseClientMessage(data.toString());
      if (message.type === "cancel") return this.cancel(message.id);
      const source = this.options.sources[message.type];
      if (source === undefined) {
        throw new ProtocolError(message.id, 400, "invalid_message", `\`${message.type}\` requests are not available on this server`);
      }
      if (this.generations.has(message.id)) {
        throw new ProtocolError(message.id, 409, "duplicate_id", `A generation with id ${JSON.stringify(message.id)} is still running`);
      }
      void this.run(message.id, source, message.request);
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.gate.send(errorMessage(err.id, err.status, { error: err.message, error_type: err.errorType }));
        return;
      }
      this.options.logger.error({ route: "ws", err }, "unexpected error");
      this.gate.send(errorMessage(null, 500, errorJson(internalError(err))));
    }
  }

  /** The socket closed: every generation stops, nothing more is sent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.gate.close();
    for (const controller of this.generations.values()) controller.abort(new Error("websocket closed"));
    this.generations.clear();
  }

  private cancel(id: string): void {
    const controller = this.generations.get(id);
    if (controller === undefined) {
      throw new ProtocolError(id, 404, "unknown_id", `No generation with id ${JSON.stringify(id)} is running`);
    }
    // Forgotten at once: the id can be reused right after the `cancelled` reply.
    this.generations.delete(id);
    controller.abort(new CancelledError());
    this.gate.send(cancelledMessage(id));
  }

  private async run(id: string, source: EventSource, request: unknown): Promise<void> {
    const controller = new AbortController();
    const { signal } = controller;
    this.generations.set(id, controller);
    const onShutdown = () => controller.abort(new ShutdownError());
    if (this.options.shutdown.aborted) onShutdown();
    else this.options.shutdown.addEventListener("abort", onShutdown, { once: true });
    let iterator: AsyncIterator<object> | undefined;
    try {
      iterator = source(request, signal)[Symbol.asyncIterator]();
      for (;;) {
        // The backend's stream itself ends when the signal aborts: no race per event.
        const next = await iterator.next();
        if (signal.aborted) throw signal.reason;
        if (next.done) break;
        // Backpressure: the next event is pulled only once the client has read enough.
        const ready = this.gate.ready();
        if (ready && (await unlessAborted(ready, signal)) === "aborted") throw signal.reason;
        this.gate.send(eventMessage(id, next.value));
      }
      if (signal.aborted) throw signal.reason;
      this.gate.send(endMessage(id));
    } catch (err) {
      this.fail(id, signal, err);
    } finally {
      this.options.shutdown.removeEventListener("abort", onShutdown);
      if (this.generations.get(id) === controller) this.generations.delete(id);
      // Not awaited: return() on a source busy in next() waits for that next() to settle.
      iterator?.return?.()?.catch(() => {});
    }
  }

  private fail(id: string, signal: AbortSignal, err: unknown): void {
    // Cancelled (already answered) or socket closed: nothing to say.
    if (signal.aborted && !(signal.reason instanceof ShutdownError)) return;
    const reason = signal.aborted ? signal.reason : err;
    const known = reason instanceof InferError || reason instanceof HttpError ? reason : internalError(reason);
    if (known !== reason) this.options.logger.error({ route: "ws", id, err: reason }, "unexpected error");
    else this.options.logger.warn({ route: "ws", id, error: known.message }, "request failed");
    this.gate.send(errorMessage(id, known.status, errorJson(known)));
  }
}
