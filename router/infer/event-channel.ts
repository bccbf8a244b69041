// A single-consumer event stream fed by a producer that must never wait: the
// batcher pushes and moves on; events wait here until the consumer takes them.
// The consumer either iterates (one promise per event) or listens (the fast
// path: each push calls it synchronously, inside the batcher's step). The
// buffer is bounded in practice by max_new_tokens events per request.
import type { Listenable, ListenResult } from "./types.js";

export class EventChannel<T> implements AsyncIterable<T>, Listenable<T> {
  private readonly buffer: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | null = null;
  private listener: ((value: T) => boolean) | null = null;
  private settleListen: ((result: ListenResult) => void) | null = null;
  private failListen: ((error: unknown) => void) | null = null;
  private closed = false;

  /** `onReturn` runs when the consumer stops early (break, return, throw in for-await or in a listener, stop()). */
  constructor(private readonly onReturn: () => void = () => undefined) {}

  push(value: T): void {
    if (this.closed) return;
    if (this.listener) {
      this.hand(this.listener, value);
      return;
    }
    const waiting = this.waiting;
    if (waiting) {
      this.waiting = null;
      waiting({ value, done: false });
    } else {
      this.buffer.push(value);
    }
  }

  /** No more events; buffered ones are still delivered. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const waiting = this.waiting;
    this.waiting = null;
    waiting?.({ value: undefined, done: true });
    if (this.listener) this.unlisten()?.("closed");
  }

  /** Ends the stream now, dropping buffered events. */
  discard(): void {
    this.buffer.length = 0;
    this.close();
  }

  listen(onValue: (value: T) => boolean): Promise<ListenResult> {
    return new Promise((resolve, reject) => {
      this.settleListen = resolve;
      this.failListen = reject;
      this.listener = onValue;
      // Values buffered while nobody listened go first; hand() detaches the listener on a pause or a throw.
      const listening = () => this.listener === onValue;
      while (this.buffer.length > 0 && listening()) this.hand(onValue, this.buffer.shift() as T);
      if (listening() && this.closed) this.unlisten()?.("closed");
    });
  }

  stop(): void {
    const wasOpen = !this.closed;
    this.discard();
    if (wasOpen) this.onReturn();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift() as T, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        this.stop();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Calls the listener; false pauses listening, a throw ends the stream and rejects listen(). */
  private hand(listener: (value: T) => boolean, value: T): void {
    let more: boolean;
    try {
      more = listener(value);
    } catch (error) {
      const fail = this.failListen;
      this.unlisten();
      this.stop();
      fail?.(error);
      return;
    }
    if (!more) this.unlisten()?.("paused");
  }

  /** Detaches the listener; returns how to settle its listen(). */
  private unlisten(): ((result: ListenResult) => void) | null {
    const settle = this.settleListen;
    this.listener = null;
    this.settleListen = null;
    this.failListen = null;
    return settle;
  }
}

/**
 * `stream` as a Listenable: itself when it has the fast path, else an adapter that
 * pulls from one iterator (an await per value), so transports need one code path.
 */
export function listenable<T>(stream: AsyncIterable<T> | Listenable<T>): Listenable<T> {
  const own = stream as Partial<Listenable<T>>;
  if (typeof own.listen === "function" && typeof own.stop === "function") return stream as Listenable<T>;
  return new IteratorListener(stream as AsyncIterable<T>);
}

class IteratorListener<T> implements Listenable<T> {
  private iterator: AsyncIterator<T> | null = null;
  private done = false;

  constructor(private readonly iterable: AsyncIterable<T>) {}

  async listen(onValue: (value: T) => boolean): Promise<ListenResult> {
    const iterator = (this.iterator ??= this.iterable[Symbol.asyncIterator]());
    for (;;) {
      const next = await iterator.next();
      if (next.done) {
        this.done = true;
        return "closed";
      }
      let more: boolean;
      try {
        more = onValue(next.value);
      } catch (error) {
        this.stop();
        throw error;
      }
      if (!more) return "paused";
    }
  }

  stop(): void {
    if (this.done) return;
    this.done = true;
    // Not awaited: return() on a generator busy in next() waits for that next() to settle.
    this.iterator?.return?.()?.catch(() => {});
  }
}
