// The OpenAI routes over HTTP against the fake backend: exact bytes of the SSE
// framing, response shapes, request mapping, errors before and during streams.
import t, { type Test } from "tap";
import { InferError } from "../infer/types.js";
import type { FakeServer } from "./fake-backend.js";
import { startChatServer, startStopAwareServer } from "./openai-fixture.js";

const json = { "content-type": "application/json" };

async function post(s: FakeServer, path: string, body: unknown) {
  const res = await fetch(s.url + path, { method: "POST", headers: json, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** Events of an OpenAI stream, checking the framing of every one on the way. */
function events(t: Test, text: string): unknown[] {
  t.ok(text.endsWith("data: [DONE]\n\n"), "ends with data: [DONE]");
  const parts = text.split("\n\n");
  t.equal(parts.pop(), "", "every event ends with a blank line");
  t.equal(parts.pop(), "data: [DONE]");
  return parts.map((part) => {
    t.ok(part.startsWith("data: {"), `'data: ' with a space: ${part.slice(0, 12)}`);
    return JSON.parse(part.slice("data: ".length)) as unknown;
  });
}

const user = (content: string) => [{ role: "user", content }];
const PROMPT = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";

t.test("chat: non-streaming response", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const res = await post(s, "/v1/chat/completions", { model: "whatever", messages: user("Hi"), max_tokens: 3 });
  t.equal(res.status, 200);
  t.equal(res.headers.get("content-type"), "application/json");
  const body = JSON.parse(res.text);
  const request = s.backend.requests[0]!;
  t.equal(request.inputText, PROMPT, "the template's rendering");
  t.not(request.inputIds[0], 1, "no BOS added: the template owns special tokens");
  t.match(body.id, /^chatcmpl-[0-9a-f]{24}$/);
  t.ok(Math.abs(body.created - Date.now() / 1000) < 5);
  t.same(Object.keys(body), ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]);
  t.same(
    { ...body, id: "", created: 0 },
    {
      id: "",
      object: "chat.completion",
      created: 0,
      model: "stories260k",
      system_fingerprint: "0.1.0-native",
      choices: [{ index: 0, message: { role: "assistant", content: " t0 t1 t2" }, logprobs: null, finish_reason: "length" }],
      usage: { prompt_tokens: request.inputIds.length, completion_tokens: 3, total_tokens: request.inputIds.length + 3 },
    },
  );
  s.backend.options.eosAt = 1;
  const eos = JSON.parse((await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 3 })).text);
  t.same(eos.choices[0].message.content, " t0");
  t.equal(eos.choices[0].finish_reason, "stop", "EOS is OpenAI's stop");
});

t.test("chat: streaming bytes, role first, finish last, usage chunk", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const res = await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 3, stream: true });
  t.equal(res.status, 200);
  t.equal(res.headers.get("content-type"), "text/event-stream");
  const [first] = res.text.split("\n\n");
  t.match(
    first,
    /^data: \{"id":"chatcmpl-[0-9a-f]{24}","object":"chat\.completion\.chunk","created":\d+,"model":"stories260k","system_fingerprint":"0\.1\.0-native","choices":\[\{"index":0,"delta":\{"role":"assistant","content":" t0"\},"logprobs":null,"finish_reason":null\}\]\}$/,
    "exact bytes of the first chunk",
  );
  const chunks = events(t, res.text) as { id: string; choices: { delta: object; finish_reason: string | null }[] }[];
  t.same(
    chunks.map((c) => c.choices[0]),
    [
      { index: 0, delta: { role: "assistant", content: " t0" }, logprobs: null, finish_reason: null },
      { index: 0, delta: { content: " t1" }, logprobs: null, finish_reason: null },
      { index: 0, delta: { content: " t2" }, logprobs: null, finish_reason: "length" },
    ],
  );
  t.equal(new Set(chunks.map((c) => c.id)).size, 1, "one id for the whole stream");

  const withUsage = events(t, (await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 2, stream: true, stream_options: { include_usage: true } })).text) as {
    choices: unknown[];
    usage: unknown;
  }[];
  t.equal(withUsage.length, 3);
  t.equal(withUsage[0]!.usage, null, "usage: null on token chunks");
  const prompt = s.backend.requests[1]!.inputIds.length;
  t.same(withUsage[2]!.choices, []);
  t.same(withUsage[2]!.usage, { prompt_tokens: prompt, completion_tokens: 2, total_tokens: prompt + 2 });

  s.backend.options.eosAt = 1;
  const eos = events(t, (await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 3, stream: true })).text) as {
    choices: { delta: object; finish_reason: string | null }[];
  }[];
  t.same(eos.at(-1)!.choices[0]!.delta, { content: "" }, "the EOS token's text is not sent");
  t.equal(eos.at(-1)!.choices[0]!.finish_reason, "stop");
});

t.test("chat: logprobs and top_logprobs", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const body = { messages: user("Hi"), max_tokens: 2, logprobs: true, top_logprobs: 2 };
  const whole = JSON.parse((await post(s, "/v1/chat/completions", body)).text);
  t.equal(s.backend.requests[0]!.parameters.topNTokens, 2);
  const top = [
    { token: "k0", logprob: 0, bytes: [107, 48] },
    { token: "k1", logprob: -0.1, bytes: [107, 49] },
  ];
  t.same(whole.choices[0].logprobs, {
    content: [
      { token: " t0", logprob: -0.5, bytes: [32, 116, 48], top_logprobs: top },
      { token: " t1", logprob: -0.5, bytes: [32, 116, 49], top_logprobs: top },
    ],
  });
  const chunks = events(t, (await post(s, "/v1/chat/completions", { ...body, stream: true })).text) as { choices: { logprobs: unknown }[] }[];
  t.same(chunks[1]!.choices[0]!.logprobs, { content: [{ token: " t1", logprob: -0.5, bytes: [32, 116, 49], top_logprobs: top }] });
  await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 1, top_logprobs: 2 });
  t.equal(s.backend.requests.at(-1)!.parameters.topNTokens, 0, "top_logprobs without logprobs asks for nothing");
});

t.test("request mapping onto the validated parameters", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const params = async (extra: object) => {
    const res = await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 1, ...extra });
    t.equal(res.status, 200, res.text);
    return s.backend.requests.at(-1)!.parameters;
  };
  t.match(await params({}), { doSample: true, temperature: 1, topP: 1, presencePenalty: 0, frequencyPenalty: 0, stop: [], ignoreEos: false });
  t.match(await params({ temperature: 0, top_p: 0.5, seed: 3 }), { doSample: false, temperature: 1, topP: 1 }, "temperature 0 is greedy");
  t.match(await params({ top_p: 0 }), { doSample: false, topP: 1 }, "top_p 0 is greedy");
  t.match(await params({ temperature: 0.7, top_p: 1, seed: 5 }), { doSample: true, temperature: 0.7, topP: 1, seed: 5 }, "top_p 1 is off, not refused");
  t.match(await params({ top_p: 0.9, top_k: 4 }), { topP: 0.9, topK: 4 });
  t.match(await params({ presence_penalty: 0.5, frequency_penalty: -1 }), { presencePenalty: 0.5, frequencyPenalty: -1 });
  t.match(await params({ stop: "x" }), { stop: ["x"] }, "stop as a string");
  t.match(await params({ stop: ["a", "b"], ignore_eos: true }), { stop: ["a", "b"], ignoreEos: true });
  t.match(await params({ max_tokens: 9, max_completion_tokens: 2 }), { maxNewTokens: 2 }, "max_completion_tokens wins");
  t.match(await params({ logit_bias: {}, user: "u", tool_choice: "auto", response_format: { type: "text" } }), { maxNewTokens: 1 }, "no-op fields are accepted");
});

t.test("errors before the stream: status and TGI's error JSON", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const cases: [object, number, string][] = [
    [{}, 422, '{"error":"Failed to deserialize the JSON body into the target type: missing field `messages`","error_type":"validation"}'],
    [{ messages: [{ role: "wizard", content: "x" }] }, 422, '{"error":"Failed to deserialize the JSON body into the target type: messages[0].role: unknown variant `wizard`, expected one of `system`, `developer`, `user`, `assistant`, `tool`","error_type":"validation"}'],
    [{ messages: user("x"), temperature: -1 }, 422, '{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}'],
    [{ messages: user("x"), frequency_penalty: 3 }, 422, '{"error":"Input validation error: `frequency_penalty` must be >= -2.0 and <= 2.0","error_type":"validation"}'],
    [{ messages: user("x"), presence_penalty: -3 }, 422, '{"error":"Input validation error: `presence_penalty` must be >= -2.0 and <= 2.0","error_type":"validation"}'],
    [{ messages: user("x"), n: 0 }, 422, '{"error":"Input validation error: `n` must be strictly positive","error_type":"validation"}'],
    [{ messages: user("x"), n: 9 }, 422, '{"error":"Input validation error: `n` must be <= 8. Given: 9","error_type":"validation"}'],
    [{ messages: user("x"), max_tokens: 0 }, 422, '{"error":"Input validation error: `max_tokens` must be strictly positive","error_type":"validation"}'],
    [{ messages: user("x"), logprobs: true, top_logprobs: 6 }, 422, '{"error":"Input validation error: `top_logprobs` must be >= 0 and <= 5. Given: 6","error_type":"validation"}'],
    [{ messages: user("x"), stop: ["a", "b", "c", "d", "e"] }, 422, '{"error":"Input validation error: `stop` supports up to 4 stop sequences. Given: 5","error_type":"validation"}'],
    [{ messages: user("x"), logit_bias: { "5": 1 } }, 422, '{"error":"Input validation error: `logit_bias` is not supported","error_type":"validation"}'],
    [{ messages: user("x"), response_format: { type: "json_object" } }, 422, '{"error":"Input validation error: `response_format` of type \\"json_object\\" is not supported yet (no constrained decoding)","error_type":"validation"}'],
    [{ messages: user("x"), max_tokens: 200 }, 422, '{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 128. Given: 40 `inputs` tokens and 200 `max_new_tokens`","error_type":"validation"}'],
  ];
  for (const [body, status, error] of cases) {
    for (const stream of [false, true]) {
      const res = await post(s, "/v1/chat/completions", { ...body, stream });
      t.equal(res.status, status, JSON.stringify(body));
      t.equal(res.text, error);
      t.equal(res.headers.get("content-type"), "application/json");
    }
  }
  t.equal(s.backend.requests.length, 0, "nothing reached the backend");

  const none = await startChatServer({}, null);
  t.teardown(() => none.close());
  const res = await post(none, "/v1/chat/completions", { messages: user("x"), stream: true });
  t.equal(res.status, 422);
  t.equal(res.text, '{"error":"Template error: template not found","error_type":"template_error"}');
});

t.test("an error during a stream: one error event, then [DONE]", async (t) => {
  const s = await startChatServer({ error: new InferError("generation", "Request failed during generation: Server error: boom"), failAfter: 1 });
  t.teardown(() => s.close());
  const res = await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 3, stream: true });
  t.equal(res.status, 200);
  const parts = res.text.split("\n\n");
  t.match(parts[0], /^data: \{"id":"chatcmpl-/);
  t.equal(parts[1], 'data: {"error":{"message":"Request failed during generation: Server error: boom","http_status_code":424,"type":"generation"}}');
  t.equal(parts.slice(2).join("\n\n"), "data: [DONE]\n\n");
  const whole = await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 3 });
  t.equal(whole.status, 424);
  t.equal(whole.text, '{"error":"Request failed during generation: Server error: boom","error_type":"generation"}');
  t.equal(s.ctx.permits.used, 0, "permits given back");
});

t.test("n > 1: independent choices, seeds seed + i, interleaved stream", async (t) => {
  const s = await startChatServer({ delayMs: 2 });
  t.teardown(() => s.close());
  const body = JSON.parse((await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 2, n: 3, seed: 7 })).text);
  t.same(body.choices.map((c: { index: number }) => c.index), [0, 1, 2]);
  t.same(s.backend.requests.map((r) => r.parameters.seed), [7, 8, 9]);
  t.equal(body.usage.completion_tokens, 6);
  t.equal(body.usage.prompt_tokens, s.backend.requests[0]!.inputIds.length, "the prompt counts once");

  const chunks = events(t, (await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 2, n: 2, stream: true })).text) as {
    choices: { index: number; delta: { role?: string }; finish_reason: string | null }[];
  }[];
  const seeds = s.backend.requests.slice(3).map((r) => r.parameters.seed);
  t.not(seeds[0], seeds[1], "random seeds differ");
  t.equal(chunks.length, 4);
  for (const index of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0]!.index === index);
    t.equal(mine.length, 2);
    t.equal(mine[0]!.choices[0]!.delta.role, "assistant", "each choice's first delta has the role");
    t.equal(mine[1]!.choices[0]!.finish_reason, "length");
  }
  t.not(chunks[0]!.choices[0]!.index, chunks[1]!.choices[0]!.index, "interleaved, not one after the other");
});

t.test("stop sequences end the text before them, streamed or not", async (t) => {
  const s = await startStopAwareServer();
  t.teardown(() => s.close());
  const whole = JSON.parse((await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 5, stop: " t2" })).text);
  t.equal(whole.choices[0].message.content, " t0 t1");
  t.equal(whole.choices[0].finish_reason, "stop");
  const chunks = events(t, (await post(s, "/v1/chat/completions", { messages: user("Hi"), max_tokens: 5, stop: ["t2"], stream: true })).text) as {
    choices: { delta: { content: string }; finish_reason: string | null }[];
  }[];
  t.equal(chunks.map((c) => c.choices[0]!.delta.content).join(""), " t0 t1 ");
  t.equal(chunks.at(-1)!.choices[0]!.finish_reason, "stop");
  const text = JSON.parse((await post(s, "/v1/completions", { prompt: "Once", max_tokens: 5, stop: [" t1"], echo: true })).text);
  t.equal(text.choices[0].text, "Once t0");
});

t.test("completions: prompts × n, echo, legacy logprobs, errors", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  let res = await post(s, "/v1/completions", { model: "m", prompt: ["Once", "upon"], n: 2, max_tokens: 2, seed: 1 });
  t.equal(res.status, 200);
  const body = JSON.parse(res.text);
  t.same(Object.keys(body), ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]);
  t.match(body, { object: "text_completion", model: "stories260k" });
  t.match(body.id, /^cmpl-/);
  t.same(
    body.choices,
    [0, 1, 2, 3].map((index) => ({ index, text: " t0 t1", logprobs: null, finish_reason: "length" })),
  );
  t.same(s.backend.requests.map((r) => [r.inputText, r.parameters.seed]), [["Once", 1], ["Once", 2], ["upon", 1], ["upon", 2]]);
  t.equal(s.backend.requests[0]!.inputIds[0], 1, "completions add BOS (add_special_tokens)");
  const promptTokens = s.backend.requests[0]!.inputIds.length + s.backend.requests[2]!.inputIds.length;
  t.same(body.usage, { prompt_tokens: promptTokens, completion_tokens: 8, total_tokens: promptTokens + 8 });

  res = await post(s, "/v1/completions", { prompt: "Once", max_tokens: 2, logprobs: 1, echo: true });
  t.same(JSON.parse(res.text).choices[0], {
    index: 0,
    text: "Once t0 t1",
    logprobs: {
      tokens: ["p1", " t0", " t1"],
      token_logprobs: [-1, -0.5, -0.5],
      top_logprobs: [null, { k0: 0 }, { k0: 0 }],
      text_offset: [0, 4, 7],
    },
    finish_reason: "length",
  }, "echo with logprobs includes the prompt tokens (BOS left out)");

  const cases: [object, string][] = [
    [{ prompt: "x", suffix: "y" }, '{"error":"Suffix is not supported and can be achieved by preprocessing the prompt.","error_type":"suffix not supported"}'],
    [{ prompt: ["a", "b", "c", "d", "e"] }, '{"error":"Number of prompts exceeds the maximum allowed batch size of 4","error_type":"batch size exceeded"}'],
    [{ prompt: [] }, '{"error":"Failed to deserialize the JSON body into the target type: prompt: Empty array detected. Do not use an empty array for the prompt.","error_type":"validation"}'],
    [{ prompt: [1, 2] }, '{"error":"Failed to deserialize the JSON body into the target type: prompt: data did not match any variant of untagged enum Prompt","error_type":"validation"}'],
    [{ prompt: "x", logprobs: 6 }, '{"error":"Input validation error: `logprobs` must be >= 0 and <= 5. Given: 6","error_type":"validation"}'],
    [{ prompt: "x", best_of: 2 }, '{"error":"Input validation error: `best_of` > 1 is not supported yet","error_type":"validation"}'],
    [{ prompt: "" }, '{"error":"Input validation error: `inputs` cannot be empty","error_type":"validation"}'],
  ];
  for (const [request, error] of cases) {
    res = await post(s, "/v1/completions", request);
    t.equal(res.status, 422);
    t.equal(res.text, error);
  }
  res = await post(s, "/v1/completions", { prompt: ["a", "b", "c", "d"], n: 3 });
  t.equal(res.status, 429, "one permit per choice");
  t.equal(res.text, '{"error":"Model is overloaded","error_type":"overloaded"}');
  t.equal(s.ctx.permits.used, 0);
});

t.test("completions: streaming chunks", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const res = await post(s, "/v1/completions", { prompt: "Once", max_tokens: 2, stream: true, echo: true, logprobs: 0, stream_options: { include_usage: true } });
  t.match(res.text.split("\n\n")[0], /^data: \{"id":"cmpl-[0-9a-f]{24}","object":"text_completion","created":\d+,"model":"stories260k","system_fingerprint":"0\.1\.0-native","choices":\[/);
  const chunks = events(t, res.text) as { choices: unknown[]; usage: unknown }[];
  t.same(chunks.map((c) => c.choices), [
    [{ index: 0, text: "Once t0", logprobs: { tokens: [" t0"], token_logprobs: [-0.5], top_logprobs: [{}], text_offset: [4] }, finish_reason: null }],
    [{ index: 0, text: " t1", logprobs: { tokens: [" t1"], token_logprobs: [-0.5], top_logprobs: [{}], text_offset: [7] }, finish_reason: "length" }],
    [],
  ]);
  const prompt = s.backend.requests[0]!.inputIds.length;
  t.same(chunks[2]!.usage, { prompt_tokens: prompt, completion_tokens: 2, total_tokens: prompt + 2 });
});

t.test("GET /v1/models", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  const res = await fetch(`${s.url}/v1/models`);
  t.equal(res.status, 200);
  t.equal(await res.text(), '{"object":"list","data":[{"id":"stories260k","object":"model","created":0,"owned_by":"stories260k"}]}');
});

t.test("a client that disconnects cancels every choice", async (t) => {
  const s = await startChatServer({ hangAfter: 1 });
  t.teardown(() => s.close());
  const controller = new AbortController();
  const res = await fetch(`${s.url}/v1/chat/completions`, {
    method: "POST",
    headers: json,
    body: JSON.stringify({ messages: user("Hi"), max_tokens: 5, n: 2, stream: true }),
    signal: controller.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  controller.abort();
  await s.backend.aborted;
  await new Promise((r) => setTimeout(r, 50));
  t.ok(s.backend.signals.every((signal) => signal.aborted), "both choices aborted");
  t.equal(s.ctx.permits.used, 0, "permits given back");
});

t.test("every choice counts as one request in /metrics", async (t) => {
  const s = await startChatServer();
  t.teardown(() => s.close());
  await post(s, "/v1/completions", { prompt: ["Once", "upon"], n: 2, max_tokens: 1 });
  await post(s, "/v1/chat/completions", { messages: user("Hi"), temperature: -1 });
  const text = await (await fetch(`${s.url}/metrics`)).text();
  t.match(text, /^tgi_request_count 5$/m);
  t.match(text, /^tgi_request_success 4$/m);
  t.match(text, /^tgi_request_failure\{err="validation"\} 1$/m);
});
