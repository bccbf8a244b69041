// GET /metrics: TGI's metric names, labels and buckets, recorded by the HTTP
// layer (fake backend) and by the real batcher (fake shard).
import t from "tap";
import { DURATION_BUCKETS, Metrics } from "../metrics/metrics.js";
import { collect, startBackend, validRequest } from "./fake-shard.js";
import { startFakeServer } from "./fake-backend.js";

const json = { "content-type": "application/json" };
const post = (url: string, body: unknown) => fetch(url, { method: "POST", headers: json, body: JSON.stringify(body) }).then((r) => r.text());
const value = (text: string, series: string) => {
  const found = text.split("\n").find((l) => l.startsWith(`${series} `));
  return found === undefined ? undefined : Number(found.slice(series.length + 1));
};

t.test("duration buckets are TGI's: 0.0001 x 1.5^k, k = 1..35", async (t) => {
  t.equal(DURATION_BUCKETS.length, 35);
  t.equal(DURATION_BUCKETS[0], 0.00015000000000000001);
  t.ok(Math.abs(DURATION_BUCKETS[34]! - 145.6) < 0.1);
});

t.test("request metrics over HTTP", async (t) => {
  const s = await startFakeServer();
  t.teardown(() => s.close());
  await post(`${s.url}/generate`, { inputs: "Once upon a time", parameters: { max_new_tokens: 3 } });
  await post(`${s.url}/generate_stream`, { inputs: "Once upon a time", parameters: { max_new_tokens: 2 } });
  await post(`${s.url}/generate`, { inputs: "Once upon a time", parameters: { top_k: 0 } });

  const res = await fetch(`${s.url}/metrics`);
  t.equal(res.status, 200);
  t.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  t.equal(value(text, "tgi_request_count"), 3, "no _total suffix");
  t.equal(value(text, "tgi_request_success"), 2);
  t.equal(value(text, 'tgi_request_failure{err="validation"}'), 1);
  t.equal(value(text, "tgi_request_generated_tokens_sum"), 5);
  t.equal(value(text, "tgi_request_generated_tokens_count"), 2);
  t.equal(value(text, "tgi_request_input_length_sum"), 10, "5 prompt tokens each, recorded after validation");
  t.equal(value(text, "tgi_request_max_new_tokens_sum"), 5);
  t.equal(value(text, 'tgi_request_input_length_bucket{le="1"}'), 0, "input buckets: max_input_tokens/100 x (1..100)");
  t.equal(value(text, 'tgi_request_input_length_bucket{le="5"}'), 2);
  t.equal(value(text, 'tgi_request_generated_tokens_bucket{le="1.28"}'), 0, "generated buckets: max_total_tokens/100 x (1..100)");
  for (const name of ["duration", "validation_duration", "queue_duration", "inference_duration", "mean_time_per_token_duration"]) {
    t.equal(value(text, `tgi_request_${name}_count`), 2, name);
    t.ok(text.includes(`tgi_request_${name}_bucket{le="0.00015000000000000001"}`), `${name} first bucket`);
  }
  t.equal(value(text, "tgi_queue_size"), 0);
  t.equal(value(text, "text_gen_kv_blocks_free"), 90);
  t.equal(value(text, "text_gen_kv_blocks_total"), 100);
  t.ok(text.includes("# HELP tgi_request_count Total number of requests\n"), "described");
});

t.test("overloaded and dropped requests are failures with their label", async (t) => {
  const s = await startFakeServer({ hangAfter: 1 }, { permits: new (await import("../http/permits.js")).Permits(1) });
  t.teardown(() => s.close());
  const controller = new AbortController();
  const first = fetch(`${s.url}/generate`, { method: "POST", headers: json, body: JSON.stringify({ inputs: "x", parameters: { max_new_tokens: 5 } }), signal: controller.signal }).catch(() => null);
  while (s.ctx.permits.used === 0) await new Promise((r) => setTimeout(r, 2));
  const res = await fetch(`${s.url}/generate`, { method: "POST", headers: json, body: JSON.stringify({ inputs: "x" }) });
  t.equal(res.status, 429);
  t.equal(await res.text(), '{"error":"Model is overloaded","error_type":"overloaded"}');
  controller.abort();
  await first;
  await s.backend.aborted;
  await new Promise((r) => setTimeout(r, 20));
  const text = await (await fetch(`${s.url}/metrics`)).text();
  t.equal(value(text, 'tgi_request_failure{err="overloaded"}'), 1);
  t.equal(value(text, 'tgi_request_failure{err="dropped"}'), 1);
});

t.test("batch metrics from the batcher", async (t) => {
  let stats = () => ({ queued: 0, freeBlocks: 0, totalBlocks: 0 });
  const metrics = new Metrics(() => stats());
  const b = await startBackend({}, { observer: metrics });
  t.teardown(b.close);
  stats = () => b.backend.stats();
  metrics.setTokenLimits(100, 200);
  const noSignal = new AbortController().signal;
  await Promise.all([1, 2, 3].map(() => collect(b.backend.generate(validRequest([1, 10, 11], { maxNewTokens: 4 }), noSignal))));
  const { body } = await metrics.render();
  t.ok(value(body, 'tgi_batch_inference_count{method="prefill"}')! >= 1);
  t.ok(value(body, 'tgi_batch_inference_count{method="decode"}')! >= 3, "4 tokens: a prefill and 3 decodes at least");
  t.equal(value(body, 'tgi_batch_inference_success{method="decode"}'), value(body, 'tgi_batch_inference_count{method="decode"}'));
  for (const name of ["inference", "forward", "decode", "filter"]) {
    t.ok(value(body, `tgi_batch_${name}_duration_count{method="prefill"}`)! >= 1, name);
  }
  t.equal(value(body, "tgi_batch_next_size_sum"), 3, "three requests batched");
  t.equal(value(body, "tgi_batch_current_size"), 0, "nothing running at the end");
  t.equal(value(body, "tgi_batch_current_max_tokens"), 0);
  t.equal(value(body, "text_gen_kv_blocks_free"), value(body, "text_gen_kv_blocks_total"), "every block back");
  t.ok(value(body, "text_gen_kv_blocks_total")! > 0);
});

t.test("one registry per server", async (t) => {
  const a = new Metrics(() => ({ queued: 0, freeBlocks: 0, totalBlocks: 0 }));
  const b = new Metrics(() => ({ queued: 0, freeBlocks: 0, totalBlocks: 0 }));
  a.requestStarted();
  t.equal(value((await a.render()).body, "tgi_request_count"), 1);
  t.equal(value((await b.render()).body, "tgi_request_count"), 0);
});
