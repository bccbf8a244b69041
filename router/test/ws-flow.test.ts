// /v1/ws flow control against the fake backend: a client that stops reading
// holds the generations back (bounded server buffer, backend not pulled) and
// gets everything once it reads again; a client that never reads is dropped;
// pings keep answering clients and drop silent ones.
import { once } from "node:events";
import t from "tap";
import type { InferEvent, ValidRequest } from "../infer/types.js";
import { startWsServer, TestClient, type WsServer } from "./ws-harness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Counts the events the router pulled from the backend. */
function countPulls(s: WsServer): { pulled: number } {
  const counter = { pulled: 0 };
  const generate = s.backend.generate.bind(s.backend);
  s.backend.generate = async function* (request: ValidRequest, signal: AbortSignal): AsyncGenerator<InferEvent> {
    for await (const event of generate(request, signal)) {
      counter.pulled++;
      yield event;
    }
  };
  return counter;
}

t.test("a slow reader: the server's buffer stays bounded and the backend is not pulled ahead", async (t) => {
  const highWaterMark = 32 * 1024;
  const GENERATIONS = 4;
  const TOKENS = 8000;
  const s = await startWsServer({}, { highWaterMark }, { limits: { maxInputTokens: 100, maxTotalTokens: TOKENS + 100 } });
  t.teardown(() => s.close());
  const pulls = countPulls(s);
  const c = await TestClient.open(s.wsUrl);
  t.teardown(() => c.close());
  c.ws.pause(); // stop reading: the kernel buffers fill, then the server's
  // Five top tokens make each event about 500 bytes, so the kernel's socket buffers fill sooner.
  for (let g = 0; g < GENERATIONS; g++) c.generate(`g${g}`, "x", { max_new_tokens: TOKENS, top_n_tokens: 5 });

  const session = [...s.endpoint.sessions.values()][0]!;
  let maxBuffered = 0;
  const sampler = setInterval(() => (maxBuffered = Math.max(maxBuffered, session.buffered)), 1);
  let before = -1;
  for (let i = 0; i < 100 && pulls.pulled !== before; i++) {
    before = pulls.pulled;
    await sleep(200);
  }
  clearInterval(sampler);
  const stalledAt = pulls.pulled;
  await sleep(300);
  t.equal(pulls.pulled, stalledAt, `pulling stopped (at ${stalledAt} of ${GENERATIONS * TOKENS} events)`);
  t.ok(stalledAt < (GENERATIONS * TOKENS) / 2, "well before the generations could finish");
  // Each generation may have one event in flight when the mark is crossed.
  t.ok(maxBuffered <= highWaterMark + GENERATIONS * 1024, `server buffer peaked at ${maxBuffered} bytes`);
  t.equal(session.running, GENERATIONS, "generations wait, still alive");
  t.equal(s.ctx.permits.used, GENERATIONS);

  // A cancel is read and acted on while the socket is backed up: its permit comes back at once.
  c.send({ type: "cancel", id: "g0" });
  for (let i = 0; i < 100 && s.ctx.permits.used === GENERATIONS; i++) await sleep(10);
  t.equal(s.ctx.permits.used, GENERATIONS - 1, "the cancelled generation's permit is free before the client reads again");
  t.ok(s.backend.signals[0]!.aborted, "and the backend saw the cancel");

  c.ws.resume();
  const ends = await Promise.all(Array.from({ length: GENERATIONS }, (_, g) => c.terminal(`g${g}`, 60_000)));
  t.same(
    ends.map((m) => m.type),
    ["cancelled", ...Array(GENERATIONS - 1).fill("end")],
  );
  t.ok(c.events("g0").length < TOKENS, "g0 stopped where it was cancelled");
  for (let g = 1; g < GENERATIONS; g++) {
    const events = c.events(`g${g}`);
    t.equal(events.length, TOKENS, `g${g}: every event arrived`);
    t.ok(
      events.every((e, i) => e.index === i + 1),
      `g${g}: in order, none lost`,
    );
  }
});

t.test("a client that never reads is dropped, not buffered for", async (t) => {
  const maxBufferedBytes = 256 * 1024;
  const s = await startWsServer({ hangAfter: 1 }, { highWaterMark: 4096, maxBufferedBytes });
  t.teardown(() => s.close());
  const c = await TestClient.open(s.wsUrl);
  c.ws.pause();
  const id = "g".repeat(256);
  c.generate(id, "x", { max_new_tokens: 5 });
  // Only short replies pass the gate unconditionally (here: ~600-byte duplicate_id errors); once
  // the kernel's buffers are full they pile up in the server until the hard limit drops the client.
  const session = [...s.endpoint.sessions.values()][0]!;
  let maxBuffered = 0;
  const sampler = setInterval(() => (maxBuffered = Math.max(maxBuffered, session.buffered)), 1);
  const duplicate = JSON.stringify({ type: "generate", id, request: { inputs: "x" } });
  for (let i = 0; i < 40_000 && c.ws.readyState === c.ws.OPEN && s.endpoint.sessions.size > 0; i++) {
    c.ws.send(duplicate);
    if (i % 200 === 0) await sleep(1);
  }
  for (let i = 0; i < 500 && s.endpoint.sessions.size > 0; i++) await sleep(10);
  clearInterval(sampler);
  t.equal(s.endpoint.sessions.size, 0, "the server dropped the client");
  t.ok(maxBuffered < maxBufferedBytes + 1024, `server buffer peaked at ${maxBuffered} bytes`);
  t.ok(s.backend.signals[0]!.aborted, "its generation was cancelled");
  c.ws.terminate();
});

t.test("pings keep an answering client; a silent one is terminated and its generations cancelled", async (t) => {
  const s = await startWsServer({ hangAfter: 1 }, { pingIntervalMs: 50 });
  t.teardown(() => s.close());
  const good = await TestClient.open(s.wsUrl);
  t.teardown(() => good.close());
  const silent = await TestClient.open(s.wsUrl, { autoPong: false });
  let pings = 0;
  good.ws.on("ping", () => pings++);
  silent.generate("a", "x", { max_new_tokens: 5 });
  await silent.waitFor((m) => m.type === "event");
  const started = Date.now();
  await Promise.race([once(silent.ws, "close"), sleep(5000)]);
  const closedAfter = Date.now() - started;
  t.ok(closedAfter < 1000, `silent client dropped after ${closedAfter} ms`);
  for (let i = 0; i < 50 && !s.backend.signals[0]!.aborted; i++) await sleep(10);
  t.ok(s.backend.signals[0]!.aborted, "its generation was cancelled");
  t.equal(s.ctx.permits.used, 0);
  await sleep(300);
  t.ok(pings >= 4, `the answering client got ${pings} pings`);
  t.equal(good.ws.readyState, good.ws.OPEN, "and is still open");
  good.generate("b", "x", { max_new_tokens: 1 });
  t.equal((await good.terminal("b")).type, "end");
});
