// A chat front end through the real launcher: 50 WebSocket clients stream
// greedy generations at once on /v1/ws, a third of them cancel midway. Every
// other one gets exactly /generate's text, the cancelled ones get nothing after
// `cancelled`, and afterwards every KV block is free again.
import { once } from "node:events";
import t from "tap";
import WebSocket from "ws";
import { generate, info } from "./client.js";
import { launch, sleep, STORIES } from "./harness.js";

interface Message {
  type: string;
  id: string | null;
  event?: { index: number; token: { text: string; special: boolean }; generated_text: string | null };
  error?: { error: string; error_type: string };
}

const CLIENTS = 50;
const CANCEL_AFTER = 4; // events
const PARAMS = { max_new_tokens: 40, do_sample: false };
const PROMPTS = ["Once upon a time", "Lily and Ben", "The dog was", "One day, a big", "Sam wanted to", "The sun", "Tom had a red", "Mia saw a bird"];

const server = await launch(t, { args: ["--model-id", STORIES] });
const wsUrl = `ws://127.0.0.1:${server.port}/v1/ws`;

/** One client: opens a socket, runs one generation, cancels it after CANCEL_AFTER events when asked. */
async function chatClient(prompt: string, cancel: boolean): Promise<Message[]> {
  const ws = new WebSocket(wsUrl);
  await once(ws, "open");
  const messages: Message[] = [];
  const done = new Promise<void>((resolve, reject) => {
    ws.on("message", (data) => {
      const m = JSON.parse(data.toString()) as Message;
      messages.push(m);
      if (cancel && m.type === "event" && m.event!.index === CANCEL_AFTER) ws.send(JSON.stringify({ type: "cancel", id: "reply" }));
      if (m.type !== "event") resolve();
    });
    ws.on("close", () => reject(new Error(`socket closed early after ${messages.length} messages`)));
    ws.on("error", reject);
  });
  ws.send(JSON.stringify({ type: "generate", id: "reply", request: { inputs: prompt, parameters: PARAMS } }));
  await done;
  // Anything late for a cancelled generation would arrive now.
  if (cancel) await sleep(200);
  ws.close();
  await once(ws, "close");
  return messages;
}

t.test(`${CLIENTS} WebSocket clients at once, a third cancelling midway`, async (t) => {
  const expected = new Map<string, string>();
  for (const p of PROMPTS) expected.set(p, (await generate(server.url, p, PARAMS)).generated_text);
  const before = await info(server.url);

  const started = Date.now();
  const runs = Array.from({ length: CLIENTS }, (_, i) => {
    const prompt = PROMPTS[i % PROMPTS.length]!;
    const cancel = i % 3 === 0;
    return chatClient(prompt, cancel).then((messages) => ({ prompt, cancel, messages }));
  });
  const results = await Promise.all(runs);
  t.comment(`${CLIENTS} clients done in ${Date.now() - started} ms`);

  let completed = 0;
  let cancelled = 0;
  for (const [i, { prompt, cancel, messages }] of results.entries()) {
    const events = messages.filter((m) => m.type === "event").map((m) => m.event!);
    const last = messages.at(-1)!;
    if (cancel) {
      t.same(last, { type: "cancelled", id: "reply" }, `client ${i}: cancelled is its last message`);
      t.ok(events.length >= CANCEL_AFTER && events.length < PARAMS.max_new_tokens, `client ${i}: stopped midway (${events.length} events)`);
      cancelled++;
      continue;
    }
    t.same(last, { type: "end", id: "reply" }, `client ${i}: ends with end`);
    const final = events.at(-1)!;
    t.equal(final.generated_text, expected.get(prompt), `client ${i}: the text of /generate for ${JSON.stringify(prompt)}`);
    const streamed = events.filter((e) => !e.token.special).map((e) => e.token.text).join("");
    t.equal(streamed, expected.get(prompt), `client ${i}: its token texts add up to it`);
    t.same(
      events.map((e) => e.index),
      events.map((_, k) => k + 1),
      `client ${i}: every event, in order`,
    );
    completed++;
  }
  t.equal(cancelled, Math.ceil(CLIENTS / 3));
  t.equal(completed, CLIENTS - cancelled);

  let after = await info(server.url);
  for (let i = 0; i < 100 && after.kv_cache!.free_blocks !== after.kv_cache!.total_blocks; i++) {
    await sleep(100);
    after = await info(server.url);
  }
  t.equal(after.kv_cache!.free_blocks, after.kv_cache!.total_blocks, "every KV block free again");
  t.equal(after.kv_cache!.total_blocks, before.kv_cache!.total_blocks);
});

t.test("SIGTERM with sockets open: their generations end with a shutdown error and the launcher exits 0", async (t) => {
  const ws = new WebSocket(wsUrl);
  await once(ws, "open");
  const messages: Message[] = [];
  let first!: () => void;
  const started = new Promise<void>((resolve) => (first = resolve));
  ws.on("message", (data) => {
    messages.push(JSON.parse(data.toString()) as Message);
    first();
  });
  const closed = once(ws, "close");
  ws.send(JSON.stringify({ type: "generate", id: "long", request: { inputs: "Once upon a time", parameters: { max_new_tokens: 200, do_sample: false } } }));
  await started;
  const exit = await server.stop("SIGTERM");
  const [code] = (await closed) as [number];
  t.same(exit, { code: 0, signal: null }, "the launcher exited cleanly");
  const last = messages.at(-1)!;
  // The generation may have finished just before the signal on a fast machine.
  if (last.type === "end") t.comment("the generation ended before the shutdown");
  else t.match(last, { type: "error", id: "long", error: { error_type: "shutdown" } }, "a shutdown error for the running generation");
  t.equal(code, 1001, "closed as going away");
});
