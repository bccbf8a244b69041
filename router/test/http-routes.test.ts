// best_of, POST /tokenize, POST /invocations, POST / headers, /docs and the
// JSON 404, against the fake backend.
import t from "tap";
import type { InferEvent, ValidRequest } from "../infer/types.js";
import { FakeBackend, startFakeServer, type FakeServer } from "./fake-backend.js";

const json = { "content-type": "application/json" };

async function post(s: FakeServer, path: string, body: unknown) {
  const res = await fetch(s.url + path, { method: "POST", headers: json, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** Token logprobs depend on the seed, so best_of has a winner to pick. */
class SeededBackend extends FakeBackend {
  async *generate(request: ValidRequest, signal: AbortSignal): AsyncGenerator<InferEvent> {
    const logprob = -(request.parameters.seed % 1000) / 1000;
    for await (const event of super.generate(request, signal)) {
      if (event.type === "token" || event.type === "end") event.token = { ...event.token, logprob };
      yield event;
    }
  }
}

t.test("best_of: independent seeded runs, the best mean logprob wins, the others in best_of_sequences", async (t) => {
  const backend = new SeededBackend();
  const s = await startFakeServer({}, { backend });
  t.teardown(() => s.close());
  const res = await post(s, "/generate", { inputs: "Once upon a time", parameters: { best_of: 2, do_sample: true, max_new_tokens: 2, details: true, return_full_text: true } });
  t.equal(res.status, 200);
  const body = JSON.parse(res.text);
  t.equal(backend.requests.length, 2, "two generations");
  const [a, b] = backend.requests.map((r) => r.parameters.seed);
  t.not(a, b, "different random seeds");
  t.equal(body.generated_text, "Once upon a time t0 t1");
  t.equal(body.details.best_of_sequences.length, 1);
  const other = body.details.best_of_sequences[0];
  t.same(Object.keys(other), ["generated_text", "finish_reason", "generated_tokens", "seed", "prefill", "tokens"], "serde order, top_tokens omitted");
  t.equal(other.generated_text, "Once upon a time t0 t1", "return_full_text applies to every sequence");
  t.ok(body.details.seed % 1000 <= other.seed % 1000, "the winner is the run whose seed gave the higher logprobs");
  const mean = (seq: { tokens: { logprob: number }[] }) => seq.tokens.reduce((x, tok) => x + tok.logprob, 0) / seq.tokens.length;
  t.ok(mean(body.details) >= mean(other), "the winner has the higher mean logprob");
  t.same([body.details.seed, other.seed].sort(), [a, b].sort());
  t.same(Object.keys(body.details), ["finish_reason", "generated_tokens", "seed", "prefill", "tokens", "best_of_sequences"]);
  t.equal(res.headers.get("x-generated-tokens"), "2");

  const plain = await post(s, "/generate", { inputs: "x", parameters: { best_of: 2, do_sample: true, max_new_tokens: 1 } });
  t.same(Object.keys(JSON.parse(plain.text)), ["generated_text"], "no details unless asked");

  const stream = await post(s, "/generate_stream", { inputs: "x", parameters: { best_of: 2, do_sample: true } });
  t.equal(stream.status, 200);
  t.equal(stream.text, 'data:{"error":"Input validation error: `best_of` != 1 is not supported when streaming tokens","error_type":"validation"}\n\n');
  const zero = await post(s, "/generate", { inputs: "x", parameters: { best_of: 0, max_new_tokens: 1 } });
  t.equal(zero.status, 200, "best_of 0 is 1 on /generate (TGI)");
});

t.test("best_of: one failing run fails the request; each run takes a permit", async (t) => {
  const s = await startFakeServer({}, { permits: new (await import("../http/permits.js")).Permits(1) });
  t.teardown(() => s.close());
  const res = await post(s, "/generate", { inputs: "x", parameters: { best_of: 2, do_sample: true, max_new_tokens: 1 } });
  t.equal(res.status, 429);
  t.equal(res.text, '{"error":"Model is overloaded","error_type":"overloaded"}');
  t.equal(s.ctx.permits.used, 0, "permits released");
});

t.test("POST / answers with /generate's headers; the stream with TGI's stream headers", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const res = await post(s, "/", { inputs: "Once upon a time", parameters: { max_new_tokens: 2 } });
  t.equal(res.status, 200);
  for (const name of ["x-compute-type", "x-compute-time", "x-compute-characters", "x-total-time", "x-validation-time", "x-queue-time", "x-inference-time", "x-time-per-token", "x-prompt-tokens", "x-generated-tokens"]) {
    t.ok(res.headers.get(name) !== null, name);
  }
  t.equal(res.headers.get("x-prompt-tokens"), "5");
  t.equal(res.headers.get("x-compute-characters"), "16");
  const stream = await post(s, "/", { inputs: "Once upon a time", stream: true, parameters: { max_new_tokens: 1 } });
  t.equal(stream.headers.get("content-type"), "text/event-stream");
  t.equal(stream.headers.get("cache-control"), "no-cache");
  t.equal(stream.headers.get("x-accel-buffering"), "no");
  t.equal(stream.headers.get("x-compute-type"), "cpu");
  t.equal(stream.headers.get("x-compute-characters"), "16");
  t.equal(stream.headers.get("x-total-time"), null, "timing headers are not on streams (TGI)");
});

t.test("POST /tokenize: ids, text and byte offsets", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  let res = await post(s, "/tokenize", { inputs: "Once upon a time" });
  t.equal(res.status, 200);
  t.equal(res.headers.get("content-type"), "application/json");
  t.equal(
    res.text,
    '[{"id":1,"text":"","start":0,"stop":0},{"id":403,"text":"Once","start":0,"stop":4},{"id":407,"text":" upon","start":4,"stop":9},{"id":261,"text":" a","start":9,"stop":11},{"id":378,"text":" time","start":11,"stop":16}]',
  );
  res = await post(s, "/tokenize", { inputs: "Héllo wörld", parameters: { truncate: 3 } });
  const tokens = JSON.parse(res.text) as { text: string; start: number; stop: number }[];
  t.equal(tokens.length, 3, "truncate keeps the last tokens");
  const bytes = Buffer.from("Héllo wörld");
  for (const tok of tokens) t.equal(bytes.subarray(tok.start, tok.stop).toString(), tok.text, "offsets are UTF-8 bytes");
  t.equal(tokens.at(-1)!.stop, bytes.length);
  res = await post(s, "/tokenize", { inputs: "ab 😀" });
  const emoji = (JSON.parse(res.text) as { text: string; start: number; stop: number }[]).filter((tok) => tok.text === "😀");
  t.equal(emoji.length, 4, "the four byte-fallback tokens of one character");
  t.same(emoji.map((tok) => [tok.start, tok.stop]), Array(4).fill([3, 7]), "each with the character's byte span");
  res = await post(s, "/tokenize", { inputs: 3 });
  t.equal(res.status, 422);
  t.equal(res.text, '{"error":"Failed to deserialize the JSON body into the target type: inputs: invalid type: integer `3`, expected a string","error_type":"validation"}');
  res = await post(s, "/tokenize", { inputs: "a".repeat(3201) });
  t.equal(res.text, '{"error":"Input validation error: `inputs` must have at most 3200 characters. Given: 3201","error_type":"validation"}');
});

t.test("POST /invocations dispatches on the body's keys", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  let res = await post(s, "/invocations", { inputs: "Once upon a time", parameters: { max_new_tokens: 1 } });
  t.equal(res.status, 200);
  t.equal(res.text, '[{"generated_text":"Once upon a time t0"}]', "inputs: POST / (array, full text)");
  res = await post(s, "/invocations", { inputs: "Once", stream: true, parameters: { max_new_tokens: 1 } });
  t.match(res.text, /^data:\{"index":1,/);
  res = await post(s, "/invocations", { nothing: 1 });
  t.equal(res.status, 422);
  t.equal(
    res.text,
    '{"error":"Failed to deserialize the JSON body into the target type: data did not match any variant of untagged enum SagemakerRequest (expected `inputs`, `messages` or `prompt`)","error_type":"validation"}',
  );
  res = await post(s, "/invocations", { messages: [{ role: "user", content: "hi" }], max_tokens: 1 });
  t.not(res.status, 404, "messages: chat completions");
  res = await post(s, "/invocations", { prompt: "hi", max_tokens: 1 });
  t.not(res.status, 404, "prompt: completions");
});

t.test("GET /docs serves Swagger UI from swagger-ui-dist; unknown routes are JSON 404", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const page = await fetch(`${s.url}/docs`);
  t.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await page.text();
  t.match(html, /\/api-doc\/openapi\.json/);
  t.notMatch(html, /https?:\/\//, "no CDN");
  for (const asset of ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"]) {
    const res = await fetch(`${s.url}/docs/${asset}`);
    t.equal(res.status, 200, asset);
    t.ok((await res.arrayBuffer()).byteLength > 1000);
  }
  const missing = await fetch(`${s.url}/docs/../package.json`);
  t.equal(missing.status, 404);
  const res = await fetch(`${s.url}/docs/index.html`);
  t.equal(res.status, 404);
  t.equal(res.headers.get("content-type"), "application/json");
  t.equal(await res.text(), '{"error":"Not found: GET /docs/index.html","error_type":"not_found"}');
});
