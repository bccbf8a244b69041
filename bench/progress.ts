// A one-line live progress bar on stderr, redrawn a few times a second, only
// when stderr is a terminal (logs and CI get nothing).

export class Progress {
  private done = 0;
  private failed = 0;
  private tokens = 0;
  private readonly started = performance.now();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly total: number,
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    if (this.stream.isTTY) {
      this.timer = setInterval(() => this.draw(), 250);
      this.timer.unref();
    }
  }

  token(): void {
    this.tokens++;
  }

  finished(ok: boolean): void {
    this.done++;
    if (!ok) this.failed++;
  }

  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.draw();
    this.stream.write("\n");
  }

  private draw(): void {
    const width = 30;
    const filled = this.total ? Math.round((this.done / this.total) * width) : 0;
    const secs = (performance.now() - this.started) / 1000;
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const rate = secs > 0 ? Math.round(this.tokens / secs) : 0;
    const errors = this.failed ? `  ${this.failed} failed` : "";
    this.stream.write(`\r${this.label} ${bar} ${this.done}/${this.total}  ${secs.toFixed(1)} s  ${rate} tok/s${errors}\x1b[K`);
  }
}
