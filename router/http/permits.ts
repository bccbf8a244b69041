// TGI's concurrency limit: a request takes a permit without waiting or is
// refused (429 "Model is overloaded"); the permit is held until its response ends.
export class Permits {
  private inUse = 0;

  constructor(readonly max: number) {}

  /** A release function, or null when all permits are taken. */
  tryAcquire(): (() => void) | null {
    if (this.inUse >= this.max) return null;
    this.inUse++;
    let released = false;
    return () => {
      if (!released) {
        released = true;
        this.inUse--;
      }
    };
  }

  get used(): number {
    return this.inUse;
  }
}
