// TGI's request and response bodies as JSON Schema: the router checks request
// bodies against these (router/validation/request.ts) and docs/openapi.json is
// generated from them (router/openapi/). Field order is serde's (TGI lib.rs).
import { nullable, ref, struct, type JsonSchema, type SchemaComponents } from "./types.js";

const int = (format: "int32" | "uint32" | "uint" | "uint64", extra: Partial<JsonSchema> = {}): JsonSchema => ({
  type: "integer",
  format,
  ...(format === "int32" ? {} : { minimum: 0 }),
  ...extra,
});
const float = (extra: Partial<JsonSchema> = {}): JsonSchema => ({ type: "number", format: "float", ...extra });
const bool = (description: string, def: boolean): JsonSchema => ({ type: "boolean", default: def, description });
const str = (extra: Partial<JsonSchema> = {}): JsonSchema => ({ type: "string", ...extra });

const grammarVariant = (name: string, value: JsonSchema, description: string): JsonSchema =>
  struct(`GrammarType::${name}`, { type: { type: "string", enum: [name] }, value }, ["type", "value"], { description });

export const GrammarType: JsonSchema = {
  title: "GrammarType",
  description: "Constrained decoding (TGI's adjacently tagged enum). Accepted and checked; generation with a grammar is not supported yet (422).",
  oneOf: [
    grammarVariant("json", { description: "A JSON Schema, or a string holding one." }, "Output must match this JSON Schema."),
    grammarVariant("json_object", { description: "A JSON Schema, or a string holding one." }, "Alias of `json`."),
    grammarVariant("regex", str(), "Output must match this regular expression."),
    grammarVariant(
      "json_schema",
      struct("JsonSchemaConfig", { name: nullable(str()), schema: { type: "object" } }, ["schema"]),
      "OpenAI-style wrapper: the schema under `schema`.",
    ),
  ],
  discriminator: { propertyName: "type" },
};

export const GenerateParameters: JsonSchema = struct("GenerateParameters", {
  best_of: nullable(int("uint", { exclusiveMinimum: 0, example: 1, default: null, description: "Generate best_of sequences and return the one with the highest mean token logprob." })),
  temperature: nullable(float({ exclusiveMinimum: 0, example: 0.5, default: null, description: "The value used to module the logits distribution." })),
  repetition_penalty: nullable(float({ exclusiveMinimum: 0, example: 1.03, default: null, description: "The parameter for repetition penalty. 1.0 means no penalty." })),
  frequency_penalty: nullable(float({ minimum: -2, maximum: 2, example: 0.1, default: null, description: "Penalize new tokens by their frequency in the text so far." })),
  top_k: nullable(int("int32", { exclusiveMinimum: 0, example: 10, default: null, description: "The number of highest probability vocabulary tokens to keep for top-k filtering." })),
  top_p: nullable(float({ exclusiveMinimum: 0, exclusiveMaximum: 1, example: 0.95, default: null, description: "Top-p (nucleus) sampling: keep the smallest set of tokens whose probabilities add up to top_p." })),
  typical_p: nullable(float({ exclusiveMinimum: 0, exclusiveMaximum: 1, example: 0.95, default: null, description: "Typical decoding mass." })),
  do_sample: bool("Activate logits sampling. Defaults to true when `parameters` is absent.", false),
  max_new_tokens: nullable(int("uint32", { exclusiveMinimum: 0, example: 20, default: null, description: "Maximum number of generated tokens; null: up to max_total_tokens - input length." })),
  return_full_text: nullable({ type: "boolean", example: false, default: null, description: "Prepend the prompt to the generated text. Defaults to false, and to true on POST /." }),
  stop: { type: "array", items: str(), example: ["photographer"], default: [], description: "Stop generating when one of these strings is generated (kept in the text)." },
  truncate: nullable(int("uint", { example: null, default: null, description: "Keep only the last `truncate` input tokens." })),
  watermark: bool("Watermarking with A Watermark for Large Language Models: green tokens (a share WATERMARK_GAMMA of the vocabulary, chosen from the previous token) get WATERMARK_DELTA added to their logits.", false),
  details: bool("Return generation details.", false),
  decoder_input_details: bool("Return the prompt tokens with their logprobs (not when streaming).", false),
  seed: nullable(int("uint64", { example: null, default: null, description: "Random sampling seed, at most 2^53 - 1 here." })),
  top_n_tokens: nullable(int("uint32", { example: 5, default: null, description: "The number of most likely tokens to return at each generation step." })),
  grammar: nullable(ref("GrammarType")),
  adapter_id: nullable(str({ example: null, default: null, description: "LoRA adapter id (accepted, ignored: no adapters are loaded)." })),
  ignore_eos_token: bool("Not in TGI's HTTP API: generate exactly max_new_tokens (benchmarks).", false),
});

export const GenerateRequest: JsonSchema = struct(
  "GenerateRequest",
  {
    inputs: str({ example: "My name is Olivier and I" }),
    parameters: ref("GenerateParameters"),
  },
  ["inputs"],
);

export const CompatGenerateRequest: JsonSchema = struct(
  "CompatGenerateRequest",
  {
    inputs: str({ example: "My name is Olivier and I" }),
    parameters: ref("GenerateParameters"),
    stream: bool("Answer with the /generate_stream event stream.", false),
  },
  ["inputs"],
);

const logprob = nullable(float({ example: -0.34 }));

export const Token: JsonSchema = struct(
  "Token",
  { id: int("uint32", { example: 0 }), text: str({ example: "test" }), logprob, special: { type: "boolean", example: false } },
  ["id", "text", "logprob", "special"],
);

export const PrefillToken: JsonSchema = struct(
  "PrefillToken",
  { id: int("uint32", { example: 0 }), text: str({ example: "test" }), logprob },
  ["id", "text", "logprob"],
);

export const FinishReason: JsonSchema = { title: "FinishReason", type: "string", enum: ["length", "eos_token", "stop_sequence"], example: "length" };

const tokenList = { type: "array", items: ref("Token") } as JsonSchema;
const topTokens = { type: "array", items: tokenList, description: "Present when top_n_tokens > 0." } as JsonSchema;

export const BestOfSequence: JsonSchema = struct(
  "BestOfSequence",
  {
    generated_text: str({ example: "test" }),
    finish_reason: ref("FinishReason"),
    generated_tokens: int("uint32", { example: 1 }),
    seed: nullable(int("uint64", { example: 42 })),
    prefill: { type: "array", items: ref("PrefillToken") },
    tokens: tokenList,
    top_tokens: topTokens,
  },
  ["generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"],
);

export const Details: JsonSchema = struct(
  "Details",
  {
    finish_reason: ref("FinishReason"),
    generated_tokens: int("uint32", { example: 1 }),
    seed: nullable(int("uint64", { example: 42 })),
    prefill: { type: "array", items: ref("PrefillToken") },
    tokens: tokenList,
    best_of_sequences: { type: "array", items: ref("BestOfSequence"), description: "Present when best_of > 1." },
    top_tokens: topTokens,
  },
  ["finish_reason", "generated_tokens", "seed", "prefill", "tokens"],
);

export const GenerateResponse: JsonSchema = struct(
  "GenerateResponse",
  { generated_text: str({ example: "test" }), details: ref("Details") },
  ["generated_text"],
  { description: "`details` is omitted unless details or decoder_input_details was true." },
);

export const StreamDetails: JsonSchema = struct(
  "StreamDetails",
  {
    finish_reason: ref("FinishReason"),
    generated_tokens: int("uint32", { example: 1 }),
    seed: nullable(int("uint64", { example: 42 })),
    input_length: int("uint32", { example: 1 }),
  },
  ["finish_reason", "generated_tokens", "seed", "input_length"],
);

export const StreamResponse: JsonSchema = struct(
  "StreamResponse",
  {
    index: int("uint32", { description: "1 for the first token." }),
    token: ref("Token"),
    top_tokens: tokenList,
    generated_text: nullable(str({ description: "Set on the last event only." })),
    details: nullable(ref("StreamDetails")),
  },
  ["index", "token", "generated_text", "details"],
  { description: "One `data:` event per token; the last carries generated_text (and details when asked)." },
);

export const ErrorResponse: JsonSchema = struct(
  "ErrorResponse",
  { error: str(), error_type: str() },
  ["error", "error_type"],
  { description: "Every error; inside an event stream it is the last `data:` event." },
);

export const SimpleToken: JsonSchema = struct(
  "SimpleToken",
  {
    id: int("uint32", { example: 0 }),
    text: str({ example: "test" }),
    start: int("uint", { example: 0, description: "Byte offset of the token's first byte in inputs." }),
    stop: int("uint", { example: 2, description: "Byte offset just past the token's last byte." }),
  },
  ["id", "text", "start", "stop"],
);

export const TokenizeResponse: JsonSchema = { title: "TokenizeResponse", type: "array", items: ref("SimpleToken") };

const nstr = nullable(str());
export const Info: JsonSchema = struct(
  "Info",
  {
    model_id: str({ example: "bigscience/blomm-560m" }),
    model_sha: nstr,
    model_pipeline_tag: nstr,
    max_concurrent_requests: int("uint", { example: 128 }),
    max_best_of: int("uint", { example: 2 }),
    max_stop_sequences: int("uint", { example: 4 }),
    max_input_tokens: int("uint", { example: 1024 }),
    max_total_tokens: int("uint", { example: 2048 }),
    validation_workers: int("uint", { example: 2 }),
    max_client_batch_size: int("uint", { example: 32 }),
    router: str({ example: "text-generation-router" }),
    version: str({ example: "0.5.0" }),
    sha: nstr,
    docker_label: nstr,
    max_batch_total_tokens: int("uint"),
    max_batch_prefill_tokens: int("uint"),
    max_waiting_tokens: int("uint"),
    waiting_served_ratio: float(),
    block_size: int("uint"),
    model_dtype: nstr,
    model_device_type: nstr,
    kv_cache: struct("KvCache", { free_blocks: int("uint"), total_blocks: int("uint") }, ["free_blocks", "total_blocks"]),
  },
  ["model_id", "max_concurrent_requests", "max_best_of", "max_stop_sequences", "max_input_tokens", "max_total_tokens", "router", "version"],
);

/** Every TGI schema by name, for check() and the OpenAPI document's components. */
export const tgiSchemas: SchemaComponents = {
  GenerateRequest,
  CompatGenerateRequest,
  GenerateParameters,
  GrammarType,
  GenerateResponse,
  Details,
  BestOfSequence,
  Token,
  PrefillToken,
  FinishReason,
  StreamResponse,
  StreamDetails,
  ErrorResponse,
  SimpleToken,
  TokenizeResponse,
  Info,
};
