// SSE bytes through the real launcher: TGI's routes write `data:{json}` (no
// space) and never `[DONE]`, errors included; the OpenAI routes write
// `data: {json}` (OpenAI's space) and end with `data: [DONE]`.
import t, { type Test } from "tap";
import { chatModelDir } from "./api-model.js";
import { launch } from "./harness.js";

const model = await chatModelDir(t);
const server = await launch(t, { args: ["--model-id", model] });

async function post(path: string, body: object): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(server.url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

/** The events of a body made only of `${prefix}…\n\n` blocks; fails on any other byte. */
function blocks(t: Test, text: string, prefix: string): string[] {
  t.ok(text.endsWith("\n\n"), "ends with a blank line");
  const parts = text.slice(0, -2).split("\n\n");
  for (const part of parts) {
    if (!part.startsWith(prefix) || part.includes("\n")) t.fail(`not a single ${JSON.stringify(prefix)} line: ${JSON.stringify(part)}`);
  }
  return parts.map((p) => p.slice(prefix.length));
}

const GREEDY = { max_new_tokens: 8, do_sample: false };

t.test("TGI streams: `data:` with no space, compact JSON, no [DONE]", async (t) => {
  for (const [path, body] of [
    ["/generate_stream", { inputs: "Once upon a time", parameters: GREEDY }],
    ["/", { inputs: "Once upon a time", parameters: GREEDY, stream: true }],
  ] as const) {
    const res = await post(path, body);
    t.equal(res.status, 200);
    t.equal(res.type, "text/event-stream");
    const data = blocks(t, res.text, "data:");
    t.equal(data.length, 8, `${path}: one event per token`);
    for (const d of data) {
      t.notOk(d.startsWith(" "), "no space after data:");
      t.equal(d, JSON.stringify(JSON.parse(d)), "compact JSON");
    }
    t.notOk(res.text.includes("[DONE]"), `${path}: no [DONE]`);
    const first = JSON.parse(data[0]!);
    t.same(Object.keys(first), ["index", "token", "generated_text", "details"], "StreamResponse keys in TGI's order");
  }
  const bad = await post("/generate_stream", { inputs: "x", parameters: { temperature: 0 } });
  t.equal(bad.status, 200, "a request error in a stream is still a 200");
  t.equal(bad.text, 'data:{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}\n\n');
});

t.test("OpenAI streams: `data: ` with a space, ending in data: [DONE]", async (t) => {
  for (const [path, body, object] of [
    ["/v1/chat/completions", { messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 8, temperature: 0, stream: true }, "chat.completion.chunk"],
    ["/v1/completions", { prompt: "Once upon a time", max_tokens: 8, temperature: 0, stream: true }, "text_completion"],
  ] as const) {
    const res = await post(path, body);
    t.equal(res.status, 200);
    t.equal(res.type, "text/event-stream");
    const data = blocks(t, res.text, "data: ");
    t.equal(data.at(-1), "[DONE]", `${path}: ends with data: [DONE]`);
    t.equal(data.filter((d) => d === "[DONE]").length, 1, "one [DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d) as { object: string });
    t.ok(chunks.length >= 1, `${path}: ${chunks.length} chunks`);
    t.ok(
      chunks.every((c) => c.object === object),
      `every chunk is a ${object}`,
    );
  }
});
