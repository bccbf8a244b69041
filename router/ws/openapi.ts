// /v1/ws in the OpenAPI document. OpenAPI has no WebSocket messages, so the
// route is a GET answered with 101 whose description is the protocol, and the
// message shapes are schemas of their own. The generator uses `wsOperation` for
// "GET /v1/ws" and merges `wsSchemas` into components.schemas; their refs point
// at router/schema/tgi.ts's and router/openai/schemas.ts's schemas.
import { ref, struct, type JsonSchema, type SchemaComponents } from "../schema/index.js";

export { WS_PATH } from "./protocol.js";

const id: JsonSchema = { type: "string", description: "The client's name for the generation (1 to 256 characters); unique among its running generations." };

const request = (kind: string, schema: string, description: string): JsonSchema =>
  struct(`WsRequest${kind}`, { type: { type: "string", enum: [kind.toLowerCase()] }, id, request: ref(schema) }, ["type", "id", "request"], { description });

export const wsSchemas: SchemaComponents = {
  WsClientMessage: {
    title: "WsClientMessage",
    description: "A message from the client: start a generation, or cancel one.",
    oneOf: [
      request("Generate", "GenerateRequest", "Runs a POST /generate body; answered with /generate_stream's events."),
      request("Chat", "ChatRequest", "Runs a POST /v1/chat/completions body (always streamed); answered with its chunks."),
      request("Completion", "CompletionRequest", "Runs a POST /v1/completions body (always streamed); answered with its chunks."),
      struct("WsCancel", { type: { type: "string", enum: ["cancel"] }, id }, ["type", "id"], {
        description: "Stops the generation at once; answered with `cancelled`.",
      }),
    ],
    discriminator: { propertyName: "type" },
  },
  WsServerMessage: {
    title: "WsServerMessage",
    description: "A message from the server, tagged with the generation's id. Each generation ends with exactly one of end, cancelled, error.",
    oneOf: [
      struct(
        "WsEvent",
        {
          type: { type: "string", enum: ["event"] },
          id,
          event: {
            description: "The event its SSE route would send: a StreamResponse for generate, an OpenAI chunk for chat and completion.",
            anyOf: [ref("StreamResponse"), { type: "object", description: "chat.completion.chunk or text_completion chunk" }],
          },
        },
        ["type", "id", "event"],
      ),
      struct("WsEnd", { type: { type: "string", enum: ["end"] }, id }, ["type", "id"], { description: "The generation finished; its last event was sent." }),
      struct("WsCancelled", { type: { type: "string", enum: ["cancelled"] }, id }, ["type", "id"], {
        description: "Answer to cancel: nothing more comes for this id.",
      }),
      struct(
        "WsError",
        {
          type: { type: "string", enum: ["error"] },
          id: { type: ["string", "null"], description: "null when the message that failed had no usable id (malformed JSON)." },
          status: { type: "integer", description: "The HTTP status the same failure gets on the HTTP routes (400, 404, 409, 422, 424, 429, 500, 503)." },
          error: ref("ErrorResponse"),
        },
        ["type", "id", "status", "error"],
        { description: "The generation failed (or, with error_type duplicate_id, the message was refused and the running generation goes on)." },
      ),
    ],
    discriminator: { propertyName: "type" },
  },
};

/**
 * The operation of `GET /v1/ws`, in the shape of router/openapi/operations.ts's
 * OperationDoc (not imported: openapi/ builds on this folder, not the reverse).
 */
export const wsOperation = {
  tag: "WebSocket",
  operationId: "websocket",
  summary: "WebSocket: several generations on one socket (upgrade request)",
  description:
    "Upgrade with `GET /v1/ws` (`Connection: Upgrade`, `Upgrade: websocket`; the Bearer API key as on the HTTP routes). " +
    "The client sends WsClientMessage JSON text frames: `generate` (a /generate body), `chat` (a /v1/chat/completions body) " +
    "or `completion` (a /v1/completions body), each with a client-chosen `id`, and `cancel`. The server sends WsServerMessage " +
    "frames: each generation's SSE events tagged with its id, then exactly one of `end`, `cancelled` or `error` (TGI's error " +
    "JSON with the HTTP status). Errors never close the socket or touch other generations. The server pings every 30 s and " +
    "drops sockets that do not answer; a client that stops reading holds its own generations back. Protocol: router/ws/protocol.md.",
  responses: {
    "101": { description: "Switching protocols; then WsServerMessage frames", schema: "WsServerMessage" },
    "401": {
      description: "Missing or wrong API key (--api-key)",
      schema: "ErrorResponse",
      example: { error: "Unauthorized: send the API key as `Authorization: Bearer <key>`", error_type: "unauthorized" },
    },
    "403": {
      description: "The browser's Origin is not in --cors-allow-origin",
      schema: "ErrorResponse",
      example: { error: "Origin https://example.com is not allowed by --cors-allow-origin", error_type: "forbidden" },
    },
  },
};
