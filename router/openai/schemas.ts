// The OpenAI request bodies as JSON Schema: the routes check bodies against
// these (router/schema/check.ts) and the OpenAPI document includes them.
// Shapes follow OpenAI's API, looser than TGI's where its users complained
// (stop as a string, top_p = 1, n > 1, logit_bias as a map). Value ranges are
// documented here and enforced, with their messages, in params.ts.
import { nullable, ref, struct, type JsonSchema, type SchemaComponents } from "../schema/index.js";

const num = (description: string, extra: Partial<JsonSchema> = {}): JsonSchema => nullable({ type: "number", format: "float", description, ...extra });
const uint = (description: string, extra: Partial<JsonSchema> = {}): JsonSchema =>
  nullable({ type: "integer", format: "uint32", minimum: 0, description, ...extra });
const bool = (description: string): JsonSchema => nullable({ type: "boolean", default: false, description });

/** Sampling fields shared by chat and completions. */
const sampling: Record<string, JsonSchema> = {
  model: nullable({ type: "string", description: "Accepted and ignored: the served model answers; responses name it." }),
  frequency_penalty: num("Penalize tokens by how often they already appear (prompt and output).", { minimum: -2, maximum: 2, default: 0 }),
  presence_penalty: num("Penalize tokens that already appear, once each (prompt and output).", { minimum: -2, maximum: 2, default: 0 }),
  repetition_penalty: num("TGI's multiplicative repetition penalty (1.0: off).", { exclusiveMinimum: 0 }),
  logit_bias: nullable({ type: "object", description: "Only an empty map is accepted: biasing logits is not supported." }),
  max_tokens: uint("Maximum number of generated tokens; null: up to the model's limit.", { exclusiveMinimum: 0 }),
  n: uint("How many choices to generate for each prompt (independent generations, different seeds).", { exclusiveMinimum: 0, default: 1 }),
  seed: nullable({ type: "integer", format: "uint64", minimum: 0, description: "Random seed; with n > 1, choice i uses seed + i." }),
  stop: nullable({
    title: "Stop",
    description: "Up to --max-stop-sequences strings; generation stops before them (they are not returned).",
    anyOf: [{ type: "string" }, { type: "array", items: { type: "string" } }],
  }),
  stream: bool("Stream chunks as server-sent events ending in `data: [DONE]`."),
  stream_options: nullable(ref("StreamOptions")),
  temperature: num("0 is greedy decoding; otherwise sample at this temperature.", { minimum: 0, maximum: 2, default: 1 }),
  top_p: num("Nucleus sampling mass; 1 is off, 0 is greedy.", { minimum: 0, maximum: 1, default: 1 }),
  top_k: nullable({ type: "integer", format: "int32", exclusiveMinimum: 0, description: "Keep the k most likely tokens (extension)." }),
  ignore_eos: bool("vLLM's extension for benchmarks: generate exactly max_tokens."),
  user: nullable({ type: "string", description: "Accepted and ignored." }),
};

// ---- responses (documentation only: the router writes them, chat.ts and completions.ts type them) ----

const str = { type: "string" } as const;
const finishReason = (nullableInChunks: boolean): JsonSchema => ({
  type: nullableInChunks ? ["string", "null"] : "string",
  enum: nullableInChunks ? ["stop", "length", null] : ["stop", "length"],
  description: "stop: EOS or a stop sequence (not included in the text); length: max_tokens or the model's limit.",
});
const meta = (object: string): Record<string, JsonSchema> => ({
  id: { type: "string", example: "chatcmpl-0123456789abcdef01234567" },
  object: { type: "string", enum: [object] },
  created: { type: "integer", format: "uint64", description: "Unix seconds." },
  model: { type: "string", description: "The served model id." },
  system_fingerprint: { type: "string", example: "0.1.0-native" },
});
const metaKeys = ["id", "object", "created", "model", "system_fingerprint", "choices"];
const logprob = { type: ["number", "null"], format: "float" } as JsonSchema;
const bytes: JsonSchema = { type: "array", items: { type: "integer" } };
const chatLogprobs = nullable(
  struct("ChatLogprobs", {
    content: {
      type: "array",
      items: struct("ChatLogprob", {
        token: str,
        logprob,
        bytes,
        top_logprobs: { type: "array", items: struct("ChatTopLogprob", { token: str, logprob, bytes }) },
      }),
    },
  }),
);
const legacyLogprobs = nullable(
  struct("CompletionLogprobs", {
    tokens: { type: "array", items: str },
    token_logprobs: { type: "array", items: logprob },
    top_logprobs: { type: "array", items: { type: ["object", "null"], additionalProperties: logprob } },
    text_offset: { type: "array", items: { type: "integer" } },
  }),
);

const responseSchemas: SchemaComponents = {
  Usage: struct("Usage", { prompt_tokens: { type: "integer" }, completion_tokens: { type: "integer" }, total_tokens: { type: "integer" } }),
  ChatCompletion: struct(
    "ChatCompletion",
    {
      ...meta("chat.completion"),
      choices: {
        type: "array",
        items: struct("ChatCompletionChoice", {
          index: { type: "integer" },
          message: struct("OutputMessage", { role: { type: "string", enum: ["assistant"] }, content: str }),
          logprobs: chatLogprobs,
          finish_reason: finishReason(false),
        }),
      },
      usage: ref("Usage"),
    },
    [...metaKeys, "usage"],
  ),
  ChatCompletionChunk: struct(
    "ChatCompletionChunk",
    {
      ...meta("chat.completion.chunk"),
      choices: {
        type: "array",
        description: "One choice per chunk; empty in the usage chunk.",
        items: struct("ChatCompletionChunkChoice", {
          index: { type: "integer" },
          delta: struct("ChatDelta", { role: { type: "string", enum: ["assistant"], description: "Only in a choice's first chunk." }, content: str }),
          logprobs: chatLogprobs,
          finish_reason: finishReason(true),
        }),
      },
      usage: { ...nullable(ref("Usage")), description: "Only with stream_options.include_usage: null, then the usage in the last chunk." },
    },
    metaKeys,
  ),
  Completion: struct(
    "Completion",
    {
      ...meta("text_completion"),
      choices: {
        type: "array",
        items: struct("CompletionChoice", { index: { type: "integer" }, text: str, logprobs: legacyLogprobs, finish_reason: finishReason(false) }),
      },
      usage: ref("Usage"),
    },
    [...metaKeys, "usage"],
  ),
  CompletionChunk: struct(
    "CompletionChunk",
    {
      ...meta("text_completion"),
      choices: {
        type: "array",
        items: struct("CompletionChunkChoice", { index: { type: "integer" }, text: str, logprobs: legacyLogprobs, finish_reason: finishReason(true) }),
      },
      usage: nullable(ref("Usage")),
    },
    metaKeys,
  ),
  ModelList: struct(
    "ModelList",
    {
      object: { type: "string", enum: ["list"] },
      data: {
        type: "array",
        items: struct("Model", { id: str, object: { type: "string", enum: ["model"] }, created: { type: "integer" }, owned_by: str }),
      },
    },
    ["object", "data"],
  ),
};

export const openaiSchemas: SchemaComponents = {
  ...responseSchemas,
  StreamOptions: struct("StreamOptions", { include_usage: bool("Send a last chunk with empty choices and the usage.") }),
  MessageChunk: struct(
    "MessageChunk",
    {
      type: { type: "string", enum: ["text", "image_url"], title: "MessageChunkType" },
      text: { type: "string" },
      image_url: struct("Url", { url: { type: "string" } }, ["url"]),
    },
    ["type"],
    { description: "A content part. Image parts are accepted by the shape and refused later: this server serves text models." },
  ),
  MessageContent: {
    title: "MessageContent",
    anyOf: [{ type: "string" }, { type: "array", items: ref("MessageChunk") }],
  },
  ToolCall: struct(
    "ToolCall",
    {
      id: { type: "string" },
      type: { type: "string" },
      function: struct("FunctionCall", { name: { type: "string" }, arguments: {} }, ["name"]),
    },
    ["function"],
  ),
  Message: struct(
    "Message",
    {
      role: { type: "string", enum: ["system", "developer", "user", "assistant", "tool"], title: "Role" },
      content: { ...nullable(ref("MessageContent")), description: "Null only on an assistant message with tool_calls." },
      name: nullable({ type: "string" }),
      tool_calls: nullable({ type: "array", items: ref("ToolCall") }),
      tool_call_id: nullable({ type: "string" }),
    },
    ["role"],
  ),
  Tool: struct(
    "Tool",
    {
      type: { type: "string", enum: ["function"], title: "ToolType" },
      function: struct("FunctionDefinition", { name: { type: "string" }, description: nullable({ type: "string" }), parameters: {} }, ["name"]),
    },
    ["type", "function"],
  ),
  ChatRequest: struct(
    "ChatRequest",
    {
      messages: { type: "array", items: ref("Message"), minItems: 1 },
      ...sampling,
      max_completion_tokens: uint("OpenAI's newer name of max_tokens; wins when both are given.", { exclusiveMinimum: 0 }),
      logprobs: bool("Return the logprob of each generated token."),
      top_logprobs: uint("With logprobs: this many most likely alternatives per token (0..20, at most --max-top-n-tokens).", { maximum: 20 }),
      tools: nullable({ type: "array", items: ref("Tool"), description: "Given to the chat template; tool calls are not parsed (the text is returned)." }),
      tool_choice: { description: "Accepted; only \"none\" and \"auto\" are meaningful here (no constrained decoding)." },
      response_format: nullable(
        struct("ResponseFormat", { type: { type: "string" } }, ["type"], { description: "Only {\"type\": \"text\"}: constrained decoding is not supported yet." }),
      ),
    },
    ["messages"],
  ),
  CompletionRequest: struct(
    "CompletionRequest",
    {
      prompt: {
        title: "Prompt",
        description: "One prompt, or a list of up to --max-client-batch-size prompts (each its own group of n choices).",
        anyOf: [{ type: "string" }, { type: "array", items: { type: "string" }, minItems: 1 }],
      },
      ...sampling,
      echo: bool("Prepend the prompt to each choice's text."),
      logprobs: uint("Return the logprob of each generated token and this many most likely alternatives.", { maximum: 5 }),
      suffix: { description: "Not supported: any value other than null is refused." },
      best_of: uint("Only 1 (or null) is accepted."),
    },
    ["prompt"],
  ),
};
