// One streamed request over HTTP/1.1 with server-sent events, on node:http
// (no fetch: its per-chunk overhead would show up in router-overhead runs).
import http from "node:http";
import { interpret, type ApiFlavour } from "./flavours.js";
import { RecordBuilder, type RequestRecord } from "./record.js";

export interface HttpTarget {
  url: URL;
  agent: http.Agent;
  headers: Record<string, string>;
}

export function httpTarget(base: string, apiKey?: string): HttpTarget {
  return {
    url: new URL(base),
    agent: new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 }),
    headers: { "content-type": "application/json", accept: "text/event-stream", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
  };
}

/** Sends `body` to `path` and resolves with the record once the stream ends (never rejects). */
export function streamRequest(
  target: HttpTarget,
  flavour: ApiFlavour,
  path: string,
  body: object,
  rec: RecordBuilder,
  onToken?: () => void,
): Promise<RequestRecord> {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body);
    const req = http.request(
      {
        host: target.url.hostname,
        port: target.url.port,
        path,
        method: "POST",
        agent: target.agent,
        headers: { ...target.headers, "content-length": Buffer.byteLength(payload) },
      },
      (res) => {
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          let text = "";
          res.on("data", (c: string) => (text += c));
          res.on("end", () => {
            rec.fail(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`, performance.now());
            resolve(rec.record);
          });
          res.on("error", (e) => resolve(failed(rec, e)));
          return;
        }
        let buffer = "";
        res.on("data", (chunk: string) => {
          const at = performance.now();
          buffer += chunk.includes("\r") ? chunk.replace(/\r\n?/g, "\n") : chunk;
          let cut: number;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            if (!rec.isFinished) handleBlock(block, flavour, rec, at, onToken);
          }
        });
        res.on("end", () => resolve(rec.finish(performance.now())));
        res.on("error", (e) => resolve(failed(rec, e)));
      },
    );
    req.on("error", (e) => resolve(failed(rec, e)));
    req.end(payload);
  });
}

function failed(rec: RecordBuilder, e: Error): RequestRecord {
  rec.fail(e.message, performance.now());
  return rec.finish(performance.now());
}

function handleBlock(block: string, flavour: ApiFlavour, rec: RecordBuilder, at: number, onToken?: () => void): void {
  for (const line of block.split("\n")) {
    if (!line.startsWith("data:")) continue; // comments (keep-alive), event:, id:
    let meaning;
    try {
      meaning = interpret(flavour, line.slice(5).trimStart());
    } catch (e) {
      rec.fail(`unparsable event: ${(e as Error).message}: ${line.slice(0, 200)}`, at);
      return;
    }
    if (meaning.tokens > 0) {
      rec.tokens(meaning.tokens, at);
      onToken?.();
    }
    rec.reportedCount(meaning.outputTokens);
    if (meaning.error !== undefined) rec.fail(meaning.error, at);
    else if (meaning.final) rec.finish(at);
  }
}
