// Parses a Hugging Face config.json into the engine's ModelConfig, with the
// defaults of transformers' LlamaConfig / MistralConfig / Qwen2Config, and
// errors that name the file and the field.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ComputeDtype, ModelConfig, RopeConfig } from "../native/engine-types.js";

export const SUPPORTED_MODEL_TYPES = ["llama", "mistral", "qwen2"] as const;
type Architecture = ModelConfig["architecture"];

export class ModelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelConfigError";
  }
}

export interface ParsedModelConfig {
  config: ModelConfig;
  /** The checkpoint's dtype (`torch_dtype` or `dtype`), when it names one the engine computes in. */
  dtype?: ComputeDtype;
}

type Json = Record<string, unknown>;

/** Transformers' defaults where config.json leaves a field out. */
const DEFAULTS: Record<Architecture, { maxPositionEmbeddings: number; rmsNormEps: number }> = {
  llama: { maxPositionEmbeddings: 2048, rmsNormEps: 1e-6 },
  mistral: { maxPositionEmbeddings: 4096 * 32, rmsNormEps: 1e-6 },
  qwen2: { maxPositionEmbeddings: 32768, rmsNormEps: 1e-6 },
};

const DTYPES: Record<string, ComputeDtype> = {
  float32: "float32",
  bfloat16: "bfloat16",
  float16: "float16",
};

export function readModelConfig(modelDir: string): ParsedModelConfig {
  const path = join(modelDir, "config.json");
  if (!existsSync(path)) throw new ModelConfigError(`model dir ${modelDir} has no config.json`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelConfigError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseModelConfig(json);
}

export function parseModelConfig(json: unknown): ParsedModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ModelConfigError("config.json: expected a JSON object");
  }
  const c = json as Json;
  const modelType = c.model_type;
  const supported = `(supported: ${SUPPORTED_MODEL_TYPES.join(", ")})`;
  if (modelType === undefined || modelType === null) throw new ModelConfigError(`config.json: missing field 'model_type' ${supported}`);
  if (!SUPPORTED_MODEL_TYPES.includes(modelType as Architecture)) {
    throw new ModelConfigError(`config.json: unsupported model_type '${String(modelType)}' ${supported}`);
  }
  const architecture = modelType as Architecture;
  const defaults = DEFAULTS[architecture];

  const hiddenAct = c.hidden_act ?? "silu";
  if (hiddenAct !== "silu") throw new ModelConfigError(`config.json: unsupported hidden_act '${String(hiddenAct)}' (supported: silu)`);
  if (c.mlp_bias === true) throw new ModelConfigError("config.json: mlp_bias true is not supported");
  if (architecture === "llama" && c.attention_bias === true) {
    throw new ModelConfigError("config.json: attention_bias true is not supported for llama (o_proj bias)");
  }

  const hiddenSize = positiveInt(c, "hidden_size");
  const numHeads = positiveInt(c, "num_attention_heads");
  const numKvHeads = optional(c, "num_key_value_heads") === undefined ? numHeads : positiveInt(c, "num_key_value_heads");
  if (numHeads % numKvHeads !== 0) {
    throw new ModelConfigError(
      `config.json: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  let headDim: number;
  if (optional(c, "head_dim") !== undefined) {
    headDim = positiveInt(c, "head_dim");
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw new ModelConfigError(
        `config.json: hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads}) and head_dim is not given`,
      );
    }
    headDim = hiddenSize / numHeads;
  }
  const maxPositionEmbeddings =
    optional(c, "max_position_embeddings") === undefined ? defaults.maxPositionEmbeddings : positiveInt(c, "max_position_embeddings");

  const config: ModelConfig = {
    architecture,
    hiddenSize,
    intermediateSize: positiveInt(c, "intermediate_size"),
    numLayers: positiveInt(c, "num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(c, "vocab_size"),
    maxPositionEmbeddings,
    rmsNormEps: optional(c, "rms_norm_eps") === undefined ? defaults.rmsNormEps : positiveNumber(c, "rms_norm_eps"),
    rope: parseRope(c, maxPositionEmbeddings),
    tieWordEmbeddings: optionalBool(c, "tie_word_embeddings") ?? false,
    attentionBias: architecture === "qwen2",
    slidingWindow: parseSlidingWindow(c, architecture),
  };
  const dtypeName = c.torch_dtype ?? c.dtype;
  const dtype = typeof dtypeName === "string" ? DTYPES[dtypeName] : undefined;
  return dtype ? { config, dtype } : { config };
}

function parseRope(c: Json, maxPositionEmbeddings: number): RopeConfig {
  // transformers v5 moves rope_theta and the scaling into `rope_parameters`.
  const params = isObject(c.rope_parameters) ? c.rope_parameters : undefined;
  const thetaSource = optional(c, "rope_theta") !== undefined ? c : params && optional(params, "rope_theta") !== undefined ? params : undefined;
  const theta = thetaSource ? positiveNumber(thetaSource, "rope_theta", thetaSource === c ? "" : "rope_parameters.") : 10000;
  const rope: RopeConfig = {
    theta,
    scaling: "none",
    factor: 1,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: maxPositionEmbeddings,
  };
  const scalingField = c.rope_scaling != null ? "rope_scaling" : params ? "rope_parameters" : undefined;
  if (!scalingField) return rope;
  const s = c[scalingField];
  if (!isObject(s)) throw new ModelConfigError(`config.json: ${scalingField} must be an object or null`);
  const type = s.rope_type ?? s.type ?? "default";
  const at = `${scalingField}.`;
  switch (type) {
    case "default":
      return rope;
    case "linear":
    case "dynamic":
      return { ...rope, scaling: type as "linear" | "dynamic", factor: positiveNumber(s, "factor", at) };
    case "llama3":
      return {
        ...rope,
        scaling: "llama3",
        factor: positiveNumber(s, "factor", at),
        lowFreqFactor: optional(s, "low_freq_factor") === undefined ? 1 : positiveNumber(s, "low_freq_factor", at),
        highFreqFactor: optional(s, "high_freq_factor") === undefined ? 4 : positiveNumber(s, "high_freq_factor", at),
        originalMaxPositionEmbeddings:
          optional(s, "original_max_position_embeddings") === undefined ? 8192 : positiveInt(s, "original_max_position_embeddings", at),
      };
    default:
      throw new ModelConfigError(
        `config.json: unsupported ${scalingField} type '${String(type)}' (supported: default, linear, dynamic, llama3)`,
      );
  }
}

function parseSlidingWindow(c: Json, architecture: Architecture): number {
  if (architecture === "llama") return 0;
  if (architecture === "qwen2") {
    if (optionalBool(c, "use_sliding_window") !== true) return 0;
    // Transformers windows only the layers from max_window_layers on (default 28).
    const layers = positiveInt(c, "num_hidden_layers");
    const windowFrom = optional(c, "max_window_layers") === undefined ? 28 : nonNegativeInt(c, "max_window_layers");
    if (windowFrom >= layers) return 0;
    if (windowFrom > 0) {
      throw new ModelConfigError(
        `config.json: a sliding window on only some layers (max_window_layers ${windowFrom} of ${layers}) is not supported`,
      );
    }
  }
  return optional(c, "sliding_window") === undefined ? 0 : positiveInt(c, "sliding_window");
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A field's value, with JSON null read as absent (HF writes `"head_dim": null`). */
function optional(obj: Json, field: string): unknown {
  const v = obj[field];
  return v === null ? undefined : v;
}

function optionalBool(obj: Json, field: string): boolean | undefined {
  const v = optional(obj, field);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new ModelConfigError(`config.json: field '${field}' must be true or false (got ${JSON.stringify(v)})`);
  return v;
}

function positiveNumber(obj: Json, field: string, at = ""): number {
  const v = optional(obj, field);
  if (v === undefined) throw new ModelConfigError(`config.json: missing field '${at}${field}'`);
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ModelConfigError(`config.json: field '${at}${field}' must be a positive number (got ${JSON.stringify(v)})`);
  }
  return v;
}

function positiveInt(obj: Json, field: string, at = ""): number {
  const v = positiveNumber(obj, field, at);
  if (!Number.isInteger(v)) throw new ModelConfigError(`config.json: field '${at}${field}' must be a positive integer (got ${v})`);
  return v;
}

function nonNegativeInt(obj: Json, field: string): number {
  const v = obj[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw new ModelConfigError(`config.json: field '${field}' must be a non-negative integer (got ${JSON.stringify(v)})`);
  }
  return v;
}
