// /v1/ws against the fake backend: several generations on one socket, cancel,
// errors that stay with their generation, duplicate ids, malformed messages, a
// closing socket, the concurrency limit, shutdown and the upgrade checks.
import { once } from "node:events";
import t from "tap";
import WebSocket from "ws";
import { Permits } from "../http/permits.js";
import { InferError } from "../infer/types.js";
import { CHATML, chatTemplateOf } from "./openai-fixture.js";
import { serverAndClient, sseEvents, startWsServer, TestClient } from "./ws-harness.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const errorReply = (id: string, status: number, error: string, errorType: string) => ({ type: "error", id, status, error: { error, error_type: errorType } });

t.test("several generations at once on one socket, each as /generate_stream sends it", async (t) => {
  const { s, c } = await serverAndClient(t, { delayMs: 2 });
  const requests: [string, string, object][] = [
    ["a", "Once upon a time", { max_new_tokens: 6 }],
    ["b", "Lily", { max_new_tokens: 4, details: true, return_full_text: true, seed: 7, do_sample: true }],
    ["c", "The dog", { max_new_tokens: 5, top_n_tokens: 2 }],
  ];
  for (const [id, inputs, parameters] of requests) c.generate(id, inputs, parameters);
  const ends = await Promise.all(requests.map(([id]) => c.terminal(id)));
  t.same(
    ends.map((m) => m.type),
    ["end", "end", "end"],
  );
  for (const [id, inputs, parameters] of requests) {
    t.same(c.events(id), await sseEvents(s.httpUrl, inputs, parameters), `${id}: the same events as the SSE route`);
    t.equal(c.of(id).at(-1)!.type, "end", `${id}: end is its last message`);
  }
  t.same(c.messages[0], { type: "event", id: "a", event: c.events("a")[0] }, "message shape");
  const order = c.messages.map((m) => m.id).join("");
  t.notMatch(order, /^a+b+c+$/, `generations interleave (${order})`);
  t.equal(s.ctx.permits.used, 0, "every permit released");

  // An id is free again once its generation ended.
  c.generate("a", "again", { max_new_tokens: 1 });
  t.equal((await c.waitFor((m) => m.id === "a" && m.type === "end", 5000, c.messages.length)).type, "end");
});

/** The `data: ` chunks of an OpenAI SSE route, [DONE] dropped, per-request ids and times blanked. */
async function openaiChunks(url: string, path: string, body: object): Promise<unknown[]> {
  const res = await fetch(url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  const text = await res.text();
  if (!text.endsWith("data: [DONE]\n\n")) throw new Error(`${path} did not end with [DONE]: ${text}`);
  return text
    .split("\n\n")
    .filter((b) => b.startsWith("data: {"))
    .map((b) => blank(JSON.parse(b.slice(6))));
}

const blank = (chunk: unknown) => ({ ...(chunk as object), id: "-", created: 0 });

t.test("chat and completion requests stream the OpenAI routes' chunks", async (t) => {
  const { s, c } = await serverAndClient(t, { delayMs: 1 }, {}, { chatTemplate: chatTemplateOf(CHATML) });
  const chat = { messages: [{ role: "user", content: "Hi" }], max_tokens: 4, stream_options: { include_usage: true } };
  const completion = { prompt: "Once", max_tokens: 3 };
  c.send({ type: "chat", id: "chat", request: chat });
  c.send({ type: "completion", id: "cmpl", request: completion });
  c.send({ type: "chat", id: "bad", request: { messages: [], max_tokens: 0 } });
  t.equal((await c.terminal("chat")).type, "end");
  t.equal((await c.terminal("cmpl")).type, "end");
  t.same(c.events("chat").map(blank), await openaiChunks(s.httpUrl, "/v1/chat/completions", chat), "chat: the SSE route's chunks");
  t.same(c.events("cmpl").map(blank), await openaiChunks(s.httpUrl, "/v1/completions", completion), "completion: the SSE route's chunks");
  t.equal(c.events("chat")[0]!.object, "chat.completion.chunk");
  const bad = await c.terminal("bad");
  t.match(bad, { type: "error", id: "bad", status: 422, error: { error_type: String } });
});

t.test("cancel stops one generation at once; the others go on", async (t) => {
  const { s, c } = await serverAndClient(t, { delayMs: 10 });
  c.generate("long", "x", { max_new_tokens: 100 });
  c.generate("other", "y", { max_new_tokens: 20 });
  await c.waitFor((m) => m.id === "long" && m.type === "event" && (m.event!.index as number) >= 2);
  c.send({ type: "cancel", id: "long" });
  const cancelled = await c.terminal("long");
  t.same(cancelled, { type: "cancelled", id: "long" });
  const seen = c.of("long").length;
  t.ok((s.backend.signals[0]!.reason as Error).message.includes("cancelled"), "the backend's signal aborted");
  t.equal((await c.terminal("other")).type, "end", "the other generation completes");
  t.equal(c.events("other").length, 20);
  t.equal(c.of("long").length, seen, "nothing more for the cancelled id");
  t.ok(c.events("long").length < 20, "stopped long before its end");
  t.equal(s.ctx.permits.used, 0, "permits released");

  // Reusable right away; cancelling an id that is not running is an error for that id.
  c.generate("long", "x", { max_new_tokens: 2 });
  await c.waitFor((m) => m.id === "long" && m.type === "end", 5000, c.messages.indexOf(cancelled) + 1);
  c.send({ type: "cancel", id: "nope" });
  t.same(await c.terminal("nope"), errorReply("nope", 404, 'No generation with id "nope" is running', "unknown_id"));
});

t.test("errors stay with their generation and never close the socket", async (t) => {
  const { s, c } = await serverAndClient(t, { delayMs: 2 });
  c.generate("ok", "x", { max_new_tokens: 10 });
  c.generate("bad", "x", { temperature: 0 });
  c.generate("stream-rule", "x", { best_of: 2, do_sample: true });
  c.send({ type: "generate", id: "shape", request: { parameters: {} } });
  t.same(await c.terminal("bad"), errorReply("bad", 422, "Input validation error: `temperature` must be strictly positive", "validation"));
  t.same((await c.terminal("stream-rule")).error, {
    error: "Input validation error: `best_of` != 1 is not supported when streaming tokens",
    error_type: "validation",
  });
  t.same((await c.terminal("shape")).error, {
    error: "Failed to deserialize the JSON body into the target type: missing field `inputs`",
    error_type: "validation",
  });
  t.equal((await c.terminal("ok")).type, "end");
  t.equal(c.events("ok").length, 10);

  // A generation failing midway: its events so far, then the error as TGI words it.
  s.backend.options.error = new InferError("generation", "Request failed during generation: Server error: boom");
  s.backend.options.failAfter = 2;
  c.generate("fails", "x", { max_new_tokens: 5 });
  t.same(await c.terminal("fails"), errorReply("fails", 424, "Request failed during generation: Server error: boom", "generation"));
  t.equal(c.events("fails").length, 2);
  s.backend.options.error = undefined;
  c.generate("after", "x", { max_new_tokens: 3 });
  t.equal((await c.terminal("after")).type, "end", "the socket still serves");
});

t.test("a duplicate id is refused; the running generation is untouched", async (t) => {
  const { s, c } = await serverAndClient(t, { delayMs: 5 });
  c.generate("a", "x", { max_new_tokens: 10 });
  c.generate("a", "other", { max_new_tokens: 3 });
  t.same(await c.terminal("a"), errorReply("a", 409, 'A generation with id "a" is still running', "duplicate_id"));
  await c.waitFor((m) => m.id === "a" && m.type === "end");
  t.equal(c.events("a").length, 10, "the first generation ran to its end");
  t.equal(s.backend.requests.length, 1, "the duplicate never reached the backend");
});

t.test("malformed messages get an error with id null (or theirs) and the socket stays open", async (t) => {
  const { s, c } = await serverAndClient(t);
  const cases: [string | Buffer, object][] = [
    ["{not json", { id: null, status: 400, error_type: "invalid_json" }],
    ["[1,2]", { id: null, status: 400, error_type: "invalid_message" }],
    ['{"type":"generate","request":{"inputs":"x"}}', { id: null, status: 400, error_type: "invalid_message" }],
    ['{"type":"generate","id":7,"request":{"inputs":"x"}}', { id: null, status: 400, error_type: "invalid_message" }],
    ['{"type":"fly","id":"q"}', { id: "q", status: 400, error_type: "invalid_message" }],
    ['{"type":"generate","id":"r"}', { id: "r", status: 400, error_type: "invalid_message" }],
    [Buffer.from('{"type":"cancel","id":"b"}'), { id: null, status: 400, error_type: "invalid_message" }],
  ];
  for (const [data, expected] of cases) {
    const from = c.messages.length;
    c.ws.send(data);
    const m = await c.waitFor(() => true, 5000, from);
    t.match({ ...m, error_type: m.error?.error_type }, { type: "error", ...expected }, `reply to ${String(data)}`);
  }
  t.match(c.messages[0]!.error!.error, /^Failed to parse the message as JSON: /);
  c.generate("fine", "x", { max_new_tokens: 2 });
  t.equal((await c.terminal("fine")).type, "end", "still serving");
});

t.test("closing the socket cancels all its generations", async (t) => {
  const s = await startWsServer({ hangAfter: 2 });
  t.teardown(() => s.close());
  const c = await TestClient.open(s.wsUrl);
  for (const id of ["a", "b", "c"]) c.generate(id, "x", { max_new_tokens: 10 });
  await Promise.all(["a", "b", "c"].map((id) => c.waitFor((m) => m.id === id && m.event?.index === 2)));
  t.equal(s.endpoint.sessions.values().next().value!.running, 3);
  await c.close();
  for (let i = 0; i < 100 && s.backend.signals.some((sig) => !sig.aborted); i++) await sleep(10);
  t.ok(
    s.backend.signals.every((sig) => sig.aborted),
    "every backend signal aborted",
  );
  t.equal(s.ctx.permits.used, 0, "permits released");
  t.equal(s.endpoint.sessions.size, 0, "session gone");
});

t.test("--max-concurrent-requests applies per generation", async (t) => {
  const { s, c } = await serverAndClient(t, { hangAfter: 1 }, {}, { permits: new Permits(2) });
  c.generate("a", "x", { max_new_tokens: 5 });
  c.generate("b", "x", { max_new_tokens: 5 });
  c.generate("c", "x", { max_new_tokens: 5 });
  t.same(await c.terminal("c"), errorReply("c", 429, "Model is overloaded", "overloaded"));
  c.send({ type: "cancel", id: "a" });
  await c.terminal("a");
  c.generate("d", "x", { max_new_tokens: 5 });
  await c.waitFor((m) => m.id === "d" && m.type === "event");
  t.equal(s.ctx.permits.used, 2, "a freed permit is taken by the next generation");
});

t.test("shutdown ends generations with a 503 error, then closes the socket", async (t) => {
  const s = await startWsServer({ hangAfter: 1 });
  t.teardown(() => s.close());
  const c = await TestClient.open(s.wsUrl);
  c.generate("a", "x", { max_new_tokens: 5 });
  await c.waitFor((m) => m.id === "a" && m.type === "event");
  const closed = once(c.ws, "close");
  s.shutdown.abort();
  const [code] = (await closed) as [number];
  t.same(c.messages.at(-1), errorReply("a", 503, "Server is shutting down", "shutdown"));
  t.equal(code, 1001);
});

t.test("upgrades: only /v1/ws, only with the API key, only from allowed origins", async (t) => {
  const s = await startWsServer({}, {}, { apiKey: "k", corsAllowOrigin: ["https://chat.example"] });
  t.teardown(() => s.close());
  const status = (url: string, headers: Record<string, string> = {}) =>
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.on("unexpected-response", (_req, res) => {
        resolve(res.statusCode!);
        res.resume();
      });
      ws.on("open", () => {
        resolve(101);
        ws.close();
      });
      ws.on("error", (err) => (err.message.includes("Unexpected server response") ? undefined : reject(err)));
    });
  t.equal(await status(s.wsUrl), 401);
  t.equal(await status(s.wsUrl, { authorization: "Bearer nope" }), 401);
  t.equal(await status(s.wsUrl, { authorization: "Bearer k" }), 101);
  t.equal(await status(s.wsUrl.replace("/v1/ws", "/ws"), { authorization: "Bearer k" }), 404);
  t.equal(await status(s.wsUrl, { authorization: "Bearer k", origin: "https://chat.example" }), 101);
  t.equal(await status(s.wsUrl, { authorization: "Bearer k", origin: "https://evil.example" }), 403);
});
