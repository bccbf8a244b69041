// Backpressure for one socket. Generations wait at ready() while more than the
// high-water mark of bytes is queued for the client, so they stop pulling from
// the scheduler's event streams instead of buffering without bound. ws has no
// 'drain' event: each send's write callback re-checks the queue.
import type { WebSocket } from "ws";

export class SendGate {
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    /** Above this many queued bytes, ready() waits. */
    readonly highWaterMark: number,
    /** Above this many, the client is not reading at all (even small replies pile up): drop it. */
    readonly maxBufferedBytes: number,
    private readonly onOverflow: () => void,
  ) {}

  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  /** More than the high-water mark is queued: generations should wait at ready(). */
  get full(): boolean {
    return !this.closed && this.buffered > this.highWaterMark;
  }

  /** Resolves once the queue is under the high-water mark or the socket closed. */
  ready(): Promise<void> | undefined {
    if (!this.full) return undefined;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Sends at once; the gate applies to the generations' events, not to short replies. */
  private corked = false;

  send(data: string): void {
    if (this.closed) return;
    // Events of one scheduler step go out in one write: cork until the step's deliveries are done.
    const socket = (this.ws as unknown as { _socket?: import("node:net").Socket })._socket;
    if (socket && !this.corked) {
      this.corked = true;
      socket.cork();
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    this.ws.send(data, this.onSent);
    if (this.buffered > this.maxBufferedBytes) this.onOverflow();
  }

  /** Wakes every waiter for good (socket closed). */
  close(): void {
    this.closed = true;
    this.wake();
  }

  /** One callback for every send (one closure less per token). */
  private readonly onSent = (): void => this.check();

  private check(): void {
    // Resume at half the mark so a drained queue is refilled in large writes, not one event at a time.
    if (this.closed || this.buffered <= this.highWaterMark / 2) this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
