// Minimal TGI HTTP client for the end-to-end tests: /generate, /generate_stream (SSE), /info.
export interface Token {
  id: number;
  text: string;
  logprob: number | null;
  special: boolean;
}

export interface GenerateResponse {
  generated_text: string;
  details?: {
    finish_reason: string;
    generated_tokens: number;
    tokens: Token[];
    top_tokens?: Token[][];
  };
}

export interface StreamEvent {
  index: number;
  token: Token;
  top_tokens?: Token[];
  generated_text: string | null;
  details: { finish_reason: string; generated_tokens: number } | null;
}

export type Parameters = Record<string, unknown>;

export async function generate(url: string, inputs: string, parameters: Parameters): Promise<GenerateResponse> {
  const res = await fetch(`${url}/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ inputs, parameters }),
  });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`/generate answered ${res.status}: ${body}`);
  return JSON.parse(body) as GenerateResponse;
}

/** Reads SSE `data:` events; `onEvent` returning false aborts the request (a client disconnect). */
export async function generateStream(url: string, inputs: string, parameters: Parameters,
  onEvent: (e: StreamEvent) => boolean | void = () => true): Promise<StreamEvent[]> {
  const abort = new AbortController();
  const res = await fetch(`${url}/generate_stream`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ inputs, parameters }),
    signal: abort.signal,
  });
  if (res.status !== 200) throw new Error(`/generate_stream answered ${res.status}: ${await res.text()}`);
  const events: StreamEvent[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return events;
    buffered += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const event = JSON.parse(line.slice(5).trim()) as StreamEvent;
        events.push(event);
        if (onEvent(event) === false) {
          abort.abort();
          await reader.cancel().catch(() => undefined);
          return events;
        }
      }
    }
  }
}

export interface Info {
  kv_cache?: { free_blocks: number; total_blocks: number };
  max_total_tokens: number;
  max_input_tokens: number;
  [k: string]: unknown;
}

export async function info(url: string): Promise<Info> {
  const res = await fetch(`${url}/info`);
  if (res.status !== 200) throw new Error(`/info answered ${res.status}`);
  return (await res.json()) as Info;
}

export function ids(r: GenerateResponse): number[] {
  return r.details!.tokens.map((t) => t.id);
}
