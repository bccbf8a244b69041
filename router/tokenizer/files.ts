// Reads the JSON files of a model directory with errors that name the file and the fix.
import { readFile } from "node:fs/promises";
import { join } from "node:path";

export class TokenizerLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerLoadError";
  }
}

/** Parses `dir/name`; returns undefined when the file is absent and `required` is false. */
export async function readModelJson(dir: string, name: string, required: boolean): Promise<unknown> {
  const path = join(dir, name);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && !required) return undefined;
    if (code === "ENOENT") throw new TokenizerLoadError(`model dir ${dir} has no ${name}`);
    throw new TokenizerLoadError(`cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TokenizerLoadError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}
