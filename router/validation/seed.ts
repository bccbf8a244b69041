// Seeds. TGI takes any u64; a JSON number in JavaScript keeps integers exactly
// only up to 2^53 - 1, so larger seeds would silently change. We refuse them.
import { randomBytes } from "node:crypto";
import { validationError } from "./errors.js";

/** A uniformly random integer in [0, 2^53). */
export function randomSeed(): number {
  return Number(randomBytes(8).readBigUInt64BE() >> 11n);
}

export function validSeed(seed: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw validationError(
      `\`seed\` must be an integer >= 0 and <= ${Number.MAX_SAFE_INTEGER} (2^53 - 1, the largest integer a JSON number keeps exactly in this server). Given: ${seed}`,
    );
  }
  return seed;
}
