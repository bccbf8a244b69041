// Loads the native engine addon and re-exports its typed surface.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { NativeBinding } from "./engine-types.js";

export type * from "./engine-types.js";

/** Bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES): what ncclUniqueId() returns and loadEngine's ncclId holds. */
export const NCCL_UNIQUE_ID_BYTES = 128;

export class NativeAddonMissingError extends Error {
  constructor(path: string) {
    super(`native engine not built: ${path} is missing. Run \`npm run build:native\` (or \`npm ci\`).`);
    this.name = "NativeAddonMissingError";
  }
}

/** The repository root, whether running from sources (tsx) or from dist/. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) || existsSync(join(dir, "CMakeLists.txt"))) {
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return dir;
}

let cached: NativeBinding | undefined;

export function loadNative(): NativeBinding {
  if (cached) return cached;
  const path = process.env.TEXT_GEN_NATIVE_ADDON ?? resolve(repoRoot(), "native/build/Release/text_gen_engine.node");
  if (!existsSync(path)) throw new NativeAddonMissingError(path);
  cached = createRequire(import.meta.url)(path) as NativeBinding;
  return cached;
}
