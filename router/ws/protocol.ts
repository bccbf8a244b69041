// The /v1/ws wire format (protocol.md describes it for clients): parsing what a
// client sends, and the JSON of every message the server sends back.

export const WS_PATH = "/v1/ws";

/** The request kinds a client can start; each maps to an HTTP route's JSON. */
export const REQUEST_KINDS = ["generate", "chat", "completion"] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];

export type ClientMessage = { type: RequestKind; id: string; request: unknown } | { type: "cancel"; id: string };

export const MAX_ID_LENGTH = 256;

/** A message the server could not act on; `id` is null when the message had no usable id. */
export class ProtocolError extends Error {
  constructor(
    readonly id: string | null,
    readonly status: number,
    readonly errorType: string,
    message: string,
  ) {
    super(message);
    this.name = "ProtocolError";
  }
}

const invalid = (id: string | null, message: string) => new ProtocolError(id, 400, "invalid_message", message);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function parseClientMessage(text: string): ClientMessage {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(null, 400, "invalid_json", `Failed to parse the message as JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw invalid(null, "A message must be a JSON object with `type` and `id`");
  const { type, id } = value;
  if (typeof id !== "string" || id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw invalid(null, `\`id\` must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  }
  if (type === "cancel") return { type, id };
  if (!REQUEST_KINDS.includes(type as RequestKind)) {
    const shown = JSON.stringify(type)?.slice(0, 64) ?? "undefined";
    throw invalid(id, `Unknown message type ${shown}: expected one of ${[...REQUEST_KINDS, "cancel"].join(", ")}`);
  }
  if (!Object.hasOwn(value, "request")) throw invalid(id, "missing field `request`");
  return { type: type as RequestKind, id, request: value.request };
}

// ---- server → client ----

export interface ErrorBody {
  error: string;
  error_type: string;
}

/** One event of the generation's stream, exactly as its SSE route would send it. */
export const eventMessage = (id: string, event: unknown): string => JSON.stringify({ type: "event", id, event });

/**
 * eventMessage for events already serialized, per token: `eventMessagePrefix(id) + json + "}"`
 * is eventMessage(id, JSON.parse(json)) byte for byte, with the id encoded once per generation.
 */
export const eventMessagePrefix = (id: string): string => `{"type":"event","id":${JSON.stringify(id)},"event":`;

/** The generation finished; its last event was already sent. */
export const endMessage = (id: string): string => JSON.stringify({ type: "end", id });

/** Answer to `cancel`: the generation stopped and sends nothing more. */
export const cancelledMessage = (id: string): string => JSON.stringify({ type: "cancelled", id });

/** TGI's error JSON with its HTTP status. */
export const errorMessage = (id: string | null, status: number, error: ErrorBody): string =>
  JSON.stringify({ type: "error", id, status, error });
