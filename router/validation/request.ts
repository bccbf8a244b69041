// Turns a parsed JSON body into a typed GenerateRequest, checking only the shape
// (types, required fields) against router/schema/'s JSON Schemas, as TGI's serde
// structs do. Unknown fields are ignored.
import { check, ref, SchemaError, tgiSchemas, type JsonSchema, type SchemaComponents } from "../schema/index.js";
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
  grammar: { type: "json" | "json_object" | "regex" | "json_schema"; value: unknown } | null;
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

/**
 * Checks `body` against a schema (router/schema/) and throws a 422 InferError
 * with serde's message ("parameters.top_k: invalid type: string \"x\", expected i32").
 * Every route's body goes through here, so docs/openapi.json describes exactly what is accepted.
 */
export function checkBody(schema: JsonSchema, body: unknown, components: SchemaComponents = tgiSchemas): void {
  try {
    check(schema, body, components);
  } catch (err) {
    if (err instanceof SchemaError) throw shapeError(err.path, err.detail);
    throw err;
  }
}

type Fields = Record<string, unknown>;

/** The defaults serde gives absent fields of a shape-checked GenerateParameters. */
function withDefaults(raw: Fields): GenerateParameters {
  const opt = <T>(key: string): T | null => (raw[key] ?? null) as T | null;
  return {
    best_of: opt("best_of"),
    temperature: opt("temperature"),
    repetition_penalty: opt("repetition_penalty"),
    frequency_penalty: opt("frequency_penalty"),
    top_k: opt("top_k"),
    top_p: opt("top_p"),
    typical_p: opt("typical_p"),
    do_sample: (raw.do_sample as boolean | undefined) ?? false,
    max_new_tokens: opt("max_new_tokens"),
    return_full_text: opt("return_full_text"),
    stop: (raw.stop as string[] | undefined) ?? [],
    truncate: opt("truncate"),
    watermark: (raw.watermark as boolean | undefined) ?? false,
    details: (raw.details as boolean | undefined) ?? false,
    decoder_input_details: (raw.decoder_input_details as boolean | undefined) ?? false,
    seed: opt("seed"),
    top_n_tokens: opt("top_n_tokens"),
    grammar: opt("grammar"),
    adapter_id: opt("adapter_id"),
    ignore_eos_token: (raw.ignore_eos_token as boolean | undefined) ?? false,
  };
}

/**
 * Shape-checks a JSON body (GenerateRequest, or CompatGenerateRequest for POST /
 * and /invocations); throws a 422 InferError naming the field.
 * TGI's quirk: without a `parameters` key the request samples (do_sample true);
 * with one, every missing field takes its plain default (do_sample false).
 */
export function parseGenerateRequest(body: unknown, schemaName: "GenerateRequest" | "CompatGenerateRequest" = "GenerateRequest"): GenerateRequest {
  checkBody(ref(schemaName), body);
  const b = body as Fields;
  const hasParameters = Object.hasOwn(b, "parameters");
  const parameters = withDefaults(hasParameters ? (b.parameters as Fields) : {});
  if (!hasParameters) parameters.do_sample = true;
  return { inputs: b.inputs as string, parameters, stream: (b.stream as boolean | undefined) ?? false };
}
