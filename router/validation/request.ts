// Turns a parsed JSON body into a typed GenerateRequest, checking only the shape
// (types, required fields), as TGI's serde structs do. Unknown fields are ignored.
import { shapeError } from "./errors.js";

/** GenerateParameters as the client sent them, after serde-style defaults. */
export interface GenerateParameters {
  best_of: number | null;
  temperature: number | null;
  repetition_penalty: number | null;
  frequency_penalty: number | null;
  top_k: number | null;
  top_p: number | null;
  typical_p: number | null;
  do_sample: boolean;
  max_new_tokens: number | null;
  return_full_text: boolean | null;
  stop: string[];
  truncate: number | null;
  watermark: boolean;
  details: boolean;
  decoder_input_details: boolean;
  /** Any number here; its range is a validation rule (JavaScript keeps integers exactly only below 2^53). */
  seed: number | null;
  top_n_tokens: number | null;
  grammar: { type: string; value: unknown } | null;
  adapter_id: string | null;
  /** Not in TGI's HTTP API (its benchmark sets it over gRPC): generate exactly max_new_tokens. */
  ignore_eos_token: boolean;
}

export interface GenerateRequest {
  inputs: string;
  parameters: GenerateParameters;
  /** POST / only. */
  stream: boolean;
}

const U32_MAX = 4294967295;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "sequence";
  switch (typeof value) {
    case "string":
      return `string ${JSON.stringify(value)}`;
    case "boolean":
      return `boolean \`${value}\``;
    case "number":
      return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
    default:
      return "map";
  }
}

type Fields = Record<string, unknown>;

const isNumber = (v: unknown): v is number => typeof v === "number";

class Reader {
  constructor(
    private readonly obj: Fields,
    private readonly prefix: string,
  ) {}

  private fail(key: string, expected: string): never {
    throw shapeError(this.prefix + key, `invalid type: ${describe(this.obj[key])}, expected ${expected}`);
  }

  private present(key: string): boolean {
    return Object.hasOwn(this.obj, key) && this.obj[key] !== undefined;
  }

  /** serde's Option<T>: absent or null is null, anything else must pass `ok`. */
  private optional<T>(key: string, expected: string, ok: (v: unknown) => v is T): T | null {
    const v = this.obj[key];
    if (!this.present(key) || v === null) return null;
    if (!ok(v)) this.fail(key, expected);
    return v;
  }

  optFloat(key: string): number | null {
    return this.optional(key, "f32", isNumber);
  }

  optInt(key: string, expected: "u32" | "usize" | "i32"): number | null {
    const v = this.optional(key, expected, (x): x is number => isNumber(x) && Number.isInteger(x));
    const [min, max] = expected === "i32" ? [-2147483648, 2147483647] : [0, expected === "u32" ? U32_MAX : Number.MAX_SAFE_INTEGER];
    if (v !== null && (v < min || v > max)) throw shapeError(this.prefix + key, `invalid value: ${describe(v)}, expected ${expected}`);
    return v;
  }

  /** Any number: the caller checks the range. */
  optNumber(key: string, expected: string): number | null {
    return this.optional(key, expected, isNumber);
  }

  optBool(key: string): boolean | null {
    return this.optional(key, "a boolean", (x): x is boolean => typeof x === "boolean");
  }

  /** serde's `#[serde(default)] bool`: absent is false, null is an error. */
  bool(key: string): boolean {
    if (!this.present(key)) return false;
    if (this.obj[key] === null) this.fail(key, "a boolean");
    return this.optBool(key)!;
  }

  optString(key: string): string | null {
    return this.optional(key, "a string", (x): x is string => typeof x === "string");
  }

  stringList(key: string): string[] {
    if (!this.present(key)) return [];
    const v = this.obj[key];
    if (!Array.isArray(v)) this.fail(key, "a sequence");
    v.forEach((item, i) => {
      if (typeof item !== "string") {
        throw shapeError(`${this.prefix}${key}[${i}]`, `invalid type: ${describe(item)}, expected a string`);
      }
    });
    return v as string[];
  }

  grammar(key: string): GenerateParameters["grammar"] {
    const v = this.obj[key];
    if (!this.present(key) || v === null) return null;
    if (typeof v !== "object" || Array.isArray(v)) this.fail(key, "adjacently tagged enum GrammarType");
    const g = v as Fields;
    const variants = ["json", "json_object", "regex", "json_schema"];
    if (typeof g.type !== "string" || !variants.includes(g.type)) {
      throw shapeError(`${this.prefix}${key}`, `unknown variant \`${String(g.type)}\`, expected one of ${variants.map((x) => `\`${x}\``).join(", ")}`);
    }
    if (!Object.hasOwn(g, "value")) throw shapeError(`${this.prefix}${key}`, "missing field `value`");
    return { type: g.type, value: g.value };
  }
}

function isObject(v: unknown): v is Fields {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function parseParameters(raw: unknown): GenerateParameters {
  if (!isObject(raw)) throw shapeError("parameters", `invalid type: ${describe(raw)}, expected struct GenerateParameters`);
  const r = new Reader(raw, "parameters.");
  return {
    best_of: r.optInt("best_of", "usize"),
    temperature: r.optFloat("temperature"),
    repetition_penalty: r.optFloat("repetition_penalty"),
    frequency_penalty: r.optFloat("frequency_penalty"),
    top_k: r.optInt("top_k", "i32"),
    top_p: r.optFloat("top_p"),
    typical_p: r.optFloat("typical_p"),
    do_sample: r.bool("do_sample"),
    max_new_tokens: r.optInt("max_new_tokens", "u32"),
    return_full_text: r.optBool("return_full_text"),
    stop: r.stringList("stop"),
    truncate: r.optInt("truncate", "usize"),
    watermark: r.bool("watermark"),
    details: r.bool("details"),
    decoder_input_details: r.bool("decoder_input_details"),
    seed: r.optNumber("seed", "u64"),
    top_n_tokens: r.optInt("top_n_tokens", "u32"),
    grammar: r.grammar("grammar"),
    adapter_id: r.optString("adapter_id"),
    ignore_eos_token: r.optBool("ignore_eos_token") ?? false,
  };
}

/**
 * TGI's quirk: without a `parameters` key the request samples (do_sample true);
 * with one, every missing field takes its plain default (do_sample false).
 */
function defaultParameters(): GenerateParameters {
  return { ...parseParameters({}), do_sample: true };
}

/** Shape-checks a JSON body; throws a 422 InferError naming the field. */
export function parseGenerateRequest(body: unknown): GenerateRequest {
  if (!isObject(body)) throw shapeError("", `invalid type: ${describe(body)}, expected struct GenerateRequest`);
  if (!Object.hasOwn(body, "inputs")) throw shapeError("", "missing field `inputs`");
  if (typeof body.inputs !== "string") throw shapeError("inputs", `invalid type: ${describe(body.inputs)}, expected a string`);
  const top = new Reader(body, "");
  return {
    inputs: body.inputs,
    parameters: Object.hasOwn(body, "parameters") ? parseParameters(body.parameters) : defaultParameters(),
    stream: top.bool("stream"),
  };
}
