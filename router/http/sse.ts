// Server-sent events as axum writes them: `data:` + compact JSON + blank line
// (no space after the colon), and a `:` comment after 15 s without an event.
// The OpenAI routes write `data: ` (with the space, as OpenAI does) and `[DONE]`.
import type { ServerResponse } from "node:http";

export class SseWriter {
  private readonly keepAlive: NodeJS.Timeout;

  constructor(
    private readonly res: ServerResponse,
    headers: Record<string, string>,
    keepAliveMs: number,
    private readonly dataPrefix = "data:",
  ) {
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
      ...headers,
    });
    res.flushHeaders();
    this.keepAlive = setInterval(() => this.writeRaw(":\n\n"), keepAliveMs);
    this.keepAlive.unref();
  }

  private get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  private writeRaw(chunk: string): boolean {
    return this.open ? this.res.write(chunk) : true;
  }

  /** Writes one event; resolves once the socket can take more (or is gone). */
  send(json: object): Promise<void> | undefined {
    return this.sendData(JSON.stringify(json));
  }

  /** Writes one event whose data is `data` as is (OpenAI's `[DONE]`). */
  sendData(data: string): Promise<void> | undefined {
    return this.write(data) ? undefined : this.drained();
  }

  /** Writes one event whose data is `data` as is; false: the socket is full, wait for drained(). */
  write(data: string): boolean {
    this.keepAlive.refresh();
    return this.writeRaw(`${this.dataPrefix}${data}\n\n`);
  }

  /** Resolves once the socket can take more, or is gone. */
  drained(): Promise<void> {
    if (!this.res.writableNeedDrain) return Promise.resolve();
    // A destroyed socket never emits 'drain': race it with 'close'.
    return new Promise<void>((resolve) => {
      const done = () => {
        this.res.off("drain", done);
        this.res.off("close", done);
        resolve();
      };
      this.res.once("drain", done);
      this.res.once("close", done);
    });
  }

  end(): void {
    clearInterval(this.keepAlive);
    if (this.open) this.res.end();
  }
}
