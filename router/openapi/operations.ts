// What the OpenAPI document says about each route of router/http/server.ts's
// table ("METHOD /path" → operation). Request and response bodies are named
// schemas of router/schema/ and router/openai/schemas.ts, the same ones the
// routes check bodies with.

export interface ResponseDoc {
  description: string;
  /** A components.schemas name, or an inline schema. */
  schema?: string | object;
  /** Default application/json. */
  contentType?: string;
  example?: unknown;
  headers?: Record<string, string>;
}

export interface OperationDoc {
  tag: string;
  operationId: string;
  summary: string;
  description?: string;
  /** components.schemas name of the JSON body; absent: no body. */
  requestBody?: string;
  responses: Record<string, ResponseDoc>;
  /** Served without the API key even when --api-key is set. */
  public?: boolean;
}

const error = (description: string, message: string, errorType: string): ResponseDoc => ({
  description,
  schema: "ErrorResponse",
  example: { error: message, error_type: errorType },
});

const GENERATE_HEADERS: Record<string, string> = {
  "x-compute-type": "COMPUTE_TYPE or the shards' device type",
  "x-compute-time": "Total time in seconds",
  "x-compute-characters": "Characters (code points) of inputs",
  "x-total-time": "Total time in ms",
  "x-validation-time": "Validation time in ms",
  "x-queue-time": "Queue time in ms",
  "x-inference-time": "Inference time in ms",
  "x-time-per-token": "Inference time per generated token in ms",
  "x-prompt-tokens": "Prompt tokens",
  "x-generated-tokens": "Generated tokens",
};

const STREAM_HEADERS: Record<string, string> = {
  "x-compute-type": "COMPUTE_TYPE or the shards' device type",
  "x-compute-characters": "Characters (code points) of inputs",
};

/** The error answers every generation route shares. */
const generationErrors: Record<string, ResponseDoc> = {
  "401": error("Missing or wrong `Authorization: Bearer <key>` (only with --api-key)", "Unauthorized", "unauthorized"),
  "413": error("Body over --payload-limit", "Failed to buffer the request body: length limit exceeded", "payload_too_large"),
  "422": error("Input validation error", "Input validation error: `inputs` must have less than 1024 tokens. Given: 1025", "validation"),
  "424": error("Generation error", "Request failed during generation: Server error: out of memory", "generation"),
  "429": error("Over --max-concurrent-requests", "Model is overloaded", "overloaded"),
  "500": error("Incomplete generation", "Incomplete generation", "incomplete_generation"),
};

const sse = (description: string, schema: string): ResponseDoc => ({
  description,
  contentType: "text/event-stream",
  schema,
  headers: STREAM_HEADERS,
});

const health: Record<string, ResponseDoc> = {
  "200": { description: "Everything is working fine (empty body)", contentType: "text/plain" },
  "503": error("Text generation inference is down", "unhealthy", "healthcheck"),
};

export const OPERATIONS: Record<string, OperationDoc> = {
  "GET /": { tag: "Text Generation Inference", operationId: "health_root", summary: "Health check (as GET /health)", responses: health, public: true },
  "POST /": {
    tag: "Text Generation Inference",
    operationId: "compat_generate",
    summary: "Generate tokens (TGI's compat route)",
    description:
      "Without `stream`: a one-element array of GenerateResponse, `return_full_text` defaulting to true. With `\"stream\": true`: the /generate_stream event stream.",
    requestBody: "CompatGenerateRequest",
    responses: {
      "200": { description: "Generated text (array), or SSE when stream is true", schema: { type: "array", items: { $ref: "#/components/schemas/GenerateResponse" } }, headers: GENERATE_HEADERS },
      ...generationErrors,
    },
  },
  "POST /generate": {
    tag: "Text Generation Inference",
    operationId: "generate",
    summary: "Generate tokens",
    requestBody: "GenerateRequest",
    responses: { "200": { description: "Generated text", schema: "GenerateResponse", headers: GENERATE_HEADERS }, ...generationErrors },
  },
  "POST /generate_stream": {
    tag: "Text Generation Inference",
    operationId: "generate_stream",
    summary: "Generate a stream of token events (server-sent events)",
    description:
      "Each event is `data:` + a StreamResponse + a blank line. Every failure after the body parsed (validation, overload, generation) is HTTP 200 with one last event `data:{\"error\":…,\"error_type\":…}`.",
    requestBody: "GenerateRequest",
    responses: {
      "200": sse("Token events, or an ErrorResponse event", "StreamResponse"),
      "401": generationErrors["401"]!,
      "413": generationErrors["413"]!,
      "422": error("Body is not a GenerateRequest", "Failed to deserialize the JSON body into the target type: inputs: invalid type: integer `3`, expected a string", "validation"),
    },
  },
  "POST /invocations": {
    tag: "Text Generation Inference",
    operationId: "sagemaker_compatibility",
    summary: "SageMaker: a body with `inputs` is POST /, `messages` chat completions, `prompt` completions",
    requestBody: "SagemakerRequest",
    responses: {
      "200": { description: "The answer of the route the body selects", schema: "SagemakerResponse" },
      ...generationErrors,
    },
  },
  "POST /tokenize": {
    tag: "Text Generation Inference",
    operationId: "tokenize",
    summary: "Tokenize inputs: ids, text and byte offsets",
    description: "Special tokens are added as for /generate; `parameters.truncate` keeps the last tokens. Offsets are UTF-8 byte offsets into inputs.",
    requestBody: "GenerateRequest",
    responses: {
      "200": { description: "Tokens", schema: "TokenizeResponse", example: [{ id: 1, text: "", start: 0, stop: 0 }, { id: 403, text: "Once", start: 0, stop: 4 }] },
      "401": generationErrors["401"]!,
      "422": generationErrors["422"]!,
    },
  },
  "GET /info": {
    tag: "Text Generation Inference",
    operationId: "get_model_info",
    summary: "Text Generation Inference endpoint info",
    responses: { "200": { description: "Served model info", schema: "Info" }, "401": generationErrors["401"]! },
  },
  "GET /health": { tag: "Text Generation Inference", operationId: "health", summary: "Health check", responses: health, public: true },
  "GET /ping": { tag: "Text Generation Inference", operationId: "ping", summary: "Health check (SageMaker)", responses: health, public: true },
  "GET /metrics": {
    tag: "Text Generation Inference",
    operationId: "metrics",
    summary: "Prometheus metrics (TGI's names, plus text_gen_kv_blocks_free and text_gen_kv_blocks_total)",
    responses: { "200": { description: "Prometheus text exposition", contentType: "text/plain; version=0.0.4", schema: { type: "string" } } },
    public: true,
  },
  "GET /api-doc/openapi.json": {
    tag: "Text Generation Inference",
    operationId: "openapi",
    summary: "This document",
    responses: { "200": { description: "OpenAPI 3.1 document", schema: { type: "object" } }, "401": generationErrors["401"]! },
  },
  "GET /docs": {
    tag: "Text Generation Inference",
    operationId: "docs",
    summary: "Swagger UI for this document",
    responses: { "200": { description: "HTML page", contentType: "text/html", schema: { type: "string" } }, "401": generationErrors["401"]! },
  },
  "POST /v1/chat/completions": {
    tag: "OpenAI",
    operationId: "chat_completions",
    summary: "OpenAI chat completions",
    description: "JSON, or with `stream` server-sent events `data: {chunk}` ending with `data: [DONE]`; an error after the stream started is `data: {\"error\": {...}}` then `[DONE]`.",
    requestBody: "ChatRequest",
    responses: {
      ...generationErrors,
      "200": { description: "A chat.completion, or chat.completion.chunk events", schema: { type: "object" } },
      "422": error("Validation or template error", "Template error: template not found", "template_error"),
    },
  },
  "POST /v1/completions": {
    tag: "OpenAI",
    operationId: "completions",
    summary: "OpenAI completions",
    requestBody: "CompletionRequest",
    responses: {
      ...generationErrors,
      "200": { description: "A text_completion, or text_completion events", schema: { type: "object" } },
      "422": error("Validation error", "Suffix is not supported and can be achieved by preprocessing the prompt.", "suffix not supported"),
    },
  },
  "GET /v1/models": {
    tag: "OpenAI",
    operationId: "openai_get_model_info",
    summary: "OpenAI model list: the served model",
    responses: {
      "200": {
        description: "The served model",
        schema: { type: "object" },
        example: { object: "list", data: [{ id: "stories260k", object: "model", created: 0, owned_by: "stories260k" }] },
      },
      "401": generationErrors["401"]!,
    },
  },
  "GET /v1/ws": {
    tag: "WebSocket",
    operationId: "websocket",
    summary: "WebSocket: several generations on one socket (upgrade request)",
    description:
      "Upgrade with `GET /v1/ws` (`Connection: Upgrade`, `Upgrade: websocket`). Client messages are JSON: a generation request carries a client-chosen `id` with the body of /generate or /v1/chat/completions; `{\"type\":\"cancel\",\"id\":…}` stops that generation. The server sends the SSE routes' events as JSON messages tagged with the id, then a final event; errors come as events for their id and never close the socket. The README describes the protocol.",
    responses: {
      "101": { description: "Switching protocols", contentType: "text/plain" },
      "401": generationErrors["401"]!,
    },
  },
};
