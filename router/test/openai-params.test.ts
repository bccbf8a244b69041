// OpenAI field mapping without HTTP, stop-sequence holdback, and the
// presence_penalty path from the router's parameters to the engine's.
import t from "tap";
import { samplingChoice, openaiFinishReason } from "../openai/params.js";
import { StopHoldback, withoutStop } from "../openai/stop-text.js";
import { promptTokens } from "../openai/completions.js";
import { samplingParams } from "../../shard/batch-state.js";
import { NextTokenChooserParameters } from "../../proto/gen/generate.js";

const limits = { maxChoices: 4 };

t.test("samplingChoice maps OpenAI fields onto GenerateParameters", async (t) => {
  const plain = samplingChoice({}, null, 0, limits);
  t.same(plain, {
    n: 1,
    presencePenalty: 0,
    parameters: {
      best_of: null,
      temperature: null,
      repetition_penalty: null,
      frequency_penalty: null,
      top_k: null,
      top_p: null,
      typical_p: null,
      do_sample: true,
      max_new_tokens: null,
      return_full_text: false,
      stop: [],
      truncate: null,
      watermark: false,
      details: true,
      decoder_input_details: false,
      seed: null,
      top_n_tokens: 0,
      grammar: null,
      adapter_id: null,
      ignore_eos_token: false,
    },
  });
  const greedy = samplingChoice({ temperature: 0, top_p: 0.5, top_k: 3 }, 5, 2, limits).parameters;
  t.match(greedy, { do_sample: false, temperature: null, top_p: null, top_k: null, max_new_tokens: 5, top_n_tokens: 2 });
  t.match(samplingChoice({ top_p: 1, temperature: 1.5 }, null, 0, limits).parameters, { do_sample: true, top_p: null, temperature: 1.5 });
  t.match(samplingChoice({ stop: "x", n: 4, presence_penalty: -2 }, null, 0, limits), { n: 4, presencePenalty: -2, parameters: { stop: ["x"] } });
  t.throws(() => samplingChoice({ n: 5 }, null, 0, limits), { message: "Input validation error: `n` must be <= 4. Given: 5" });
  t.throws(() => samplingChoice({ presence_penalty: 2.5 }, null, 0, limits), { message: "Input validation error: `presence_penalty` must be >= -2.0 and <= 2.0" });
  t.equal(openaiFinishReason("eos_token"), "stop");
  t.equal(openaiFinishReason("stop_sequence"), "stop");
  t.equal(openaiFinishReason("length"), "length");
});

t.test("stop sequences are held back until known, then cut", async (t) => {
  t.equal(withoutStop("abc STOP def STOP", ["STOP"]), "abc STOP def ", "only the stop the text ends with");
  t.equal(withoutStop("a.b!", ["!", "b!"]), "a.", "the longest of several");
  t.equal(withoutStop("abc", []), "abc");
  t.equal(withoutStop("abc", ["x"]), "abc");

  const h = new StopHoldback(["END"]);
  t.equal(h.push("Hello E"), "Hello ", "a possible start is held");
  t.equal(h.push("x"), "Ex", "released once it cannot be a stop");
  t.equal(h.push(" EN"), " ");
  t.equal(h.push("D"), "");
  t.equal(h.finish(true), "", "the stop itself never goes out");

  const g = new StopHoldback(["\n\n", "###"]);
  t.equal(g.push("a\n"), "a");
  t.equal(g.push("b#"), "\nb");
  t.equal(g.push("##"), "");
  t.equal(g.finish(true), "");
  const inside = new StopHoldback([" the"]);
  t.equal(inside.push(" there"), " there", "a stop inside a token's text is not a stop (nor held)");
  t.equal(inside.push(" th"), "");
  t.equal(inside.push("e"), "");
  t.equal(inside.finish(true), "");
  const f = new StopHoldback(["zz"]);
  t.equal(f.push("az"), "a");
  t.equal(f.finish(false), "z", "at a length stop everything held is sent");
  t.equal(new StopHoldback([]).push("anything"), "anything");
});

t.test("presence_penalty crosses the proto and reaches the engine's parameters", async (t) => {
  const wire = NextTokenChooserParameters.decode(
    NextTokenChooserParameters.encode({ ...NextTokenChooserParameters.decode(new Uint8Array()), presencePenalty: 0.75, frequencyPenalty: 0.5 }).finish(),
  );
  t.equal(wire.presencePenalty, 0.75);
  t.match(samplingParams(wire), { presencePenalty: 0.75, frequencyPenalty: 0.5 });
  t.match(samplingParams(undefined), { presencePenalty: 0 }, "absent: off");
});

t.test("echoed prompt tokens take their text from the prompt", async (t) => {
  const tok = (id: number, text: string, special = false) => ({ id, text, logprob: -1, special });
  const tokens = promptTokens("Once upon a time", [tok(1, "<s>", true), tok(9, "Once"), tok(10, "upon"), tok(11, "a"), tok(12, "time")]);
  t.same(tokens.map((x) => x.text), ["Once", " upon", " a", " time"], "leading spaces back, BOS left out");
  t.same(promptTokens("ab", [tok(5, "?"), tok(6, "b")]).map((x) => x.text), ["?", "ab"], "a text not found is kept as decoded");
});
