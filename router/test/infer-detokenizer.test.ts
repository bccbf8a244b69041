import { readFileSync } from "node:fs";
import t from "tap";
import { Tokenizer } from "@huggingface/tokenizers";
import { FinishReason, type Generation } from "../../proto/gen/generate.js";
import { IncrementalDetokenizer, SingleTokenMemo } from "../infer/detokenizer.js";
import { RequestStream } from "../infer/request-stream.js";
import type { InferEvent, TokenDecoder } from "../infer/types.js";
import { collect, validRequest } from "./fake-shard.js";

const dir = new URL("../../models/stories260k/", import.meta.url);
const tokenizer = new Tokenizer(
  JSON.parse(readFileSync(new URL("tokenizer.json", dir), "utf8")),
  JSON.parse(readFileSync(new URL("tokenizer_config.json", dir), "utf8")),
);
const decoder: TokenDecoder = {
  decode: (ids, skip) => (ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: skip })),
  isSpecial: (id) => id <= 2,
};

const prompt = "Once upon a time";
const continuation = ", Tim saw 日本 tea 😀 and ü in München.";
const fullIds: number[] = tokenizer.encode(prompt + continuation).ids;
const promptIds: number[] = tokenizer.encode(prompt).ids;

t.test("the sample text really uses byte-fallback tokens", async (t) => {
  t.same(fullIds.slice(0, promptIds.length), promptIds);
  const pieces: string[] = tokenizer.encode(continuation).tokens;
  t.ok(pieces.filter((p) => /^<0x[0-9A-F]{2}>$/.test(p)).length >= 9, "日本, 😀 and ü are split into bytes");
});

t.test("streamed pieces join to the text, none ends in or holds U+FFFD", async (t) => {
  const detokenizer = new IncrementalDetokenizer(decoder, promptIds);
  const pieces = fullIds.slice(promptIds.length).map((id) => detokenizer.next(id));
  t.equal(pieces.join(""), continuation);
  t.notOk(pieces.some((p) => p.includes("\uFFFD")));
  t.ok(pieces.includes(""), "incomplete characters wait for their last byte");
  t.ok(pieces.includes(" 😀") || pieces.includes("😀"), "the emoji arrives whole");
  t.equal(pieces[0], ",", "no space is invented before the first piece");
  t.match(pieces[1], /^ T/, "the leading space of a SentencePiece piece is kept");
});

t.test("SingleTokenMemo: the same pieces, each single id decoded once", async (t) => {
  const calls = new Map<string, number>();
  const counting: TokenDecoder = {
    decode: (ids, skip) => {
      const key = `${ids.join(",")}/${skip}`;
      calls.set(key, (calls.get(key) ?? 0) + 1);
      return decoder.decode(ids, skip);
    },
    isSpecial: decoder.isSpecial,
  };
  const memo = new SingleTokenMemo(counting);
  const generated = fullIds.slice(promptIds.length);
  for (let round = 0; round < 2; round++) {
    const plain = new IncrementalDetokenizer(decoder, promptIds);
    const memoized = new IncrementalDetokenizer(memo, promptIds);
    t.same(generated.map((id) => memoized.next(id)), generated.map((id) => plain.next(id)), `round ${round}`);
  }
  t.same(
    [...calls].filter(([key, n]) => !key.includes(",") && n > 1),
    [],
    "no single id decoded twice",
  );
  t.equal(memo.decode([2], true), decoder.decode([2], true), "skip flag kept apart");
  t.equal(memo.decode([2], false), decoder.decode([2], false));
  t.equal(memo.isSpecial(2), true);
});

function generation(id: number, finish?: FinishReason, count = 0): Generation {
  return {
    requestId: 0,
    tokens: { ids: [id], logprobs: [NaN], texts: [], isSpecial: [] },
    topTokens: [],
    generatedText: finish === undefined ? undefined : { text: "", generatedTokens: count, finishReason: finish },
  };
}

t.test("RequestStream: events and generated text with the real tokenizer", async (t) => {
  const generated = fullIds.slice(promptIds.length);
  let done = 0;
  const stream = new RequestStream(validRequest(promptIds, { maxNewTokens: generated.length }), decoder, 0, () => done++);
  stream.batched(1);
  generated.forEach((id, i) => {
    const last = i === generated.length - 1;
    t.equal(stream.deliver(generation(id, last ? FinishReason.FINISH_REASON_LENGTH : undefined, generated.length)), last);
  });
  const events = await collect(stream.events);
  const texts = events.map((e) => (e.type === "token" || e.type === "end" ? e.token.text : "?"));
  t.equal(texts.join(""), continuation);
  const end = events.at(-1) as Extract<InferEvent, { type: "end" }>;
  t.equal(end.generatedText, continuation);
  t.equal(end.token.logprob, null, "NaN logprob becomes null");
  t.equal(end.finishReason, "length");
  t.equal(done, 1);
  t.ok(stream.gone);
});

t.test("RequestStream: a stop sequence made of multi-byte text", async (t) => {
  const generated = fullIds.slice(promptIds.length);
  const stream = new RequestStream(validRequest(promptIds, { maxNewTokens: 100, stop: ["日本"] }), decoder, 0, () => undefined);
  let finishedAt = -1;
  for (let i = 0; i < generated.length && finishedAt < 0; i++) if (stream.deliver(generation(generated[i]!))) finishedAt = i;
  const end = (await collect(stream.events)).at(-1) as Extract<InferEvent, { type: "end" }>;
  t.equal(end.finishReason, "stop_sequence");
  t.equal(end.generatedText, ", Tim saw 日本", "the stop text stays, as in TGI");
  t.equal(end.generatedTokens, finishedAt + 1);
});

t.test("RequestStream: cancel ends the stream and later results are ignored", async (t) => {
  let cancelled: boolean | null = null;
  const stream = new RequestStream(validRequest(promptIds), decoder, 0, (c) => (cancelled = c));
  stream.deliver(generation(fullIds[promptIds.length]!));
  stream.cancel();
  t.equal(cancelled, true);
  t.ok(stream.gone);
  t.equal(stream.deliver(generation(5)), true);
  stream.fail(new Error("late"));
  t.same(await collect(stream.events), [], "buffered events are dropped");
});
