// POST /generate, POST /, GET /health, GET /info and the HTTP error statuses,
// against the fake backend.
import t from "tap";
import { request as httpRequest } from "node:http";
import { InferError } from "../infer/types.js";
import { startFakeServer, type FakeServer } from "./fake-backend.js";

const json = { "content-type": "application/json" };

async function post(s: FakeServer, path: string, body: unknown, headers: Record<string, string> = json) {
  const res = await fetch(s.url + path, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const tok = (i: number) => `{"id":${100 + i},"text":" t${i}","logprob":-0.5,"special":false}`;
const top2 = `[{"id":200,"text":"k0","logprob":0,"special":false},{"id":201,"text":"k1","logprob":-0.1,"special":false}]`;

t.test("/generate response shapes", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  const prompt = "Once upon a time";

  let res = await post(s, "/generate", { inputs: prompt, parameters: { max_new_tokens: 3 } });
  t.equal(res.status, 200);
  t.equal(res.text, `{"generated_text":" t0 t1 t2"}`, "details omitted, not null");
  t.equal(res.headers.get("content-type"), "application/json");

  res = await post(s, "/generate", { inputs: prompt, parameters: { max_new_tokens: 2, details: true, seed: 5, do_sample: true } });
  t.equal(res.text, `{"generated_text":" t0 t1","details":{"finish_reason":"length","generated_tokens":2,"seed":5,"prefill":[],"tokens":[${tok(0)},${tok(1)}]}}`);

  res = await post(s, "/generate", { inputs: prompt, parameters: { max_new_tokens: 2, decoder_input_details: true, top_n_tokens: 2 } });
  const prefill = `[{"id":1,"text":"p0","logprob":null},{"id":403,"text":"p1","logprob":-1},{"id":407,"text":"p2","logprob":-1},{"id":261,"text":"p3","logprob":-1},{"id":378,"text":"p4","logprob":-1}]`;
  t.equal(
    res.text,
    `{"generated_text":" t0 t1","details":{"finish_reason":"length","generated_tokens":2,"seed":null,"prefill":${prefill},"tokens":[${tok(0)},${tok(1)}],"top_tokens":[${top2},${top2}]}}`,
    "decoder_input_details implies details; NaN logprob is null; top_tokens last",
  );

  res = await post(s, "/generate", { inputs: prompt, parameters: { max_new_tokens: 2, return_full_text: true } });
  t.equal(res.text, `{"generated_text":"Once upon a time t0 t1"}`);

  s.backend.options.eosAt = 1;
  res = await post(s, "/generate", { inputs: prompt, parameters: { max_new_tokens: 5, details: true } });
  t.equal(
    res.text,
    `{"generated_text":" t0","details":{"finish_reason":"eos_token","generated_tokens":2,"seed":null,"prefill":[],"tokens":[${tok(0)},{"id":2,"text":"</s>","logprob":-0.25,"special":true}]}}`,
  );
  s.backend.options.eosAt = undefined;

  res = await post(s, "/", { inputs: prompt, parameters: { max_new_tokens: 1 } });
  t.equal(res.text, `[{"generated_text":"Once upon a time t0"}]`, "POST / answers an array, return_full_text defaults to true");
  res = await post(s, "/", { inputs: prompt, parameters: { max_new_tokens: 1, return_full_text: false } });
  t.equal(res.text, `[{"generated_text":" t0"}]`);
});

t.test("/generate headers", async (t) => {
  const s = await startFakeServer({ delayMs: 2 });
  t.teardown(() => s.close());
  const res = await post(s, "/generate", { inputs: "Once upon a time héé", parameters: { max_new_tokens: 4 } });
  t.equal(res.status, 200);
  const h = res.headers;
  t.equal(h.get("x-compute-type"), "cpu");
  t.equal(h.get("x-compute-characters"), "20");
  t.equal(h.get("x-prompt-tokens"), String(s.backend.requests[0]!.inputIds.length));
  t.equal(h.get("x-generated-tokens"), "4");
  t.match(h.get("x-compute-time"), /^\d+(\.\d+)?(e-\d+)?$/);
  t.ok(Number(h.get("x-compute-time")) < 5, "seconds");
  for (const name of ["x-total-time", "x-validation-time", "x-queue-time", "x-inference-time", "x-time-per-token"]) {
    t.match(h.get(name), /^\d+$/, name);
  }
  t.ok(Number(h.get("x-inference-time")) >= 6, "4 tokens at >= 2 ms");
});

t.test("HTTP error statuses", async (t) => {
  const s = await startFakeServer({}, { payloadLimit: 1000 });
  t.teardown(() => s.close());
  let res = await post(s, "/generate", { inputs: "x" }, { "content-type": "text/plain" });
  t.equal(res.status, 415);
  t.equal(res.text, '{"error":"Expected request with `Content-Type: application/json`","error_type":"unsupported_media_type"}');
  res = await post(s, "/generate", { inputs: "x" }, { "content-type": "application/json; charset=utf-8" });
  t.equal(res.status, 200, "charset parameter accepted");

  res = await post(s, "/generate", '{"inputs": "x",');
  t.equal(res.status, 400);
  t.match(JSON.parse(res.text), { error: /^Failed to parse the request body as JSON: /, error_type: "invalid_json" });

  res = await post(s, "/generate", { inputs: "x".repeat(2000) });
  t.equal(res.status, 413);
  t.equal(res.text, '{"error":"Failed to buffer the request body: length limit exceeded","error_type":"payload_too_large"}');
  t.equal(res.headers.get("connection"), "close");

  // Without content-length: reading stops at the limit.
  const chunked = await new Promise<[number | undefined, string]>((resolve, reject) => {
    const req = httpRequest(`${s.url}/generate`, { method: "POST", headers: json }, (r) => {
      let body = "";
      r.on("data", (d) => (body += d));
      r.on("end", () => resolve([r.statusCode, body]));
    });
    req.on("error", reject);
    let sent = 0;
    const more = () => {
      if (req.destroyed || sent++ > 40) return void req.end();
      req.write("x".repeat(100));
      setTimeout(more, 2);
    };
    more();
  });
  t.equal(chunked[0], 413);

  res = await post(s, "/generate", { inputs: "x", parameters: { top_k: 0 } });
  t.equal(res.status, 422);

  res = await post(s, "/nowhere", {});
  t.equal(res.status, 404);
  t.equal(res.text, '{"error":"Not found: POST /nowhere","error_type":"not_found"}');
  const get = await fetch(`${s.url}/generate`);
  t.equal(get.status, 405);
  t.equal(get.headers.get("allow"), "POST");
  t.equal(await get.text(), '{"error":"Method not allowed: /generate accepts POST","error_type":"method_not_allowed"}');
  t.equal((await fetch(`${s.url}/info`, { method: "POST" })).status, 405);
});

t.test("backend errors map to TGI statuses", async (t) => {
  const s = await startFakeServer({ error: new InferError("generation", "Request failed during generation: Server error: boom"), failAfter: 1 });
  t.teardown(() => s.close());
  let res = await post(s, "/generate", { inputs: "x", parameters: { max_new_tokens: 3 } });
  t.equal(res.status, 424);
  t.equal(res.text, '{"error":"Request failed during generation: Server error: boom","error_type":"generation"}');
  s.backend.options.error = new InferError("overloaded", "Model is overloaded");
  res = await post(s, "/generate", { inputs: "x", parameters: { max_new_tokens: 3 } });
  t.equal(res.status, 429);
  s.backend.options.error = undefined;
  s.backend.options.hangAfter = 0;
  // An iterator that ends without "end": TGI's IncompleteGeneration.
  s.backend.generate = async function* () {};
  res = await post(s, "/generate", { inputs: "x", parameters: { max_new_tokens: 3 } });
  t.equal(res.status, 500);
  t.equal(res.text, '{"error":"Incomplete generation","error_type":"incomplete_generation"}');
});

t.test("concurrency limit: 429 without waiting, permit back after the response", async (t) => {
  const s = await startFakeServer({ hangAfter: 0 }, { permits: new (await import("../http/permits.js")).Permits(1) });
  t.teardown(() => s.close());
  const first = new AbortController();
  const pending = fetch(`${s.url}/generate`, { method: "POST", headers: json, body: '{"inputs":"x"}', signal: first.signal }).catch(() => null);
  while (s.backend.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
  const res = await post(s, "/generate", { inputs: "y" });
  t.equal(res.status, 429);
  t.equal(res.text, '{"error":"Model is overloaded","error_type":"overloaded"}');
  first.abort();
  await pending;
  t.equal((await s.backend.aborted as Error).message, "client disconnected", "client gone aborts the backend signal");
  while (s.ctx.permits.used > 0) await new Promise((r) => setTimeout(r, 5));
  s.backend.options.hangAfter = undefined;
  t.equal((await post(s, "/generate", { inputs: "y", parameters: { max_new_tokens: 1 } })).status, 200);
});

t.test("shutdown ends an in-flight /generate with 503", async (t) => {
  const s = await startFakeServer({ hangAfter: 1 });
  t.teardown(() => s.close());
  const pending = post(s, "/generate", { inputs: "x", parameters: { max_new_tokens: 5 } });
  while (s.backend.requests.length === 0) await new Promise((r) => setTimeout(r, 5));
  s.shutdown.abort();
  const res = await pending;
  t.equal(res.status, 503);
  t.equal(res.text, '{"error":"Server is shutting down","error_type":"shutdown"}');
});

t.test("/health and /info", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  for (const path of ["/health", "/", "/ping"]) {
    const res = await fetch(s.url + path);
    t.equal(res.status, 200, path);
    t.equal(await res.text(), "");
  }
  s.backend.options.healthy = false;
  let res = await fetch(`${s.url}/health`);
  t.equal(res.status, 503);
  t.equal(await res.text(), '{"error":"unhealthy","error_type":"healthcheck"}');
  s.backend.health = () => Promise.reject(new Error("shard gone"));
  t.equal((await fetch(`${s.url}/health`)).status, 503);

  res = await fetch(`${s.url}/info`);
  t.equal(res.status, 200);
  t.equal(
    await res.text(),
    '{"model_id":"stories260k","model_sha":null,"model_pipeline_tag":null,"max_concurrent_requests":8,"max_best_of":2,' +
      '"max_stop_sequences":4,"max_input_tokens":100,"max_total_tokens":128,"validation_workers":2,"max_client_batch_size":4,' +
      '"router":"text-gen-router","version":"0.1.0","sha":null,"docker_label":null,"max_batch_total_tokens":4096,' +
      '"max_batch_prefill_tokens":512,"max_waiting_tokens":20,"waiting_served_ratio":1.2,"block_size":16,' +
      '"model_dtype":"float32","model_device_type":"cpu","kv_cache":{"free_blocks":90,"total_blocks":100}}',
  );
});
