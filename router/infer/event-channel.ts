// A single-consumer async iterable fed by a producer that must never wait: the
// batcher pushes and moves on; events wait here until the consumer reads them.
// The buffer is bounded in practice by max_new_tokens events per request.

export class EventChannel<T> implements AsyncIterable<T> {
  private readonly buffer: T[] = [];
  private waiting: ((result: IteratorResult<T>) => void) | null = null;
  private closed = false;

  /** `onReturn` runs when the consumer stops early (break, return, throw in for-await). */
  constructor(private readonly onReturn: () => void = () => undefined) {}

  push(value: T): void {
    if (this.closed) return;
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
  }

  /** Ends the stream now, dropping buffered events. */
  discard(): void {
    this.buffer.length = 0;
    this.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift() as T, done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        const wasOpen = !this.closed;
        this.discard();
        if (wasOpen) this.onReturn();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
