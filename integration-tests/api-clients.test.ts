// Real, unmodified clients from npm against the real launcher (stories260k with
// a chat template, greedy): openai 6.x, @huggingface/inference 3.15 (TGI's
// POST /) and 4.x (the OpenAI routes), and ws on /v1/ws. Every text they get
// equals what /generate gives for the same prompt and token budget.
import { InferenceClient as InferenceClientV4 } from "@huggingface/inference";
import { InferenceClient as InferenceClientV3 } from "hf-inference-v3";
import { once } from "node:events";
import OpenAI from "openai";
import t from "tap";
import WebSocket from "ws";
import { chatModelDir } from "./api-model.js";
import { generate } from "./client.js";
import { launch } from "./harness.js";

const MAX = 24;
const PROMPTS = ["Once upon a time", "Lily and Ben went to the park"];

const model = await chatModelDir(t);
const server = await launch(t, { args: ["--model-id", model] });
const expected = new Map<string, string>();
for (const p of PROMPTS) expected.set(p, (await generate(server.url, p, { max_new_tokens: MAX, do_sample: false })).generated_text);
t.comment(`/generate: ${JSON.stringify([...expected])}`);

const chat = (prompt: string) => [{ role: "user" as const, content: prompt }];

t.test("openai 6.x: chat completions and completions, streaming and not", async (t) => {
  const openai = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "-" });
  for (const prompt of PROMPTS) {
    const want = expected.get(prompt)!;
    const completion = await openai.completions.create({ model: "stories260k", prompt, max_tokens: MAX, temperature: 0 });
    t.equal(completion.choices[0]!.text, want, `completions: ${prompt}`);

    let streamed = "";
    for await (const chunk of await openai.completions.create({ model: "stories260k", prompt, max_tokens: MAX, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.text ?? "";
    }
    t.equal(streamed, want, `completions, streamed: ${prompt}`);

    const answer = await openai.chat.completions.create({ model: "stories260k", messages: chat(prompt), max_tokens: MAX, temperature: 0 });
    t.equal(answer.choices[0]!.message.content, want, `chat: ${prompt}`);
    t.equal(answer.object, "chat.completion");

    streamed = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    const stream = await openai.chat.completions.create({
      model: "stories260k",
      messages: chat(prompt),
      max_tokens: MAX,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? "";
      usage = chunk.usage ?? usage;
    }
    t.equal(streamed, want, `chat, streamed: ${prompt}`);
    t.equal(usage?.completion_tokens, answer.usage?.completion_tokens, "the usage chunk counts the same tokens");
  }
});

t.test("@huggingface/inference 3.15: textGeneration and textGenerationStream on POST /", async (t) => {
  const hf = new InferenceClientV3().endpoint(server.url);
  for (const prompt of PROMPTS) {
    const want = expected.get(prompt)!;
    const parameters = { max_new_tokens: MAX, do_sample: false };
    const out = await hf.textGeneration({ inputs: prompt, parameters });
    // POST / defaults return_full_text to true, as TGI does.
    t.equal(out.generated_text, prompt + want, `textGeneration: ${prompt}`);

    let streamed = "";
    let final: string | null = null;
    for await (const event of hf.textGenerationStream({ inputs: prompt, parameters })) {
      if (!event.token.special) streamed += event.token.text;
      final = event.generated_text;
    }
    t.equal(streamed, want, `textGenerationStream tokens: ${prompt}`);
    t.equal(final, prompt + want, `textGenerationStream final text: ${prompt}`);
  }
});

t.test("@huggingface/inference 4.x: textGeneration (/v1/completions) and chatCompletion", async (t) => {
  const hf = new InferenceClientV4(undefined, { endpointUrl: server.url });
  for (const prompt of PROMPTS) {
    const want = expected.get(prompt)!;
    const out = await hf.textGeneration({ inputs: prompt, parameters: { max_new_tokens: MAX, temperature: 0 } });
    t.equal(out.generated_text, want, `textGeneration: ${prompt}`);

    const answer = await hf.chatCompletion({ messages: chat(prompt), max_tokens: MAX, temperature: 0 });
    t.equal(answer.choices[0]!.message.content, want, `chatCompletion: ${prompt}`);

    let streamed = "";
    for await (const chunk of hf.chatCompletionStream({ messages: chat(prompt), max_tokens: MAX, temperature: 0 })) {
      streamed += chunk.choices[0]?.delta.content ?? "";
    }
    t.equal(streamed, want, `chatCompletionStream: ${prompt}`);
  }
});

t.test("ws: generate, chat and completion on one socket", async (t) => {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/ws`);
  await once(ws, "open");
  t.teardown(() => ws.close());
  const messages: { type: string; id: string; event?: Record<string, any> }[] = [];
  const ended = new Set<string>();
  const allEnded = new Promise<void>((resolve) =>
    ws.on("message", (data) => {
      const m = JSON.parse(data.toString());
      messages.push(m);
      if (m.type !== "event") ended.add(m.id);
      if (ended.size === PROMPTS.length * 3) resolve();
    }),
  );
  PROMPTS.forEach((prompt, i) => {
    ws.send(JSON.stringify({ type: "generate", id: `g${i}`, request: { inputs: prompt, parameters: { max_new_tokens: MAX, do_sample: false } } }));
    ws.send(JSON.stringify({ type: "chat", id: `c${i}`, request: { messages: chat(prompt), max_tokens: MAX, temperature: 0 } }));
    ws.send(JSON.stringify({ type: "completion", id: `p${i}`, request: { prompt, max_tokens: MAX, temperature: 0 } }));
  });
  await allEnded;
  const events = (id: string) => messages.filter((m) => m.id === id && m.type === "event").map((m) => m.event!);
  PROMPTS.forEach((prompt, i) => {
    const want = expected.get(prompt)!;
    for (const id of [`g${i}`, `c${i}`, `p${i}`]) t.equal(messages.filter((m) => m.id === id).at(-1)!.type, "end", `${id} ended`);
    t.equal(events(`g${i}`).at(-1)!.generated_text, want, `generate: ${prompt}`);
    t.equal(events(`c${i}`).map((e) => e.choices[0]?.delta.content ?? "").join(""), want, `chat: ${prompt}`);
    t.equal(events(`p${i}`).map((e) => e.choices[0]?.text ?? "").join(""), want, `completion: ${prompt}`);
  });
});
