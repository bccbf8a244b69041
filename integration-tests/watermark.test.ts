// End to end: `watermark: true` through the launcher's --watermark-gamma/--watermark-delta, the
// router, the proto and the shard's environment into the engine's sampler, on stories260k. With a
// large delta the greedy text moves off the plain one; the watermark stays deterministic.
import t from "tap";
import { generate, ids } from "./client.js";
import { launch, STORIES } from "./harness.js";

const PROMPTS = ["Once upon a time", "The little dog", "Lily wanted to"];
const GREEDY = { max_new_tokens: 32, details: true, do_sample: false };

const server = await launch(t, { args: ["--model-id", STORIES, "--watermark-gamma", "0.25", "--watermark-delta", "10"] });

t.test("a watermarked greedy generation differs from the plain one and repeats exactly", async (t) => {
  for (const prompt of PROMPTS) {
    const plain = await generate(server.url, prompt, GREEDY);
    const marked = await generate(server.url, prompt, { ...GREEDY, watermark: true });
    const again = await generate(server.url, prompt, { ...GREEDY, watermark: true });
    t.not(marked.generated_text, plain.generated_text, `${prompt}: delta 10 changes the greedy text`);
    t.same(ids(again), ids(marked), `${prompt}: same request, same tokens`);
    t.equal(again.generated_text, marked.generated_text);
    t.same(ids(await generate(server.url, prompt, GREEDY)), ids(plain), `${prompt}: plain requests are untouched`);
  }
});

t.test("watermark: false is the default and the plain output", async (t) => {
  const plain = await generate(server.url, PROMPTS[0]!, GREEDY);
  const off = await generate(server.url, PROMPTS[0]!, { ...GREEDY, watermark: false });
  t.same(ids(off), ids(plain));
});
