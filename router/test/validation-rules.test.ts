// TGI's GenerateParameters validation through POST /generate: every rule of
// tgi.md §1.5 with its exact bytes and status, the order, the defaults.
import t from "tap";
import { parseGenerateRequest } from "../validation/request.js";
import { Validator } from "../validation/validate.js";
import { startFakeServer } from "./fake-backend.js";

const server = await startFakeServer(); // limits: best_of 2, stop 4, top_n 5, input 100, total 128
t.teardown(() => server.close());

async function generate(body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(`${server.url}/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

const invalid = (message: string) => `{"error":"Input validation error: ${message}","error_type":"validation"}`;
const P = (parameters: object, inputs = "Once upon a time") => ({ inputs, parameters });
const long = "a b c d e f g h i j ".repeat(9); // 110 tokens: under max_total, over max_input

const rules: [string, unknown, string][] = [
  ["best_of > max_best_of", P({ best_of: 3, do_sample: true }), "`best_of` must be > 0 and <= 2. Given: 3"],
  ["best_of > 1 without sampling", P({ best_of: 2 }), "you must use sampling when `best_of` is > 1"],
  ["temperature 0", P({ temperature: 0 }), "`temperature` must be strictly positive"],
  ["temperature < 0", P({ temperature: -1 }), "`temperature` must be strictly positive"],
  ["repetition_penalty 0", P({ repetition_penalty: 0 }), "`repetition_penalty` must be strictly positive"],
  ["frequency_penalty 2.5", P({ frequency_penalty: 2.5 }), "`frequency_penalty` must be >= -2.0 and <= 2.0"],
  ["frequency_penalty -2.1", P({ frequency_penalty: -2.1 }), "`frequency_penalty` must be >= -2.0 and <= 2.0"],
  ["top_p 1.0", P({ top_p: 1.0 }), "`top_p` must be > 0.0 and < 1.0"],
  ["top_p 0", P({ top_p: 0 }), "`top_p` must be > 0.0 and < 1.0"],
  ["typical_p 1", P({ typical_p: 1 }), "`typical_p` must be > 0.0 and < 1.0"],
  ["top_k 0", P({ top_k: 0 }), "`top_k` must be strictly positive"],
  ["top_k -3", P({ top_k: -3 }), "`top_k` must be strictly positive"],
  ["max_new_tokens 0", P({ max_new_tokens: 0 }), "`max_new_tokens` must be strictly positive"],
  ["5 stop sequences", P({ stop: ["a", "b", "c", "d", "e"] }), "`stop` supports up to 4 stop sequences. Given: 5"],
  ["seed with best_of 2", P({ best_of: 2, do_sample: true, seed: 1 }), "`seed` must not be set when `best_of` > 1"],
  ["top_n_tokens 6", P({ top_n_tokens: 6 }), "`top_n_tokens` must be >= 0 and <= 5. Given: 6"],
  ["empty inputs", P({}, ""), "`inputs` cannot be empty"],
  ["truncate 0", P({ truncate: 0 }), "`truncate` must be strictly positive and less than 100. Given: 0"],
  ["truncate > max_input_tokens", P({ truncate: 101 }), "`truncate` must be strictly positive and less than 100. Given: 101"],
  ["inputs + max_new_tokens", P({ max_new_tokens: 124 }), "`inputs` tokens + `max_new_tokens` must be <= 128. Given: 5 `inputs` tokens and 124 `max_new_tokens`"],
  ["inputs too long", P({ max_new_tokens: 1 }, long), "`inputs` must have less than 100 tokens. Given: 110"],
  ["grammar regex", P({ grammar: { type: "regex", value: "a+" } }), "grammar is not supported yet"],
  ["grammar json", P({ grammar: { type: "json", value: { properties: { a: { type: "string" } } } } }), "grammar is not supported yet"],
  ["grammar json as a string", P({ grammar: { type: "json_object", value: '{"properties":{}}' } }), "grammar is not supported yet"],
  ["grammar json_schema", P({ grammar: { type: "json_schema", value: { name: "x", schema: { properties: {} } } } }), "grammar is not supported yet"],
  ["grammar without properties", P({ grammar: { type: "json", value: { type: "object" } } }), "grammar is not valid: Grammar must have a 'properties' field"],
  ["grammar bad JSON string", P({ grammar: { type: "json", value: "{" } }), "grammar is not valid: the JSON schema is a string that does not parse as JSON"],
  ["grammar bad regex", P({ grammar: { type: "regex", value: "a(" } }), "grammar is not valid: Invalid regular expression: /a(/u: Unterminated group"],
  ["inputs over max_input_tokens x 32 characters", P({}, "a".repeat(3201)), "`inputs` must have at most 3200 characters. Given: 3201"],
  ["seed above 2^53 - 1", P({ seed: 2 ** 53 }), "`seed` must be an integer >= 0 and <= 9007199254740991 (2^53 - 1, the largest integer a JSON number keeps exactly in this server). Given: 9007199254740992"],
  ["negative seed", P({ seed: -1 }), "`seed` must be an integer >= 0 and <= 9007199254740991 (2^53 - 1, the largest integer a JSON number keeps exactly in this server). Given: -1"],
];

t.test("each rule: 422 with TGI's exact error JSON", async (t) => {
  for (const [name, body, message] of rules) {
    const res = await generate(body);
    t.equal(res.status, 422, name);
    t.equal(res.text, invalid(message), name);
  }
  t.equal(server.backend.requests.length, 0, "nothing reached the backend");
});

t.test("each rule on /generate_stream and POST / with stream: HTTP 200, one error event, exact bytes", async (t) => {
  for (const [name, body, message] of rules) {
    // TGI checks best_of before anything else when streaming.
    const expected = name.startsWith("best_of") || name.includes("best_of 2") ? "`best_of` != 1 is not supported when streaming tokens" : message;
    for (const [path, extra] of [["/generate_stream", {}], ["/", { stream: true }]] as const) {
      const res = await fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...(body as object), ...extra }) });
      t.equal(res.status, 200, `${path} ${name}`);
      t.equal(res.headers.get("content-type"), "text/event-stream");
      t.equal(await res.text(), `data:${invalid(expected)}\n\n`, `${path} ${name}`);
    }
  }
  t.equal(server.backend.requests.length, 0, "nothing reached the backend");
});

t.test("TGI's order: the first failing rule wins", async (t) => {
  const cases: [object, string][] = [
    [P({ temperature: 0, top_p: 1, max_new_tokens: 0 }), "`temperature` must be strictly positive"],
    [P({ top_p: 1, top_k: 0 }), "`top_p` must be > 0.0 and < 1.0"],
    [P({ top_k: 0, max_new_tokens: 0 }), "`top_k` must be strictly positive"],
    [P({ top_n_tokens: 9 }, ""), "`top_n_tokens` must be >= 0 and <= 5. Given: 9"],
    [P({ truncate: 0 }, ""), "`inputs` cannot be empty"],
    [P({ grammar: { type: "json", value: {} }, max_new_tokens: 500 }), "`inputs` tokens + `max_new_tokens` must be <= 128. Given: 5 `inputs` tokens and 500 `max_new_tokens`"],
    [P({ best_of: 5 }), "`best_of` must be > 0 and <= 2. Given: 5"],
  ];
  for (const [body, message] of cases) t.equal((await generate(body)).text, invalid(message));
});

t.test("body shape errors are 422 validation JSON naming the field", async (t) => {
  const cases: [unknown, string][] = [
    [{ parameters: {} }, "missing field `inputs`"],
    [{ inputs: 3 }, "inputs: invalid type: integer `3`, expected a string"],
    [[1], "invalid type: sequence, expected struct GenerateRequest"],
    [{ inputs: "x", parameters: null }, "parameters: invalid type: null, expected struct GenerateParameters"],
    [P({ temperature: "hot" }), 'parameters.temperature: invalid type: string "hot", expected f32'],
    [P({ max_new_tokens: -1 }), "parameters.max_new_tokens: invalid value: integer `-1`, expected u32"],
    [P({ max_new_tokens: 1.5 }), "parameters.max_new_tokens: invalid type: floating point `1.5`, expected u32"],
    [P({ stop: "x" }), 'parameters.stop: invalid type: string "x", expected a sequence'],
    [P({ stop: null }), "parameters.stop: invalid type: null, expected a sequence"],
    [P({ stop: ["a", 1] }), "parameters.stop[1]: invalid type: integer `1`, expected a string"],
    [P({ do_sample: null }), "parameters.do_sample: invalid type: null, expected a boolean"],
    [P({ details: "yes" }), 'parameters.details: invalid type: string "yes", expected a boolean'],
    [P({ grammar: { type: "xml", value: 1 } }), "parameters.grammar: unknown variant `xml`, expected one of `json`, `json_object`, `regex`, `json_schema`"],
    [P({ grammar: { type: "regex" } }), "parameters.grammar: missing field `value`"],
    [P({ seed: "1" }), 'parameters.seed: invalid type: string "1", expected u64'],
  ];
  for (const [body, message] of cases) {
    const res = await generate(body);
    t.equal(res.status, 422, message);
    t.equal(res.text, `{"error":"Failed to deserialize the JSON body into the target type: ${message.replaceAll('"', '\\"')}","error_type":"validation"}`);
  }
});

t.test("defaults: parameters absent samples, present-but-empty does not", async (t) => {
  const validator = new Validator(server.ctx.validator.limits, { encode: async () => [1, 2, 3] });
  const absent = await validator.validate(parseGenerateRequest({ inputs: "x" }));
  t.equal(absent.parameters.doSample, true);
  const empty = await validator.validate(parseGenerateRequest({ inputs: "x", parameters: {} }));
  t.match(empty.parameters, {
    doSample: false,
    temperature: 1,
    topK: 0,
    topP: 1,
    typicalP: 1,
    repetitionPenalty: 1,
    frequencyPenalty: 0,
    presencePenalty: 0,
    watermark: false,
    maxNewTokens: 125, // max_total_tokens - input length
    stop: [],
    ignoreEos: false,
    topNTokens: 0,
    decoderInputDetails: false,
  });
  t.ok(Number.isSafeInteger(empty.parameters.seed) && empty.parameters.seed >= 0, "random seed below 2^53");
  const given = await validator.validate(
    parseGenerateRequest(P({ seed: 2 ** 53 - 1, max_new_tokens: 7, ignore_eos_token: true, stop: ["."], top_k: 5, top_p: 0.9, typical_p: 0.5, temperature: 0.7 })),
  );
  t.match(given.parameters, { seed: 2 ** 53 - 1, maxNewTokens: 7, ignoreEos: true, stop: ["."], topK: 5, topP: 0.9, typicalP: 0.5, temperature: 0.7 });
  t.equal(given.inputText, "Once upon a time");
});

t.test("truncate keeps the last tokens; the backend gets the validated request", async (t) => {
  const res = await generate(P({ truncate: 2, max_new_tokens: 2, best_of: 1, seed: 0 }));
  t.equal(res.status, 200);
  const last = server.backend.requests.at(-1)!;
  t.same(last.inputIds, [261, 378]);
  t.equal(last.parameters.seed, 0);
  t.equal(last.parameters.maxNewTokens, 2);
  const tokenizerError = new Validator(server.ctx.validator.limits, { encode: async () => { throw new Error("boom"); } });
  await t.rejects(tokenizerError.validate(parseGenerateRequest({ inputs: "x" })), { message: "Input validation error: tokenizer error boom", status: 422 });
});

t.test("watermark: true is accepted and reaches the backend", async (t) => {
  const res = await generate(P({ watermark: true, max_new_tokens: 2 }));
  t.equal(res.status, 200);
  t.equal(server.backend.requests.at(-1)!.parameters.watermark, true);
  t.equal((await generate(P({ max_new_tokens: 2 }))).status, 200);
  t.equal(server.backend.requests.at(-1)!.parameters.watermark, false, "default false");
});

t.test("max_best_of 1 refuses any best_of but 1", async (t) => {
  const v = new Validator({ ...server.ctx.validator.limits, maxBestOf: 1 }, { encode: async () => [1] });
  t.throws(() => v.checkBestOf(2), { message: "Input validation error: `best_of` != 1 is not allowed for this endpoint" });
  t.doesNotThrow(() => v.checkBestOf(1));
});
