// One WebSocket connection: many generations at once, each under the client's
// id. Each runs its event source, forwards every event through the socket's
// send gate, and ends with exactly one of end, error or cancelled. A cancel, the
// socket closing or the server shutting down aborts the generation's signal,
// which the scheduler sees at its next step and frees the KV blocks.
import type { Logger } from "pino";
import type { RawData, WebSocket } from "ws";
import { errorJson, HttpError, internalError } from "../http/errors.js";
import { ShutdownError } from "../http/lifecycle.js";
import { listenable } from "../infer/event-channel.js";
import { InferError, type Listenable } from "../infer/types.js";
import {
  cancelledMessage,
  endMessage,
  errorMessage,
  eventMessagePrefix,
  parseClientMessage,
  ProtocolError,
  type RequestKind,
} from "./protocol.js";
import { SendGate } from "./send-gate.js";

/**
 * Runs one request's JSON (as its HTTP route would take it) and yields the JSON
 * text of each event its SSE stream would send (after `data:`). Throws InferError
 * or HttpError for failures; must stop soon after `signal` aborts. A Listenable
 * source (generate's) hands its events over synchronously from the batcher's step.
 */
export type EventSource = (request: unknown, signal: AbortSignal) => AsyncIterable<string> | Listenable<string>;

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
    const prefix = eventMessagePrefix(id);
    // signal.aborted is a checked getter: a flag is cheaper once per token.
    let aborted = signal.aborted;
    signal.addEventListener("abort", () => (aborted = true), { once: true });
    // Runs inside the batcher's step when the source is Listenable: no promise per event.
    const send = (json: string): boolean => {
      if (aborted) throw signal.reason;
      this.gate.send(`${prefix}${json}}`);
      return !this.gate.full;
    };
    let events: Listenable<string> | undefined;
    try {
      events = listenable(source(request, signal));
      // The backend's stream itself ends when the signal aborts: no race per event.
      while ((await events.listen(send)) === "paused") {
        // Backpressure: the stream waits (events stay in the backend) until the client has read enough.
        const ready = this.gate.ready();
        if (ready && (await unlessAborted(ready, signal)) === "aborted") throw signal.reason;
      }
      if (signal.aborted) throw signal.reason;
      this.gate.send(endMessage(id));
    } catch (err) {
      this.fail(id, signal, err);
    } finally {
      this.options.shutdown.removeEventListener("abort", onShutdown);
      if (this.generations.get(id) === controller) this.generations.delete(id);
      events?.stop();
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
