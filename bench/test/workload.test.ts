// The load generator's pieces without a server: length distributions, exact
// prompt lengths, the metric definitions, and each API flavour's stream parsing
// against a canned SSE server.
import http from "node:http";
import type { AddressInfo } from "node:net";
import t from "tap";
import { parseLengthSpec, sampleLengths, SHAREGPT_LIKE } from "../lengths.js";
import { distribution, percentile, summarize } from "../metrics.js";
import { PromptBuilder } from "../prompts.js";
import { makeRng } from "../random.js";
import { RecordBuilder, type RequestRecord } from "../record.js";
import { compareTable, type ResultFile } from "../report.js";
import { STORIES } from "../router-process.js";
import { httpTarget, streamRequest } from "../sse-client.js";
import type { ApiFlavour } from "../flavours.js";

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

t.test("ShareGPT-like lengths: target means, long tail, clipped, seeded", async (t) => {
  const a = sampleLengths(SHAREGPT_LIKE, 500, 0);
  t.ok(Math.abs(mean(a.map((r) => r.input)) - 202) < 3, `input mean ${mean(a.map((r) => r.input))}`);
  t.ok(Math.abs(mean(a.map((r) => r.output)) - 179) < 3, `output mean ${mean(a.map((r) => r.output))}`);
  const inputs = a.map((r) => r.input).sort((x, y) => x - y);
  t.ok(percentile(inputs, 50) < 160, "median well below the mean (long tail)");
  t.ok(inputs[0]! >= 4 && inputs.at(-1)! <= 1024, "clipped to 4..1024");
  t.same(sampleLengths(SHAREGPT_LIKE, 500, 0), a, "same seed, same lengths");
  t.notSame(sampleLengths(SHAREGPT_LIKE, 500, 1), a, "another seed, other lengths");
});

t.test("fixed and uniform specs", async (t) => {
  t.same(parseLengthSpec("128", "x"), { kind: "fixed", n: 128 });
  t.same(parseLengthSpec("10:20", "x"), { kind: "uniform", lo: 10, hi: 20 });
  t.throws(() => parseLengthSpec("20:10", "--input-len"), /range/);
  t.throws(() => parseLengthSpec("abc", "--input-len"), /--input-len/);
  const u = sampleLengths({ input: { kind: "uniform", lo: 10, hi: 20 }, output: { kind: "fixed", n: 7 } }, 200, 3);
  t.ok(u.every((r) => r.input >= 10 && r.input <= 20 && r.output === 7));
  t.ok(new Set(u.map((r) => r.input)).size === 11, "every value of the range drawn");
});

t.test("prompts encode to exactly the asked length", async (t) => {
  const builder = await PromptBuilder.load(STORIES);
  const rng = makeRng(5);
  for (const n of [2, 3, 17, 128, 700]) {
    const p = await builder.build(n, rng);
    t.equal(p.ids.length, n, `length ${n}`);
  }
});

const record = (sent: number, tokens: number[], done: number, error?: string): RequestRecord => ({
  index: 0, inputTokens: 10, maxTokens: tokens.length, sent, tokenTimes: tokens, done, outputTokens: tokens.length, ...(error ? { error } : {}),
});

t.test("metric definitions", async (t) => {
  t.equal(percentile([1, 2, 3, 4], 50), 2.5, "linear interpolation, as numpy");
  t.ok(Math.abs(percentile([1, 2, 3, 4], 99) - 3.97) < 1e-9, "p99 interpolates");
  const d = distribution([5, 1, 3]);
  t.same([d.mean, d.p50, d.min, d.max, d.count], [3, 3, 1, 5, 3]);
  const s = summarize([record(0, [10, 12, 14, 16], 16), record(5, [25, 35], 35), record(6, [], 7, "boom")]);
  t.equal(s.completed, 2);
  t.equal(s.failed, 1);
  t.same(s.errors.first, ["boom"]);
  t.same([s.ttftMs.min, s.ttftMs.max], [10, 20], "TTFT = first token − sent");
  t.same([s.tpotMs.min, s.tpotMs.max], [2, 10], "TPOT = (e2e − TTFT) / (out − 1)");
  t.equal(s.itlMs.count, 4, "ITL: every gap");
  t.equal(s.durationS, 0.035, "first send to last end");
  t.equal(s.outputTokens, 6);
  t.equal(s.peakConcurrency, 3);
});

/** Serves canned SSE bodies by path. */
async function cannedServer(bodies: Record<string, string>): Promise<{ url: string; close: () => void }> {
  const server = http.createServer((req, res) => {
    const body = bodies[req.url ?? ""];
    if (body === undefined) {
      res.writeHead(404).end('{"error":"nope"}');
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    // Split mid-event to exercise reassembly.
    const cut = Math.floor(body.length / 2);
    res.write(body.slice(0, cut));
    setTimeout(() => res.end(body.slice(cut)), 5);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}

t.test("stream parsing of every HTTP flavour", async (t) => {
  const tgiEvent = (i: number, final: boolean) =>
    `data:{"index":${i},"token":{"id":5,"text":" a","logprob":-1,"special":false},"generated_text":${final ? '" a a a"' : "null"},"details":${final ? '{"finish_reason":"length","generated_tokens":3,"seed":null,"input_length":4}' : "null"}}\n\n`;
  const server = await cannedServer({
    "/tgi": tgiEvent(1, false) + ":\n\n" + tgiEvent(2, false) + tgiEvent(3, true),
    "/tgi-error": tgiEvent(1, false) + 'data:{"error":"Request failed during generation: boom","error_type":"generation"}\n\n',
    "/openai": ['{"choices":[{"text":" a","index":0}]}', '{"choices":[{"text":" b","index":0}]}', '{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}', "[DONE]"].map((d) => `data: ${d}\r\n\r\n`).join(""),
    "/chat": ['{"choices":[{"delta":{"role":"assistant","content":""}}]}', '{"choices":[{"delta":{"content":" a"}}]}', '{"choices":[{"delta":{"content":" b"}}]}', '{"choices":[{"delta":{"content":" c"},"finish_reason":"length"}]}', "[DONE]"].map((d) => `data: ${d}\n\n`).join(""),
  });
  t.teardown(server.close);
  const target = httpTarget(server.url);
  t.teardown(() => target.agent.destroy());
  const go = (flavour: ApiFlavour, path: string) => streamRequest(target, flavour, path, {}, new RecordBuilder(0, 4, 3, performance.now()));
  let r = await go("tgi", "/tgi");
  t.same([r.tokenTimes.length, r.outputTokens, r.error], [3, 3, undefined], "tgi: 3 tokens, keep-alive comment skipped");
  r = await go("tgi", "/tgi-error");
  t.equal(r.error, "Request failed during generation: boom", "tgi: error event");
  r = await go("openai", "/openai");
  t.same([r.tokenTimes.length, r.outputTokens, r.error], [2, 2, undefined], "openai: usage believed, [DONE] ends");
  r = await go("chat", "/chat");
  t.same([r.tokenTimes.length, r.outputTokens], [3, 3], "chat: the role-only chunk is no token");
  r = await go("tgi", "/missing");
  t.match(r.error, /^HTTP 404/, "HTTP errors recorded");
});

t.test("compare prints ratios side by side", async (t) => {
  const summary = summarize([record(0, [10, 20, 30], 30)]);
  const file = (label: string, s = summary): ResultFile => ({ tool: "text-gen-bench", format: 1, label, date: "", command: "", host: {} as ResultFile["host"], config: { api: "tgi" }, summary: s });
  const faster = summarize([record(0, [5, 10, 15], 15)]);
  const table = compareTable(file("a"), file("b", faster), "A", "B");
  t.match(table, /output tok\/s\s+[\d.]+\s+[\d.]+\s+2\.000\s+B/, "B doubles throughput and wins");
  t.match(table, /TTFT p50 ms\s+10\.00\s+5\.00\s+0\.500\s+B/, "lower latency wins");
});
