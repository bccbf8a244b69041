// The real, unmodified `openai` 6.x client (and @huggingface/inference 4.x,
// which calls the same routes) against a router over the fake backend.
import t from "tap";
import OpenAI from "openai";
import { InferenceClient } from "@huggingface/inference";
import { InferError } from "../infer/types.js";
import { startChatServer } from "./openai-fixture.js";

const messages = [
  { role: "system" as const, content: "Be brief." },
  { role: "user" as const, content: "Hi" },
];

t.test("chat completions, whole and streamed", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "-", maxRetries: 0 });

  const whole = await client.chat.completions.create({ model: "any", messages, max_tokens: 3, seed: 1, temperature: 0 });
  t.equal(whole.choices[0]!.message.content, " t0 t1 t2");
  t.equal(whole.choices[0]!.finish_reason, "length");
  t.equal(whole.model, "stories260k");
  t.equal(whole.usage!.completion_tokens, 3);

  let text = "";
  let usage: OpenAI.CompletionUsage | undefined;
  let finish: string | null = null;
  const stream = await client.chat.completions.create({ model: "any", messages, max_completion_tokens: 4, stream: true, stream_options: { include_usage: true } });
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  t.equal(text, " t0 t1 t2 t3");
  t.equal(finish, "length");
  t.equal(usage?.completion_tokens, 4);

  const two = await client.chat.completions.create({ model: "any", messages, max_tokens: 1, n: 2, logprobs: true, top_logprobs: 1 });
  t.same(two.choices.map((c) => c.index), [0, 1]);
  t.equal(two.choices[1]!.logprobs!.content![0]!.top_logprobs[0]!.token, "k0");

  // The stream helper accumulates chunks into a completion, as chat UIs use it.
  const runner = client.chat.completions.stream({ model: "any", messages, max_tokens: 2 });
  const final = await runner.finalChatCompletion();
  t.equal(final.choices[0]!.message.content, " t0 t1");
});

t.test("errors reach the client as API errors", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "-", maxRetries: 0 });
  await t.rejects(client.chat.completions.create({ model: "any", messages, temperature: -1 }), {
    status: 422,
    message: /`temperature` must be strictly positive/,
  });
  s.backend.options.error = new InferError("generation", "Request failed during generation: Server error: boom");
  s.backend.options.failAfter = 1;
  const stream = await client.chat.completions.create({ model: "any", messages, max_tokens: 3, stream: true });
  await t.rejects(
    (async () => {
      for await (const _ of stream);
    })(),
    { message: /boom/ },
    "an error event in the stream throws",
  );
});

t.test("completions and models", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "-", maxRetries: 0 });
  const whole = await client.completions.create({ model: "any", prompt: ["Once", "upon"], max_tokens: 2, echo: true });
  t.same(whole.choices.map((c) => c.text), ["Once t0 t1", "upon t0 t1"]);
  let text = "";
  for await (const chunk of await client.completions.create({ model: "any", prompt: "Once", max_tokens: 3, stream: true })) {
    text += chunk.choices[0]?.text ?? "";
  }
  t.equal(text, " t0 t1 t2");
  const models = await client.models.list();
  t.same(models.data.map((m) => m.id), ["stories260k"]);
});

t.test("@huggingface/inference 4.x: textGeneration and chatCompletion go to the OpenAI routes", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const client = new InferenceClient(undefined, { endpointUrl: s.url });
  const generated = await client.textGeneration({ inputs: "Once", parameters: { max_new_tokens: 2 } });
  t.equal(generated.generated_text, " t0 t1");
  const chat = await client.chatCompletion({ messages, max_tokens: 2 });
  t.equal(chat.choices[0]!.message.content, " t0 t1");
  let text = "";
  for await (const chunk of client.chatCompletionStream({ messages, max_tokens: 2 })) text += chunk.choices[0]?.delta.content ?? "";
  t.equal(text, " t0 t1");
});
