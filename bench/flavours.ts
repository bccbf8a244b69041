// The API flavours the load generator speaks: what body to send for one request
// and what each streamed event means (a token, the end, an error). Counting is
// per event, as vLLM's bench serve counts per chunk; a server that reports how
// many tokens it generated (TGI details, OpenAI usage) is believed over the count.

export type ApiFlavour = "tgi" | "openai" | "chat" | "ws";
export const FLAVOURS: ApiFlavour[] = ["tgi", "openai", "chat", "ws"];

export interface SamplingOptions {
  /** Model name for OpenAI bodies (TGI ignores it). */
  model: string;
  /** Ask the server for exactly max tokens (ignore_eos_token / ignore_eos). */
  ignoreEos: boolean;
  /** Undefined: greedy (the server's default). */
  temperature?: number;
}

export interface EventMeaning {
  /** Generated tokens this event carries (0 for role-only or usage chunks). */
  tokens: number;
  /** The server says the generation is over. */
  final: boolean;
  /** The server's own count of generated tokens, when it gives one. */
  outputTokens?: number;
  error?: string;
}

export function path(flavour: ApiFlavour): string {
  switch (flavour) {
    case "tgi": return "/generate_stream";
    case "openai": return "/v1/completions";
    case "chat": return "/v1/chat/completions";
    case "ws": return "/v1/ws";
  }
}

/** The JSON body (for ws: the `request` of a `generate` message). */
export function requestBody(flavour: ApiFlavour, prompt: string, maxTokens: number, s: SamplingOptions): object {
  if (flavour === "tgi" || flavour === "ws") {
    return {
      inputs: prompt,
      parameters: {
        max_new_tokens: maxTokens,
        details: true,
        ...(s.ignoreEos ? { ignore_eos_token: true } : {}),
        ...(s.temperature !== undefined ? { do_sample: s.temperature > 0, temperature: s.temperature || undefined } : {}),
      },
    };
  }
  const common = {
    model: s.model,
    max_tokens: maxTokens,
    stream: true,
    stream_options: { include_usage: true },
    ...(s.ignoreEos ? { ignore_eos: true } : {}),
    ...(s.temperature !== undefined ? { temperature: s.temperature } : {}),
  };
  if (flavour === "openai") return { ...common, prompt };
  return { ...common, messages: [{ role: "user", content: prompt }] };
}

function errorText(e: unknown): string {
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && typeof (e as { message?: unknown }).message === "string") return (e as { message: string }).message;
  return JSON.stringify(e);
}

/** Reads one SSE `data:` payload (or one ws `event`). */
const TOKEN_EVENT: EventMeaning = { tokens: 1, final: false };

export function interpret(flavour: ApiFlavour, data: string): EventMeaning {
  if (data === "[DONE]") return { tokens: 0, final: true };
  // TGI's intermediate token events always carry `"generated_text":null` at the top level
  // (inside a JSON string the quotes would be escaped): skip parsing them, as the client's
  // own CPU competes with the server's in router benchmarks.
  if ((flavour === "tgi" || flavour === "ws") && data.includes('"generated_text":null') && data.startsWith('{"index"')) return TOKEN_EVENT;
  const v = JSON.parse(data) as Record<string, any>;
  if (v.error !== undefined && v.error !== null) return { tokens: 0, final: true, error: errorText(v.error) };
  if (flavour === "tgi" || flavour === "ws") {
    const final = v.generated_text !== null && v.generated_text !== undefined;
    const count = v.details?.generated_tokens;
    return { tokens: v.token ? 1 : 0, final, outputTokens: typeof count === "number" ? count : undefined };
  }
  const usage = typeof v.usage?.completion_tokens === "number" ? (v.usage.completion_tokens as number) : undefined;
  const choice = Array.isArray(v.choices) ? v.choices[0] : undefined;
  if (!choice) return { tokens: 0, final: false, outputTokens: usage };
  let tokens: number;
  if (flavour === "openai") tokens = typeof choice.text === "string" ? 1 : 0;
  else {
    const delta = choice.delta ?? {};
    // The first chat chunk may carry only the role: no token yet.
    tokens = typeof delta.content === "string" && (delta.content !== "" || delta.role === undefined) ? 1 : 0;
  }
  return { tokens, final: false, outputTokens: usage };
}
