// Hand-written values over the generated protocol types that the router and the shard share.
import type { NextTokenChooserParameters } from "./gen/generate.js";

/** Greedy decoding with every processor off: the parameters of a request that asks for nothing else. */
export const GREEDY_PARAMETERS: Readonly<NextTokenChooserParameters> = {
  temperature: 1,
  topK: 0,
  topP: 1,
  typicalP: 1,
  doSample: false,
  seed: 0,
  repetitionPenalty: 1,
  watermark: false,
  frequencyPenalty: 0,
  presencePenalty: 0,
  grammar: "",
  grammarType: 0,
};
