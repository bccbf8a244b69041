// The few config.json fields the launcher needs to derive defaults and refuse what it can't serve.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { LauncherError } from "./errors.js";

export interface ModelConfig {
  modelType?: string;
  maxPositionEmbeddings?: number;
  quantMethod?: string;
}

export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, "config.json");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new LauncherError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const num = (k: string) => (typeof raw[k] === "number" ? (raw[k] as number) : undefined);
  const quant = raw.quantization_config as { quant_method?: string } | undefined;
  return {
    modelType: typeof raw.model_type === "string" ? raw.model_type : undefined,
    maxPositionEmbeddings: num("max_position_embeddings") ?? num("max_seq_len") ?? num("n_positions"),
    quantMethod: quant?.quant_method,
  };
}
