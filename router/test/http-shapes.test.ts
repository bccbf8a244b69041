// streamEventText (built by concatenation, once per streamed token) against
// JSON.stringify of the StreamResponse object it stands for: the same bytes.
import t from "tap";
import type { TokenInfo } from "../infer/types.js";
import { streamEventText, type StreamDetails } from "../http/shapes.js";

/** The object form, keys in serde's order, as the router built it before. */
function reference(index: number, token: TokenInfo, top: TokenInfo[], text: string | null, details: StreamDetails | null): object {
  const json = (x: TokenInfo) => ({ id: x.id, text: x.text, logprob: x.logprob === null || Number.isNaN(x.logprob) ? null : x.logprob, special: x.special });
  const event: Record<string, unknown> = { index, token: json(token) };
  if (top.length > 0) event.top_tokens = top.map(json);
  event.generated_text = text;
  event.details = details && { finish_reason: details.finishReason, generated_tokens: details.generatedTokens, seed: details.seed, input_length: details.inputLength };
  return event;
}

t.test("streamEventText is JSON.stringify of the event, byte for byte", async (t) => {
  const texts = [" t1", "", '"quoted" \\ back', "line\nbreak\ttab\u0001", "日本 😀", "\u2028\u2029", "\uD800 lone"];
  const logprobs = [-0.5, 0, -0, null, Number.NaN, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, -1e-7, -123456789.125];
  const tokens: TokenInfo[] = [];
  texts.forEach((text, i) => logprobs.forEach((logprob, j) => tokens.push({ id: i * 100 + j, text, logprob, special: (i + j) % 2 === 0 })));
  const detailsList: (StreamDetails | null)[] = [
    null,
    { finishReason: "length", generatedTokens: 3, seed: null, inputLength: 7 },
    { finishReason: "stop_sequence", generatedTokens: 1, seed: 2 ** 53 - 1, inputLength: 0 },
    { finishReason: "eos_token", generatedTokens: 10, seed: 0, inputLength: 4 },
  ];
  let checked = 0;
  for (const [k, token] of tokens.entries()) {
    const top = tokens.slice(k, k + (k % 4));
    for (const text of [null, "", "full \"text\"\n"]) {
      for (const details of detailsList) {
        const want = JSON.stringify(reference(k + 1, token, top, text, details));
        const got = streamEventText(k + 1, token, top, text, details);
        if (got !== want) t.equal(got, want, `token ${k}`);
        checked++;
      }
    }
  }
  t.pass(`${checked} events identical`);
});
