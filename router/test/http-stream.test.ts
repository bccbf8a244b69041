// POST /generate_stream (and POST / with "stream": true) against the fake
// backend: exact SSE bytes, errors as events, keep-alive, disconnects.
import t from "tap";
import { InferError } from "../infer/types.js";
import { startFakeServer, type FakeServer } from "./fake-backend.js";

const json = { "content-type": "application/json" };

async function stream(s: FakeServer, body: unknown, path = "/generate_stream") {
  const res = await fetch(s.url + path, { method: "POST", headers: json, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const tok = (i: number) => `{"id":${100 + i},"text":" t${i}","logprob":-0.5,"special":false}`;
const event = (i: number) => `data:{"index":${i + 1},"token":${tok(i)},"generated_text":null,"details":null}\n\n`;

t.test("exact SSE bytes and headers", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  let res = await stream(s, { inputs: "Once upon a time", parameters: { max_new_tokens: 3 } });
  t.equal(res.status, 200);
  t.equal(res.text, event(0) + event(1) + `data:{"index":3,"token":${tok(2)},"generated_text":" t0 t1 t2","details":null}\n\n`);
  t.equal(res.headers.get("content-type"), "text/event-stream");
  t.equal(res.headers.get("cache-control"), "no-cache");
  t.equal(res.headers.get("x-accel-buffering"), "no");
  t.equal(res.headers.get("x-compute-type"), "cpu");
  t.equal(res.headers.get("x-compute-characters"), "16");

  res = await stream(s, { inputs: "Once upon a time", parameters: { max_new_tokens: 2, details: true, return_full_text: true, seed: 9, do_sample: true } });
  t.equal(
    res.text,
    event(0) +
      `data:{"index":2,"token":${tok(1)},"generated_text":"Once upon a time t0 t1","details":{"finish_reason":"length","generated_tokens":2,"seed":9,"input_length":5}}\n\n`,
  );

  res = await stream(s, { inputs: "Once upon a time", parameters: { max_new_tokens: 1, top_n_tokens: 1 } });
  t.equal(
    res.text,
    `data:{"index":1,"token":${tok(0)},"top_tokens":[{"id":200,"text":"k0","logprob":0,"special":false}],"generated_text":" t0","details":null}\n\n`,
    "top_tokens after token",
  );

  s.backend.options.eosAt = 1;
  res = await stream(s, { inputs: "hi", stream: true, parameters: { max_new_tokens: 4, details: true, return_full_text: false } }, "/");
  t.equal(
    res.text,
    event(0) +
      `data:{"index":2,"token":{"id":2,"text":"</s>","logprob":-0.25,"special":true},"generated_text":" t0","details":{"finish_reason":"eos_token","generated_tokens":2,"seed":null,"input_length":3}}\n\n`,
    "POST / with stream: true is the same stream",
  );
  s.backend.options.eosAt = undefined;
  res = await stream(s, { inputs: "hi", stream: true, parameters: { max_new_tokens: 1 } }, "/");
  t.equal(res.text, `data:{"index":1,"token":${tok(0)},"generated_text":"hi t0","details":null}\n\n`, "return_full_text defaults to true on POST /");
});

t.test("request errors are one error event in a 200 stream", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const cases: [object, string][] = [
    [{ best_of: 2, do_sample: true }, '{"error":"Input validation error: `best_of` != 1 is not supported when streaming tokens","error_type":"validation"}'],
    [{ best_of: 0 }, '{"error":"Input validation error: `best_of` != 1 is not supported when streaming tokens","error_type":"validation"}'],
    [{ decoder_input_details: true, temperature: 0 }, '{"error":"Input validation error: `decoder_input_details` == true is not supported when streaming tokens","error_type":"validation"}'],
    [{ temperature: 0 }, '{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}'],
  ];
  for (const [parameters, error] of cases) {
    const res = await stream(s, { inputs: "x", parameters });
    t.equal(res.status, 200);
    t.equal(res.text, `data:${error}\n\n`);
  }
  // Body decoding errors happen before the stream: real statuses.
  let res = await stream(s, { parameters: {} });
  t.equal(res.status, 422);
  t.equal(res.text, '{"error":"Failed to deserialize the JSON body into the target type: missing field `inputs`","error_type":"validation"}');
  const plain = await fetch(`${s.url}/generate_stream`, { method: "POST", body: "{}" });
  t.equal(plain.status, 415);
  await plain.text();

  s.backend.options.error = new InferError("generation", "Request failed during generation: Server error: boom");
  s.backend.options.failAfter = 2;
  res = await stream(s, { inputs: "x", parameters: { max_new_tokens: 5 } });
  t.equal(res.text, event(0) + event(1) + 'data:{"error":"Request failed during generation: Server error: boom","error_type":"generation"}\n\n');

  s.backend.generate = async function* () {
    yield { type: "token", token: { id: 100, text: " t0", logprob: -0.5, special: false }, topTokens: [] };
  };
  res = await stream(s, { inputs: "x", parameters: {} });
  t.equal(res.text, event(0) + 'data:{"error":"Incomplete generation stream","error_type":"incomplete_generation_stream"}\n\n');
});

t.test("overloaded is an event too", async (t) => {
  const { Permits } = await import("../http/permits.js");
  const s = await startFakeServer({}, { permits: new Permits(0) });
  t.teardown(() => s.close());
  const res = await stream(s, { inputs: "x" });
  t.equal(res.status, 200);
  t.equal(res.text, 'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n');
});

t.test("keep-alive comment while no event comes", async (t) => {
  const s = await startFakeServer({ delayMs: 120 }, { keepAliveMs: 40 });
  t.teardown(() => s.close());
  const res = await stream(s, { inputs: "x", parameters: { max_new_tokens: 2 } });
  t.match(res.text, /^:\n\n/);
  const events = res.text.split("\n\n").filter((e) => e.startsWith("data:"));
  t.equal(events.length, 2);
  t.ok(res.text.split("\n\n").every((e) => e === "" || e === ":" || e.startsWith("data:{")), "only comments and events");
});

t.test("client disconnect mid-stream aborts the backend signal and frees the permit", async (t) => {
  const s = await startFakeServer({ hangAfter: 2 });
  t.teardown(() => s.close());
  const client = new AbortController();
  const res = await fetch(`${s.url}/generate_stream`, { method: "POST", headers: json, body: '{"inputs":"x","parameters":{"max_new_tokens":10}}', signal: client.signal });
  const reader = res.body!.getReader();
  let text = "";
  while (text.split("\n\n").length < 3) text += new TextDecoder().decode((await reader.read()).value);
  t.equal(text, event(0) + event(1));
  t.notOk(s.backend.signals[0]!.aborted);
  client.abort();
  const reason = (await s.backend.aborted) as Error;
  t.equal(reason.message, "client disconnected");
  while (s.ctx.permits.used > 0) await new Promise((r) => setTimeout(r, 5));
  t.pass("permit released");
});

t.test("shutdown ends a stream with an error event", async (t) => {
  const s = await startFakeServer({ hangAfter: 1 });
  t.teardown(() => s.close());
  const pending = stream(s, { inputs: "x", parameters: { max_new_tokens: 5 } });
  while (s.backend.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 20));
  s.shutdown.abort();
  const res = await pending;
  t.equal(res.text, event(0) + 'data:{"error":"Server is shutting down","error_type":"shutdown"}\n\n');
  t.ok(s.backend.signals[0]!.aborted);
});
