// For the ws-*.test.ts files: the router's HTTP server with /v1/ws attached,
// over the fake backend, and a test client that sorts messages by id.
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import WebSocket from "ws";
import type { HttpContext } from "../http/context.js";
import { createHttpServer } from "../http/server.js";
import type { ValidationLimits } from "../validation/validate.js";
import { WS_PATH } from "../ws/protocol.js";
import { attachWebSocket, type WsEndpoint, type WsOptions } from "../ws/server.js";
import { startFakeServer, type FakeOptions, type FakeServer } from "./fake-backend.js";

export interface WsServer extends FakeServer {
  wsUrl: string;
  /** The same server over HTTP (for comparing with /generate_stream). */
  httpUrl: string;
  endpoint: WsEndpoint;
}

export async function startWsServer(
  fake: FakeOptions = {},
  ws: WsOptions = {},
  overrides: Partial<Omit<HttpContext, "validator">> & { limits?: Partial<ValidationLimits> } = {},
): Promise<WsServer> {
  const s = await startFakeServer(fake, overrides);
  // createHttpServer: the real route table next to /v1/ws, as main.ts serves them.
  const server = createHttpServer(s.ctx);
  const endpoint = attachWebSocket(server, s.ctx, ws);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    ...s,
    wsUrl: `ws://127.0.0.1:${port}${WS_PATH}`,
    httpUrl: `http://127.0.0.1:${port}`,
    endpoint,
    close: async () => {
      for (const socket of endpoint.sessions.keys()) socket.terminate();
      server.closeAllConnections();
      server.close();
      await once(server, "close");
      await s.close();
    },
  };
}

/** startWsServer and one client, both closed when `t` ends. */
export async function serverAndClient(
  t: { teardown(fn: () => unknown): void },
  ...args: Parameters<typeof startWsServer>
): Promise<{ s: WsServer; c: TestClient }> {
  const s = await startWsServer(...args);
  t.teardown(() => s.close());
  const c = await TestClient.open(s.wsUrl);
  t.teardown(() => c.close());
  return { s, c };
}

export interface Message {
  type: "event" | "end" | "cancelled" | "error";
  id: string | null;
  event?: Record<string, unknown>;
  status?: number;
  error?: { error: string; error_type: string };
}

const TERMINAL = new Set(["end", "cancelled", "error"]);

export class TestClient {
  readonly messages: Message[] = [];
  private listeners: (() => void)[] = [];

  /** Socket errors (a connection the server dropped), kept instead of thrown. */
  readonly errors: Error[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on("error", (err) => this.errors.push(err));
    ws.on("message", (data) => {
      this.messages.push(JSON.parse(data.toString()) as Message);
      for (const l of [...this.listeners]) l();
    });
  }

  static async open(url: string, options: WebSocket.ClientOptions = {}): Promise<TestClient> {
    const ws = new WebSocket(url, options);
    await once(ws, "open");
    return new TestClient(ws);
  }

  send(message: object | string): void {
    this.ws.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  generate(id: string, inputs: string, parameters: object = {}): void {
    this.send({ type: "generate", id, request: { inputs, parameters } });
  }

  /** Waits for the first message (from `from` on) that satisfies `pred`. */
  async waitFor(pred: (m: Message) => boolean, timeoutMs = 5000, from = 0): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.messages.slice(from).find(pred);
      if (hit) return hit;
      if (this.ws.readyState !== WebSocket.OPEN) throw new Error("socket closed while waiting for a message");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a message; got ${JSON.stringify(this.messages.slice(-5))}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.ws.off("close", done);
          this.listeners = this.listeners.filter((l) => l !== done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.ws.once("close", done);
        this.listeners.push(done);
      });
    }
  }

  /** The terminal message (end, cancelled or error) of generation `id`. */
  terminal(id: string, timeoutMs = 5000): Promise<Message> {
    return this.waitFor((m) => m.id === id && TERMINAL.has(m.type), timeoutMs);
  }

  /** Every message of `id` so far. */
  of(id: string): Message[] {
    return this.messages.filter((m) => m.id === id);
  }

  /** The events of `id` so far. */
  events(id: string): Record<string, unknown>[] {
    return this.of(id)
      .filter((m) => m.type === "event")
      .map((m) => m.event!);
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.close();
    await once(this.ws, "close");
  }
}

/** The SSE events of POST /generate_stream for the same request, parsed. */
export async function sseEvents(httpUrl: string, inputs: string, parameters: object): Promise<unknown[]> {
  const res = await fetch(`${httpUrl}/generate_stream`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ inputs, parameters }),
  });
  const text = await res.text();
  return text
    .split("\n\n")
    .filter((block) => block.startsWith("data:"))
    .map((block) => JSON.parse(block.slice(5)) as unknown);
}
