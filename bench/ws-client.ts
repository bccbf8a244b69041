// Streams over our WebSocket route (/v1/ws): one socket carries many
// generations, each under the client's id. Client → server
// `{"type":"generate","id","request"}`; server → client `{"type":"event","id","event"}`
// (the SSE route's JSON), then `{"type":"end","id"}` or `{"type":"error","id","status","error"}`.
import WebSocket from "ws";
import { interpret } from "./flavours.js";
import { RecordBuilder, type RequestRecord } from "./record.js";

interface Pending {
  rec: RecordBuilder;
  resolve: (r: RequestRecord) => void;
  onToken?: () => void;
}

class Connection {
  readonly pending = new Map<string, Pending>();
  private constructor(readonly socket: WebSocket) {
    socket.on("message", (data) => this.onMessage(data.toString(), performance.now()));
    socket.on("close", () => this.failAll("the WebSocket closed"));
    socket.on("error", (e) => this.failAll(`WebSocket error: ${e.message}`));
  }

  static open(url: string, headers: Record<string, string>): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { headers, perMessageDeflate: false });
      socket.once("open", () => resolve(new Connection(socket)));
      socket.once("error", (e) => reject(new Error(`cannot open ${url}: ${e.message}`)));
      socket.once("unexpected-response", (_req, res) => reject(new Error(`cannot open ${url}: HTTP ${res.statusCode}`)));
    });
  }

  private onMessage(text: string, at: number): void {
    let m: { type?: string; id?: string; event?: unknown; error?: { error?: string }; status?: number };
    try {
      m = JSON.parse(text);
    } catch {
      return this.failAll(`unparsable WebSocket message: ${text.slice(0, 200)}`);
    }
    const p = m.id === undefined || m.id === null ? undefined : this.pending.get(m.id);
    if (!p) {
      if (m.type === "error") this.failAll(`server error without id: ${JSON.stringify(m.error)}`);
      return;
    }
    if (m.type === "event") {
      const meaning = interpret("ws", JSON.stringify(m.event));
      if (meaning.tokens > 0) {
        p.rec.tokens(meaning.tokens, at);
        p.onToken?.();
      }
      p.rec.reportedCount(meaning.outputTokens);
      if (meaning.error !== undefined) p.rec.fail(meaning.error, at);
      else if (meaning.final) p.rec.finish(at);
      return;
    }
    if (m.type === "error") p.rec.fail(`HTTP ${m.status}: ${m.error?.error ?? JSON.stringify(m.error)}`, at);
    else if (m.type === "cancelled") p.rec.fail("cancelled", at);
    else if (m.type !== "end") return;
    this.pending.delete(m.id!);
    p.resolve(p.rec.finish(at));
  }

  private failAll(message: string): void {
    const at = performance.now();
    for (const [id, p] of this.pending) {
      p.rec.fail(message, at);
      p.resolve(p.rec.finish(at));
      this.pending.delete(id);
    }
  }
}

/** A few sockets; requests are spread round-robin. */
export class WsPool {
  private next = 0;
  private counter = 0;
  private constructor(private readonly connections: Connection[]) {}

  static async open(base: string, path: string, count: number, headers: Record<string, string> = {}): Promise<WsPool> {
    const url = new URL(path, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const connections = await Promise.all(Array.from({ length: count }, () => Connection.open(url.href, headers)));
    return new WsPool(connections);
  }

  stream(request: object, rec: RecordBuilder, onToken?: () => void): Promise<RequestRecord> {
    const conn = this.connections[this.next++ % this.connections.length]!;
    const id = `r${this.counter++}`;
    return new Promise((resolve) => {
      conn.pending.set(id, { rec, resolve, onToken });
      conn.socket.send(JSON.stringify({ type: "generate", id, request }), (err) => {
        if (!err) return;
        conn.pending.delete(id);
        rec.fail(`send failed: ${err.message}`, performance.now());
        resolve(rec.finish(performance.now()));
      });
    });
  }

  close(): void {
    for (const c of this.connections) c.socket.close();
  }
}
