// The ids that end a generation: config.json's eos_token_id united with
// generation_config.json's (each a number or a list), as transformers does.
import { readModelJson, TokenizerLoadError } from "./files.js";

function idsOf(value: unknown, file: string): number[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  for (const id of list) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new TokenizerLoadError(`${file}: eos_token_id must be a token id or a list of them, got ${JSON.stringify(value)}`);
    }
  }
  return list as number[];
}

function field(json: unknown, name: string): unknown {
  return json !== null && typeof json === "object" ? (json as Record<string, unknown>)[name] : undefined;
}

/** Sorted, deduplicated EOS ids; config.json must exist, generation_config.json may not. */
export async function loadEosTokenIds(dir: string): Promise<number[]> {
  const config = await readModelJson(dir, "config.json", true);
  const generation = await readModelJson(dir, "generation_config.json", false);
  const ids = new Set([
    ...idsOf(field(config, "eos_token_id"), "config.json"),
    ...idsOf(field(generation, "eos_token_id"), "generation_config.json"),
  ]);
  return [...ids].sort((a, b) => a - b);
}
