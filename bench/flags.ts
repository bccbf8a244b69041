// Integer command-line flags of the bench's subcommands, refused with a message naming the flag.

/** The integer in `v` (flag `--name`), at least `min`; `fallback` when the flag is absent. */
export function intFlag(v: string | undefined, name: string, fallback?: number, min = 0): number | undefined {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) {
    const what = min === 0 ? "a non-negative integer" : min === 1 ? "a positive integer" : `an integer of at least ${min}`;
    throw new Error(`--${name} must be ${what}, got "${v}"`);
  }
  return n;
}
